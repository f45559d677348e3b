"""`hybrid-forecast summary RUN_DIR...`: mean ± std over seeds of finished run folders."""

from __future__ import annotations

import re
from pathlib import Path

from ensemble.cliargs import Once, names_a_folder
from experiments.cli import HelpFormatter

# what a \label{} key may hold without escaping (no braces, backslash, %, # or spaces)
_LABEL = re.compile(r"[\w\-:./+]+")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "summary",
        help="mean ± std over seeds of finished run folders, every forecast they report",
        description="Group run folders by dataset (its file by checksum, not by path), "
        "lookback, horizon, features, members, router and the rest of config.yaml (member "
        "options; the target as the run resolved it); per group, one row per forecast "
        "(members, ensemble, mean/median, every combiner the learned router compared, oracle "
        "bound) with test MSE/MAE, val MSE and, for the combiners, the held-out rolling-origin "
        "val CV MSE the learned router chose by, mean ± std over seeds, the per-seed test MSE, "
        "and how often the ensemble beat each seed's best member on val (chosen on val, "
        "never on test) and the mean.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run folders")
    p.add_argument(
        "--out",
        action=Once,
        hint="the table goes to one file",
        help="also write the table (Markdown, JSON, LaTeX or CSV) to this file",
    )
    p.add_argument(
        "--finished-only",
        action="store_true",
        help="leave out folders without results.json (runs still going, e.g. bench/cells/* "
        "while a bench runs) instead of refusing",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON instead of Markdown")
    fmt.add_argument(
        "--latex",
        action="store_true",
        help="a LaTeX table for a thesis or paper (booktabs): a row per dataset and horizon, "
        "MSE and MAE per forecast, mean ± std over seeds, best in bold, second underlined",
    )
    fmt.add_argument(
        "--csv", action="store_true", help="tidy CSV: one row per forecast and seed, for plots"
    )
    p.add_argument(
        "--forecasts",
        metavar="A,B,...",
        help="with --latex: the columns, in order (the members, the ensemble and the mean "
        "when not given); with --csv: the forecasts to keep (all when not given)",
    )
    p.add_argument(
        "--digits",
        type=int,
        metavar="N",
        help="with --latex: decimals printed, 1 to 8 (default 3, as in the papers' tables)",
    )
    p.add_argument(
        "--label",
        metavar="KEY",
        help="with --latex: the \\label of the table, for \\ref (default tab:hybrid-forecast); "
        "give each table of a thesis its own",
    )
    p.set_defaults(func=handle)


def check_out(out: str, run_dirs: list[str], example: str = "summary.md") -> None:
    """Refuse an --out that would replace a file a run folder is made of (results.json,
    config.yaml, forecasts.npz, ...): ``summary RUN --out RUN/results.json`` would turn
    the run's results into Markdown. Nothing is written inside a summarised or any other
    run folder at all, however deep: its member caches (``members/*/forecasts.npz``) and
    ``.lock`` are its too. A bench folder's own files (``bench.md``, ``bench_spec.json``,
    ...; ``BENCH_OUTPUTS``) and its cells/ folder are refused the same way: ``summary
    bench/cells/* --json --out bench/bench_spec.json`` broke ``bench --report-only``. A
    file on the way, or a folder that takes no new file, is refused before the folders
    are read, and so is a folder (``--out sums/`` made a file named ``sums``).

    Raises:
        UserError: ``out`` has such a name and lies in a summarised or any run folder
            or a bench folder, lies anywhere inside a run folder or in a bench's cells/,
            is a folder (one there, or a path ending in a slash), or cannot be written.
    """
    from ensemble.errors import UserError
    from ensemble.io import cannot_create_in
    from experiments.bench import is_bench_folder, is_run_folder
    from experiments.run import RUN_OUTPUTS

    path = Path(out)
    if names_a_folder(out):
        raise UserError(
            f"--out {out}: a folder, where a file is to be written; give a file path there, "
            f"not a folder, e.g. {path / example}"
        )
    own = {*RUN_OUTPUTS, "config.yaml", "run.log"}
    folder = path.parent.resolve()
    summarised = {Path(d).resolve() for d in run_dirs}
    is_run = folder in summarised or (folder / "config.yaml").is_file()
    # case-blind: on Windows (and macOS) Results.json is results.json
    if path.name.lower() in {n.lower() for n in own} and is_run:
        raise UserError(
            f"--out {out} would replace the run's own {path.name}; write the summary to a "
            "file of another name or elsewhere, e.g. --out summary.md"
        )
    bench = is_bench_folder(folder)
    if path.name.lower() in {n.lower() for n in BENCH_OUTPUTS} and bench:
        raise UserError(
            f"--out {out} would replace the bench's own {path.name} (`bench --report-only` "
            "reads or rebuilds it); write the summary to a file of another name or "
            "elsewhere, e.g. --out summary.md"
        )
    if folder.name == "cells" and is_bench_folder(folder.parent):
        raise UserError(
            f"--out {out} lies in the bench's cells/ folder, which holds only its run "
            "folders (`summary bench/cells/*` would read the file as one); write the "
            "summary elsewhere, e.g. --out summary.md"
        )
    for above in path.resolve().parents:
        if above in summarised or is_run_folder(above):
            kind = "summarised run folder" if above in summarised else "run folder"
            raise UserError(
                f"--out {out} lies inside the {kind} {above}, whose files belong to the "
                "run; write the summary elsewhere, e.g. --out summary.md"
            )
    if path.exists() and not path.is_file():  # /dev/stdout, a named pipe: written as it is
        return
    near, why = cannot_create_in(path.absolute().parent)
    if why == "is a file":
        raise UserError(f"--out {out}: {near} is a file, not a folder; give another path")
    if why:
        raise UserError(
            f"--out {out}: cannot create files in {near} ({why}); give a path you can write to"
        )


# the files `hybrid-forecast bench` writes beside its cells/ (experiments.bench)
BENCH_OUTPUTS = (
    *("bench.md", "bench.csv", "bench_summary.csv", "bench.log", "bench_spec.json"),
    *("bench_mse.png", "bench_mae.png", "bench_fit_time.png"),
)


def check_format(args) -> None:
    """--forecasts and --digits shape the LaTeX table (and --forecasts the CSV) only.

    Raises:
        UserError: one of them without the format it belongs to, or digits out of range.
    """
    from ensemble.errors import UserError

    if args.forecasts is not None and not (args.latex or args.csv):
        raise UserError("--forecasts chooses the columns of --latex or the rows of --csv; add one")
    if args.forecasts is not None and not all(n.strip() for n in args.forecasts.split(",")):
        raise UserError(f"--forecasts {args.forecasts!r} has an empty name; e.g. dlinear,ensemble")
    if args.digits is not None and not args.latex:
        raise UserError("--digits sets the decimals of --latex; add --latex or drop --digits")
    if args.digits is not None and not 1 <= args.digits <= 8:
        raise UserError(f"--digits must be 1 to 8 (got {args.digits})")
    if args.label is not None and not args.latex:
        raise UserError("--label names the --latex table; add --latex or drop --label")
    if args.label is not None and not _LABEL.fullmatch(args.label):
        raise UserError(
            f"--label {args.label!r} would break the LaTeX: use letters, digits and "
            "- _ : . / +, e.g. --label tab:etth1"
        )


def handle(args) -> int:
    import json

    from ensemble.io import write_csv, write_text
    from experiments import shell
    from experiments.summary import load_groups, summary_json, summary_markdown
    from experiments.summary_export import summary_csv, summary_latex

    check_format(args)
    if args.out:
        suffix = ".csv" if args.csv else ".tex" if args.latex else ".json" if args.json else ".md"
        check_out(args.out, args.run_dirs, example=f"summary{suffix}")
    groups = load_groups(args.run_dirs, finished_only=args.finished_only)
    forecasts = [n.strip() for n in args.forecasts.split(",")] if args.forecasts else None
    if args.latex:
        flags = [
            ("--forecasts", args.forecasts),
            ("--digits", args.digits),
            ("--label", args.label),
            ("--out", args.out),
        ]
        words = [*args.run_dirs, "--latex"] + [str(w) for f, v in flags if v for w in (f, v)]
        # without it the recorded command refuses the unfinished folders this run left out
        words += ["--finished-only"] if args.finished_only else []
        command = shell.join(["hybrid-forecast", "summary", *words])
        digits = 3 if args.digits is None else args.digits
        label = args.label or "tab:hybrid-forecast"
        text = summary_latex(groups, forecasts, digits, command=command, label=label)
    elif args.csv:
        text = summary_csv(groups, forecasts)
    elif args.json:
        text = json.dumps(summary_json(groups), indent=2, allow_nan=False) + "\n"
    else:
        text = summary_markdown(groups)
    if args.out:
        (write_csv if args.csv else write_text)(args.out, text)
    print(text, end="")
    return 0
