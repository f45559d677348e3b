"""A `tune` study in its Optuna storage.

Opening it (a SQLite file in WAL mode, never another program's, or a server), with
heartbeats and a retry of every trial found dead; the attributes it is made with
(period candidates, patch choices, the settings and data it was made for), written with
signals held and ``periods`` last, checked on every resume, and refilled when an
interrupted start of an earlier version left some out; its trials counted against the
N-trial budget; each trial's sampler seeded from the trial's place in the study; and the
trials of killed or interrupted processes run again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ensemble.errors import UserError
from experiments.tune_space import (
    lookback_range,
    patch_choices,
    period_candidates,
    search_space,
    space_before_fixed_settings,
)

if TYPE_CHECKING:
    from experiments.tune import TuneSpec

log = logging.getLogger("hybrid_forecast.tune")


HEARTBEAT_S = 10  # a running trial writes its heartbeat this often


GRACE_S = 40  # ... and counts as dead (killed) after this long without one


# What every trial reads from the study's attributes (`tune_objective`, `tune_space`).
TRIAL_ATTRS = ("periods", "ranked_periods", "patch_choices")


# Written last of a new study's attributes, so that a study holding it holds them all
# (each is one commit: an earlier version wrote it first, and a study interrupted right
# after lacked the other two, every trial failing on them).
RECORDED_LAST = "periods"


# What the trials of such a study failed with, before they chose their periods: no
# result of theirs, so not counted (the study, its attributes refilled, runs them again).
_MISSING_ATTR_ERRORS = frozenset(f"KeyError: {k!r}" for k in TRIAL_ATTRS if k != RECORDED_LAST)


# ------------------------------------------------------------------------ trial states


def failed_with_error(t) -> bool:
    """A FAIL that counts as a result: the configuration crashed (`Objective`)."""
    error = t.user_attrs.get("error")
    # a trial past the study's attributes has its "periods": its KeyErrors are its own
    lacked = error in _MISSING_ATTR_ERRORS and "periods" not in t.user_attrs
    return error is not None and not lacked


def trial_counts(study) -> dict[str, int]:
    """Trial counts by what they mean for the N-trials budget."""
    from optuna.trial import TrialState

    c = {"complete": 0, "pruned": 0, "error": 0, "running": 0, "waiting": 0, "discarded": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.PRUNED:
            c["pruned"] += 1
        elif t.state == TrialState.FAIL:
            c["error" if failed_with_error(t) else "discarded"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.state == TrialState.WAITING:
            c["waiting"] += 1
    c["finished"] = c["complete"] + c["pruned"] + c["error"]
    c["claimed"] = c["finished"] + c["running"] + c["waiting"]
    return c


def claims_slot(t) -> bool:
    """Does this trial use one of the N slots (finished, or on its way to finishing)?"""
    from optuna.trial import TrialState

    if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING):
        return True
    return t.state == TrialState.FAIL and failed_with_error(t)


# ----------------------------------------------------------------------------- storage


def sqlite_url(path: str | Path) -> str:
    """``sqlite:///PATH`` for a file of any name: SQLAlchemy percent-decodes the path and
    reads what follows a ``?`` as options, so a folder named ``50%_data`` or ``a?b``
    opened another file (and two such folders could share one study)."""
    escaped = str(path).replace("%", "%25").replace("?", "%3F").replace("#", "%23")
    return f"sqlite:///{escaped}"


def sqlite_path(url: str) -> Path | None:
    """The file a ``sqlite:///`` URL opens, as SQLAlchemy reads it (None: not a file URL)."""
    if not url.startswith("sqlite:///"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return Path(database) if database else None


def absolute_sqlite_url(url: str) -> str:
    """``url`` with a relative SQLite file made absolute (from the current folder), as a
    bare ``--storage`` path is: ``sqlite:///rel.db`` left relative opened another file
    from another folder, and its text matched the folder's tune_spec.json all the same
    (a fresh study replaced that study's reports). Other URLs come back unchanged."""
    path = sqlite_path(url)
    if path is None:
        return url
    from sqlalchemy.engine import make_url

    query = make_url(url).query
    # an in-memory database or a sqlite URI (uri=true) names no file of this folder
    if ":memory:" in str(path) or str(query.get("uri", "")).lower() in ("true", "1"):
        return url
    tail = "?" + url.split("?", 1)[1] if query else ""  # the options, as they were given
    return sqlite_url(path.resolve()) + tail


def ask_lock(url: str | None) -> Path | None:
    """The lock file beside a SQLite study (``study.db.ask.lock``) that every process on
    it takes to ask for a trial or change the study's records; None for a server (which
    locks its rows itself)."""
    db = sqlite_path(url) if url else None
    return db.with_name(db.name + ".ask.lock") if db is not None else None


def study_lock(url: str | None) -> contextlib.AbstractContextManager:
    """`ask_lock`'s lock held for a block (nothing for a server storage)."""
    from ensemble.io import waiting_lock

    lock = ask_lock(url)
    return waiting_lock(lock) if lock is not None else contextlib.nullcontext()


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
    path = sqlite_path(url)
    if path is not None:
        existing = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise UserError(
                f"--storage {url}: {existing} is a file, not a folder; put study.db in a folder"
            )
        _refuse_foreign_sqlite(path, url)
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


# Tables every Optuna RDB storage has (alembic's since optuna 2; version_info since 1).
_OPTUNA_TABLES = frozenset({"studies", "version_info", "alembic_version"})


def _refuse_foreign_sqlite(path: Path, url: str) -> None:
    """Refuse an existing SQLite file of tables none of which is Optuna's: opening it
    turned it to WAL and added Optuna's tables to another program's database. Read only;
    a file that is no database is left for `_sqlite_wal` to report.

    Raises:
        UserError: the file holds another program's tables.
    """
    import sqlite3

    if not path.is_file():
        return
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            con.close()
    except sqlite3.Error:  # not a database, or locked while created: said further on
        return
    tables = {name for (name,) in rows}
    if tables and not tables & _OPTUNA_TABLES:
        raise UserError(
            f"--storage {url} is a SQLite file of something else (tables "
            f"{', '.join(sorted(tables)[:5])}), not an Optuna study; name a new file"
        )


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


# ------------------------------------------------------------------------------- study


def startup_trials(n: int) -> int:
    """How many complete or pruned trials TPE waits for before it guides a draw, in a
    study of ``n`` trials: until then every trial is a random draw (with parallel workers,
    every trial started before that many finished)."""
    return max(3, min(10, n // 3))


# A trial's user attribute: "random" (one of TPE's startup draws) or "tpe" (guided),
# recorded when its sampler first draws (`seeded_at_trial_start`); a retry keeps its
# original's, whose parameters it runs again.
DRAW_ATTR = "draw"


def sampler_and_pruner(spec: TuneSpec, n: int, seed: int | None = None):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=startup_trials(n),
            multivariate=True,
            group=True,  # the space is conditional (per-period lookbacks, kernel modes)
            constant_liar=True,  # parallel workers do not all pile onto one region
        )
    if spec.pruner == "median":
        # judged from the third epoch on: DLinear's ETTh1 validation curve is not monotone
        # (at n_warmup_steps=2 the trial that ended best without pruning was pruned)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3)
    elif spec.pruner == "hyperband":
        # its first rung at the third epoch too (at 1, a trial that would have ranked 2nd of
        # 6 unpruned was pruned at 1.51 against its final 0.669)
        pruner = optuna.pruners.HyperbandPruner(min_resource=3)
    else:
        pruner = optuna.pruners.NopPruner()
    return sampler, pruner


# Overall periods the analysis of ``run.detect_periods`` lists (``analyse``'s default).
RUN_CANDIDATES = 5


def ranked_periods(splits, k: int) -> list[int]:
    """Up to ``k`` ranked seasonal periods of the train rows: ``run``'s own first (its
    analysis lists ``RUN_CANDIDATES``, so ``detect_periods(k=10)`` gave 5 at most), then
    the seasonal ones further down a ``k``-long list. ``run``'s stay first and in order,
    so that a trial's members get the periods a run would (``trial_periods``)."""
    from experiments.run import detect_periods

    ranked = detect_periods(splits, k=k)
    if k <= RUN_CANDIDATES:
        return ranked
    from periodicity import analyse

    x = np.ascontiguousarray(splits.train.data)
    longer = analyse(x, freq=splits.dataset.freq, max_candidates=k, channel_strengths=False)
    more = [p for p in longer.top_periods(k, seasonal_only=True) if p not in ranked]
    return (ranked + more)[:k]


def calendar_fallback(attrs: dict[str, Any]) -> bool:
    """Whether a study's period candidates are the calendar's of its data's frequency,
    not the analyser's: none of those has a multiple within the lookback bounds
    (`study_attrs`; the analyser's own are always among its ranked periods)."""
    periods, ranked = attrs.get("periods"), attrs.get("ranked_periods")
    return bool(periods) and ranked is not None and not set(periods) & set(ranked)


def study_attrs(spec: TuneSpec, dataset=None) -> dict[str, Any]:
    """What a study is about; written once, checked on every later open.

    Raises:
        UserError: no period candidate fits the lookback bounds, or the longest lookback
            they allow does not fit the data.
    """
    from ensemble.data import make_splits
    from experiments.member_cache import data_fingerprint

    dataset = load_study_data(spec) if dataset is None else dataset
    # The smallest L keeps the check cheap; under --percent a longer L trains on a few
    # more rows, whose periods are pinned by best_config all the same.
    splits = make_splits(  # warnings: tune's check said them
        dataset, spec.min_seq_len, spec.pred_len, percent=spec.percent, warn=False
    )
    ranked = ranked_periods(splits, k=10)
    periods = period_candidates(ranked, spec.min_seq_len, spec.max_seq_len, spec.max_periods)
    if not periods:  # said in tune.log and study_summary (`calendar_fallback`)
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
        make_splits(dataset, longest, spec.pred_len, percent=spec.percent, warn=False)
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


# Identity entries recorded since the thirty-third session, as older studies ran them.
_ADDED_DEFAULTS: dict[str, Any] = {"target": None, "fill": None, "percent": 100, "val_stride": 1}


def _identity(spec: TuneSpec) -> dict[str, Any]:
    """The settings a study's trials depend on: resuming it with others would mix two
    experiments in one "best" (and export the wrong one)."""
    return {
        "dataset": spec.dataset or Path(spec.data_path or "").stem,
        "pred_len": spec.pred_len,
        "members": list(spec.members),
        "features": spec.features,
        **({"ms_loss": MS_LOSS} if spec.features == "MS" else {}),
        "target": spec.target,
        "fill": spec.fill,
        "percent": spec.percent,
        "seed": spec.seed,
        "val_stride": spec.val_stride,  # which val windows score a trial
        "member_params": spec.member_params,
        "min_seq_len": spec.min_seq_len,
        "max_seq_len": spec.max_seq_len,
        "max_periods": spec.max_periods,
        "search_space": search_space(spec),
    }


# the settings a folder's tune_spec.json is compared on when it holds another study
_STUDY_SETTINGS = (
    "dataset",
    "data_path",
    "pred_len",
    "members",
    "features",
    "target",
    "percent",
    "seed",
)


def check_folder_study(spec: TuneSpec) -> None:
    """Refuse a folder whose reports belong to another study: its best_config.yaml,
    trials.csv and summaries would be replaced by this one's (the default study name
    holds the dataset, horizon, members, and the features, target, percent and seed
    unless default, so another of them is another study)."""
    held = Path(spec.out) / "tune_spec.json"
    if not held.is_file():
        return
    try:
        theirs = json.loads(held.read_text(encoding="utf-8"))
        other = theirs.get("study")
    except (ValueError, AttributeError, OSError):
        return  # damaged: the rerun rewrites it
    if other and other != spec.study:
        differ = [
            f"{k}={theirs[k]!r}, not {getattr(spec, k)!r}"
            for k in _STUDY_SETTINGS
            if k in theirs and theirs[k] != getattr(spec, k)
        ]
        why = f"it was made for {'; '.join(differ)}" if differ else "another study's name"
        raise UserError(
            f"{spec.out} holds the reports of study {other!r}, not {spec.study!r} ({why}); "
            f"give another --out, or continue that one with --study {other} and its own "
            "settings (its tune_spec.json)"
        )

    # The same name in another storage is another study: a rerun without the first run's
    # --storage began a fresh study and replaced the reports of the one in shared.db.
    # A folder's own study.db counts as the same wherever the folder was moved or copied.
    def own(storage: str | None, out: str | None) -> bool:
        return bool(out) and storage == sqlite_url((Path(out) / "study.db").resolve())

    def was_own(storage: str | None, out: str | None) -> bool:
        """``own`` when the folder was made; a relative ``out`` was taken from a working
        folder tune_spec.json does not record (its copy elsewhere was refused): its name
        is what is known."""
        path = sqlite_path(storage) if isinstance(storage, str) else None
        if not out or path is None or Path(out).is_absolute():
            return own(storage, out)
        return path.name == "study.db" and path.parent.name == Path(out).resolve().name

    theirs_storage = theirs.get("storage")
    if isinstance(theirs_storage, str):  # one written before relative URLs were resolved
        theirs_storage = absolute_sqlite_url(theirs_storage)
    if (
        isinstance(theirs_storage, str)
        and theirs_storage != spec.storage
        and not (was_own(theirs_storage, theirs.get("out")) and own(spec.storage, spec.out))
    ):
        raise UserError(
            f"{spec.out} holds the reports of study {other!r} in {theirs_storage}, not in "
            f"{spec.storage}; give --storage {theirs_storage} to continue it, or another --out"
        )


def check_identity(spec: TuneSpec, attrs: dict[str, Any], dataset=None) -> None:
    """Refuse to resume a study made for other settings or data.

    Raises:
        UserError: naming the first setting that differs.
    """
    from experiments.member_cache import data_fingerprint

    mine = {
        **_identity(spec),
        "data": data_fingerprint(load_study_data(spec) if dataset is None else dataset),
    }
    if "data" not in attrs:  # recorded with the settings since the fifth of December
        raise UserError(
            f"study {spec.study!r} in {spec.storage} was made by an earlier version that did "
            "not record its settings and data, so nothing shows that its trials were of "
            "these (its best_config.yaml would state today's settings for them); start a new "
            "study in another --out (with another --study name if --storage is shared)"
        )
    if "search_space" not in attrs and space_before_fixed_settings(spec) != mine["search_space"]:
        raise UserError(
            f"study {spec.study!r} in {spec.storage} tuned settings you fix now (it was made "
            "before fixed settings were kept out of the search); start a new study in "
            "another --out (with another --study name if --storage is shared)"
        )
    # an MS study of older code lacks it; a study of other features is refused below
    if "ms_loss" in mine and "ms_loss" not in attrs and attrs.get("features") == "MS":
        raise UserError(
            f"study {spec.study!r} in {spec.storage} was made before --features MS trained "
            "the classical members on the target alone: its trials' scores are of the old "
            "all-channel fits; start a new study in another --out (with another --study name "
            "if --storage is shared)"
        )
    for key, value in mine.items():
        # studies made before a setting was recorded ran with its default
        before = attrs.get(key, _ADDED_DEFAULTS.get(key, value))
        if before != value:
            what = "the data file's values" if key == "data" else f"{key}={before!r}"
            now = "changed" if key == "data" else f"not {value!r}"
            raise UserError(
                f"study {spec.study!r} in {spec.storage} was made for {what}, {now}; "
                "rerun with the study's settings, or start a new study in another --out "
                "(with another --study name if --storage is shared)"
            )


def study_state(spec: TuneSpec, dataset) -> dict[str, Any] | None:
    """The attributes a new study gets, or None when it exists and suits ``spec``.

    Touches nothing on disk for a new SQLite study (its file is made later, with the
    study), so a refusal here leaves no empty study or folder behind.
    """
    spec = spec.resolved()  # the storage URL and study name filled in
    url = spec.storage
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return study_attrs(spec, dataset)
    storage = open_storage(url, spec.heartbeat_s, spec.grace_s)
    try:
        held = storage.get_study_user_attrs(storage.get_study_id_from_name(spec.study))
    except KeyError:  # no such study (yet) in this storage
        return study_attrs(spec, dataset)
    if RECORDED_LAST not in held:  # made by a start that stopped before writing them
        return study_attrs(spec, dataset)
    check_identity(spec, held, dataset)  # then `open_study` refills what a stop left out
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
    sampler, pruner = sampler_and_pruner(spec, spec.trials)
    if create:
        study = optuna.create_study(
            storage=storage,
            study_name=spec.study,
            direction="minimize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        # Under the ask lock (SQLite): two commands of other settings starting one new
        # study at once both found no settings recorded, and both wrote theirs, one
        # attribute at a time, neither checked. Now the second finds the first's.
        with study_lock(spec.storage):
            if RECORDED_LAST not in study.user_attrs:  # new: nothing to check, this spec's
                _record_identity(spec, study, new_attrs or study_attrs(spec))
                return study
        attrs = study.user_attrs
        from experiments.member_cache import data_fingerprint

        dataset = load_study_data(spec)
        check_identity(spec, attrs, dataset)
        mine = {
            **_identity(spec),
            "data": data_fingerprint(dataset),
            **_trial_attrs_left_out(spec, attrs),
        }
        with _signals_held():
            for key, value in mine.items():
                # a setting added since the study was made, which check_identity let pass:
                # recorded, so that a later resume checks it; or what every trial reads,
                # left out by an interrupted start of an earlier version
                if key not in attrs:
                    study.set_user_attr(key, value)
        return study
    study = optuna.load_study(
        study_name=spec.study, storage=storage, sampler=sampler, pruner=pruner
    )
    return study  # `_trials_until_done` seeds the sampler before each trial


def _record_identity(spec: TuneSpec, study, values: dict[str, Any]) -> None:
    """Write a new study's attributes: first all of them as one ``identity`` attribute
    (with a token of this command), then each (as the readers and older versions read
    them), ``RECORDED_LAST`` last, with Ctrl-C and SIGTERM held until all are written;
    then read ``identity`` back. Another command's there means another command wrote at
    the same time (a server storage, which has no ask lock): refused unless it was made
    for these same settings.

    Raises:
        UserError: the study was made at the same moment for other settings.
    """
    import uuid

    token = uuid.uuid4().hex
    ordered = sorted(values, key=lambda k: k == RECORDED_LAST)  # stable: the rest in order
    with _signals_held():
        study.set_user_attr("identity", {**values, "token": token})
        for k in ordered:
            study.set_user_attr(k, values[k])
    held = study.user_attrs.get("identity")
    if isinstance(held, dict) and held.get("token") == token:
        return
    log.info("study %s: another command recorded its settings at the same time", spec.study)
    theirs = {k: v for k, v in held.items() if k != "token"} if isinstance(held, dict) else {}
    try:
        check_identity(spec, theirs)
    except UserError as exc:
        raise UserError(
            f"study {spec.study!r} in {spec.storage} was started at the same moment by "
            f"another command of other settings ({exc}); rerun this one with another "
            "--study name"
        ) from None


def _trial_attrs_left_out(spec: TuneSpec, attrs: dict[str, Any]) -> dict[str, Any]:
    """The `TRIAL_ATTRS` a study whose settings ``check_identity`` passed lacks, from its
    ``identity`` attribute (written first, whole).

    Raises:
        UserError: they are not there either: the study cannot run its trials.
    """
    missing = [k for k in TRIAL_ATTRS if k not in attrs]
    if not missing:
        return {}
    held = attrs.get("identity")
    if not (isinstance(held, dict) and all(k in held for k in missing)):
        raise UserError(
            f"study {spec.study} in {spec.storage} lacks its {', '.join(missing)} (a start "
            "stopped while making it): give another --study name or --storage to start afresh"
        )
    log.info("study %s: %s were not recorded; recorded now", spec.study, ", ".join(missing))
    return {k: held[k] for k in missing}


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM noted inside the block and raised after it (from the main
    thread; elsewhere no signal lands): a study's attributes are written one commit each,
    and a study stopped between them lacked some."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    held: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        before = signal.getsignal(sig)
        if before not in (signal.SIG_IGN, None):  # None: a handler not set from Python
            held[sig] = before
            signal.signal(sig, lambda signum, frame: noted.append(signum))
    try:
        yield
    finally:
        for sig, before in held.items():
            signal.signal(sig, before)
        # delivered again, to the handler it was meant for, now that all is written (or a
        # write failed: the interrupt is still what the user asked for)
        if noted:
            signal.raise_signal(noted[0])


STARTS_KEPT = ("pruner", "router", "jobs", "trials")  # a start's settings kept in ``starts``


def record_start(spec: TuneSpec, study) -> list[dict[str, Any]]:
    """Add this start's pruner, router, jobs and trials to the study's ``starts`` (each
    start's, in order; study_summary.json lists them), and warn, once, when the pruner or
    router is not the last start's: a resume took any of them silently, and the folder's
    tune_spec.json, rewritten at each start, told only the last.

    A study made before ``starts`` was kept gets its earlier start from the folder's
    tune_spec.json (written by that start, for this study in this storage:
    `check_folder_study`).

    Returns:
        The study's starts, this one last.
    """
    import datetime

    this: dict[str, Any] = {k: getattr(spec, k) for k in STARTS_KEPT}
    this["at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with study_lock(spec.storage):  # two commands starting at once: both starts kept
        starts = list(study.user_attrs.get("starts", []))
        if not starts and study.get_trials(deepcopy=False):
            starts = _start_from_folder(spec)
        starts.append(this)
        study.set_user_attr("starts", starts)
    if len(starts) > 1:
        last = starts[-2]
        # several members are never pruned: their pruner changes nothing
        compared = ("pruner", "router") if len(spec.members) == 1 else ("router",)
        changed = [
            f"--{k} {this[k]} (the study's last start ran {last[k]})"
            for k in compared
            if k in last and last[k] != this[k]
        ]
        if changed:
            log.warning(
                "study %s resumed with %s: its earlier trials were run with the other "
                "(study_summary.json lists each start's)",
                spec.study,
                " and ".join(changed),
            )
    return starts


def _start_from_folder(spec: TuneSpec) -> list[dict[str, Any]]:
    """The earlier start a folder's tune_spec.json recorded, as a ``starts`` entry."""
    try:
        theirs = json.loads((Path(spec.out) / "tune_spec.json").read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return []
    if not isinstance(theirs, dict) or theirs.get("study") != spec.study:
        return []
    return [{**{k: theirs[k] for k in STARTS_KEPT if k in theirs}, "at": None}]


def load_study_data(spec: TuneSpec):
    from ensemble.data import load_dataset

    return load_dataset(
        spec.dataset,
        data_path=spec.data_path,
        data_dir=spec.data_dir,
        features=spec.features,
        target=spec.target,
        fill=spec.fill,
    )


# ------------------------------------------------------------------------------ trials


def trial_seed(seed: int, finished: int, worker: int, ahead: int = 0) -> int:
    """The sampler's seed for the trial that starts after ``finished`` finished trials,
    with ``ahead`` trials started before it still running (other commands' or workers'):
    those drew at the same count, and must not be drawn again."""
    return int(
        np.random.SeedSequence(
            [seed, finished, worker, *([ahead] if ahead else [])]
        ).generate_state(1)[0]
    )


def seeded_at_trial_start(spec: TuneSpec, worker: int):
    """A sampler seeded (`trial_seed`) when its trial starts, from the study as it is then.

    Seeding it before ``study.optimize`` instead gave two commands starting a trial at
    the same finished count the same draw (two `tune` commands on one study), as it did
    a rerun's fresh trial beside the killed one it had not failed yet.
    """
    import optuna
    from optuna.trial import TrialState

    class Sampler(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self.inner = sampler_and_pruner(spec, spec.trials, spec.seed)[0]
            self.noted: set[int] = set()

        def note_draw(self, study, trial) -> None:
            """Record (`DRAW_ATTR`) whether TPE draws this trial at random or guides it:
            as TPE decides, from the complete and pruned trials of the whole study."""
            if trial._trial_id in self.noted or DRAW_ATTR in trial.user_attrs:
                return
            self.noted.add(trial._trial_id)
            whole = getattr(study, "_study", study)
            seen = len(
                whole.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            )
            draw = "random" if seen < startup_trials(spec.trials) else "tpe"
            whole._storage.set_trial_user_attr(trial._trial_id, DRAW_ATTR, draw)

        def before_trial(self, study, trial) -> None:
            # counted on the whole study: under Hyperband ``study`` is the trial's bracket,
            # whose counts repeat across brackets (the same seed, the same draw)
            whole = getattr(study, "_study", study)
            running = whole.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            ahead = sum(t.number < trial.number for t in running)
            seed = trial_seed(spec.seed, trial_counts(whole)["finished"], worker, ahead)
            self.inner = sampler_and_pruner(spec, spec.trials, seed)[0]
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            if search_space:  # an empty one draws nothing: each parameter is independent
                self.note_draw(study, trial)
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, name, distribution):
            self.note_draw(study, trial)
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


def requeue_interrupted(study, url: str | None = None) -> None:
    """Queue again, once each, the parameters of trials stopped by Ctrl-C or SIGTERM
    (FAIL, ``interrupted``), so that a resumed study runs them as the uninterrupted one
    did. A killed trial is queued by the heartbeat retry instead.

    Under the study's ask lock (``url``: its storage; SQLite): two commands started at
    once both read ``requeued`` before either wrote it, and queued the same trial twice
    (it ran, and counted, twice). A server has no such lock: there the second copy is
    turned away when it starts (``Objective``'s surplus check on ``retry_of``).
    """
    from optuna.trial import TrialState

    with study_lock(url):
        done = set(study.user_attrs.get("requeued", []))
        todo = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if t.user_attrs.get("interrupted") and t.number not in done
        ]
        for t in todo:
            # a retry stopped before it drew: its parameters are still only the queued ones
            params = {**t.system_attrs.get("fixed_params", {}), **t.params}
            again = {"retry_of": t.number}
            if DRAW_ATTR in t.user_attrs:  # its parameters are that trial's draw
                again[DRAW_ATTR] = t.user_attrs[DRAW_ATTR]
            study.enqueue_trial(params, user_attrs=again)
            done.add(t.number)
            log.info("trial %d was interrupted: its parameters are queued again", t.number)
        if todo:
            study.set_user_attr("requeued", sorted(done))
