"""`hybrid-forecast bench`: the grid datasets x horizons x seeds against published numbers."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ensemble.cliargs import Once, refuse_empty
from ensemble.errors import UserError
from experiments.cli import HelpFormatter

if TYPE_CHECKING:
    from experiments.bench import BenchSpec


# What a bench runs when a grid flag is not given (--report-only: the bench's own grid).
GRID_DEFAULTS: dict[str, Any] = {
    "datasets": "ETTh1,ETTh2,ETTm1,ETTm2",
    "horizons": "96,192,336,720",
    "seeds": "0,1,2",
    "seq_len": 512,
    "members": "naive,snaive,dlinear",
    "router": "mean",
    "features": "M",
    "data_dir": None,
}

# A value "" of these is a slip (an unset shell variable), not "the default": refused
_NOT_EMPTY = ("datasets", "horizons", "seeds", "members", "router", "out", "data_dir")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="run the grid datasets x horizons x seeds (resumable); tables beside published numbers",
        description="Run one `run` per (dataset, horizon, seed) cell under OUT/cells/, skipping "
        "cells already done, then write bench.csv, bench.md (mean ± std over seeds, published "
        "numbers beside) and plots. Rerun the same command after a kill to resume.",
        formatter_class=HelpFormatter,
    )

    # Grid flags default to None: --report-only takes what is not given from the bench's
    # bench_spec.json, a run from GRID_DEFAULTS (the help states them). Each is given
    # once: argparse would keep the last (`--seeds 0 --seeds 1` ran seed 1 alone).
    def listed(flag: str, example: str) -> str:
        return f"list every value in one {flag}, e.g. {flag} {example}"

    p.add_argument(
        "--datasets",
        action=Once,
        hint=listed("--datasets", "ETTh1,ETTm1"),
        help=f"comma-separated (default {GRID_DEFAULTS['datasets']})",
    )
    p.add_argument(
        "--horizons",
        action=Once,
        hint=listed("--horizons", "96,192"),
        help=f"comma-separated H values (default {GRID_DEFAULTS['horizons']})",
    )
    p.add_argument(
        "--seeds",
        action=Once,
        hint=listed("--seeds", "0,1,2"),
        help=f"comma-separated seeds (default {GRID_DEFAULTS['seeds']})",
    )
    p.add_argument(
        "--seq-len",
        type=int,
        action=Once,
        hint="a bench has one lookback: run a bench per --seq-len, each with its own --out",
        help="lookback L (default 512 as Time-LLM; DLinear's published numbers use 336)",
    )
    p.add_argument(
        "--members",
        action=Once,
        hint=listed("--members", "naive,dlinear"),
        help=f"comma-separated member specs (default {GRID_DEFAULTS['members']})",
    )
    p.add_argument(
        "--router",
        action=Once,
        hint="a bench has one router: run a bench per --router, each with its own --out",
        help="combination rule / router (default mean)",
    )
    p.add_argument(
        "--out", action=Once, hint="a bench writes one folder", help="bench folder (default bench)"
    )
    p.add_argument(
        "--data-dir",
        action=Once,
        hint="give one folder",
        help="folder holding ETT-small/... (default $HYBRID_FORECAST_DATA, else ./dataset)",
    )
    p.add_argument(
        "--features",
        action=Once,
        hint="a bench has one feature setting: run a bench per setting, each with its own --out",
        choices=["M", "S", "MS"],
        help="default M",
    )
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
        help="run nothing: rebuild the tables and plots of the bench in --out from its "
        "finished cells; grid flags not given are those of its bench_spec.json",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=handle)


def split_list(text: str, cast: type, flag: str) -> list[Any]:
    """'96,192' -> [96, 192]; a bad item is a UserError naming the flag. An empty item
    (``0,,1``: an unset shell variable) is refused, not dropped, as ``--seeds ''`` is
    (a value given twice: `experiments.bench.validate`)."""
    items = [t.strip() for t in text.split(",")]
    if "" in items:
        raise UserError(
            f"{flag} {text!r} has an empty item; give the values separated by single commas"
        )
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise UserError(
            f"{flag} {text!r}: expected comma-separated {cast.__name__} values"
        ) from None


def grid_spec(args) -> BenchSpec:
    """The grid of the command line; with --report-only, unset flags come from the
    bench's bench_spec.json (so the tables are rebuilt for the grid that ran)."""
    from experiments.bench import BenchSpec, is_csv_path, saved_grid
    from experiments.cmd_run import warn_spec_wins
    from experiments.registry import parse_sets

    refuse_empty(args, _NOT_EMPTY)
    if args.out is None:
        args.out = "bench"
    saved = saved_grid(args.out) if args.report_only else None

    def pick(name: str) -> Any:
        given = getattr(args, name)
        if given is not None:
            return given
        return saved[name] if saved is not None else GRID_DEFAULTS[name]

    def axis(name: str, cast: type) -> list[Any]:
        value = pick(name)
        return split_list(value, cast, f"--{name}") if isinstance(value, str) else value

    def absolute(path: str | None) -> str | None:
        """The same file from any working directory (cells' config.yaml rerun anywhere)."""
        return None if path is None else str(Path(path).expanduser().resolve())

    members = axis("members", str)
    if args.set or saved is None:
        member_params = parse_sets(args.set, members)
        warn_spec_wins(members, member_params)
    else:
        member_params = saved["member_params"]
    return BenchSpec(
        datasets=[absolute(d) if is_csv_path(d) else d for d in axis("datasets", str)],
        horizons=axis("horizons", int),
        seeds=axis("seeds", int),
        members=members,
        router=pick("router"),
        seq_len=pick("seq_len"),
        out=args.out,
        data_dir=absolute(pick("data_dir")),
        member_params=member_params,
        features=pick("features"),
    )


def handle(args) -> int:
    from experiments.bench import (
        check_report,
        collect,
        run_bench,
        summarise,
        validate,
        write_reports,
    )

    spec = grid_spec(args)
    failed: dict[str, str] = {}
    busy: list[str] = []
    left_out = other_grids_cells(spec)  # before this grid's bench_spec.json replaces theirs
    if args.report_only:
        validate(spec, check_data=False)  # tables from results alone: no data needed
        check_report(spec)
        write_reports(spec)
    else:
        info = run_bench(spec, progress=not args.quiet)
        failed, busy = info["failed"], info["busy"]
        print(
            f"bench: {len(info['ran'])} cells ran, {len(info['skipped'])} already done, "
            + (f"{len(busy)} busy, " if busy else "")
            + f"{len(failed)} failed, in {info['seconds']:.0f}s"
        )
        for name, err in failed.items():
            print(f"  failed {name}: {err} (see {Path(args.out) / 'bench.log'})")
        for name in busy:
            print(f"  busy {name}: another command was using its folder; rerun the bench later")
    summary = summarise(collect(spec))
    for r in summary[summary["forecast"] == "ensemble"].itertuples():
        print(
            f"  {r.dataset} H={r.pred_len}: ensemble test MSE {r.mse:.4f} ({r.n} seed{'s' if r.n != 1 else ''})"
        )
    print(f"tables: {Path(args.out) / 'bench.md'}, {Path(args.out) / 'bench.csv'}")
    warn_left_out(spec, *left_out)
    return 1 if failed or busy else 0


def other_grids_cells(spec: BenchSpec) -> tuple[list[str], list[str]]:
    """The finished cells in ``spec.out`` that are not this grid's (another --seq-len,
    --datasets, --features ... ran there), and how the grid of its bench_spec.json
    differs from this one ("seq-len 512, not 96"; [] where it is this grid or absent)."""
    from experiments import registry
    from experiments.bench import cell_folder, plan, saved_grid

    cells = Path(spec.out) / "cells"
    ours = {cell_folder(spec, c).name for c in plan(spec)}
    others = sorted(
        p.parent.name for p in cells.glob("*/results.json") if p.parent.name not in ours
    )
    try:
        saved = saved_grid(spec.out) if (Path(spec.out) / "bench_spec.json").is_file() else None
    except UserError:  # damaged: the bench writes it again
        saved = None
    differs = []
    for key, theirs in (saved or {}).items():
        mine = getattr(spec, key)
        if key == "members":  # as bench_spec.json spells them (validate's)
            with contextlib.suppress(UserError):  # a bad one: validate's error says it
                mine = registry.parse_members(mine)
        if key == "member_params" or theirs == mine:
            continue
        shown = [",".join(map(str, v)) if isinstance(v, list) else v for v in (theirs, mine)]
        differs.append(f"{key.replace('_', '-')} {shown[0]}, not {shown[1]}")
    if saved is not None and saved["member_params"] != spec.member_params:
        differs.append("other --set values")
    return others, differs


def warn_left_out(spec: BenchSpec, others: list[str], differs: list[str]) -> None:
    """One line naming the finished cells of other grids that this grid's tables leave
    out: a new grid in the same --out runs beside them (README), and bench.md and
    bench.csv are then of the last grid only."""
    import logging

    from experiments import shell

    if not others:
        return
    shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
    grid = f" (bench_spec.json: {'; '.join(differs)})" if differs else ""
    report = shell.join(["hybrid-forecast", "bench", "--report-only", "--out", spec.out])
    logging.getLogger("hybrid_forecast.bench").warning(
        "%d finished cell(s) of another grid%s in %s are left out of bench.md and "
        "bench.csv: %s; `%s` with that grid's flags writes their tables, and a grid of "
        "its own --out keeps them apart",
        len(others),
        grid,
        Path(spec.out) / "cells",
        shown,
        report,
    )
