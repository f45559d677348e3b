"""`hybrid-forecast tune`: an Optuna study over period, patch, lookback and learning-rate choices."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ensemble.cliargs import Once, refuse_empty
from ensemble.data import add_data_arguments
from experiments.cli import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="Optuna study over period, patch, lookback and learning-rate choices (resumable)",
        description="Tune on validation loss (never test). --trials is the study's total: "
        "rerun the same command after a kill and it finishes the remainder. Several "
        "processes (--jobs, or other machines with a shared --storage) can work on one study.",
        formatter_class=HelpFormatter,
    )
    add_data_arguments(
        p,
        hints={
            "dataset": "a study tunes one dataset: run a study per dataset, each with its own "
            "--out",
            "data_path": "a study tunes one file: run a study per file, each with its own --out",
        },
    )
    p.add_argument(
        "--percent",
        type=int,
        default=100,
        help="few-shot: the trials train on the first PERCENT %% of train windows",
    )
    p.add_argument("--pred-len", type=int, default=96, help="horizon H")
    p.add_argument(
        "--members",
        action=Once,
        hint="list every member in one --members, e.g. --members dlinear,timellm",
        help="comma-separated members to tune together (default dlinear)",
    )
    p.add_argument("--trials", type=int, default=30, help="total finished trials of the study")
    p.add_argument(
        "--storage",
        help="Optuna RDB URL, e.g. postgresql://user@host/db for several machines "
        "(default sqlite:///OUT/study.db)",
    )
    p.add_argument(
        "--study",
        help="study name (default <dataset>[_<features>[-<target>]][_p<percent>][_s<seed>]_<H>_"
        "<members>: features unless M, target unless OT, percent unless 100, seed unless 0)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="worker processes on this machine (no more than the trials left to run)",
    )
    p.add_argument(
        "--out",
        action=Once,
        hint="a study writes one folder",
        help="output folder (default tune/<study>; a study name holding a path or characters "
        "no folder name takes gets them replaced by _)",
    )
    p.add_argument(
        "--router",
        action=Once,
        hint="best_config.yaml names one router",
        help="router written into best_config.yaml (default mean)",
    )
    p.add_argument(
        "--seed",
        type=int,
        action=Once,
        hint="a study takes one seed: run a study per seed, each with its own --out",
        help="seed of the members' training (default 0)",
    )
    p.add_argument("--min-seq-len", type=int, default=96, help="smallest lookback")
    p.add_argument("--max-seq-len", type=int, default=720, help="largest lookback")
    p.add_argument("--max-periods", type=int, default=4, help="period candidates at most")
    p.add_argument(
        "--pruner",
        default="median",
        choices=["median", "hyperband", "none"],
        help="stops hopeless trials mid-training",
    )
    p.add_argument(
        "--val-stride",
        type=int,
        default=1,
        metavar="K",
        help="score each trial on one validation window in K (drawn at random per block; "
        "Time-LLM early-stops on the same ones): K times fewer language-model forecasts "
        "per trial; `run --config best_config.yaml` still scores every window",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="MEMBER.KEY=VALUE",
        help="a fixed member setting, e.g. --set dlinear.epochs=5 (repeatable)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=handle)


def handle(args) -> int:
    from experiments.registry import parse_sets, split_members
    from experiments.tune import TuneSpec, run_tune
    from experiments.tune_report import draws_line, importance_line, rerun_command

    refuse_empty(args, ("dataset", "data_path", "data_dir", "target", "members", "router", "out"))
    members = split_members(args.members or "dlinear")
    dataset = args.dataset or (None if args.data_path else "ETTh1")
    spec = TuneSpec(
        dataset=dataset,
        data_path=args.data_path,
        data_dir=args.data_dir,
        features=args.features or "M",
        target=args.target,
        fill=args.fill,
        percent=args.percent,
        pred_len=args.pred_len,
        members=members,
        trials=args.trials,
        storage=args.storage,
        study=args.study,
        jobs=args.jobs,
        out="",
        router=args.router or "mean",
        seed=0 if args.seed is None else args.seed,
        min_seq_len=args.min_seq_len,
        max_seq_len=args.max_seq_len,
        max_periods=args.max_periods,
        pruner=args.pruner,
        val_stride=args.val_stride,
        member_params=parse_sets(args.set, members),
    )
    if spec.study is None:
        spec.study = legacy_study(spec, args.out)
    spec.out = args.out or default_out(spec.resolved().study)
    summary = run_tune(spec, progress=not args.quiet)
    c = summary["counts"]
    print(
        f"study {summary['study']}: {c['finished']}/{summary['asked_trials']} finished "
        f"(complete {c['complete']}, pruned {c['pruned']}, error {c['error']}; "
        f"discarded {c['discarded']}, running {c['running']}, waiting {c['waiting']})"
    )
    if "best" in summary:
        b = summary["best"]
        print(
            f"best trial {b['number']}: val MSE {b['val_mse']:.5f}  L={b['seq_len']}  {b['params']}"
        )
        print(f"best config: {Path(spec.out) / 'best_config.yaml'}")
        print(f"rerun it and score it on test: {rerun_command(spec.out)}")
    for said in (draws_line(summary), importance_line(summary)):
        if said:  # which trials TPE drew at random, and what the importance rests on
            print(said)
    print(f"summary: {Path(spec.out) / 'study_summary.md'}")
    if c["finished"] < summary["asked_trials"]:
        # a worker process loops until the study is done: it died (memory, a crash)
        print(
            f"the study has {c['finished']} of {summary['asked_trials']} finished trials: its "
            f"worker processes stopped before the end (killed? their exit codes are in "
            f"{Path(spec.out) / 'tune.log'}); rerun the same command to finish it",
            file=sys.stderr,
        )
        return 1
    if c["complete"] == 0 and c["pruned"] == 0 and "first_error" in summary:
        e = summary["first_error"]
        print(
            f"no trial completed; trial {e['number']} failed with {e['error']} "
            f"(tracebacks in {Path(spec.out) / 'tune.log'})",
            file=sys.stderr,
        )
        return 1
    if c["complete"] == 0:  # every trial pruned (or some failed): nothing to choose from
        print(
            f"no trial completed ({c['pruned']} pruned, {c['error']} failed), so there is no "
            "best_config.yaml; rerun with more --trials or --pruner none",
            file=sys.stderr,
        )
        return 1
    return 0


def legacy_study(spec, out: str | None) -> str | None:
    """The name a study of these settings got before its features, target, percent and
    seed were part of the default name, when its storage (``--storage``, or the study.db
    of ``out`` or of that name's default folder) holds such a study made for these
    settings: its rerun, or another machine on a shared storage, then joins it. None
    otherwise (the current default)."""
    from dataclasses import replace

    from experiments.tune import default_study
    from experiments.tune_study import _ADDED_DEFAULTS, open_storage, sqlite_path

    old = default_study(spec, legacy=True)
    if old == default_study(spec):
        return None
    url = replace(spec, study=old, out=out or default_out(old)).resolved().storage
    path = sqlite_path(url)
    if path is not None and not path.is_file():  # nothing there (and nothing made)
        return None
    try:
        storage = open_storage(url)
        held = storage.get_study_user_attrs(storage.get_study_id_from_name(old))
    except Exception:  # no such study; a storage that cannot be opened is tune's to report
        return None
    for key in ("features", "target", "percent", "seed"):
        mine = getattr(spec, key)
        if held.get(key, _ADDED_DEFAULTS.get(key, mine)) != mine:
            return None  # another study of that name: this one gets the current name
    return old


def default_out(study: str) -> str:
    """``tune/<study>`` (where earlier studies are: their reruns resume them), unless the
    study's name is no single folder name on every system (a member spec holding a path,
    ``timellm@backbone=C:\\models\\qwen``, made nested folders): then the file-name-safe
    one of ``member_cache.member_dir``."""
    name = f"tune/{study}"
    unsafe = re.search(r'[<>:"/\\|?*\x00-\x1f]', study) or study.endswith((".", " "))
    if (not unsafe and len(study.encode()) <= 128) or (Path(name) / "study.db").is_file():
        return name
    from experiments.member_cache import member_dir

    return f"tune/{member_dir(study).rstrip('. ') or 'study'}"  # Windows drops a final dot
