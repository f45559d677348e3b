"""`hybrid-forecast summary RUN_DIR...`: mean ± std over seeds of finished run folders."""

from __future__ import annotations

from pathlib import Path

from experiments.cli import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "summary",
        help="mean ± std over seeds of finished run folders, every forecast they report",
        description="Group run folders by dataset, lookback, horizon, features, members, "
        "router and the rest of config.yaml (member options); per group, one row per forecast "
        "(members, ensemble, mean/median, every combiner the learned router compared, oracle "
        "bound) with test MSE/MAE and val MSE, mean ± std over seeds, the per-seed test MSE, "
        "and how often the ensemble beat its best member and the mean.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run folders")
    p.add_argument("--out", help="also write the Markdown (or with --json the JSON) to this file")
    p.add_argument("--json", action="store_true", help="JSON instead of Markdown")
    p.set_defaults(func=handle)


def check_out(out: str, run_dirs: list[str]) -> None:
    """Refuse an --out that would replace a file a run folder is made of (results.json,
    config.yaml, forecasts.npz, ...): ``summary RUN --out RUN/results.json`` would turn
    the run's results into Markdown.

    Raises:
        UserError: ``out`` has such a name and lies in a summarised or any run folder.
    """
    from ensemble.errors import UserError
    from experiments.run import RUN_OUTPUTS

    path = Path(out)
    own = {*RUN_OUTPUTS, "config.yaml", "run.log"}
    folder = path.parent.resolve()
    summarised = {Path(d).resolve() for d in run_dirs}
    is_run = folder in summarised or (folder / "config.yaml").is_file()
    if path.name in own and is_run:
        raise UserError(
            f"--out {out} would replace the run's own {path.name}; write the summary to a "
            "file of another name or elsewhere, e.g. --out summary.md"
        )


def handle(args) -> int:
    import json

    from ensemble.io import write_text
    from experiments.summary import load_groups, summary_json, summary_markdown

    if args.out:
        check_out(args.out, args.run_dirs)
    groups = load_groups(args.run_dirs)
    text = (
        json.dumps(summary_json(groups), indent=2) + "\n" if args.json else summary_markdown(groups)
    )
    if args.out:
        write_text(args.out, text)
    print(text, end="")
    return 0
