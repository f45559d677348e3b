"""`hybrid-forecast bench`: the grid datasets x horizons x seeds against published numbers."""

from __future__ import annotations

from typing import Any

from ensemble.errors import UserError
from experiments.cli import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="run the grid datasets x horizons x seeds (resumable); tables beside published numbers",
        description="Run one `run` per (dataset, horizon, seed) cell under OUT/cells/, skipping "
        "cells already done, then write bench.csv, bench.md (mean ± std over seeds, published "
        "numbers beside) and plots. Rerun the same command after a kill to resume.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--datasets", default="ETTh1,ETTh2,ETTm1,ETTm2", help="comma-separated")
    p.add_argument("--horizons", default="96,192,336,720", help="comma-separated H values")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument(
        "--seq-len",
        type=int,
        default=512,
        help="lookback L (512 as Time-LLM; DLinear's published numbers use 336)",
    )
    p.add_argument("--members", default="naive,snaive,dlinear", help="comma-separated member specs")
    p.add_argument("--router", default="mean", help="combination rule / router")
    p.add_argument("--out", default="bench", help="bench folder")
    p.add_argument(
        "--data-dir", help="folder holding ETT-small/... (default $HYBRID_FORECAST_DATA)"
    )
    p.add_argument("--features", default="M", choices=["M", "S", "MS"])
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="MEMBER.KEY=VALUE",
        help="a member default for every cell, e.g. --set dlinear.epochs=5 (repeatable)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rebuild the tables and plots from the cells already done",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=handle)


def split_list(text: str, cast: type, flag: str) -> list[Any]:
    """'96,192' -> [96, 192]; a bad item is a UserError naming the flag."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise UserError(
            f"{flag} {text!r}: expected comma-separated {cast.__name__} values"
        ) from None


def handle(args) -> int:
    from experiments.bench import BenchSpec, collect, run_bench, summarise, validate, write_reports
    from experiments.registry import parse_sets

    members = [m.strip() for m in args.members.split(",") if m.strip()]
    spec = BenchSpec(
        datasets=split_list(args.datasets, str, "--datasets"),
        horizons=split_list(args.horizons, int, "--horizons"),
        seeds=split_list(args.seeds, int, "--seeds"),
        members=members,
        router=args.router,
        seq_len=args.seq_len,
        out=args.out,
        data_dir=args.data_dir,
        member_params=parse_sets(args.set, members),
        features=args.features or "M",
    )
    failed: dict[str, str] = {}
    if args.report_only:
        validate(spec)
        write_reports(spec)
    else:
        info = run_bench(spec, progress=not args.quiet)
        failed = info["failed"]
        print(
            f"bench: {len(info['ran'])} cells ran, {len(info['skipped'])} already done, "
            f"{len(failed)} failed, in {info['seconds']:.0f}s"
        )
        for name, err in failed.items():
            print(f"  failed {name}: {err} (see {args.out}/bench.log)")
    summary = summarise(collect(spec))
    for r in summary[summary["forecast"] == "ensemble"].itertuples():
        print(f"  {r.dataset} H={r.pred_len}: ensemble test MSE {r.mse:.4f} ({r.n} seeds)")
    print(f"tables: {args.out}/bench.md, {args.out}/bench.csv")
    return 1 if failed else 0
