"""The benchmark grid: datasets x horizons x seeds, one `run()` per cell, one table.

Each cell ``(dataset, horizon, seed)`` is an ordinary run folder under
``OUT/cells/<dataset>[_<features>]_<L>_<H>_s<seed>/``. A cell is done when its
``results.json`` passes the checks ``summary`` applies and is the cell's own (dataset,
lookback, horizon, seed), and was produced with this grid's whole config (data,
features, lookback, horizon, seed, members, router, every ``--set`` but the runtime-only
ones: progress, resume, checkpoint_minutes); done cells are skipped, whatever code ran
them, so a killed bench picks up where it stopped, and inside a half-done cell ``run()``
reuses the forecasts of members that had already finished. A Ctrl-C or SIGTERM that
Python would lose in a finalizer still stops the bench before its next cell.

Outputs (written atomically, rebuilt from the cells' results.json at the end):

* ``bench.csv``: one row per dataset / horizon / seed / forecast (test MSE and MAE,
  val MSE, fit and predict seconds, the code that ran the cell).
* ``bench.md``: mean ± std over seeds per dataset x horizon x forecast, with the
  published numbers of ``experiments/reference/published.csv`` beside ours and a
  footnote per source (lookback, protocol differences, how the number was checked);
  under a dataset's tables, ``summary``'s caveats per horizon (seeds run by different
  code, members still improving at their last epoch).
* ``bench_mse.png``, ``bench_mae.png``: error against horizon per dataset;
  ``bench_fit_time.png``: fit seconds per member.
* ``bench.log``: what ran, how long it took, what failed.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble.errors import UserError, reason
from ensemble.io import (
    FolderLock,
    held,
    stored_score,
    who_holds,
    write_csv,
    write_json,
    write_text,
)
from ensemble.progress import PROGRESS
from experiments.config import RunConfig, held_config
from experiments.interrupts import NotedInterrupts
from experiments.logfile import FolderLog, said_after_checks, said_once
from experiments.member_cache import numbers_params
from experiments.summary import Group, check_scores, code_line, code_text, still_improving_line

log = logging.getLogger("hybrid_forecast.bench")

# Forecasts that are combinations, listed after the members in tables.
_COMBINED = ("ensemble", "mean", "median", "oracle")


@dataclass
class BenchSpec:
    """What the grid runs.

    Attributes:
        datasets: registered dataset names, or paths of CSV files (70/10/20 split).
        horizons: prediction lengths H.
        seeds: random seeds; every claim is a mean and spread over these.
        members: member specs, as for ``run``.
        router: combination rule / router name.
        seq_len: lookback L (512 as Time-LLM; DLinear's published numbers use 336).
        out: the bench folder.
        data_dir: folder holding ``ETT-small/``...; None: ``$HYBRID_FORECAST_DATA``.
        member_params: per-member defaults (``--set MEMBER.KEY=VALUE``).
        features: 'M', 'S' or 'MS'.
    """

    datasets: list[str]
    horizons: list[int]
    seeds: list[int]
    members: list[str]
    router: str = "mean"
    seq_len: int = 512
    out: str = "bench"
    data_dir: str | None = None
    member_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    features: str = "M"


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    dataset: str
    seq_len: int
    pred_len: int
    seed: int
    features: str = "M"

    @property
    def name(self) -> str:
        """``<dataset>[_<features>]_<L>_<H>_s<seed>``, as a run's default folder: an S
        grid in the folder of an M grid runs beside its cells, not over them."""
        return self.tagged_name if self.features != "M" else self._name("")

    @property
    def tagged_name(self) -> str:
        """The name with the features, M included (an M cell beside an older S cell)."""
        return self._name(f"_{self.features}")

    def _name(self, feats: str) -> str:
        return f"{dataset_label(self.dataset)}{feats}_{self.seq_len}_{self.pred_len}_s{self.seed}"


def cell_folder(spec: BenchSpec, cell: Cell) -> Path:
    """``OUT/cells/<cell.name>``, but for the cells of S and MS grids run before the
    features were part of the name, which sit in the plain M name: such a cell keeps its
    folder, and an M cell goes to ``<dataset>_M_<L>_<H>_s<seed>`` beside it instead of
    replacing it."""
    cells = Path(spec.out) / "cells"
    plain = cells / Cell(cell.dataset, cell.seq_len, cell.pred_len, cell.seed).name
    held = held_features(plain)
    if cell.features == "M":
        return plain if held in (None, "M") else cells / cell.tagged_name
    own = cells / cell.name
    return plain if held == cell.features and not own.exists() else own


def held_features(folder: Path) -> str | None:
    """The features of the run a folder's config.yaml describes (M when it names none),
    None where there is no readable config. Only that key is read: a config that is
    otherwise out of date still says which grid the cell belongs to."""
    held = held_config(folder)
    return None if held is None else str(held.get("features", "M"))


def is_bench_folder(folder: Path) -> bool:
    """Whether ``folder`` is one a bench wrote: its bench_spec.json, or (a bench before
    that file, or at its first cell) a cells/ holding a run's folder (its results.json,
    or its config.yaml and run.log); a user's own cells/ is no bench."""
    if (folder / "bench_spec.json").is_file():
        return True
    cells = folder / "cells"
    return cells.is_dir() and any(
        (c / "results.json").is_file() or is_run_folder(c) for c in cells.iterdir() if c.is_dir()
    )


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` is one `run` wrote, finished or not: its config.yaml beside its
    results.json or run.log (a config.yaml alone may be a user's)."""
    return (folder / "config.yaml").is_file() and any(
        (folder / name).is_file() for name in ("results.json", "run.log")
    )


def refuse_a_run_folder(out: str | Path) -> None:
    """A bench's tables, bench_spec.json and cells/ go into a folder of their own: in a
    run folder they would lie among the run's files, and `summary` and `forecast` of it
    would take it for the run alone.

    Raises:
        UserError: ``out`` is a run folder.
    """
    if is_run_folder(Path(out)):
        raise UserError(
            f"--out {out} is a run folder (it holds a run's config.yaml); a bench writes "
            "bench.md, bench_spec.json and cells/ into a folder of its own: give another "
            "--out, e.g. --out bench"
        )


def is_csv_path(dataset: str) -> bool:
    """A grid entry naming a CSV file rather than a registered dataset."""
    return dataset.lower().endswith(".csv") or "/" in dataset


def dataset_label(dataset: str) -> str:
    """The name results.json gives a grid entry: the registered name, or the file's stem."""
    return Path(dataset).stem if is_csv_path(dataset) else dataset


def plan(spec: BenchSpec) -> list[Cell]:
    """The grid's cells, dataset-major (all horizons and seeds of one dataset together)."""
    return [
        Cell(d, spec.seq_len, h, s, spec.features)
        for d in spec.datasets
        for h in spec.horizons
        for s in spec.seeds
    ]


def cell_config(spec: BenchSpec, cell: Cell) -> RunConfig:
    """The RunConfig of one cell (its run folder lies under ``OUT/cells/``)."""
    csv = is_csv_path(cell.dataset)
    return RunConfig(
        dataset=None if csv else cell.dataset,
        data_path=cell.dataset if csv else None,
        data_dir=spec.data_dir,
        features=spec.features,
        seq_len=cell.seq_len,
        pred_len=cell.pred_len,
        members=list(spec.members),
        router=spec.router,
        seed=cell.seed,
        out=str(cell_folder(spec, cell)),
        member_params={k: dict(v) for k, v in spec.member_params.items()},
    )


def cell_done(spec: BenchSpec, cell: Cell) -> bool:
    """True when the cell's run finished with exactly this grid's settings.

    Its ``config.yaml`` must match the cell's config in everything but the folder: data
    (dataset, file, data dir, features, target), lookback, horizon, seed, members, router
    and every ``--set``. A results.json from another grid in the same folder does not
    count: the cell is rerun, and ``run()`` reuses the members it can.
    """
    folder = cell_folder(spec, cell)
    if not (folder / "results.json").is_file():
        return False
    try:
        saved = RunConfig.from_file(folder / "config.yaml").to_dict()
    except (UserError, OSError, TypeError):
        return False
    want = cell_config(spec, cell).to_dict()
    saved["out"] = want["out"]
    # the data by the file they resolve to: --data-dir naming $HYBRID_FORECAST_DATA's
    # folder is the same data as no --data-dir, not another grid (every cell rerun), and
    # a CSV's path is the file from any working directory. A cell recorded with a
    # relative path (benches before paths were made absolute) is read from the working
    # directory: done when run from where it ran, as it was then.
    files = (_data_file(saved), _data_file(want))
    if None not in files and files[0] == files[1]:
        saved["data_dir"] = want["data_dir"]
        saved["data_path"] = want["data_path"]
    # progress bars, resume and checkpoints change no number: `--set dlinear.progress=false`
    # on a resumed bench is the same grid, not every cell to run again
    saved["member_params"] = numbers_params(saved.get("member_params"))
    want["member_params"] = numbers_params(want["member_params"])
    return saved == want and cell_results(folder, cell) is not None


def _data_file(cfg: dict[str, Any]) -> Path | None:
    """The file a config's dataset / data_path / data_dir name, resolved (None where they
    name none)."""
    from ensemble.data import resolve_path

    try:
        _, path, _ = resolve_path(cfg.get("dataset"), cfg.get("data_path"), cfg.get("data_dir"))
    except (UserError, OSError, TypeError):
        return None
    return path.resolve()


def cell_results(folder: Path, cell: Cell | None = None) -> dict[str, Any] | None:
    """A cell's results.json, or None where it is damaged (`cell_damage`): such a cell is
    not done, and the next bench runs it again."""
    res, why = _read_cell(folder, cell)
    if why is not None:
        log.debug("%s is damaged (%s)", folder / "results.json", why)
    return res


def cell_damage(folder: Path, cell: Cell | None = None) -> str | None:
    """Why a cell's results.json cannot be tabulated, None where it can: it cannot be
    read (a copy cut short, an edit gone wrong), or fails the checks `summary` refuses a
    folder by (a test or val score that is no number, no ensemble), or it is not the
    cell's run (another dataset, lookback, horizon or seed: its rows would be labelled
    with the cell's seed twice)."""
    return _read_cell(folder, cell)[1]


def _read_cell(folder: Path, cell: Cell | None) -> tuple[dict[str, Any] | None, str | None]:
    from experiments.analyse import _whole

    path = folder / "results.json"
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(res, dict):
            raise TypeError("not a mapping")
        if "ensemble" not in res["test"]:
            raise KeyError("test.ensemble")
        check_scores(res)  # summary's checks: every score a number
        for s in res["test"].values():  # null: an MSE that overflowed (written as null)
            _ = [stored_score(s[k]) for k in ("mse", "mae")]
        # a run writes no NaN (null is inf): a NaN left out of a mean would leave its
        # seed counted
        for part in ("val", "test"):
            for name, s in res[part].items():
                if any(np.isnan(stored_score(s.get(k, 0.0))) for k in ("mse", "mae")):
                    raise ValueError(f"{part}.{name} holds NaN")
        found = {k: _whole(res[k], k) for k in ("seq_len", "pred_len", "seed")}
        names = {str(res["dataset"])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, reason(exc)
    if cell is not None:
        want = {"seq_len": cell.seq_len, "pred_len": cell.pred_len, "seed": cell.seed}
        for k, v in want.items():
            if found[k] != v:
                return None, f"{k} {found[k]}, not the cell's {v}"
        if not names & _dataset_names(cell.dataset):
            return None, f"dataset {res['dataset']}, not the cell's {dataset_label(cell.dataset)}"
    return res, None


def _dataset_names(dataset: str) -> set[str]:
    """The names a grid entry's results.json may give its data: the label, or, for a
    file named like a registered dataset (``etth1.csv``), that dataset's name."""
    from ensemble.data import resolve_path

    csv = is_csv_path(dataset)
    try:
        name = resolve_path(None if csv else dataset, dataset if csv else None, None)[0]
    except (UserError, OSError):
        name = dataset_label(dataset)
    return {dataset_label(dataset), name}


def warn_damaged(spec: BenchSpec, then: str) -> None:
    """Warn for each grid cell whose results.json is there but damaged (`cell_damage`),
    saying what ``then`` happens to it."""
    for c in plan(spec):
        folder = cell_folder(spec, c)
        if not (folder / "results.json").is_file():
            continue
        why = cell_damage(folder, c)
        if why is not None:
            log.warning("%s: results.json is damaged; %s (%s)", c.name, then, why)


def validate(spec: BenchSpec, check_data: bool = True) -> None:
    """Check the grid before any cell runs, so a typo fails in a second, not an hour in.

    Args:
        spec: the grid.
        check_data: also load every dataset, split it for the longest horizon and build
            every member for it (``--report-only`` reads results only: no data needed).

    Raises:
        UserError: --out a run folder, an empty axis, an unknown member / router /
            dataset, a missing or too short file, or a member setting the members refuse.
    """
    from ensemble.data import resolve_path
    from experiments import registry
    from router import make_combiner

    refuse_a_run_folder(spec.out)
    for axis in ("datasets", "horizons", "seeds"):
        values = getattr(spec, axis)
        if not values:
            raise UserError(f"--{axis} is empty: give at least one value")
        if axis != "datasets" and len(set(values)) < len(values):  # datasets: below, by label
            raise UserError(f"--{axis} lists a value twice ({values}); give each once")
    if spec.seq_len < 1 or any(h < 1 for h in spec.horizons):
        raise UserError("--seq-len and every --horizons value must be positive")
    if any(not 0 <= s < 2**32 for s in spec.seeds):
        raise UserError(f"--seeds must lie in 0 .. {2**32 - 1} (got {spec.seeds})")
    spec.members = registry.parse_members(spec.members)
    make_combiner(spec.router)
    labels = [dataset_label(d) for d in spec.datasets]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:  # their cells would share one folder and overwrite each other
        raise UserError(
            f"--datasets names {', '.join(twice)} more than once (files with the same name "
            "count as one); give each file a distinct name"
        )
    if not check_data:
        return
    for d in spec.datasets:
        csv = is_csv_path(d)
        name, path, _ = resolve_path(
            None if csv else d,
            d if csv else None,
            spec.data_dir,
            csv_hint="give a CSV file's path in --datasets (e.g. data/mine.csv)",
        )
        if not path.is_file() and csv:  # a file of the user's: nothing to download
            raise UserError(f"data file not found: {path}; check the path in --datasets")
        if not path.is_file():
            raise UserError(
                f"data file for {name} not found: {path}; run `hybrid-forecast data download {name}` "
                "or point --data-dir at the folder holding it"
            )
    for d in spec.datasets:  # after the cheap checks: a missing file fails at once
        _check_dataset(spec, d)


def _check_dataset(spec: BenchSpec, dataset: str) -> None:
    """Load one grid dataset as its cells will, split it for the longest horizon and
    build every member for it: else a short file or a bad member setting fails only when
    the grid reaches it, after the cells before it have run."""
    from ensemble.data import make_splits
    from experiments import registry

    longest = Cell(dataset, spec.seq_len, max(spec.horizons), spec.seeds[0], spec.features)
    cfg = cell_config(spec, longest)
    try:
        with said_after_checks():  # a refused file: its error alone, not its warnings too
            ds = cfg.load_dataset()
            splits = make_splits(ds, spec.seq_len, longest.pred_len)
    except UserError as exc:  # its advice names run's flags (--pred-len)
        if "too few for seq_len" not in str(exc):
            raise
        raise UserError(
            f"{str(exc).split(';')[0]}; lower --seq-len or --horizons, or leave "
            f"{dataset_label(dataset)} out of --datasets"
        ) from None
    registry.check_specs(
        spec.members,
        spec.member_params,
        seq_len=spec.seq_len,
        pred_len=longest.pred_len,
        n_channels=splits.train.n_channels,
        freq=ds.freq,
        seed=longest.seed,
        dataset=ds.name,
    )


def saved_grid(out: str | Path) -> dict[str, Any] | None:
    """The grid a bench folder ran (its ``bench_spec.json``), for ``--report-only``.

    Returns:
        The saved BenchSpec fields but ``out``; None for a bench folder from before
        bench_spec.json (cells only).

    Raises:
        UserError: the folder is missing or is no bench folder (a run folder, say), or
            its bench_spec.json cannot be read.
    """
    folder = Path(out)
    path = folder / "bench_spec.json"
    if not folder.is_dir():
        raise UserError(
            f"--out {out}: no such bench folder; --report-only rebuilds the tables of a bench "
            "that ran: give its --out"
        )
    if not path.is_file():
        if (folder / "cells").is_dir():
            return None
        raise UserError(
            f"--out {out} is not a bench folder (no bench_spec.json or cells/); --report-only "
            "rebuilds the tables of a bench that ran: give its --out"
        )
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return {
            "datasets": [str(x) for x in d["datasets"]],
            "horizons": [int(x) for x in d["horizons"]],
            "seeds": [int(x) for x in d["seeds"]],
            "members": [str(x) for x in d["members"]],
            "router": str(d["router"]),
            "seq_len": int(d["seq_len"]),
            "data_dir": None if d.get("data_dir") is None else str(d["data_dir"]),
            "member_params": dict(d.get("member_params") or {}),
            "features": str(d.get("features", "M")),
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"cannot read {path} ({type(exc).__name__}: {exc}); give the grid flags "
            "(--datasets, --horizons, --seeds, --seq-len, --members, ...) instead"
        ) from None


def check_report(spec: BenchSpec) -> None:
    """Refuse a report with no finished cell of this grid: it would replace a bench's
    tables with empty ones.

    Raises:
        UserError: naming the finished cells the folder holds and where its grid is.
    """
    if any(cell_done(spec, c) for c in plan(spec)):
        return
    finished = sorted(p.parent.name for p in (Path(spec.out) / "cells").glob("*/results.json"))
    if not finished:
        raise UserError(
            f"--report-only: {spec.out} has no finished cell yet; run the bench without "
            "--report-only first"
        )
    shown = ", ".join(finished[:6]) + (
        f" and {len(finished) - 6} more" if len(finished) > 6 else ""
    )
    grid = (
        f"datasets {','.join(map(dataset_label, spec.datasets))}, horizons "
        f"{','.join(map(str, spec.horizons))}, seeds {','.join(map(str, spec.seeds))}, "
        f"seq-len {spec.seq_len}, members {','.join(spec.members)}, router {spec.router}, "
        f"features {spec.features}"
    )
    raise UserError(
        f"--report-only: no finished cell in {spec.out} was run with {grid} (it holds "
        f"{shown}); leave out the grid flags to report the grid in "
        f"{Path(spec.out) / 'bench_spec.json'}, or give the settings its cells ran with"
    )


def _setup_logging(out: Path, progress: bool = True) -> logging.Handler:
    """bench.log; the console quiet meanwhile (INFO goes to bench.log only; the progress
    lines also to a console that is no terminal, unless ``progress`` is off)."""
    return FolderLog(out / "bench.log", echo_progress=progress)


def _log_to(out: Path, msg: str, *args: Any) -> None:
    """One INFO record into ``out/bench.log`` (not the console) outside a bench's logging."""
    handler = _setup_logging(out)
    try:
        log.info(msg, *args)
    finally:
        handler.close()


def run_bench(
    spec: BenchSpec,
    *,
    progress: bool = True,
    run_fn: Callable[[RunConfig], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run every cell not yet done, then write the tables and plots.

    The console says each warning once (every cell of a file not the published one
    would repeat it); each cell's run.log keeps its own.

    Args:
        spec: the grid.
        progress: a tqdm bar over cells.
        run_fn: runs one cell (default ``experiments.run.run`` without its own bars);
            tests pass a stub.

    Returns:
        ``{"ran": [...], "skipped": [...], "failed": {cell: error}, "seconds": float}``.
    """
    # a Ctrl-C / SIGTERM that lands while the garbage collector runs a callback is lost
    # to Python ("Exception ignored in ..."): noted, and raised again before the next cell
    with said_once(), NotedInterrupts() as interrupts:
        return _run_bench(spec, progress=progress, run_fn=run_fn, interrupts=interrupts)


def _run_bench(
    spec: BenchSpec,
    *,
    progress: bool,
    run_fn: Callable[[RunConfig], dict[str, Any]] | None,
    interrupts: NotedInterrupts,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    out = Path(spec.out)
    try:
        validate(spec)
    except UserError as exc:
        if (out / "bench.log").is_file():  # a bench resumed with bad input: its log says why
            _log_to(out, "stopped before any cell: %s", exc)
        raise
    if run_fn is None:
        from experiments.run import run

        def run_fn(cfg: RunConfig) -> dict[str, Any]:
            return run(cfg, progress=False)

    try:  # a second bench here would replace bench_spec.json with its grid, then stop
        lock = FolderLock(out)  # at the first cell this one is running
    except BlockingIOError:
        raise UserError(
            f"another bench is writing to {out}{who_holds(out)}; wait for it to finish or give "
            "another --out"
        ) from None
    try:
        handler = _setup_logging(out, progress)
    except BaseException:
        lock.release()
        raise
    t_start = time.perf_counter()
    ran: list[str] = []
    skipped: list[str] = []
    busy: list[str] = []
    failed: dict[str, str] = {}
    try:
        write_json(out / "bench_spec.json", spec.__dict__)
        cells = plan(spec)
        todo = [c for c in cells if not cell_done(spec, c)]
        skipped = [c.name for c in cells if c not in todo]
        warn_damaged(spec, "the cell is run again")
        log.info(
            "bench %s: %d cells, %d done already, %d to run; members=%s router=%s L=%d",
            out,
            len(cells),
            len(skipped),
            len(todo),
            spec.members,
            spec.router,
            spec.seq_len,
        )
        bar = tqdm(todo, desc="bench cells", unit="cell", disable=None if progress else True)
        refused: tuple[Cell, str] | None = None  # the cell before's, and its refusal
        for cell in bar:
            interrupts.check()
            bar.set_postfix_str(cell.name)
            if held(cell_folder(spec, cell)):  # a run of its own, or an analyse of it
                busy.append(cell.name)
                log.warning("cell %s: another command is using its folder; skipped", cell.name)
                continue
            t0 = time.perf_counter()
            try:
                run_fn(cell_config(spec, cell))
            except UserError as exc:
                # validate() refused what is wrong for every cell before any ran, so a
                # refusal now is this cell's (its folder holds the user's files, a member
                # failed on its data): the rest of the grid runs. Unless no cell has run
                # yet and it reads word for word as the cell before's, of another
                # dataset: the same words for two datasets are about all of them (a
                # router short of members, a missing backbone), and each further cell
                # would only say them again. Two seeds of one dataset may share a refusal
                # about that dataset alone (a GPU out of memory at its size).
                if (
                    refused is not None
                    and refused[1] == str(exc)
                    and refused[0].dataset != cell.dataset
                    and not ran
                ):
                    raise UserError(
                        f"cells {refused[0].name} and {cell.name} failed alike, as every "
                        f"cell would: {exc}"
                    ) from None
                refused = (cell, str(exc))
                failed[cell.name] = str(exc)
                log.error("cell %s failed: %s", cell.name, exc)
                continue
            except Exception as exc:  # one broken cell must not cost the rest of the grid
                failed[cell.name] = f"{type(exc).__name__}: {exc}"
                log.error("cell %s failed: %s", cell.name, failed[cell.name])
                # INFO: bench.log's only (the console is quieted to warnings meanwhile)
                log.info("cell %s: the traceback", cell.name, exc_info=True)
                refused = None
                continue
            ran.append(cell.name)
            log.info("cell %s done in %.1fs", cell.name, time.perf_counter() - t0, extra=PROGRESS)
        interrupts.check()
        write_reports(spec)
        interrupts.check()  # one lost while the tables were written: no "finished" either
        seconds = time.perf_counter() - t_start
        log.info(
            "bench finished in %.1fs: %d ran, %d skipped, %d busy, %d failed",
            seconds,
            len(ran),
            len(skipped),
            len(busy),
            len(failed),
        )
        return {
            "ran": ran,
            "skipped": skipped,
            "busy": busy,
            "failed": failed,
            "seconds": seconds,
        }
    except UserError as exc:  # INFO: the console gets the CLI's one line, not a second
        log.info("stopped: %s", exc)
        raise
    except KeyboardInterrupt:
        log.info("interrupted after %d cells; a rerun skips the finished ones", len(ran))
        raise
    finally:
        handler.close()
        lock.release()


# ---------------------------------------------------------------------------- tables


def collect(spec: BenchSpec) -> pd.DataFrame:
    """One row per finished cell and forecast: the long table behind ``bench.csv``.

    Only the cells of this grid that are done count, so a folder reused for another
    grid does not leak old numbers into the table.
    """
    rows = []
    for _, res in finished_cells(spec):
        for name, s in res["test"].items():
            tim = res.get("timings_s", {}).get(name, {})
            rows.append(
                {
                    "dataset": res["dataset"],
                    "seq_len": res["seq_len"],
                    "pred_len": res["pred_len"],
                    "seed": res["seed"],
                    "forecast": name,
                    "mse": stored_score(s["mse"]),
                    "mae": stored_score(s["mae"]),
                    "val_mse": res.get("val", {}).get(name, {}).get("mse", np.nan),
                    "fit_s": tim.get("fit", np.nan) if isinstance(tim, dict) else np.nan,
                    "predict_s": tim.get("predict", np.nan) if isinstance(tim, dict) else np.nan,
                    # fit_s and predict_s of a resumed member: the last process's part only
                    "resumed": bool(isinstance(tim, dict) and tim.get("resumed")),
                    # the analyser's periods of this cell (members use them): a grid
                    # resumed across code versions shows it here
                    "periods": "+".join(str(p) for p in res.get("periods", [])),
                    # False: a file named like a registered dataset that is not its
                    # published file (no published number belongs beside it)
                    "published": (res.get("data") or {}).get("published"),
                    # the code that ran the cell ("commit 42662df", ", modified"): a
                    # resumed bench keeps cells run by older code
                    "code": code_text(res),
                }
            )
    cols = [
        "dataset",
        "seq_len",
        "pred_len",
        "seed",
        "forecast",
        "mse",
        "mae",
        "val_mse",
        "fit_s",
        "predict_s",
        "resumed",
        "periods",
        "published",
        "code",
    ]
    return pd.DataFrame(rows, columns=cols)


def finished_cells(spec: BenchSpec) -> list[tuple[Cell, dict[str, Any]]]:
    """The grid's done cells with their results.json, in plan order."""
    done = []
    for cell in plan(spec):
        if cell_done(spec, cell):
            res = cell_results(cell_folder(spec, cell), cell)
            if res is not None:  # damaged since cell_done read it
                done.append((cell, res))
    return done


def cell_caveats(spec: BenchSpec) -> dict[str, list[str]]:
    """Dataset -> the lines `summary` adds to its table of a (dataset, H): the seeds ran
    different code of this package (a resumed bench keeps its finished cells whatever
    code made them), or a member was still improving at its last epoch."""
    groups: dict[tuple[str, int], Group] = {}
    for cell, res in finished_cells(spec):
        key = (str(res["dataset"]), cell.pred_len)
        group = groups.setdefault(
            key, Group(key[0], cell.seq_len, cell.pred_len, spec.features, (), spec.router, "")
        )
        group.runs[cell.seed] = res
    caveats: dict[str, list[str]] = {}
    for (ds, h), group in groups.items():
        # summary's own sentences (each a ["", text] pair), so the two never disagree
        for line in code_line(group) + still_improving_line(group):
            if line:
                caveats.setdefault(ds, []).append(f"H={h}: {line}")
    return caveats


def summarise(long: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN for one seed) and seed count per dataset x H x forecast.

    ``fit_s`` is the mean over the seeds whose member was not resumed (a resumed fit's
    seconds are its last part only); NaN when every seed's was.
    """
    if long.empty:
        return pd.DataFrame(
            columns=["dataset", "pred_len", "forecast", "mse", "mse_std", "mae", "mae_std", "n"]
        )
    if "resumed" in long:
        long = long.assign(fit_s=long["fit_s"].where(~long["resumed"].astype(bool)))
    # n: the seeds with a score (NaN, which a run never writes, is in no mean)
    long = long.assign(scored=long["seed"].where(long["mse"].notna()))
    g = long.groupby(["dataset", "pred_len", "forecast"], sort=False)
    out = g.agg(
        mse=("mse", "mean"),
        mse_std=("mse", "std"),
        mae=("mae", "mean"),
        mae_std=("mae", "std"),
        fit_s=("fit_s", "mean"),
        n=("scored", "nunique"),
    )
    return out.reset_index()


def _order(forecasts: list[str], members: list[str]) -> list[str]:
    """Members in the grid's order, then anything else, then the combinations."""
    first = [m for m in members if m in forecasts]
    rest = [f for f in forecasts if f not in first and f not in _COMBINED]
    return first + rest + [f for f in _COMBINED if f in forecasts]


def _lookback(pub: pd.DataFrame, model: str, source: str, ours: int) -> str:
    """`` (L=336)`` in a published column's head where its lookback is not ours: the
    table pasted alone must still say so."""
    lb = pub[(pub["model"] == model) & (pub["source"] == source)]["seq_len"].iloc[0]
    return "" if str(lb) == str(ours) else f" (L={lb})"


def _label(model: str, source: str) -> str:
    """Column head of a published number: the model, marked when it is a reproduction."""
    return f"{model}, repro." if "reproduction" in source.lower() else model


def _printed(v: float) -> float:
    """``v`` as ``_fmt`` prints it (``round`` differs from ``.3f`` at a half)."""
    return float(f"{v:.3f}")


def _fmt(mean: float, std: float, n: int, seeds: int | None = None) -> str:
    """mean ± std, saying where fewer than the grid's ``seeds`` seeds are in it, where
    every seed gave the same number, and where a seed's error overflowed."""
    if np.isnan(mean):
        return "–"
    if np.isinf(mean):
        return "inf (diverged)"
    few = f" ({n} of {seeds} seeds)" if seeds is not None and n < seeds else ""
    if n < 2 or np.isnan(std):
        return f"{mean:.3f}" + (few or (" (1 seed)" if n == 1 else ""))
    if std == 0:  # a deterministic member: "± 0.000" would read as precision
        return (
            f"{mean:.3f} ({n} of {seeds} seeds, identical)" if few else f"{mean:.3f} (every seed)"
        )
    if f"{std:.3f}" == "0.000":  # a spread below the digits, not none at all
        return f"{mean:.3f} ± <0.001{few}"
    return f"{mean:.3f} ± {std:.3f}{few}"


def bench_markdown(
    spec: BenchSpec,
    summary: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    unpublished: set[str] | frozenset[str] = frozenset(),
    caveats: dict[str, list[str]] | None = None,
) -> str:
    """The bench table: ours (mean ± std over seeds) and the published numbers beside.

    One table per dataset and metric; rows are horizons; our columns are the forecasts,
    the published columns one per (model, source), each with a footnote number, none for
    the datasets in ``unpublished`` (a file that is not the published one); after a
    dataset's tables its ``caveats`` (`cell_caveats`), one paragraph each.
    """
    from experiments.reference import load_reference

    ref = load_reference() if reference is None else reference
    lines = [
        "# Benchmark",
        "",
        f"Lookback L={spec.seq_len}; features {spec.features}; members: {', '.join(spec.members)}; "
        f"router: `{spec.router}`; seeds: {', '.join(map(str, spec.seeds))}."
        + (
            ""
            if spec.features == "M"
            else " Published numbers are multivariate (M) results and are not shown."
        ),
        "",
        "Ours: test MSE / MAE in the scaled space over **every** test window (no `drop_last`), "
        "metric over all windows at once, best-validation weights, nothing fitted on test; "
        "mean ± sample std (ddof=1) over seeds (a cell short of seeds says how many it has, "
        "and is not bold); bold: our best forecast at the printed precision, not a test of "
        "significance; `oracle` picks the best "
        "member per window on its own targets: a bound on picking one member, not on weighting them, and not a forecast. Published numbers (right of the bar `‖`) are "
        "copied from their sources with the notes below; most were produced with "
        "`drop_last=True` on the test loader (the last partial batch dropped), some with a "
        "different lookback, and Time-LLM's with the test set evaluated every epoch, so "
        "differences in the third decimal are not meaningful.",
        "",
    ]
    notes: dict[tuple[str, str], int] = {}
    labels = [dataset_label(d) for d in spec.datasets]
    done_ds = [d for d in labels if d in set(summary["dataset"])]
    missing = [d for d in labels if d not in done_ds]
    for ds in done_ds:
        sub = summary[summary["dataset"] == ds]
        forecasts = _order(list(dict.fromkeys(sub["forecast"])), spec.members)
        horizons = [h for h in spec.horizons if h in set(sub["pred_len"])]
        # published numbers are multivariate (M): beside an MS or S bench they would mislead
        pub = ref[
            (ref["dataset"] == ds)
            & (ref["pred_len"].isin(horizons))
            & (spec.features == "M")
            & (ds not in unpublished)
        ]
        pub_cols = list(dict.fromkeys(zip(pub["model"], pub["source"], strict=True)))
        for key in pub_cols:
            notes.setdefault(key, len(notes) + 1)
        for metric in ("mse", "mae"):
            head = ["oracle (bound)" if f == "oracle" else f for f in forecasts]
            head += [
                f"{_label(m, s)}{_lookback(pub, m, s, spec.seq_len)} [{notes[(m, s)]}]"
                for m, s in pub_cols
            ]
            lines += [f"## {ds} — test {metric.upper()}", ""]
            sep = len(forecasts)
            lines.append(
                "| H | "
                + " | ".join(head[:sep])
                + (" | ‖ " + " | ".join(head[sep:]) if pub_cols else "")
                + " |"
            )
            lines.append("|---" * (len(head) + 1) + "|")
            for h in horizons:
                row = sub[sub["pred_len"] == h].set_index("forecast")
                ours = [row.loc[f, metric] if f in row.index else np.nan for f in forecasts]
                # the lowest at the printed precision: a tie is bold in every tied cell
                real = [  # forecasts with every seed, the oracle (a bound) apart
                    _printed(v)
                    for f, v in zip(forecasts, ours, strict=True)
                    if f != "oracle" and f in row.index and row.loc[f, "n"] == len(spec.seeds)
                ]
                best = np.nanmin(real) if not np.all(np.isnan(real)) else np.nan
                cells = []
                for f, v in zip(forecasts, ours, strict=True):
                    if f not in row.index:
                        cells.append("–")
                        continue
                    n = int(row.loc[f, "n"])
                    txt = _fmt(v, row.loc[f, f"{metric}_std"], n, len(spec.seeds))
                    top = f != "oracle" and _printed(v) == best and n == len(spec.seeds)
                    cells.append(f"**{txt}**" if top else txt)
                pubs = []
                for m, s in pub_cols:
                    hit = pub[(pub["model"] == m) & (pub["source"] == s) & (pub["pred_len"] == h)]
                    val = hit[metric].iloc[0] if len(hit) else np.nan
                    pubs.append("–" if np.isnan(val) else f"{val:.3f}")
                lines.append(
                    f"| {h} | "
                    + " | ".join(cells)
                    + (" | ‖ " + " | ".join(pubs) if pub_cols else "")
                    + " |"
                )
            lines.append("")
        for caveat in (caveats or {}).get(ds, []):
            lines += [caveat, ""]
    if missing:
        lines += [f"No finished cells yet for: {', '.join(missing)}.", ""]
    shown = sorted(set(done_ds) & set(unpublished))
    if shown and spec.features == "M":
        lines += [
            f"No published numbers beside {', '.join(shown)}: the file is not the published "
            "one (its SHA-256 differs; results.json `data.published: false`).",
            "",
        ]
    if notes:
        lines += ["## Sources of the published numbers", ""]
        for (m, s), i in notes.items():
            r = ref[(ref["model"] == m) & (ref["source"] == s)].iloc[0]
            lb = r["seq_len"]
            lb_note = "" if str(lb) == str(spec.seq_len) else f" (ours: {spec.seq_len})"
            lines.append(
                f"[{i}] {m} — {s}. Lookback {lb}{lb_note}. Protocol: {r['protocol_note'] or 'not stated'}. "
                f"How the number was obtained: {r['checked'] or 'not stated'}."
            )
        lines.append("")
    return "\n".join(lines)


_SECONDS = ("fit_s", "predict_s")


def _csv(table: pd.DataFrame) -> str:
    """``table`` as CSV, the scores at full precision (the shortest text that reads back
    as the same float: 6 digits made ties and reruns look equal when they were not), the
    seconds rounded to 6 significant digits (timing noise has no more)."""
    secs = {
        c: pd.to_numeric(table[c], errors="coerce").map(lambda x: float(f"{x:.6g}"))
        for c in _SECONDS
        if c in table
    }
    return table.assign(**secs).to_csv(index=False)


def write_reports(spec: BenchSpec) -> pd.DataFrame:
    """Rebuild bench.csv, bench.md and the plots from the finished cells; a cell whose
    results.json is damaged is left out, with a warning (``--report-only`` too)."""
    out = Path(spec.out)
    warn_damaged(spec, "left out of the tables, and run again by a bench without --report-only")
    long = collect(spec)
    write_csv(out / "bench.csv", _csv(long))
    summary = summarise(long)
    write_csv(out / "bench_summary.csv", _csv(summary))
    unpublished = set(long.loc[long["published"].eq(False), "dataset"])
    md = bench_markdown(spec, summary, unpublished=unpublished, caveats=cell_caveats(spec))
    write_text(out / "bench.md", md)
    if not long.empty:
        try:
            plot_bench(spec, summary, out, unpublished)
        except Exception:  # a plot must never cost the tables
            log.warning("bench plots failed:\n%s", traceback.format_exc())
    return long


# ---------------------------------------------------------------------------- plots


def _plot_label(forecast: str, router: str) -> str:
    """The legend's name of one of our forecasts, as the table names it."""
    if forecast == "oracle":
        return "oracle (bound)"
    if forecast == "ensemble" and router == "mean":
        return "ensemble (= mean)"  # the mean's own line is left out: it is this one
    return forecast


def plot_bench(
    spec: BenchSpec,
    summary: pd.DataFrame,
    out: Path,
    unpublished: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Error against horizon per dataset (with seed spread), and fit time per member;
    the published numbers drawn where the table shows them (M features, the published
    file), at the grid's horizons, their lookback in the legend."""
    from ensemble.figures import pyplot, save

    plt = pyplot()

    from experiments.reference import load_reference

    ref = load_reference()
    datasets = [
        dataset_label(d) for d in spec.datasets if dataset_label(d) in set(summary["dataset"])
    ]
    for metric in ("mse", "mae"):
        fig, axes = plt.subplots(
            1, len(datasets), figsize=(4.5 * len(datasets), 3.6), squeeze=False
        )
        for ax, ds in zip(axes[0], datasets, strict=True):
            sub = summary[summary["dataset"] == ds]
            for f in _order(list(dict.fromkeys(sub["forecast"])), spec.members):
                if f == "mean" and spec.router == "mean":
                    continue  # the ensemble itself: drawn over it, it hid the ensemble
                s = sub[sub["forecast"] == f].sort_values("pred_len")
                ax.errorbar(
                    s["pred_len"],
                    s[metric],
                    yerr=s[f"{metric}_std"].fillna(0),
                    marker="o",
                    capsize=3,
                    lw=2 if f == "ensemble" else 1.2,
                    ls=":" if f == "oracle" else "-",
                    zorder=3 if f == "ensemble" else 2,  # over the lines it sits between
                    label=_plot_label(f, spec.router),
                )
            pub = ref[
                (ref["dataset"] == ds)
                & ref[metric].notna()
                & ref["pred_len"].isin(spec.horizons)
                & (spec.features == "M")
                & (ds not in unpublished)
            ]
            for (m, s), p in pub.groupby(["model", "source"], sort=False):
                p = p.sort_values("pred_len")
                lb = _lookback(p, m, s, spec.seq_len)
                ax.plot(
                    p["pred_len"],
                    p[metric],
                    ls="--" if len(p) > 1 else "none",  # one horizon: its marker alone
                    marker="x",
                    ms=6 if len(p) > 1 else 8,
                    lw=0.9,
                    label=f"{m} (pub.{lb})",
                )
            ax.set_title(ds)
            ax.set_xlabel("horizon H")
            ax.set_ylabel(f"test {metric.upper()} (scaled)")
            ax.set_xticks(spec.horizons)
            ax.grid(alpha=0.3)
        axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        save(fig, out / f"bench_{metric}.png")

    members = summary[~summary["forecast"].isin(_COMBINED)]
    if (members["fit_s"] > 0).any():
        fig, ax = plt.subplots(figsize=(7, 3.6))
        piv = members.pivot_table(index=["dataset", "pred_len"], columns="forecast", values="fit_s")
        # 0 s is a fit under the 1 ms results.json records: no bar on a log axis, a mark
        piv.where(piv > 0).plot.bar(ax=ax, logy=True)
        # bars rise from a decade below the shortest fit, not from wherever autoscale stops
        drawn = piv[piv > 0]
        ax.set_ylim(10 ** (np.floor(np.log10(drawn.min().min())) - 1), 2 * drawn.max().max())
        for bars, col in zip(ax.containers, piv.columns, strict=True):
            for bar, v in zip(bars.patches, piv[col], strict=True):
                if v == 0:
                    ax.text(
                        bar.get_x() + bar.get_width() / 2,
                        0.02,
                        "<1 ms",
                        transform=ax.get_xaxis_transform(),  # x in data, y in axes
                        rotation=90,
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
        ax.set_ylabel("fit seconds (log)")
        ax.set_title("mean over the seeds not resumed", fontsize=8)
        ax.set_xlabel("")
        ax.legend(fontsize=7)
        save(fig, out / "bench_fit_time.png")
