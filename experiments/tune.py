"""Optuna tuning of period, patch, lookback and learning-rate choices, scored on validation only.

A trial picks a period among the analyser's candidates (train rows only; calendar
periods when the analyser finds nothing), a lookback that is a multiple of it, and each
member's own choices (DLinear's moving-average kernel and learning rate, Time-LLM's
patch length / stride and learning rate, ...). It fits the members on train, early-stops
them on val and returns the val MSE (of the members' equal-weight mean when there are
several). The test split is never loaded into a trial's score.

Pruning: the first member that can report a per-epoch validation loss (an ``on_epoch``
attribute its training loop calls with ``(epoch, val_loss)``) feeds the pruner, which
stops hopeless trials mid-training. Members without the hook report their epoch history
after fitting, so the pruner still learns the curves of later trials.

Exactly N trials, whatever happens: ``--trials N`` is the study's total of finished
trials (COMPLETE, PRUNED, or FAIL with an ``error`` attribute: a configuration that
crashes is a result too). Every worker loops "start a trial while fewer than N are
finished, running or waiting". Trials hold a heartbeat in the storage; a trial whose
process was killed stops beating, is marked FAIL after ``GRACE_S`` seconds (at once
when that process ran on this machine and is gone) and its parameters are enqueued
again (Optuna's heartbeat retry callback), so a restart finishes the remainder with
nothing lost. Two workers racing for the last slot are
settled by trial number: a trial that finds N claimed trials numbered below its own
marks itself ``surplus`` (FAIL, not counted) before doing any work.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import signal
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ensemble.errors import UserError
from ensemble.io import write_csv, write_json, write_text
from experiments.config import RunConfig

log = logging.getLogger("hybrid_forecast.tune")

HEARTBEAT_S = 10  # a running trial writes its heartbeat this often
GRACE_S = 40  # ... and counts as dead (killed) after this long without one
POLL_S = 5.0  # how often an idle worker looks again while others finish the last trials

# Members whose factories take a `progress` flag (their bars would garble parallel workers).
_QUIET_MEMBERS = ("dlinear", "nlinear", "patchtst", "itransformer")


@dataclass
class TuneSpec:
    """What a study tunes, and where it lives.

    Attributes:
        dataset: registered dataset name (or None with ``data_path``).
        pred_len: horizon H.
        members: member specs (`dlinear`, `patchtst@lr=0.001`; each base name at most once;
            settings given with @ or --set are kept, not tuned).
        trials: the study's total number of finished trials.
        out: output folder (log, plots, best config; the default SQLite file).
        storage: an Optuna RDB URL (``sqlite:///...``, ``postgresql://...``);
            None: ``sqlite:///OUT/study.db``.
        study: study name; None: ``<dataset>_<H>_<members>``.
        jobs: worker processes on this machine.
        data_path, data_dir, features: as for ``run``.
        router: written into the exported config (the study itself scores members only).
        seed: seeds the members' weights and shuffling, and the sampler (with the number
            of trials already in the study and the worker's index: the same command draws
            the same configurations; restarted or parallel workers do not repeat each
            other's draws).
        min_seq_len, max_seq_len: bounds of the lookback.
        max_periods: at most this many period candidates.
        pruner: 'median', 'hyperband' or 'none'.
        member_params: fixed member settings (``--set MEMBER.KEY=VALUE``), not tuned.
        heartbeat_s, grace_s: heartbeat period of a running trial, and the silence after
            which it counts as killed (tests shorten them).
    """

    dataset: str | None
    pred_len: int
    members: list[str]
    trials: int
    out: str = "tune"
    storage: str | None = None
    study: str | None = None
    jobs: int = 1
    data_path: str | None = None
    data_dir: str | None = None
    features: str = "M"
    router: str = "mean"
    seed: int = 0
    min_seq_len: int = 96
    max_seq_len: int = 720
    max_periods: int = 4
    pruner: str = "median"
    member_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    heartbeat_s: int = HEARTBEAT_S
    grace_s: int = GRACE_S

    def resolved(self) -> TuneSpec:
        """A copy with the default storage URL and study name filled in."""
        d = asdict(self)
        name = self.dataset or Path(self.data_path or "custom").stem
        d["study"] = self.study or f"{name}_{self.pred_len}_{'+'.join(self.members)}"
        if not self.storage:
            d["storage"] = f"sqlite:///{(Path(self.out) / 'study.db').resolve()}"
        elif "://" not in self.storage:  # a bare path: a SQLite file
            d["storage"] = f"sqlite:///{Path(self.storage).resolve()}"
        return TuneSpec(**d)


# ---------------------------------------------------------------------------- search space


def lookback_range(period: int, lo: int, hi: int) -> tuple[int, int] | None:
    """Smallest and largest multiple of ``period`` within ``[lo, hi]``, or None."""
    first = max(1, math.ceil(lo / period)) * period
    last = (hi // period) * period
    return (first, last) if first <= last else None


def period_candidates(periods: list[int], lo: int, hi: int, k: int) -> list[int]:
    """The first ``k`` periods (in the analyser's rank order) with a multiple in ``[lo, hi]``."""
    out: list[int] = []
    for p in periods:
        p = int(p)
        if p >= 2 and p not in out and lookback_range(p, lo, hi) is not None:
            out.append(p)
    return out[:k]


def patch_choices(period: int, seq_len_max: int) -> list[str]:
    """Patch-length/stride choices for one period, as 'patch/stride' strings.

    Uses ``periodicity.patch_candidates`` when the analyser offers it (half-overlapping
    patches), each also without overlap (patch = stride: about half the tokens, so
    about half the time of a Time-LLM step); otherwise the period's divisors between 4
    and 64 (a patch covers a whole fraction of a cycle), with the official 16/8
    included, each with half-overlap and without overlap; none longer than
    ``seq_len_max``.
    """
    try:
        from periodicity import patch_candidates

        got = patch_candidates([period], seq_len_max)
        pairs = [(int(c[0]), int(c[1])) for c in got]
        if pairs:
            with_flat = {f"{p}/{s}" for p, s in pairs} | {f"{p}/{p}" for p, _ in pairs}
            return sorted(with_flat, key=_patch_key)
    except (ImportError, TypeError, ValueError, IndexError, KeyError):
        pass
    lengths = {d for d in range(4, 65) if period % d == 0} | {16}
    if period <= 64:
        lengths.add(period)
    lengths = sorted(lengths)[-4:] if len(lengths) > 4 else sorted(lengths)
    lengths = sorted(set(lengths) | {16})
    # a patch longer than the lookback does not fit (Time-LLM pads only one stride)
    lengths = [n for n in lengths if n <= seq_len_max] or [max(1, min(period, seq_len_max))]
    out = {f"{p}/{max(1, p // 2)}" for p in lengths} | {f"{p}/{p}" for p in lengths}
    return sorted(out, key=_patch_key)


def _patch_key(s: str) -> tuple[int, int]:
    p, st = s.split("/")
    return int(p), int(st)


def _lr(trial, member: str, lr_range: tuple[float, float], fixed: set[str]) -> dict[str, float]:
    """The tuned learning rate, unless the user fixed it."""
    if "lr" in fixed:
        return {}
    return {"lr": trial.suggest_float(f"{member}.lr", *lr_range, log=True)}


def _space_dlinear(trial, period: int, seq_len: int, attrs: dict, fixed: set[str]) -> dict:
    from classical.dlinear import kernel_from_period

    out: dict[str, Any] = _lr(trial, "dlinear", (1e-4, 3e-2), fixed)
    if "kernel" in fixed:
        return out
    mode = trial.suggest_categorical("dlinear.kernel_mode", ["period", "free"])
    if mode == "period":  # one full cycle of the chosen period (24 -> 25)
        kernel = kernel_from_period(period, seq_len)
    else:
        kernel = trial.suggest_int("dlinear.kernel", 3, 75, step=2)
        kernel = min(kernel, seq_len - (1 - seq_len % 2))
    return {"kernel": int(kernel), **out}


def _space_nlinear(trial, period: int, seq_len: int, attrs: dict, fixed: set[str]) -> dict:
    return _lr(trial, "nlinear", (1e-4, 3e-2), fixed)


def _space_itransformer(trial, period: int, seq_len: int, attrs: dict, fixed: set[str]) -> dict:
    return _lr(trial, "itransformer", (1e-5, 1e-3), fixed)  # no period-derived setting


def _space_snaive(trial, period: int, seq_len: int, attrs: dict, fixed: set[str]) -> dict:
    return {} if "period" in fixed else {"period": int(period)}


def _patch_space(member: str, lr_range: tuple[float, float]) -> Callable[..., dict[str, Any]]:
    """A patched member's space: a patch/stride among the period's choices, and lr."""

    def space(trial, period: int, seq_len: int, attrs: dict, fixed: set[str]) -> dict:
        out: dict[str, Any] = _lr(trial, member, lr_range, fixed)
        if fixed & {"patch_len", "stride"}:  # the user's patch (or stride) stands
            return out
        choices = attrs["patch_choices"][str(period)]
        key = trial.suggest_categorical(f"{member}.patch_p{period}", choices)
        patch, stride = _patch_key(key)
        return {"patch_len": patch, "stride": stride, **out}

    return space


# member base name -> its tuned settings, given (trial, period, seq_len, study attrs, the
# settings the user fixed with @key=value or --set, which are never tuned over)
SPACES: dict[str, Callable[..., dict[str, Any]]] = {
    "dlinear": _space_dlinear,
    "nlinear": _space_nlinear,
    "snaive": _space_snaive,
    "timellm": _patch_space("timellm", (1e-4, 1e-2)),
    "patchtst": _patch_space("patchtst", (3e-5, 3e-3)),
    "itransformer": _space_itransformer,
}


# What each space tunes, in groups drawn together: a group is tuned only when the user
# fixed none of its keys (a fixed patch_len keeps its stride out of the search too).
TUNED_GROUPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "dlinear": (("kernel",), ("lr",)),
    "nlinear": (("lr",),),
    "snaive": (("period",),),
    "timellm": (("patch_len", "stride"), ("lr",)),
    "patchtst": (("patch_len", "stride"), ("lr",)),
    "itransformer": (("lr",),),
}


def search_space(spec: TuneSpec) -> dict[str, list[str]]:
    """The settings the study tunes per member (base name): part of its identity, so that
    a resume never mixes trials that tuned a setting with trials that kept it fixed."""
    from experiments.registry import parse_spec

    out = {}
    for m in spec.members:
        base, own = parse_spec(m)
        fixed = set(own) | set(spec.member_params.get(base, {}))
        keys = [k for g in TUNED_GROUPS.get(base, ()) if not fixed & set(g) for k in g]
        if keys:
            out[base] = sorted(keys)
    return out


def _space_before_fixed_settings(spec: TuneSpec) -> dict[str, list[str]]:
    """What studies made before the setting above tuned: every key of a member named
    without @settings, whatever the user fixed."""
    return {
        m: sorted(k for g in TUNED_GROUPS[m] for k in g) for m in spec.members if m in TUNED_GROUPS
    }


def trial_periods(period: int, ranked: list[int], k: int = 3) -> list[int]:
    """The ranked periods a trial's members get, the chosen one first: ``run``'s own
    (the analyser's first ``k``) when it is the analyser's top period; exported as the
    best config's ``periods`` so that rerunning it builds the same members."""
    return ([int(period)] + [int(p) for p in ranked if int(p) != int(period)])[:k]


def suggest(trial, spec: TuneSpec, attrs: dict) -> tuple[int, int, dict[str, dict[str, Any]]]:
    """Draw one configuration: (period, seq_len, tuned member params by base name).

    The lookback parameter is named per period (``seq_len_p24``) because its allowed
    values, the multiples of that period, differ from period to period.
    """
    period = int(trial.suggest_categorical("period", attrs["periods"]))
    lo, hi = lookback_range(period, attrs["min_seq_len"], attrs["max_seq_len"])
    seq_len = trial.suggest_int(f"seq_len_p{period}", lo, hi, step=period)
    from experiments.registry import parse_spec

    tuned = {}
    for m in spec.members:
        base, own = parse_spec(m)
        if base in SPACES:
            fixed = set(own) | set(spec.member_params.get(base, {}))
            tuned[base] = SPACES[base](trial, period, seq_len, attrs, fixed)
    return period, seq_len, tuned


# ---------------------------------------------------------------------------- trial states


class SurplusTrial(Exception):
    """A trial started after the study already had its N trials claimed."""


def _counts(study) -> dict[str, int]:
    """Trial counts by what they mean for the N-trials budget."""
    from optuna.trial import TrialState

    c = {"complete": 0, "pruned": 0, "error": 0, "running": 0, "waiting": 0, "discarded": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.PRUNED:
            c["pruned"] += 1
        elif t.state == TrialState.FAIL:
            c["error" if "error" in t.user_attrs else "discarded"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.state == TrialState.WAITING:
            c["waiting"] += 1
    c["finished"] = c["complete"] + c["pruned"] + c["error"]
    c["claimed"] = c["finished"] + c["running"] + c["waiting"]
    return c


def _claims(t) -> bool:
    """Does this trial use one of the N slots (finished, or on its way to finishing)?"""
    from optuna.trial import TrialState

    if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING):
        return True
    return t.state == TrialState.FAIL and "error" in t.user_attrs


# ---------------------------------------------------------------------------- storage


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S):
    """An RDB storage with heartbeats, and a retry of every trial found dead."""
    import optuna
    from optuna.storages import RDBStorage

    try:
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

        retry_arg = "heartbeat_stale_trial_callback"
    except ImportError:  # optuna < 4.9: the same callback under its older names
        from optuna.storages import RetryFailedTrialCallback as Retry

        retry_arg = "failed_trial_callback"

    kwargs: dict[str, Any] = {}
    if url.rstrip("/") == "sqlite:" or ":memory:" in url:
        raise UserError(
            f"--storage {url}: an in-memory database is gone when the command ends and is "
            "not shared with --jobs workers; give a file (sqlite:///study.db) or a server"
        )
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        existing = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise UserError(
                f"--storage {url}: {existing} is a file, not a folder; put study.db in a folder"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        import sqlite3

        try:
            _retry_while_created_elsewhere(lambda: _sqlite_wal(path))
        except sqlite3.Error as exc:
            raise UserError(
                f"--storage {url}: locked by another process for too long ({exc}); wait "
                "for it to finish or name another file"
            ) from None
        # several processes share one file: wait for the write lock instead of failing
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}

    def connect():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                heartbeat_interval=heartbeat_s,
                grace_period=grace_s,
                **{retry_arg: Retry(max_retry=3)},
                **kwargs,
            )

    try:
        return _retry_while_created_elsewhere(connect)
    except (ImportError, ModuleNotFoundError) as exc:
        raise UserError(
            f"--storage {url}: the database driver is missing ({exc}); install it "
            "(e.g. psycopg2 for PostgreSQL) or use a sqlite:/// URL"
        ) from None
    except UserError:
        raise
    except Exception as exc:  # sqlalchemy's errors: bad URL, unreachable server
        raise UserError(f"--storage {url}: cannot open ({str(exc).splitlines()[0]})") from None


# What a storage says while another process, started at the same moment, creates it:
# the file is locked while it turns to WAL, or the tables appear between check and create.
_CREATED_ELSEWHERE = ("database is locked", "already exists", "UNIQUE constraint failed")


def _retry_while_created_elsewhere(make: Callable[[], Any], tries: int = 6) -> Any:
    """``make()``, tried again (up to ``tries`` times, 0.5 s to 3 s apart) while it fails
    because another worker or command is creating the same storage at the same time."""
    for attempt in range(tries):
        try:
            return make()
        except Exception as exc:
            text = str(exc.__cause__ or exc) + str(exc)
            if attempt == tries - 1 or not any(m in text for m in _CREATED_ELSEWHERE):
                raise
            log.info("storage being created by another process (%s); retrying", text[:80])
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _sqlite_wal(path: Path) -> None:
    """WAL journal: readers (progress polls) never block the writer. Persistent per file."""
    import sqlite3

    try:
        con = sqlite3.connect(path, timeout=10)  # retried by the caller while created
        try:
            con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()
    except sqlite3.Error as exc:
        if any(m in str(exc) for m in _CREATED_ELSEWHERE):
            raise  # another process creating it: tried again by the caller
        raise UserError(
            f"--storage {path}: not a usable SQLite database file ({exc}); "
            "name a new file or an existing study.db"
        ) from None


def _sampler_and_pruner(spec: TuneSpec, n: int, seed: int | None = None):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=max(3, min(10, n // 3)),
            multivariate=True,
            group=True,  # the space is conditional (per-period lookbacks, kernel modes)
            constant_liar=True,  # parallel workers do not all pile onto one region
        )
    if spec.pruner == "median":
        # judged from the third epoch on: DLinear's ETTh1 validation curve is not monotone
        # (at n_warmup_steps=2 the trial that ended best without pruning was pruned)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3)
    elif spec.pruner == "hyperband":
        pruner = optuna.pruners.HyperbandPruner()
    else:
        pruner = optuna.pruners.NopPruner()
    return sampler, pruner


def study_attrs(spec: TuneSpec, dataset=None) -> dict[str, Any]:
    """What a study is about; written once, checked on every later open.

    Raises:
        UserError: no period candidate fits the lookback bounds, or the longest lookback
            they allow does not fit the data.
    """
    from ensemble.data import make_splits
    from experiments.run import data_fingerprint, detect_periods

    dataset = _load(spec) if dataset is None else dataset
    # The train rows are the same for every lookback; the smallest L keeps the check cheap.
    splits = make_splits(dataset, spec.min_seq_len, spec.pred_len)
    ranked = detect_periods(splits, k=10)
    periods = period_candidates(ranked, spec.min_seq_len, spec.max_seq_len, spec.max_periods)
    if not periods:
        from periodicity.spectrum import calendar_periods

        periods = period_candidates(
            calendar_periods(dataset.freq), spec.min_seq_len, spec.max_seq_len, spec.max_periods
        )
    if not periods:
        raise UserError(
            f"no period candidate with a multiple in [{spec.min_seq_len}, {spec.max_seq_len}] "
            f"(analyser found {ranked}); widen --min-seq-len/--max-seq-len"
        )
    longest = max(lookback_range(p, spec.min_seq_len, spec.max_seq_len)[1] for p in periods)
    try:  # else every trial drawing a long lookback fails, and the study still exits 0
        make_splits(dataset, longest, spec.pred_len)
    except UserError as exc:
        raise UserError(
            f"--max-seq-len {spec.max_seq_len} allows lookbacks the data cannot hold "
            f"({str(exc).split(';')[0]}); lower --max-seq-len"
        ) from None
    return {
        **_identity(spec),
        "data": data_fingerprint(dataset),
        "periods": periods,
        "ranked_periods": [int(p) for p in ranked],
        # a patch must fit the period's shortest lookback: the patch is drawn before it
        "patch_choices": {
            str(p): patch_choices(p, lookback_range(p, spec.min_seq_len, spec.max_seq_len)[0])
            for p in periods
        },
    }


# What the classical members' loss is under --features MS since the twenty-eighth session
# (the target's, as the Time-Series-Library's; every channel's before).
MS_LOSS = "target"


def _identity(spec: TuneSpec) -> dict[str, Any]:
    """The settings a study's trials depend on: resuming it with others would mix two
    experiments in one "best" (and export the wrong one)."""
    return {
        "dataset": spec.dataset or Path(spec.data_path or "").stem,
        "pred_len": spec.pred_len,
        "members": list(spec.members),
        "features": spec.features,
        **({"ms_loss": MS_LOSS} if spec.features == "MS" else {}),
        "seed": spec.seed,
        "member_params": spec.member_params,
        "min_seq_len": spec.min_seq_len,
        "max_seq_len": spec.max_seq_len,
        "max_periods": spec.max_periods,
        "search_space": search_space(spec),
    }


def _check_folder_study(spec: TuneSpec) -> None:
    """Refuse a folder whose reports belong to another study: its best_config.yaml,
    trials.csv and summaries would be replaced by this one's (the default study name
    holds the dataset, horizon and members, so another of them is another study)."""
    held = Path(spec.out) / "tune_spec.json"
    if not held.is_file():
        return
    try:
        other = json.loads(held.read_text(encoding="utf-8")).get("study")
    except (ValueError, AttributeError, OSError):
        return  # damaged: the rerun rewrites it
    if other and other != spec.study:
        raise UserError(
            f"{spec.out} holds the reports of study {other!r}, not {spec.study!r} (another "
            f"dataset, horizon or member list); give another --out, or --study {other} to "
            "continue that one"
        )


def check_identity(spec: TuneSpec, attrs: dict[str, Any], dataset=None) -> None:
    """Refuse to resume a study made for other settings or data.

    Raises:
        UserError: naming the first setting that differs.
    """
    from experiments.run import data_fingerprint

    mine = {
        **_identity(spec),
        "data": data_fingerprint(_load(spec) if dataset is None else dataset),
    }
    if "search_space" not in attrs and _space_before_fixed_settings(spec) != mine["search_space"]:
        raise UserError(
            f"study {spec.study!r} in {spec.storage} tuned settings you fix now (it was made "
            "before fixed settings were kept out of the search); start a new study in "
            "another --out (with another --study name if --storage is shared)"
        )
    if "ms_loss" in mine and "ms_loss" not in attrs:
        raise UserError(
            f"study {spec.study!r} in {spec.storage} was made before --features MS trained "
            "the classical members on the target alone: its trials' scores are of the old "
            "all-channel fits; start a new study in another --out (with another --study name "
            "if --storage is shared)"
        )
    for key, value in mine.items():
        if key in attrs and attrs[key] != value:
            what = "the data file's values" if key == "data" else f"{key}={attrs[key]!r}"
            now = "changed" if key == "data" else f"not {value!r}"
            raise UserError(
                f"study {spec.study!r} in {spec.storage} was made for {what}, {now}; "
                "rerun with the study's settings, or start a new study in another --out "
                "(with another --study name if --storage is shared)"
            )


def _study_state(spec: TuneSpec, dataset) -> dict[str, Any] | None:
    """The attributes a new study gets, or None when it exists and suits ``spec``.

    Touches nothing on disk for a new SQLite study (its file is made later, with the
    study), so a refusal here leaves no empty study or folder behind.
    """
    spec = spec.resolved()  # the storage URL and study name filled in
    url = spec.storage
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        return study_attrs(spec, dataset)
    storage = open_storage(url, spec.heartbeat_s, spec.grace_s)
    try:
        held = storage.get_study_user_attrs(storage.get_study_id_from_name(spec.study))
    except KeyError:  # no such study (yet) in this storage
        return study_attrs(spec, dataset)
    if "periods" not in held:  # made by a start that stopped before writing them
        return study_attrs(spec, dataset)
    check_identity(spec, held, dataset)
    return None


def open_study(spec: TuneSpec, create: bool = False, new_attrs: dict[str, Any] | None = None):
    """Create (once) or load the study, checking it was made for the same task.

    Each trial's sampler is seeded from ``--seed``, the number of trials finished before
    it, the worker's index and the trials started before it still running (`trial_seed`):
    the same command draws the same configurations, interrupted and resumed or not (with
    one worker: parallel workers draw in the order their trials happen to finish), and
    parallel workers or commands do not repeat each other's draws.

    Args:
        spec: the resolved spec.
        create: create the study unless it exists.
        new_attrs: a new study's attributes when already computed (``validate``).
    """
    import optuna

    storage = open_storage(spec.storage, spec.heartbeat_s, spec.grace_s)
    sampler, pruner = _sampler_and_pruner(spec, spec.trials)
    if create:
        study = optuna.create_study(
            storage=storage,
            study_name=spec.study,
            direction="minimize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        attrs = study.user_attrs
        if "periods" not in attrs:  # new: its attributes are this spec's, nothing to check
            for k, v in (new_attrs or study_attrs(spec)).items():
                study.set_user_attr(k, v)
            return study
        from experiments.run import data_fingerprint

        dataset = _load(spec)
        check_identity(spec, attrs, dataset)
        mine = {**_identity(spec), "data": data_fingerprint(dataset)}
        for key, value in mine.items():
            if key not in attrs:  # a study from an older version: record what it can
                study.set_user_attr(key, value)
        return study
    study = optuna.load_study(
        study_name=spec.study, storage=storage, sampler=sampler, pruner=pruner
    )
    return study  # `_trials_until_done` seeds the sampler before each trial


# ---------------------------------------------------------------------------- objective


def _load(spec: TuneSpec):
    from ensemble.data import load_dataset

    return load_dataset(
        spec.dataset,
        data_path=spec.data_path,
        data_dir=spec.data_dir,
        features=spec.features,
    )


def attach_epoch_callback(member: Any, callback: Callable[[int, float], None]) -> bool:
    """Hand the member a per-epoch hook if it has one (an ``on_epoch`` attribute)."""
    if hasattr(member, "on_epoch"):
        member.on_epoch = callback
        return True
    return False


class EpochReporter:
    """Feeds per-epoch validation losses to the pruner and stops a hopeless trial.

    Args:
        trial: the Optuna trial.
        live: False to only record the values (training already over: nothing to save).
    """

    def __init__(self, trial, live: bool = True):
        self.trial = trial
        self.live = live
        self.reported: set[int] = set()

    def __call__(self, epoch: int, val_loss: float) -> None:
        import optuna

        if epoch in self.reported or not np.isfinite(val_loss):
            return
        self.reported.add(epoch)
        self.trial.report(float(val_loss), step=int(epoch))
        if self.live and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} (val {val_loss:.4f})")


class Objective:
    """Fits the members of one trial on train and returns their val MSE.

    Args:
        spec: the study's spec.
        attrs: the study's attributes (period candidates, patch choices).
    """

    def __init__(self, spec: TuneSpec, attrs: dict[str, Any]):
        self.spec = spec
        self.attrs = attrs
        self.dataset = _load(spec)

    def __call__(self, trial) -> float:
        study = trial.study
        claimed_before = sum(
            1 for t in study.get_trials(deepcopy=False) if t.number < trial.number and _claims(t)
        )
        if claimed_before >= self.spec.trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number}: {self.spec.trials} trials already claimed")
        try:
            return self._evaluate(trial)
        except KeyboardInterrupt:
            # Optuna marks it FAIL; the next start queues its parameters again
            # (`requeue_interrupted`), as the heartbeat retry does for a killed trial
            with contextlib.suppress(Exception):
                trial.set_user_attr("interrupted", True)
            raise
        except Exception as exc:
            import optuna

            if not isinstance(exc, optuna.TrialPruned):
                # recorded, so the trial counts as finished and is not retried forever
                message = f"{type(exc).__name__}: {exc}"[:500]
                trial.set_user_attr("error", message)
                log.warning("trial %d failed: %s (traceback in tune.log)", trial.number, message)
                log.info("trial %d traceback:\n%s", trial.number, traceback.format_exc())
            raise

    def _evaluate(self, trial) -> float:
        from ensemble import metrics
        from ensemble.data import make_splits
        from experiments import registry

        spec = self.spec
        # first: a rerun on this machine fails the trial of a killed process at once
        trial.set_user_attr("worker", os.getpid())
        trial.set_user_attr("host", machine_identity())
        period, seq_len, tuned = suggest(trial, spec, self.attrs)
        trial.set_user_attr("seq_len", seq_len)
        trial.set_user_attr("member_params", tuned)
        splits = make_splits(self.dataset, seq_len, spec.pred_len)
        ch = splits.eval_channels
        val_true = splits.val.targets()[..., ch]
        periods = trial_periods(period, self.attrs["ranked_periods"])
        trial.set_user_attr("periods", periods)
        reporter = EpochReporter(trial)
        pruning_member = None
        forecasts = []
        t0 = time.perf_counter()
        for spec_m in spec.members:
            base, _ = registry.parse_spec(spec_m)
            params = {**spec.member_params.get(base, {}), **tuned.get(base, {})}
            if base in _QUIET_MEMBERS:
                params.setdefault("progress", False)
            ctx = registry.MemberContext(
                seq_len=seq_len,
                pred_len=spec.pred_len,
                n_channels=splits.train.n_channels,
                freq=splits.dataset.freq,
                periods=periods,
                seed=spec.seed,
                dataset=splits.dataset.name,
                params=params,
                workdir=None,
            )
            member = registry.build(spec_m, ctx)
            live = pruning_member is None and attach_epoch_callback(member, reporter)
            if live:
                pruning_member = spec_m
            member.fit(splits.train, splits.val)
            history = getattr(member, "history", None)
            if pruning_member is None and history:
                # no live hook: report the curve afterwards (the pruner learns from it)
                pruning_member = spec_m
                reporter.live = False
                for h in history:
                    if "val_mse" in h:
                        reporter(int(h["epoch"]), float(h["val_mse"]))
            f = np.asarray(member.predict(splits.val.windows()))[..., ch]
            trial.set_user_attr(f"val_mse.{spec_m}", metrics.mse(f, val_true))
            forecasts.append(f.astype(np.float64))
        value = metrics.mse(np.mean(forecasts, axis=0), val_true)
        trial.set_user_attr("fit_s", round(time.perf_counter() - t0, 2))
        log.info(
            "trial %d: period %d L=%d %s -> val MSE %.4f",
            trial.number,
            period,
            seq_len,
            tuned,
            value,
        )
        return value


# ---------------------------------------------------------------------------- workers


def _setup_logging(out: Path) -> logging.Handler:
    import optuna

    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "tune.log", encoding="utf-8")
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    )
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    for h in root.handlers:  # INFO to tune.log only; the console gets warnings
        if h is not handler and type(h) is logging.StreamHandler:
            h.setLevel(max(h.level, logging.WARNING))
    # Optuna's own messages (trial finished / pruned) go to tune.log, not the console.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    return handler


class _NotedInterrupts:
    """Note each SIGINT / SIGTERM as it arrives, the handler before still raising it.

    Python swallows an exception raised in a finalizer: a Ctrl-C that lands while the
    garbage collector runs a ``__del__`` (tqdm's, after a trial) is printed as "Exception
    ignored" and the study runs on. ``check()`` between trials raises it again.
    Installed from the main thread only (elsewhere signals cannot be handled).
    """

    def __init__(self) -> None:
        self.noted: list[tuple[int, Callable]] = []
        self._installed: dict[int, tuple[Callable, Callable]] = {}

    def __enter__(self) -> _NotedInterrupts:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            before = signal.getsignal(sig)
            if not callable(before):  # ignored, or the system default: nothing swallowed
                continue

            def note(signum: int, frame: Any, before: Callable = before) -> None:
                self.noted.append((signum, before))
                before(signum, frame)

            signal.signal(sig, note)
            self._installed[sig] = (note, before)
        # ... and not printed as "Exception ignored in ...", with a traceback, when it was:
        # `check()` raises it again
        self._hook = sys.unraisablehook

        def hook(unraisable: Any, before: Callable = self._hook) -> None:
            if not isinstance(unraisable.exc_value, KeyboardInterrupt):
                before(unraisable)

        sys.unraisablehook = hook
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, (note, before) in self._installed.items():
            if signal.getsignal(sig) is note:  # not replaced since (a worker's "once only")
                signal.signal(sig, before)
        if getattr(self, "_hook", None) is not None:
            sys.unraisablehook = self._hook

    def check(self) -> None:
        """Raise the first noted interrupt again, as its handler raised it."""
        if self.noted:
            signum, before = self.noted[0]
            before(signum, None)
            raise KeyboardInterrupt  # a handler that returned: still an interrupt


class _QuietInterrupt(logging.Filter):
    """Optuna's own "Trial N failed ..." warnings, each with a full traceback, become INFO
    records without it (tune.log keeps them): the objective has already logged a failed
    trial as one warning line plus its traceback in tune.log.

    Ctrl-C is not a failed trial: after a KeyboardInterrupt every warning is demoted, so
    the console shows only the CLI's one line. The trial itself is FAIL without an
    ``error`` attribute: not counted, so a rerun resumes the study."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0] if record.exc_info else None
        if exc is not None and issubclass(exc, KeyboardInterrupt):
            self.interrupted = True
        failed = record.levelno > logging.INFO and "failed" in record.getMessage()
        if self.interrupted or failed:
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def work(
    spec: TuneSpec,
    on_progress: Callable[[dict[str, int]], None] | None = None,
    worker: int = 0,
) -> None:
    """One worker: run trials until the study has ``spec.trials`` finished ones.

    Args:
        spec: the resolved spec (the study must exist).
        on_progress: called with the trial counts after each step (a progress bar).
        worker: this worker's index among the command's (seeds its sampler).
    """
    study = open_study(spec)
    objective = Objective(spec, study.user_attrs)
    quiet = _QuietInterrupt()
    optuna_log = logging.getLogger("optuna.study._optimize")  # where failed trials are logged
    optuna_log.addFilter(quiet)
    try:
        with _NotedInterrupts() as interrupts:
            _trials_until_done(spec, study, objective, on_progress, interrupts, worker)
    finally:
        optuna_log.removeFilter(quiet)


def trial_seed(seed: int, finished: int, worker: int, ahead: int = 0) -> int:
    """The sampler's seed for the trial that starts after ``finished`` finished trials,
    with ``ahead`` trials started before it still running (other commands' or workers'):
    those drew at the same count, and must not be drawn again."""
    return int(
        np.random.SeedSequence(
            [seed, finished, worker, *([ahead] if ahead else [])]
        ).generate_state(1)[0]
    )


def _seeded_at_trial_start(spec: TuneSpec, worker: int):
    """A sampler seeded (`trial_seed`) when its trial starts, from the study as it is then.

    Seeding it before ``study.optimize`` instead gave two commands starting a trial at
    the same finished count the same draw (two `tune` commands on one study), as it did
    a rerun's fresh trial beside the killed one it had not failed yet.
    """
    import optuna
    from optuna.trial import TrialState

    class Sampler(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self.inner = _sampler_and_pruner(spec, spec.trials, spec.seed)[0]

        def before_trial(self, study, trial) -> None:
            # counted on the whole study: under Hyperband ``study`` is the trial's bracket,
            # whose counts repeat across brackets (the same seed, the same draw)
            whole = getattr(study, "_study", study)
            running = whole.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            ahead = sum(t.number < trial.number for t in running)
            seed = trial_seed(spec.seed, _counts(whole)["finished"], worker, ahead)
            self.inner = _sampler_and_pruner(spec, spec.trials, seed)[0]
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, name, distribution):
            return self.inner.sample_independent(study, trial, name, distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.inner.reseed_rng()

    return Sampler()


def machine_identity() -> str:
    """This machine and process namespace, for telling whether a trial's process can be
    looked up from here: the host name, and on Linux the boot id (cloned machines share a
    name) and the PID namespace (containers share the host's name and kernel, not its
    PIDs)."""
    parts = [socket.gethostname()]
    for read in (
        lambda: Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip(),
        lambda: os.readlink("/proc/self/ns/pid"),
    ):
        try:
            parts.append(read())
        except OSError:
            parts.append("?")
    return "/".join(parts)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine may still run (when unsure: yes, and the
    heartbeat decides)."""
    if os.name == "nt":  # os.kill(pid, 0) there sends Ctrl-C to pid's console group
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def fail_dead_local_trials(study) -> None:
    """Fail, and queue again as the heartbeat's retry does, the running trials of a
    process of this machine that is gone (killed). Without it a rerun right after a kill
    waits out the heartbeat grace, drawing fresh trials beside the dead one meanwhile,
    and the study no longer draws what it would have drawn uninterrupted."""
    import copy

    from optuna.trial import TrialState

    storage, host = study._storage, machine_identity()
    get_retry = getattr(storage, "get_heartbeat_stale_trial_callback", None) or getattr(
        storage, "get_failed_trial_callback", lambda: None
    )
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("worker")
        if t.user_attrs.get("host") != host or not isinstance(pid, int) or pid == os.getpid():
            continue
        if _alive(pid):
            continue
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except RuntimeError:  # failed by another process first (UpdateFinishedTrialError
            continue  # from optuna 4, a plain RuntimeError before)
        log.info("trial %d: its process (%d) is gone; it is run again", t.number, pid)
        retry = get_retry()
        if retry is not None:
            retry(study, copy.deepcopy(storage.get_trial(t._trial_id)))


def requeue_interrupted(study) -> None:
    """Queue again, once each, the parameters of trials stopped by Ctrl-C or SIGTERM
    (FAIL, ``interrupted``), so that a resumed study runs them as the uninterrupted one
    did. A killed trial is queued by the heartbeat retry instead."""
    from optuna.trial import TrialState

    done = set(study.user_attrs.get("requeued", []))
    todo = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if t.user_attrs.get("interrupted") and t.number not in done
    ]
    for t in todo:
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        done.add(t.number)
        log.info("trial %d was interrupted: its parameters are queued again", t.number)
    if todo:
        study.set_user_attr("requeued", sorted(done))


def _trials_until_done(
    spec: TuneSpec,
    study: Any,
    objective: Objective,
    on_progress: Callable[[dict[str, int]], None] | None,
    interrupts: _NotedInterrupts,
    worker: int = 0,
) -> None:
    """``work``'s loop: one trial at a time (or a wait for others' trials) until done."""
    import optuna
    from optuna.storages import fail_stale_trials

    waited = False
    while True:
        interrupts.check()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)  # a killed worker's trial: FAIL, and queued again
        fail_dead_local_trials(study)  # the same at once, for a process of this machine
        c = _counts(study)
        if on_progress:
            on_progress(c)
        if c["finished"] >= spec.trials:
            break
        if c["waiting"] > 0 or c["claimed"] < spec.trials:
            waited = False
            # seeded by the trial's place in the study, not by what this start drew before:
            # a study stopped and resumed draws what it would have drawn uninterrupted
            study.sampler = _seeded_at_trial_start(spec, worker)
            with warnings.catch_warnings():  # optuna < 4.9 calls fail_stale_trials in it
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        else:
            if not waited:
                # on the console when this is the command's only process: a wait of a
                # minute with nothing said looks like a hang
                log.log(
                    logging.WARNING if on_progress is not None else logging.INFO,
                    "%d trial(s) running elsewhere; waiting for them (a killed one is retried "
                    "after %ds without heartbeat)",
                    c["running"],
                    spec.grace_s,
                )
                waited = True
            time.sleep(min(POLL_S, max(0.2, spec.grace_s / 4)))


def _swallow(*_: Any) -> None:
    """A signal handler that does nothing (see `_worker_entry`'s ``stop``)."""


def _worker_entry(spec_dict: dict[str, Any], threads: int, worker: int) -> None:
    """Entry point of a spawned worker process."""
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass
    spec = TuneSpec(**spec_dict)
    handler = _setup_logging(Path(spec.out))

    def stop(*_: Any) -> None:
        """Ctrl-C (the whole process group) or the parent's terminate(): fail the trial now,
        not after the grace period. Once only: a second signal (Ctrl-C, then terminate)
        would land in Optuna's bookkeeping of the first and leave the trial running.
        Swallowed by a handler, not SIG_IGN: a second signal already caught when the
        handler changes would raise "OSError: Signal 15 ignored due to race condition"."""
        signal.signal(signal.SIGTERM, _swallow)
        signal.signal(signal.SIGINT, _swallow)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        work(spec, worker=worker)
    except KeyboardInterrupt:
        pass
    finally:
        logging.getLogger().removeHandler(handler)


def run_tune(spec: TuneSpec, *, progress: bool = True, plots: bool = True) -> dict[str, Any]:
    """Run (or resume) the study to ``spec.trials`` finished trials, then report.

    Args:
        spec: the study.
        progress: a tqdm bar of finished trials.
        plots: write the history / importance plots (tests turn them off for speed).

    Returns:
        The study summary (also written to ``OUT/study_summary.json``).
    """
    from tqdm.auto import tqdm

    spec = spec.resolved()
    out = Path(spec.out)
    try:  # every refusal before the folder, the log or the study exist
        new_attrs = validate(spec)
    except UserError as exc:
        if (out / "tune.log").is_file():  # a study resumed with bad input: its log says why
            handler = _setup_logging(out)
            log.info("stopped before any trial: %s", exc)
            logging.getLogger().removeHandler(handler)
            handler.close()
        raise
    fresh = not out.exists()
    handler = _setup_logging(out)
    study = None
    try:
        try:
            study = open_study(spec, create=True, new_attrs=new_attrs)
        except UserError:
            if fresh:  # a storage refused: no study was made, so leave no folder either
                logging.getLogger().removeHandler(handler)
                handler.close()
                # only what this start made: a command started beside it may own the rest
                (out / "tune.log").unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    out.rmdir()
            raise
        requeue_interrupted(study)
        before = _counts(study)
        log.info(
            "study %s in %s: %d/%d finished before this start (%s); jobs=%d",
            spec.study,
            spec.storage,
            before["finished"],
            spec.trials,
            before,
            spec.jobs,
        )
        if progress and before["finished"] >= spec.trials:
            tqdm.write(
                f"study {spec.study} already has {before['finished']} finished trials and "
                f"--trials {spec.trials} asks for no more: reports rewritten from all of them "
                f"(a larger --trials adds trials)",
                file=sys.stderr,
            )
        elif progress and (before["finished"] or before["running"]):
            tqdm.write(
                f"resuming study {spec.study}: {before['finished']} of {spec.trials} trials "
                f"finished before"
                + (f", {before['running']} marked running" if before["running"] else ""),
                file=sys.stderr,
            )
        write_json(out / "tune_spec.json", asdict(spec))
        bar = tqdm(
            total=spec.trials,
            initial=min(before["finished"], spec.trials),
            desc="trials",
            unit="trial",
            disable=not progress,
        )

        def show(c: dict[str, int]) -> None:
            bar.n = min(c["finished"], spec.trials)
            bar.set_postfix(pruned=c["pruned"], running=c["running"])
            bar.refresh()

        try:
            if spec.jobs <= 1:
                work(spec, on_progress=show)
            else:
                _run_processes(spec, study, show)
        finally:
            bar.close()
        return finish(spec, study, plots=plots)
    except UserError as exc:  # INFO: the console gets the CLI's one line, not a second
        log.info("stopped: %s", exc)
        raise
    except KeyboardInterrupt:
        log.info("interrupted; a rerun finishes the study's remaining trials")
        if study is not None:
            _report_so_far(spec, study)
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _report_so_far(spec: TuneSpec, study) -> None:
    """After an interrupt: the reports of the trials finished so far, so that
    best_config.yaml never names an older best than the study holds (the plots, slower,
    are removed rather than left describing an earlier state; the next finish draws them)."""
    out = Path(spec.out)
    try:
        finish(spec, study, plots=False)
        for name in ("tune_history.png", "tune_importance.png", "tune_intermediate.png"):
            (out / name).unlink(missing_ok=True)
        log.info("reports written for the trials finished so far")
    except (Exception, KeyboardInterrupt):  # a second Ctrl-C, a storage gone: the log says so
        log.info("no reports after the interrupt:\n%s", traceback.format_exc())


def _run_processes(spec: TuneSpec, study, show: Callable[[dict[str, int]], None]) -> None:
    """``spec.jobs`` worker processes on the same storage; ends them all on any exit."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork + torch threads + sqlite connections do not mix
    threads = max(1, (os.cpu_count() or 1) // spec.jobs)
    procs = [
        ctx.Process(target=_worker_entry, args=(asdict(spec), threads, i), daemon=True)
        for i in range(spec.jobs)
    ]
    # `timeout`/`kill` send SIGTERM to this process only: end it through the finally below,
    # which ends the workers (the CLI already installs a handler that does so).
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            show(_counts(study))
            time.sleep(1.0)
        show(_counts(study))
        bad = [p.exitcode for p in procs if p.exitcode not in (0, None)]
        if bad:
            log.warning("worker exit codes: %s (see tune.log)", bad)
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too, a SIGTERM to this process did not: ask each to
        # stop (a worker already stopping ignores it) and let them record their trials
        if os.name != "nt":  # no such signal to one process on Windows: terminate below
            for p in procs:
                if p.is_alive() and p.pid is not None:
                    with contextlib.suppress(OSError):
                        os.kill(p.pid, signal.SIGINT)
        deadline = time.monotonic() + 10
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        raise
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():  # it ignored the request (its interrupt was swallowed): end it
                p.kill()
                p.join(timeout=5)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def validate(spec: TuneSpec) -> dict[str, Any] | None:
    """Check the (resolved) spec before anything is written: no folder, log or empty
    study is left by input the study refuses.

    Returns:
        The attributes of a new study (period candidates...: ``study_attrs``), or None
        when the study exists and was made for these settings.

    Raises:
        UserError: bad counts, bounds, members, storage or data.
    """
    from ensemble.data import make_splits
    from experiments import registry

    if spec.trials < 1:
        raise UserError(f"--trials must be at least 1 (got {spec.trials})")
    if spec.jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {spec.jobs})")
    if spec.pred_len < 1:
        raise UserError(f"--pred-len must be positive (got {spec.pred_len})")
    if not 1 <= spec.min_seq_len <= spec.max_seq_len:
        raise UserError(
            f"need 1 <= --min-seq-len <= --max-seq-len (got {spec.min_seq_len}, {spec.max_seq_len})"
        )
    if spec.pruner not in ("median", "hyperband", "none"):
        raise UserError(f"unknown --pruner {spec.pruner!r}: median, hyperband or none")
    if not 0 <= spec.seed < 2**32:
        raise UserError(f"--seed must lie in 0 .. {2**32 - 1} (got {spec.seed})")
    if spec.max_periods < 1:
        raise UserError(f"--max-periods must be at least 1 (got {spec.max_periods})")
    _check_folder_study(spec.resolved())
    specs = registry.parse_members(spec.members)
    bases = [registry.parse_spec(s)[0] for s in specs]
    if len(set(bases)) != len(bases):
        raise UserError("tune takes each member once (its settings are what the study tunes)")
    from router import make_combiner

    make_combiner(spec.router)
    dataset = _load(spec)  # a missing file or bad column fails here, not in every trial
    try:
        make_splits(dataset, spec.min_seq_len, spec.pred_len)
    except UserError as exc:  # its advice names run's flags (--seq-len)
        raise UserError(
            f"{str(exc).split(';')[0]}; lower --min-seq-len or --pred-len, or use a longer series"
        ) from None
    # a bad @key=value / --set fails here, not as N failed trials
    check = functools.partial(
        registry.check_specs,
        specs,
        spec.member_params,
        pred_len=spec.pred_len,
        n_channels=dataset.values.shape[1],
        freq=dataset.freq,
        seed=spec.seed,
        dataset=dataset.name,
    )
    try:
        check(seq_len=spec.max_seq_len, preflight=True)
    except UserError as exc:
        try:  # a setting that fits a long lookback: the fix is tune's flag, not --seq-len
            check(seq_len=max(4096, spec.max_seq_len), preflight=True)
        except UserError:
            raise exc from None
        raise UserError(f"{exc} (the lookback here is --max-seq-len: raise it)") from None
    return _study_state(spec, dataset)


# ---------------------------------------------------------------------------- reporting


def best_config(spec: TuneSpec, trial) -> RunConfig:
    """The best trial as a config `hybrid-forecast run --config` accepts."""
    params: dict[str, dict[str, Any]] = {
        k: {kk: vv for kk, vv in v.items() if kk != "progress"}
        for k, v in spec.member_params.items()
    }
    for base, tuned in trial.user_attrs.get("member_params", {}).items():
        params.setdefault(base, {}).update(tuned)
    return RunConfig(
        dataset=spec.dataset,
        data_path=spec.data_path,
        data_dir=spec.data_dir,
        features=spec.features,
        seq_len=int(trial.user_attrs["seq_len"]),
        pred_len=spec.pred_len,
        members=list(spec.members),
        router=spec.router,
        seed=spec.seed,
        out=None,
        periods=trial.user_attrs.get("periods"),
        member_params={k: v for k, v in params.items() if v},
    )


def finish(spec: TuneSpec, study, plots: bool = True) -> dict[str, Any]:
    """Write trials.csv, best_config.yaml, study_summary.{json,md} and the plots."""
    from optuna.trial import TrialState

    out = Path(spec.out)
    c = _counts(study)
    trials = study.get_trials(deepcopy=False)
    df = study.trials_dataframe()
    write_csv(out / "trials.csv", df.to_csv(index=False))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    summary: dict[str, Any] = {
        "study": spec.study,
        "storage": spec.storage,
        "asked_trials": spec.trials,
        "counts": c,
        "periods": study.user_attrs.get("periods"),
    }
    if any(m.split("@")[0] in ("timellm", "patchtst") for m in spec.members):
        summary["patch_choices"] = study.user_attrs.get("patch_choices")
    errors = [t for t in trials if t.state == TrialState.FAIL and "error" in t.user_attrs]
    if errors:
        summary["first_error"] = {
            "number": errors[0].number,
            "error": errors[0].user_attrs["error"],
        }
    if complete:
        best = min(complete, key=lambda t: t.value)
        cfg = best_config(spec, best)
        unfinished = (
            f" (best of {c['finished']} finished of {spec.trials} trials: the study is not "
            "done; rerun the tune command to finish it)"
            if c["finished"] < spec.trials
            else ""
        )
        header = (
            f"# best trial {best.number} of study {spec.study!r}: val MSE {best.value:.5f}"
            f"{unfinished}\n"
            f"# params: {best.params}\n"
            f"# rerun and score on test: {rerun_command(out)}\n"
        )
        write_text(out / "best_config.yaml", header + cfg.to_yaml())
        summary["best"] = {
            "number": best.number,
            "val_mse": best.value,
            "params": best.params,
            "seq_len": best.user_attrs.get("seq_len"),
            "member_params": best.user_attrs.get("member_params"),
        }
    write_json(out / "study_summary.json", summary)
    write_text(out / "study_summary.md", _summary_md(summary, complete))
    try:
        if plots:
            plot_study(study, out)
    except Exception:  # plots must not cost the summary
        log.warning("tune plots failed:\n%s", traceback.format_exc())
    return summary


def rerun_command(out: Path) -> str:
    """The command that reruns the best trial as a plain run and scores it on test."""
    from experiments import shell

    return shell.join(["hybrid-forecast", "run", "--config", str(Path(out) / "best_config.yaml")])


def _summary_md(summary: dict[str, Any], complete: list) -> str:
    c = summary["counts"]
    lines = [
        f"# Study {summary['study']}",
        "",
        f"Storage: `{summary['storage']}`. Asked for {summary['asked_trials']} trials; finished "
        f"{c['finished']} (complete {c['complete']}, pruned {c['pruned']}, failed with an error "
        f"{c['error']}); discarded {c['discarded']} (killed and retried, or surplus); running "
        f"{c['running']}, waiting {c['waiting']}.",
        f"Period candidates (train rows): {summary['periods']}. Objective: validation MSE "
        "(scaled space, every val window); test never used.",
        "",
    ]
    if summary.get("patch_choices"):
        lines[-1:-1] = [
            "Patch/stride choices per period: "
            + "; ".join(f"{p}: {', '.join(c)}" for p, c in summary["patch_choices"].items())
            + ".",
        ]
    if "best" in summary:
        b = summary["best"]
        lines += [
            f"Best: trial {b['number']}, val MSE {b['val_mse']:.5f}, L={b['seq_len']}, "
            f"member settings {b['member_params']}. Exported as `best_config.yaml`.",
            "",
            "| rank | trial | val MSE | params |",
            "|---|---|---|---|",
        ]
        for i, t in enumerate(sorted(complete, key=lambda t: t.value)[:10], 1):
            lines.append(f"| {i} | {t.number} | {t.value:.5f} | {t.params} |")
    return "\n".join(lines) + "\n"


def plot_study(study, out: Path) -> None:
    """tune_history.png, tune_importance.png, tune_intermediate.png."""
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    from ensemble import figures

    figures.pyplot()

    def save(ax_or_fig, name: str) -> None:
        fig = ax_or_fig.figure if hasattr(ax_or_fig, "figure") else ax_or_fig
        fig.set_size_inches(7, 4.2)
        figures.save(fig, out / name, dpi=100)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # "few trials per regime" on small studies
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if complete:
            ax = ovm.plot_optimization_history(study)
            ax.set_ylabel("val MSE (scaled)")  # Optuna's "Objective Value" says less
            save(ax, "tune_history.png")
            if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
                ax = ovm.plot_intermediate_values(study)
                ax.set_xlabel("epoch")
                ax.set_ylabel("val MSE (scaled)")
                save(ax, "tune_intermediate.png")
        if len(complete) >= 2:
            try:
                save(ovm.plot_param_importances(study), "tune_importance.png")
            except (ValueError, RuntimeError) as exc:  # e.g. a single distinct value
                log.warning("no importance plot: %s", exc)
