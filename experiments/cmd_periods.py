"""`hybrid-forecast periods`: the periodicity analyser's ranked periods for a dataset.

By default only the train rows are analysed (the split rule of ``ensemble.data``), so
periods chosen from this output never saw validation or test data.
"""

from __future__ import annotations

import json
from pathlib import Path

from ensemble.data import add_data_arguments
from ensemble.errors import UserError
from ensemble.io import cannot_create_in
from experiments.cli import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "periods",
        help="ranked periods per channel and overall (periodicity analyser)",
        formatter_class=HelpFormatter,
    )
    add_data_arguments(p)
    p.add_argument(
        "--max-candidates", type=int, default=5, help="periods listed per channel and overall"
    )
    p.add_argument(
        "--all-rows", action="store_true", help="analyse every row, not just the train split"
    )
    p.add_argument("--json", action="store_true", help="one JSON object for machines")
    p.add_argument(
        "--plot", metavar="FILE", help="save the periodogram and an STL panel (e.g. periods.png)"
    )
    p.set_defaults(func=handle)


def _table(title: str, cands) -> list[str]:
    head = (
        f"  {'rank':>4} {'period':>7} {'power':>7} {'acf':>6} {'F_S':>5} {'F_T':>5} {'cycles':>6}"
    )
    lines = [title, head + "  seasonal"]
    if not cands:
        lines.append("  (no period found)")
    for i, c in enumerate(cands, 1):
        lines.append(
            f"  {i:>4} {c.period:>7d} {c.power:>7.4f} {c.acf:>6.2f} {c.strength:>5.2f} "
            f"{c.trend_strength:>5.2f} {c.cycles:>6.1f}  {'yes' if c.seasonal else 'no'}"
        )
    return lines


def _plot_path(arg: str) -> Path:
    """The file ``--plot`` names, checked before the analysis: a folder, or a suffix
    matplotlib cannot write, would otherwise fail only after it.

    Raises:
        UserError: a folder, an unknown figure format, or a place that cannot be written.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    from ensemble.figures import extra_formats

    plot = Path(arg)
    if plot.is_dir():
        raise UserError(f"--plot {plot} is a folder; give a file such as {plot / 'periods.png'}")
    if not plot.suffix:  # matplotlib would add .png itself, and we would name the wrong file
        plot = plot.with_suffix(".png")
    known = FigureCanvasBase.get_supported_filetypes()
    fmt = plot.suffix.lstrip(".").lower()
    if fmt not in known:
        raise UserError(
            f"--plot {plot}: {fmt!r} is not a figure format matplotlib writes; use one of "
            f"{', '.join(sorted(known))} (e.g. {plot.with_suffix('.png').name})"
        )
    extra_formats()  # $HYBRID_FORECAST_FIGURES, checked now too
    _check_writable(plot)
    return plot


def _check_writable(plot: Path) -> None:
    """Refuse a ``--plot`` file whose folder cannot be made or written (``/proc/p.png``).

    The save makes missing folders, so the nearest one that exists must take new entries.
    A trial file, not ``os.access``: root passes that check even on /proc.

    Raises:
        UserError: a file on the way, or a folder that refuses a new file.
    """
    if plot.exists() and not plot.is_file():  # /dev/stdout, a pipe: written in place
        return
    folder, why = cannot_create_in(plot.absolute().parent)
    if why == "is a file":
        raise UserError(f"--plot {plot}: {folder} is a file, not a folder")
    if why:
        raise UserError(f"--plot {plot}: cannot create files in {folder} ({why})")


def handle(args) -> int:
    import numpy as np

    from ensemble.data import dataset_from_args, split_borders
    from experiments.logfile import said_after_checks
    from periodicity import analyse
    from periodicity.report import MIN_CYCLES, net_strengths

    if args.max_candidates < 1:
        raise UserError(f"--max-candidates must be at least 1 (got {args.max_candidates})")
    plot = _plot_path(args.plot) if args.plot else None  # before minutes of analysis
    with said_after_checks():  # a refused file: its error alone, not its warnings too
        ds = dataset_from_args(args)
        if args.all_rows:
            rows = slice(0, ds.n_rows)
        else:
            (_, _, _), (train_end, _, _) = split_borders(ds.n_rows, ds.split_rule, 0)
            rows = slice(0, train_end)
        x = ds.values[rows]
        need = 16
        if x.shape[0] < need:
            what = "all rows" if args.all_rows else "train rows"
            if not args.all_rows and ds.n_rows >= need:  # --all-rows would be enough
                fix = (
                    "pass --all-rows (it includes the val/test rows, so do not pass the "
                    "periods it finds to `run`) or give a longer series"
                )
            else:
                fix = "give a longer series"
            raise UserError(
                f"{ds.name}: {x.shape[0]} {what} are too few to look for periods (need "
                f"{need}); {fix}"
            )
    report = analyse(
        x, freq=ds.freq, max_candidates=args.max_candidates, columns=ds.columns, progress=True
    )

    if plot is not None:
        from ensemble.figures import save
        from periodicity.plot import periods_figure

        try:
            # "(channel mean)" as the default title has it: the top panel averages channels
            title = (
                f"{ds.name}: periodogram (channel mean) and candidate periods "
                "(F_S: seasonal strength)"
            )
            plot = save(periods_figure(x, report, title=title), plot, dpi=110)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot write the plot {plot}: {exc}") from None

    net = net_strengths(x, report)
    # a period must repeat MIN_CYCLES times in the rows to be tested
    max_tested = max(2, x.shape[0] // MIN_CYCLES)
    if args.json:
        out = {
            "dataset": ds.name,
            "rows": "all" if args.all_rows else "train",
            **report.to_dict(),
            "min_cycles": MIN_CYCLES,
            "max_period_tested": max_tested,
            "net_strength": {str(q): {"of": p, "strength": v} for q, (p, v) in net.items()},
        }
        print(json.dumps(out))
        return 0
    what = "all rows" if args.all_rows else "train rows"
    print(f"{ds.name}: {x.shape[0]} {what}, {x.shape[1]} channels, freq {ds.freq or 'unknown'}")
    verdict = (
        "seasonal"
        if report.seasonal
        else "no seasonality (no period with F_S > 0.3, or more where under 16 cycles were "
        f"measured; a period must repeat {MIN_CYCLES} times in the {x.shape[0]} rows to be "
        f"tested, so nothing above {max_tested} is)"
    )
    print("\n".join(_table(f"overall: {verdict}", report.overall)))
    print(
        "  (power: share of the detrended variance in the period's peak and harmonics; acf: "
        "autocorrelation at the period; F_S, F_T: STL seasonal and trend strength, measured "
        "on the last 16 cycles or the last 4096 rows, whichever is longer; cycles: how many "
        "cycles that stretch holds, not the rows)"
    )
    by_period = {c.period: c for c in report.overall}
    for q, (p, v) in net.items():
        print(
            f"  {q}: F_S {by_period[q].strength:.2f} counts the {p}-step cycle too (a series "
            f"periodic at {p} is periodic at {q}); with that cycle removed first: {v:.2f} "
            f"(white noise scores about 0.2)"
        )
    flat = {name for name, col in zip(report.channels, x.T, strict=True) if np.ptp(col) == 0}
    for name, cands in report.channels.items():
        # a constant channel has nothing to analyse: "no period found" would read as a finding
        title = f"channel {name}" + (
            f" (constant in the {what}: nothing to analyse)" if name in flat else ""
        )
        print("\n".join(_table(title, cands)))
    if plot is not None:
        print(f"plot: {plot}")
    return 0
