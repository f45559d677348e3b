"""`hybrid-forecast run`: one dataset and horizon, members, router, run folder."""

from __future__ import annotations

from pathlib import Path

from ensemble.data import add_data_arguments
from experiments.cli import HelpFormatter
from experiments.config import DATA_SETTINGS, RunConfig


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="fit members and the router on one dataset/horizon; write a run folder",
        formatter_class=HelpFormatter,
    )
    add_data_arguments(p)
    p.add_argument(
        "--config", help="a config.yaml (from a run folder or `tune`); flags given here override it"
    )
    p.add_argument("--seq-len", type=int, help="lookback L (default 512)")
    p.add_argument("--pred-len", type=int, help="horizon H (default 96)")
    p.add_argument(
        "--percent", type=int, help="few-shot: keep the first PERCENT %% of train windows"
    )
    p.add_argument(
        "--members",
        help="comma-separated member specs, e.g. dlinear,arima,lightgbm,timellm "
        "(a spec may carry settings: dlinear@kernel=49; default naive)",
    )
    p.add_argument("--router", help="combination rule / router (default mean)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument(
        "--out",
        help="run folder (default: the folder of --config's config.yaml if it is a run "
        "folder, else runs/<dataset or file name>[_<features>[-<target>]][_p<percent>]"
        "_<L>_<H>_s<seed>)",
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
    from experiments.registry import parse_sets

    cfg = RunConfig.from_file(args.config) if getattr(args, "config", None) else RunConfig()
    before = cfg.to_dict()
    for key in (*DATA_SETTINGS, "data_dir", "router", "out"):
        val = getattr(args, key, None)
        if val is not None:
            setattr(cfg, key, val)
    if args.members is not None:  # --members '' is a mistake, not "the default member"
        cfg.members = [m.strip() for m in args.members.split(",") if m.strip()]
    if args.data_path and not args.dataset:
        cfg.dataset = None
    if getattr(args, "periods", None):
        try:
            cfg.periods = [int(p) for p in args.periods.split(",") if p.strip()]
        except ValueError:
            from ensemble.errors import UserError

            raise UserError(
                f"--periods {args.periods!r}: give whole numbers separated by commas, e.g. 168,24"
            ) from None
        if not cfg.periods or min(cfg.periods) < 2:
            from ensemble.errors import UserError

            raise UserError(f"--periods {args.periods!r}: each period is a whole number >= 2")
    for member, params in parse_sets(getattr(args, "set", None), cfg.members).items():
        cfg.member_params.setdefault(member, {}).update(params)
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
        _refuse_overwrite(args.config, before, cfg)
    return cfg


def _refuse_overwrite(config: str, before: dict, cfg: RunConfig) -> None:
    """Refuse ``--config F --seed 1`` (and the like) without ``--out``: it would replace
    the finished run F describes with a different one. Changing the router or the members
    keeps the folder on purpose (the members it already has are reused)."""
    from ensemble.errors import UserError

    if not cfg.out or not (Path(cfg.out) / "results.json").is_file():
        return
    changed = [k for k in (*DATA_SETTINGS, "data_dir") if before.get(k) != getattr(cfg, k)]
    if "data_path" in changed:  # --data-path also clears the dataset name: name the path
        changed.remove("data_path")
        changed.insert(0, "data_path")
    if changed:
        k = changed[0]
        raise UserError(
            f"--{k.replace('_', '-')} {getattr(cfg, k)} differs from {config} "
            f"({before.get(k)}) and would overwrite the finished run in {cfg.out}; "
            "give --out for the new run"
        )


def best_forecast(scores: dict[str, dict[str, float]]) -> str:
    """The forecast with the lowest MSE, the oracle aside (a bound, not a forecast). On a
    tie up to rounding (one member and its ensemble, summed in another order) the first
    listed wins: the member."""
    lowest = min(s["mse"] for n, s in scores.items() if n != "oracle")
    return next(
        n for n, s in scores.items() if n != "oracle" and s["mse"] <= lowest + 1e-9 * abs(lowest)
    )


def handle(args) -> int:
    from experiments.run import run

    cfg = config_from_args(args)
    # --config F --out NEW: the members F's folder holds for these settings are copied,
    # not refitted (another router, say, in its own folder)
    source = Path(args.config).parent if getattr(args, "config", None) else None
    res = run(cfg, progress=not args.quiet, reuse_from=source)
    best = best_forecast(res["test"])
    print(
        f"{res['dataset']} L={res['seq_len']} H={res['pred_len']}: test windows {res['windows']['test']}; "
        "MSE and MAE of the series standardised by their train rows' mean and std"
    )
    for name, s in res["test"].items():
        val = res["val"].get(name, {}).get("mse")  # what `tune` scored a trial by
        print(
            f"  {name:<24} test MSE {s['mse']:.4f}  MAE {s['mae']:.4f}"
            + (f"  (val MSE {val:.4f})" if val is not None else "")
            + ("  <- lowest test MSE" if name == best else "")
        )
    print(f"run folder: {cfg.out}")
    return 0
