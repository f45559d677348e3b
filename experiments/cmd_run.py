"""`hybrid-forecast run`: one dataset and horizon, members, router, run folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ensemble.cliargs import Once, refuse_empty
from ensemble.data import add_data_arguments
from ensemble.errors import UserError
from experiments.cli import HelpFormatter
from experiments.config import DATA_SETTINGS, RunConfig

log = logging.getLogger("hybrid_forecast.run")

# A value "" of these is a slip (an unset shell variable), not "the default": refused
_NOT_EMPTY = ("config", "dataset", "data_path", "data_dir", "target", "router", "out", "periods")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="fit members and the router on one dataset/horizon; write a run folder",
        formatter_class=HelpFormatter,
    )
    add_data_arguments(
        p,
        hints={
            "dataset": "a run reads one dataset: run once per dataset, or "
            "`hybrid-forecast bench --datasets ETTh1,ETTh2` for a grid of them",
            "data_path": "a run reads one file: run once per file, or "
            "`hybrid-forecast bench --datasets a.csv,b.csv` for a grid of them",
        },
    )
    p.add_argument(
        "--config",
        action=Once,
        hint="give one config file; flags given beside it override its settings",
        help="a config.yaml (from a run folder or `tune`); flags given here override it",
    )
    p.add_argument("--seq-len", type=int, help="lookback L (default 512)")
    p.add_argument("--pred-len", type=int, help="horizon H (default 96)")
    p.add_argument(
        "--percent",
        type=int,
        help="few-shot: keep the first PERCENT %% of train windows (default 100: all)",
    )
    p.add_argument(
        "--members",
        action=Once,
        hint="list every member in one --members, e.g. --members naive,dlinear",
        help="comma-separated member specs, e.g. dlinear,arima,lightgbm,timellm "
        "(a spec may carry settings: dlinear@kernel=49; default naive)",
    )
    p.add_argument(
        "--router",
        action=Once,
        hint="a run has one router; `analyse` refits the others on its forecasts, or run "
        "once per --router, each with its own --out",
        help="combination rule / router (default mean)",
    )
    p.add_argument(
        "--seed",
        type=int,
        action=Once,
        hint="a run takes one seed: run once per seed (a shell loop), or "
        "`hybrid-forecast bench --seeds 0,1,2` for a table over seeds",
        help="random seed (default 0)",
    )
    p.add_argument(
        "--out",
        action=Once,
        hint="a run writes one folder",
        help="run folder (default: the folder of --config's config.yaml if it is a run "
        "folder, else runs/<dataset or file name>[_<features>[-<target>]][_p<percent>]"
        "_<L>_<H>_s<seed>; the `out` a config file names is ignored, so a config copied "
        "out of its run folder never writes back into that run)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="MEMBER.KEY=VALUE",
        help="a member default, e.g. --set timellm.llm_layers=2 (repeatable)",
    )
    p.add_argument(
        "--periods",
        help="comma-separated ranked seasonal periods handed to the members instead of the "
        "analyser's, e.g. 168,24 (default: detected on the train rows)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=handle)


def config_from_args(args) -> RunConfig:
    from experiments.registry import base_names, parse_sets, split_members

    refuse_empty(args, _NOT_EMPTY)
    cfg = RunConfig()
    if getattr(args, "config", None):
        cfg = RunConfig.from_file(args.config)
        _drop_stray_params(args.config, cfg)
    before = cfg.to_dict()
    for key in (*DATA_SETTINGS, "data_dir", "router", "out"):
        val = getattr(args, key, None)
        if val is not None:
            setattr(cfg, key, val)
    if args.members is not None:  # --members '' is a mistake, not "the default member"
        cfg.members = split_members(args.members)
        # the file's settings of members this run leaves out would do nothing (and make
        # the config.yaml it writes one that is refused)
        bases = base_names(cfg.members)
        cfg.member_params = {k: v for k, v in cfg.member_params.items() if k in bases}
    if args.data_path and not args.dataset:
        cfg.dataset = None
    if getattr(args, "periods", None):
        cfg.periods = parse_periods(args.periods)
    for member, params in parse_sets(getattr(args, "set", None), cfg.members).items():
        cfg.member_params.setdefault(member, {}).update(params)
    warn_spec_wins(cfg.members, cfg.member_params)
    for key in ("data_path", "data_dir"):  # the same file from any working directory
        if getattr(cfg, key):
            setattr(cfg, key, str(Path(getattr(cfg, key)).expanduser().resolve()))
        if before.get(key):
            before[key] = str(Path(before[key]).expanduser().resolve())
    if getattr(args, "config", None) and args.out is None:
        folder = Path(args.config).parent
        if Path(args.config).name.lower() == "config.yaml" and (folder / "run.log").is_file():
            # a run folder's own config reruns into that folder, wherever it was copied
            cfg.out = str(folder)
        else:
            # any other config (a copy, tune's best_config.yaml) names no folder: its `out`
            # may be the run it was copied from, which this run would replace
            if cfg.out:
                log.warning(
                    "%s names out: %s, which only a run folder's own config.yaml does; "
                    "writing the default folder instead (give --out %s to write there)",
                    args.config,
                    cfg.out,
                    cfg.out,
                )
            cfg.out = None
        _refuse_overwrite(args.config, before, cfg)
    return cfg


def parse_periods(text: str) -> list[int]:
    """``--periods 168,24`` -> [168, 24]. An empty item (``24,,12``: an unset shell
    variable) and a period given twice are slips, refused, not dropped or kept: the
    members take the first periods of the ranked list, and a repeat is one of them.

    Raises:
        UserError: an item that is empty, not a whole number, below 2, or a repeat.
    """
    items = [t.strip() for t in text.split(",")]
    if "" in items:
        raise UserError(
            f"--periods {text!r} has an empty item; give whole numbers separated by "
            "commas, e.g. 168,24"
        )
    try:
        periods = [int(t) for t in items]
    except ValueError:
        raise UserError(
            f"--periods {text!r}: give whole numbers separated by commas, e.g. 168,24"
        ) from None
    if min(periods) < 2:
        raise UserError(f"--periods {text!r}: each period is a whole number >= 2")
    twice = sorted({p for p in periods if periods.count(p) > 1})
    if twice:
        raise UserError(
            f"--periods {text!r} lists {', '.join(map(str, twice))} twice; give each period once"
        )
    return periods


def _drop_stray_params(config: str, cfg: RunConfig) -> None:
    """Settings in a config file's member_params for a member not among its members do
    nothing: dropped with a warning (versions before 2026-12-07 wrote such files when
    ``--members`` left a member out, and their runs must rerun as they ran)."""
    from experiments.registry import base_names

    stray = sorted(set(cfg.member_params) - base_names(cfg.members))
    if stray:
        members = cfg.members if isinstance(cfg.members, str) else ", ".join(cfg.members)
        log.warning(
            "%s: member_params has settings for %s, not among its members (%s): they do "
            "nothing and are left out",
            config,
            ", ".join(map(repr, stray)),
            members,
        )
        cfg.member_params = {k: v for k, v in cfg.member_params.items() if k not in stray}


def warn_spec_wins(members: list[str], member_params: dict[str, dict[str, Any]]) -> None:
    """Say once where a spec's own ``@key=value`` hides a --set (or member_params) value
    for the same key: the spec's is used, for that spec only."""
    from experiments.registry import parse_spec

    hidden = []
    for spec in members:
        base, own = parse_spec(spec)
        shared = member_params.get(base, {})
        hidden += [
            f"{spec} keeps {k}={own[k]} (not {shared[k]})"
            for k in own
            if k in shared and own[k] != shared[k]
        ]
    if hidden:
        log.warning(
            "a member spec's own settings win over --set and member_params: %s",
            "; ".join(hidden),
        )


def _refuse_overwrite(config: str, before: dict, cfg: RunConfig) -> None:
    """Refuse ``--config F --seed 1`` (and the like) without ``--out``: it would replace
    the finished run F describes with a different one. Given periods count: they change
    every member's forecasts. Changing the router or the members (``--set``) keeps the
    folder on purpose: the members it already has are reused, the others refitted (the
    warning that the results are replaced names them)."""
    from experiments.run import same_data_dir, the_runs_periods

    if not cfg.out or not (Path(cfg.out) / "results.json").is_file():
        return
    changed = [
        k
        for k in (*DATA_SETTINGS, "data_dir", "periods")
        if before.get(k) != getattr(cfg, k)
        and not (k == "data_dir" and same_data_dir(before.get(k), cfg.data_dir))
        and not (k == "periods" and the_runs_periods(cfg.out, before.get(k), cfg.periods))
    ]
    if "data_path" in changed:  # --data-path also clears the dataset name: name the path
        changed.remove("data_path")
        changed.insert(0, "data_path")
    if changed:
        k = changed[0]

        def shown(v: Any) -> Any:
            return ",".join(map(str, v)) if isinstance(v, list) else v

        raise UserError(
            f"--{k.replace('_', '-')} {shown(getattr(cfg, k))} differs from {config} "
            f"({shown(before.get(k))}) and would overwrite the finished run in {cfg.out}; "
            "give --out for the new run"
        )


def handle(args) -> int:
    from experiments.bench import is_bench_folder
    from experiments.interrupts import NotedInterrupts
    from experiments.report import BEST_ON_VAL, best_member_on_val
    from experiments.run import run

    cfg = config_from_args(args)
    if cfg.out and is_bench_folder(Path(cfg.out)):  # its cells are runs, the folder is not
        raise UserError(
            f"--out {cfg.out} is a bench folder (it holds bench_spec.json or cells/); a run "
            "writes a folder of its own: give another --out"
        )
    # --config F --out NEW: the members F's folder holds for these settings are copied,
    # not refitted (another router, say, in its own folder)
    source = Path(args.config).parent if getattr(args, "config", None) else None
    # the folder F's own: a finished run there of other data is refused, not replaced
    own = source is not None and args.out is None and cfg.out == str(source)
    mine = f"--config {args.config}" if own else None
    # a Ctrl-C / SIGTERM that lands while the garbage collector runs a callback is lost
    # to Python ("Exception ignored in ..."): noted, and still the command's end (130, or
    # 143 for SIGTERM) after the member being fitted is saved, or once `run` returns
    with NotedInterrupts() as interrupts:
        res = run(
            cfg,
            progress=not args.quiet,
            reuse_from=source,
            refuse_other_data=mine,
            between=interrupts.check,
        )
        interrupts.check()
    # the member a choice by validation takes: a mark by test MSE would be a choice on test
    best = best_member_on_val(res)
    print(
        f"{res['dataset']} L={res['seq_len']} H={res['pred_len']}: test windows {res['windows']['test']}; "
        "MSE and MAE of the series standardised by their train rows' mean and std"
    )
    for name, s in res["test"].items():
        val = res["val"].get(name, {}).get("mse")  # what `tune` scored a trial by
        print(
            f"  {name:<24} test MSE {s['mse']:.4f}  MAE {s['mae']:.4f}"
            + (f"  (val MSE {val:.4f})" if val is not None else "")
            + (f"  <- {BEST_ON_VAL}" if name == best else "")
        )
    print(f"run folder: {cfg.out}")
    return 0
