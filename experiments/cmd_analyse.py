"""`hybrid-forecast analyse RUN_DIR`: routing report (weights vs features, win rates, ablations)."""

from __future__ import annotations

from ensemble.cliargs import Once
from experiments.cli import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "analyse",
        help="routing report of a run folder: weights vs features, win rates, ablations",
        description="Write routing_report.md and PNG figures for a run folder. Ablations that "
        "need their own training are read from sibling folders RUN_DIR-<variant> "
        "(no-llm, no-prompt, no-inject or inject, patch16, period-patch) or --ablation-runs; otherwise the report "
        "prints the commands that produce them.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    p.add_argument(
        "--out",
        action=Once,
        hint="a report goes to one folder",
        help="where to write the report (default RUN_DIR)",
    )
    p.add_argument(
        "--ablation-runs",
        nargs="+",
        default=[],
        metavar="VARIANT=DIR",
        help="run folders of the training ablations, e.g. no-inject=runs/x_noinject",
    )
    p.add_argument(
        "--prompt-probe",
        action="store_true",
        help="also forecast the test windows with the saved Time-LLM under swapped and "
        "removed prompts: does it read its prompt? (3 variants plus one per prompt "
        "statistic, 7 forecasts of every test window with the default prompt: about 7 "
        "times the run's Time-LLM predict time, timings_s in results.json)",
    )
    p.add_argument(
        "--prototypes",
        action="store_true",
        help="also list the saved Time-LLM's most-used text prototypes with their nearest "
        "words, trained and at initialisation (about a minute on a CPU)",
    )
    p.add_argument(
        "--run-data",
        action=Once,
        hint="give the one file the run was fitted on",
        metavar="FILE",
        help="the data file the run was fitted on, where its config.yaml no longer finds it "
        "(a run folder moved to another machine); the feature analyses need it",
    )
    p.add_argument(
        "--backbone",
        action=Once,
        hint="give the one backbone folder the run's Time-LLM was trained on",
        metavar="DIR",
        help="the saved Time-LLM's backbone folder where the run's saved path no longer "
        "finds it (--prompt-probe, --prototypes; a run folder moved to another machine)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=handle)


def handle(args) -> int:
    from ensemble.errors import UserError
    from experiments.analyse import analyse

    if args.backbone is not None and not (args.prompt_probe or args.prototypes):
        # nothing else loads the saved Time-LLM: it would be ignored without a word
        raise UserError(
            "--backbone is read by --prompt-probe and --prototypes only; add one or drop --backbone"
        )
    runs = {}
    for item in args.ablation_runs:
        k, _, v = item.partition("=")
        if not k.strip() or not v.strip():
            raise UserError(
                f"--ablation-runs {item!r}: expected VARIANT=DIR, e.g. patch16=runs/p16"
            )
        runs[k.strip()] = v.strip()
    path = analyse(
        args.run_dir,
        out=args.out,
        ablation_runs=runs,
        prompt_probe=args.prompt_probe,
        prototypes=args.prototypes,
        progress=not args.quiet,
        run_data=args.run_data,
        backbone=args.backbone,
    )
    print(f"routing report: {path}")
    return 0
