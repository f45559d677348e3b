"""`hybrid-forecast summary RUN_DIR...`: mean ± std over seeds of finished run folders."""

from __future__ import annotations

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


def handle(args) -> int:
    import json

    from ensemble.io import write_text
    from experiments.summary import load_groups, summary_json, summary_markdown

    groups = load_groups(args.run_dirs)
    text = (
        json.dumps(summary_json(groups), indent=2) + "\n" if args.json else summary_markdown(groups)
    )
    if args.out:
        write_text(args.out, text)
    print(text, end="")
    return 0
