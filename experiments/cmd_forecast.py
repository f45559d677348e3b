"""`hybrid-forecast forecast RUN_DIR`: the steps after the data's last row, with a run's
trained members and router (the inference script the official Time-LLM code lacks)."""

from __future__ import annotations

import sys
from pathlib import Path

from ensemble.cliargs import Once
from experiments.cli import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "forecast",
        help="forecast the steps after the data's last row with a finished run's members "
        "and router",
        description="Load a finished run's trained members, refit its router on the run's "
        "own validation forecasts (checked against the weights the run saved), and forecast "
        "the pred_len steps after the last row of the run's data file, or of a newer copy "
        "of it (--data-path). Writes a CSV in the data's units: date, channel, the ensemble, "
        "each member and the router's weight of each member.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    p.add_argument(
        "--data-path",
        action=Once,
        hint="a forecast reads one file: run it once per file, each with its own --out",
        help="a CSV with the run's columns and newer rows (default: the run's own data file)",
    )
    p.add_argument(
        "--run-data",
        action=Once,
        hint="give the one file the run was fitted on",
        metavar="FILE",
        help="the file the run was fitted on, where config.yaml no longer finds it (a run "
        "folder moved to another machine); checked against the run's checksum",
    )
    p.add_argument(
        "--fill",
        choices=["ffill"],
        help="forward-fill NaN/inf in the --data-path file instead of failing",
    )
    p.add_argument(
        "--backbone",
        action=Once,
        hint="give the one backbone folder the run's Time-LLM members were trained on",
        metavar="DIR",
        help="the Time-LLM members' backbone folder where the run's saved path no longer "
        "finds it (a run folder moved to another machine); checked to hold the files they "
        "were trained on",
    )
    p.add_argument(
        "--out",
        action=Once,
        hint="a forecast writes one file",
        help="the CSV to write, - for stdout (default RUN_DIR/forecast.csv)",
    )
    p.set_defaults(func=handle)


def handle(args) -> int:
    from ensemble.cliargs import names_a_folder
    from ensemble.errors import UserError
    from experiments.forecast import forecast_run
    from experiments.run import RUN_OUTPUTS

    to_stdout = args.out == "-"
    out = None if to_stdout else Path(args.out or Path(args.run_dir) / "forecast.csv")
    if out is not None:
        own = {n.lower() for n in (*RUN_OUTPUTS, "config.yaml", "run.log")} - {"forecast.csv"}
        if out.name.lower() in own and (out.parent / "config.yaml").is_file():
            raise UserError(
                f"--out {out} would replace the run's own {out.name}; name another file"
            )
        _refuse_out_inside_the_run(out, Path(args.run_dir), own)
        # after the run folder's own refusals: "e.g. RUN/members/forecast.csv" misleads
        if args.out and names_a_folder(args.out):  # Path drops the slash: it wrote a file
            raise UserError(
                f"--out {args.out} is a folder; give a file name, e.g. {out / 'forecast.csv'}"
            )
        for flag, given in (("--data-path", args.data_path), ("--run-data", args.run_data)):
            if given and out.resolve() == Path(given).resolve():
                raise UserError(f"--out {out} is the {flag} file; name another file")
    fc = forecast_run(
        args.run_dir,
        args.data_path,
        run_data=args.run_data,
        out=out,
        fill=args.fill,
        backbone=args.backbone,
    )
    if to_stdout:
        # UTF-8 as the file is, whatever the console's code page: a cp1252 stdout
        # (Windows, redirected) wrote a Chinese channel name as \u9ad8 escapes
        text = fc.frame.to_csv(index=False)
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:
            print(text, end="")
        else:
            sys.stdout.flush()
            buffer.write(text.encode("utf-8"))
            buffer.flush()
        return 0
    steps = fc.frame["date"].nunique()
    mean_w = fc.weights.mean(axis=0)
    weights = ", ".join(f"{m} {w:.2f}" for m, w in zip(fc.members, mean_w, strict=True))
    # a file cut inside the run's rows forecasts from a past origin: say so, not a word less
    inside = fc.run_last is not None and fc.last < fc.run_last
    where = (
        f" (before the run's last row, {fc.run_last}: a backtest on the run's own "
        "rows, out of sample only from an origin in its test split)"
        if inside
        else ""
    )
    print(f"forecast of the {steps} steps after {fc.last} ({fc.data.name}){where}: {out}")
    print(f"router weights (mean over channels and horizon steps): {weights}")
    return 0


def _refuse_out_inside_the_run(out: Path, run_dir: Path, own: set[str]) -> None:
    """Inside the run folder, --out may only be a file of its own directly in it: not a
    member's model, the lock or another hidden file, nor a run output (through a link
    either), which the forecast reads or a later run relies on.

    Raises:
        UserError: any other path that resolves inside ``run_dir``.
    """
    from ensemble.errors import UserError

    run, target = run_dir.resolve(), out.resolve()
    if not target.is_relative_to(run):
        return
    if target.parent == run and not target.is_dir():
        name = target.name.lower()
        if not name.startswith(".") and name not in own:
            return
    raise UserError(
        f"--out {out} is inside the run folder {run_dir} among the run's own files; write "
        f"the forecast to a new file directly in it (e.g. {run_dir / 'forecast.csv'}) or "
        "outside it"
    )
