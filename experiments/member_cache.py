"""A member's saved forecasts in a run folder, and when they may be reused.

``members/<name>/forecasts.npz`` holds a member's validation and test forecasts under a
key of what the member saw (`data_key`: the data as loaded, the split rows, L, H, the
seed, the periods, its settings), stamped with the data's values and timestamps: a rerun
reuses them only for the same experiment, however the command spelled it. Caches of
earlier versions are found under their old key; damaged ones are refitted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ensemble.data import Dataset, Splits
from ensemble.errors import reason
from ensemble.io import FolderLock, holder, replace, write_json
from experiments import registry
from experiments.config import RunConfig

log = logging.getLogger("hybrid_forecast.run")

_MEMBER_DIR_MAX = 64  # Windows' 260-character paths: run folder + members/<this>/model/...


def safe_name(name: str, ascii_only: bool = False) -> str:
    """``name`` with the characters a file name cannot hold replaced by ``_``. Letters of
    any script are kept (油温数据.csv and 电力负荷.csv must not share a run folder);
    ``ascii_only``: the names earlier versions gave."""
    return re.sub(r"[^A-Za-z0-9_.=-]+" if ascii_only else r"[^\w.=-]+", "_", name)


def member_dir(spec: str, ascii_only: bool = False) -> str:
    """The folder name of a member under ``members/``: the spec with file-name-safe
    characters, or, past 64 characters (a spec with many settings, such as a long
    ``prompt_stats``), its first 55 and a hash of the whole spec."""
    name = safe_name(spec, ascii_only)
    if len(name) <= _MEMBER_DIR_MAX:
        return name
    digest = hashlib.sha256(spec.encode()).hexdigest()[:8]
    return f"{name[: _MEMBER_DIR_MAX - 9]}_{digest}"


def member_path(out: Path, spec: str) -> Path:
    """``out/members/<member_dir(spec)>``, or the folder a run made before names were cut
    or kept letters beyond ASCII, when that one is there (its saved model and forecasts
    stay in use)."""
    path = out / "members" / member_dir(spec)
    if path.exists():
        return path
    for old in (
        safe_name(spec),
        member_dir(spec, ascii_only=True),
        safe_name(spec, ascii_only=True),
    ):
        legacy = out / "members" / old
        if legacy != path and legacy.is_dir():
            return legacy
    return path


# Member settings that change nothing a member forecasts: progress bars, Time-LLM's
# checkpoint interval, and `resume` (a finished run rerun with --resume re-forecast
# everything and said its results were replaced). A cache written by a run given
# --resume is fitted again once.
RUNTIME_PARAMS = ("progress", "resume", "checkpoint_minutes")


def numbers_params(params: Any) -> Any:
    """A config's ``member_params`` without the ``RUNTIME_PARAMS`` keys, and without the
    members left with no setting: what two runs' settings are compared by (a setting that
    is no mapping is kept as it is, and compares unequal)."""
    if not isinstance(params, dict):
        return params
    kept = {
        m: {k: v for k, v in p.items() if k not in RUNTIME_PARAMS} if isinstance(p, dict) else p
        for m, p in params.items()
    }
    return {m: p for m, p in kept.items() if p}


def data_key(
    cfg: RunConfig,
    splits: Splits,
    base: str,
    periods: list[int],
    derived: dict[str, Any] | None = None,
) -> str:
    """Fingerprint of what a member sees, however the run spelled it.

    The data as loaded (its name, which Time-LLM's prompt reads; the channels in order,
    the target and the feature set), the rows of each split (the borders, few-shot
    ``percent`` included), L, H, the seed, the detected periods (members build features
    and prompts from them), the member's own settings (its spec names the folder) and
    what it derived from them (``derived_settings()``, for members that define it).

    ``--dataset ETTh1`` and ``--data-path .../ETTh1.csv``, or ``--target OT`` where OT is
    the default, give the same key; the file's values and timestamps are not in it but
    stamped beside it (``data_fingerprint``, ``dates_fingerprint``), so a changed or
    another file still refits.
    """
    ds = splits.dataset
    d: dict[str, Any] = {
        "key": 2,  # never equal to a _legacy_data_key: those hash other fields
        "dataset": ds.name,
        "columns": list(ds.columns),
        "target": ds.target,
        "features": ds.features,
        "rows": [[s.start, s.start + int(s.data.shape[0])] for s in splits],
        "seq_len": cfg.seq_len,
        "pred_len": cfg.pred_len,
        "percent": cfg.percent,
        "seed": cfg.seed,
        "member_params": {
            k: v for k, v in cfg.member_params.get(base, {}).items() if k not in RUNTIME_PARAMS
        },
        "periods": [int(p) for p in periods],
    }
    if derived:
        d["derived"] = derived
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# The settings the member cache key hashed as spelled before it keyed on the loaded data
# (config.DATA_SETTINGS then; frozen here so that a new setting there cannot change it).
_LEGACY_SETTINGS = (
    "dataset",
    "data_path",
    "features",
    "target",
    "fill",
    "seq_len",
    "pred_len",
    "percent",
    "seed",
)


def _legacy_data_key(
    settings: dict[str, Any],
    member_params: dict[str, Any],
    periods: list[int],
    derived: dict[str, Any] | None = None,
) -> str:
    """The key earlier versions wrote (the run's settings as the user spelled them), so
    that their caches (hours of Time-LLM) are still found."""
    d = {k: settings[k] for k in _LEGACY_SETTINGS}
    d["member_params"] = member_params
    d["periods"] = [int(p) for p in periods]
    if derived:
        d["derived"] = derived
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_fingerprint(dataset: Dataset) -> str:
    """SHA-256 of a dataset's raw values: the same name and settings over a changed file
    is new data (a member's saved forecasts, or a tuning study, must not be reused)."""
    values = np.ascontiguousarray(dataset.values)
    return hashlib.sha256(values.tobytes()).hexdigest()[:16]


def dates_fingerprint(dataset: Dataset) -> str:
    """SHA-256 of the timestamps: LightGBM's calendar features read them, so shifted
    dates over the same values are new data too."""
    ns = np.ascontiguousarray(dataset.dates.to_numpy(dtype="datetime64[ns]").astype(np.int64))
    return hashlib.sha256(ns.tobytes()).hexdigest()[:16]


# Stamps a saved forecast must carry to be reused: caches of versions before the data
# (2026-11-22) and the timestamps (2026-12-05) were stamped were reused on a changed file
REQUIRED_STAMPS = ("data", "dates")
_STAMP_WORDS = {
    "data": "values of the data file",
    "dates": "timestamps",
    "spec": "member settings sharing its folder",
}


def probe_saved(
    member: Any, spec: str, cfg: RunConfig, splits: Splits, periods: list[int], out: Path
) -> bool:
    """Whether ``fit_member`` will reuse the member's saved forecasts; silent, since
    ``fit_member`` reads them again and says so in run.log."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        return saved_forecasts(member, spec, cfg, splits, periods, out)[0] is not None
    finally:
        logging.disable(previous)


def saved_forecasts(
    member: Any, spec: str, cfg: RunConfig, splits: Splits, periods: list[int], out: Path
) -> tuple[dict[str, Any] | None, str, dict[str, str]]:
    """The member's forecasts saved in ``out`` if they are this run's (else None), with
    the cache key and stamps a new save is written with."""
    base, _ = registry.parse_spec(spec)
    derived = member.derived_settings() if hasattr(member, "derived_settings") else None
    if getattr(member, "uses_loss_channels", False) and splits.train.loss_channels is not None:
        # under MS these members fit to the target since the twenty-eighth session: the
        # caches of their all-channel fits refit
        derived = {**(derived or {}), "loss_channels": list(splits.train.loss_channels)}
    if getattr(member, "cache_version", 0):  # forecasts of earlier code are fitted again
        derived = {**(derived or {}), "cache_version": member.cache_version}
    key = data_key(cfg, splits, base, periods, derived)
    # Checked beside the key; caches written before an entry was stored lack it and
    # still count. The spec itself: two specs can share a folder name ("+" and "_").
    stamps = {
        "data": data_fingerprint(splits.dataset),
        "dates": dates_fingerprint(splits.dataset),
        "spec": spec,
        # Time-LLM's backbone folder: other weights at the same path are another member
        **(member.identity_stamps() if hasattr(member, "identity_stamps") else {}),
    }
    cache = member_path(out, spec) / "forecasts.npz"
    if not cache.is_file():
        return None, key, stamps
    model = member_path(out, spec) / "model"
    if not model.is_dir():  # deleted: `forecast` needs it
        log.info("%s: saved forecasts but no saved model: fitting it again", spec)
        return None, key, stamps
    broken = model_problem(model)
    if broken:  # reused, it would leave the run without its training curve, and `forecast` fails
        log.warning("member %s: damaged model folder %s (%s), refitting", spec, model, broken)
        return None, key, stamps
    return _read_cache(cache, spec, key, stamps, cfg, splits, base, periods, derived), key, stamps


# Written into a member's model folder after its ``save``: the files it holds and their
# sizes, so that a file deleted, cut short or overwritten since is found before its
# forecasts are reused.
MANIFEST = "saved_files.json"


def _model_files(model: Path) -> dict[str, int]:
    """Relative path -> size of each file in a model folder, bar the manifest and the
    temp files of interrupted writes."""
    return {
        f.relative_to(model).as_posix(): f.stat().st_size
        for f in sorted(model.rglob("*"))
        if f.is_file() and f.name != MANIFEST and not f.name.endswith(".tmp")
    }


def write_manifest(model: Path) -> None:
    """Record the files a member's ``save`` just wrote into ``model`` (the last write)."""
    write_json(model / MANIFEST, {"files": _model_files(model)})


def model_problem(model: Path) -> str | None:
    """What is wrong with a member's saved model folder, cheaply (no model is loaded):
    a file of its manifest missing or of another size (a folder saved before manifests:
    empty), or a JSON file that does not parse. None: it looks loadable."""
    try:
        listed = json.loads((model / MANIFEST).read_text(encoding="utf-8"))["files"]
        if not isinstance(listed, dict):
            raise TypeError(f"files {listed!r} are not a mapping")
    except FileNotFoundError:  # saved before manifests: only an empty folder is known bad
        listed = {}
        if not any(model.iterdir()):
            return "empty"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its {MANIFEST} cannot be read: {reason(exc)}"
    for name, size in listed.items():
        path = model / name
        if not path.is_file():
            return f"no {name}"
        if size is not None and path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, {size} when saved"
    for path in sorted(model.glob("*.json")):
        if path.name == MANIFEST:
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return f"{path.name} cannot be read: {reason(exc)}"
    return None


def _read_cache(
    cache: Path,
    spec: str,
    key: str,
    stamps: dict[str, str],
    cfg: RunConfig,
    splits: Splits,
    base: str,
    periods: list[int],
    derived: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """A member's saved forecasts if they are this run's, else None (fit it again).

    A file that cannot be read (a copy cut short, an empty file, an entry missing or of
    the wrong shape) is only a cache: it is logged and refitted, and the new forecasts
    replace it.
    """
    try:
        with np.load(cache) as z:
            found = _cache_matches(z, key, stamps, cfg, base, periods, derived)
            if found is None:
                return None
            val, test = z["val"], z["test"]
            timings = json.loads(str(z["timings"]))
        for pred, split in ((val, splits.val), (test, splits.test)):
            expect = (split.n_windows, cfg.pred_len, split.n_channels)
            if pred.shape != expect:
                raise ValueError(f"forecasts of shape {pred.shape}, expected {expect}")
            if not np.isfinite(pred).all():
                raise ValueError("non-finite forecasts")
        if not isinstance(timings, dict):
            raise ValueError(f"timings {timings!r} are not a mapping")
    except MemoryError:
        raise
    except Exception as exc:  # whatever a damaged zip raises: BadZipFile, EOFError, zlib...
        log.warning("member %s: damaged cache %s (%s), refitting", spec, cache, reason(exc))
        return None
    log.info("%s: reusing forecasts from %s%s", spec, cache, found)
    return {"val": val, "test": test, "timings": timings}


def _cache_matches(
    z,
    key: str,
    stamps: dict[str, str],
    cfg: RunConfig,
    base: str,
    periods: list[int],
    derived: dict[str, Any] | None,
) -> str | None:
    """Whether a member's saved forecasts (the open ``forecasts.npz`` ``z``) are this run's:
    None if not, else a note for run.log ("" for a cache with the current key).

    A cache from an earlier version holds the old-style key: it counts when this run,
    spelled as that run was, gives the same old key (stamps compared where the cache has
    them, as before). Respelled, it is refitted once and then found under the new key.
    """
    spec = stamps.get("spec")
    unstamped = [k for k in REQUIRED_STAMPS if k in stamps and k not in z.files]
    if unstamped:  # nothing says these forecasts are of this file's values and timestamps
        log.info(
            "%s: its forecasts were saved by a version that did not stamp the data's %s: "
            "fitting it again",
            spec,
            " and ".join(unstamped),
        )
        return None
    differ = [k for k, v in stamps.items() if k in z.files and str(z[k]) != v]
    if differ:
        if "backbone" in differ:  # the same path, other files: say why hours are refitted
            log.warning(
                "%s: the files in its backbone folder changed since its forecasts were "
                "saved (other weights or tokenizer): fitting it again",
                spec,
            )
        else:
            log.info(
                "%s: its forecasts were saved for other %s: fitting it again",
                spec,
                ", ".join(_STAMP_WORDS.get(k, k) for k in differ),
            )
        return None
    stored = str(z["key"])
    if stored == key:
        return ""
    settings = {k: getattr(cfg, k) for k in _LEGACY_SETTINGS}
    params = cfg.member_params.get(base, {})
    if stored == _legacy_data_key(settings, params, periods, derived):
        return " (saved by an earlier version)"
    log.info(
        "%s: its saved forecasts are of other settings, or of a version that forecast it "
        "otherwise: fitting it again",
        stamps.get("spec"),
    )
    return None


def copy_members(copies: list[tuple[str, Path, Path]], source: Path) -> None:
    """Copy members' folders (saved model and forecasts) from another run, under that
    run's lock (a run writing it must not hand over one run's model beside another's
    forecasts). A member that cannot be copied (busy source, full disk) is fitted
    instead: ``fit_member`` finds no forecasts of it here."""
    try:
        lock = FolderLock(source, shared=True)  # other readers (analyse, forecast) welcome
    except BlockingIOError:
        log.warning("%s: its members are fitted here, not copied", holder(source))
        return
    except OSError:  # a read-only copy of a run: nobody writes it
        lock = None
    try:
        for spec, src, dst in copies:
            try:
                _copy_member(src, dst)
            except (OSError, shutil.Error) as exc:
                log.warning("%s: cannot copy it from %s (%s); fitting it instead", spec, src, exc)
                continue
            log.info("%s: copied from %s (same data and settings)", spec, src)
    finally:
        if lock is not None:
            lock.release()


def _copy_member(src: Path, dst: Path) -> None:
    """Copy a member's folder into another run, replacing what the destination held;
    through a temporary sibling, so that an interrupted or failed copy leaves no member
    folder that looks complete."""
    tmp = dst.with_name(f".{dst.name}.copy")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        # the bytes, not the modes: on Windows a read-only source file would stay
        # read-only here, and a later rerun could not replace it
        shutil.copytree(src, tmp, copy_function=shutil.copyfile)
        if dst.exists():
            shutil.rmtree(dst)
        # retried: on Windows a virus scanner or the indexer reading the new files
        # refuses the rename for a moment, and a failed copy refits the member (hours)
        replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
