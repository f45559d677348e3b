"""One run: a dataset and a horizon, members side by side, a router, a run folder.

Steps: load and split the data -> periods from the train rows -> fit each member on
train (val for early stopping) -> forecast val and test windows -> fit the router on
the val forecasts only -> weight the test forecasts -> score every window.

The run folder is resumable at member granularity: a member whose forecasts are already
in ``members/<name>/`` from a run on the same data (as loaded, however the command named
it) with the same settings is not fitted again.
Result files are written atomically; ``results.json`` (the mark of a finished run) after
the data files, ``results.md`` after it. A rerun of the same settings and data keeps the
finished run's files until it replaces them (or a member's model they were made with).

The member caches are in `experiments.member_cache`, the scores, tests and router files
in `experiments.scoring`.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import logging.handlers
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ensemble import hybrid
from ensemble.data import Dataset, Splits, make_splits
from ensemble.errors import UserError, reason
from ensemble.figures import VECTOR_FORMATS
from ensemble.io import FolderLock, held, who_holds, write_json, write_npz, write_text
from ensemble.progress import PROGRESS
from experiments import registry
from experiments.config import RunConfig, held_config, without_config_fix
from experiments.logfile import FolderLog, any_stream, said_after_checks
from experiments.member_cache import (
    MANIFEST,
    RUNTIME_PARAMS,
    copy_members,
    member_path,
    probe_saved,
    safe_name,
    saved_forecasts,
    write_manifest,
)
from experiments.scoring import (
    compare_combiners,
    router_features,
    score_forecasts,
    score_references,
    seasonal_baseline,
    significance_tests,
    stack_members,
    write_router_weights,
)

log = logging.getLogger("hybrid_forecast.run")


# train rows' digest, shape, freq -> the analyser's report, for this process: a bench
# grid's cells share their train rows across horizons and seeds, and the analysis takes
# 7 s (ETTh1) to a minute (weather) per cell
_REPORTS: dict[tuple, Any] = {}


def detect_periods(splits: Splits, k: int = 3, progress: bool = False) -> list[int]:
    """Ranked seasonal periods (``PeriodCandidate.seasonal``) of the train rows, never val or
    test; [] if none. ``progress``: a bar on a terminal. Rows analysed before in this
    process are not analysed again."""
    from periodicity import analyse

    x = np.ascontiguousarray(splits.train.data)
    key = (hashlib.sha256(x.view(np.uint8)).hexdigest(), x.shape, x.dtype.str, splits.dataset.freq)
    if key not in _REPORTS:
        if len(_REPORTS) >= 8:  # a long grid over many datasets holds a few, not all
            _REPORTS.pop(next(iter(_REPORTS)))
        # the per-channel lists are for the `periods` command: only the overall one is read
        _REPORTS[key] = analyse(
            x, freq=splits.dataset.freq, progress=progress, channel_strengths=False
        )
    return [int(p) for p in _REPORTS[key].top_periods(k, seasonal_only=True)]


def _setup_logging(out: Path, progress: bool = True) -> logging.Handler:
    """run.log; the console quiet meanwhile (INFO goes to run.log only; the progress lines
    also to a console that is no terminal, unless ``progress`` is off)."""
    return FolderLog(out / "run.log", console=any_stream, echo_progress=progress)


# Members that hold a language model: after each, `release_memory` (a full collection,
# about 0.1 s with torch and transformers loaded: not worth it after the small ones).
HOLDS_A_BACKBONE = {"timellm"}


def release_memory() -> None:
    """Free what finished members left behind before the next one loads.

    A fitted member is garbage once its forecasts are out, but a reference cycle can keep
    it, its backbone and its GPU memory alive until Python's next full collection: the
    first import of a transformers model class leaves the frames of the call that
    triggered it in a cycle, and with them that member's ``fit`` locals (its model and
    trainer). On a small GPU the second Time-LLM would then load beside the first.
    """
    gc.collect()
    torch = sys.modules.get("torch")  # not imported by runs of classical members only
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()  # hand the freed blocks back to the driver


# A member's timings record that results.json gives under member_fits, not timings_s
_FIT_RECORD = ("code", "tree", "reused", "packages")


def fit_member(
    spec: str,
    cfg: RunConfig,
    splits: Splits,
    periods: list[int],
    out: Path,
    progress: bool | None = None,
    before_save: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Fit one member (or reuse its saved forecasts) and return its val/test forecasts and timings.

    ``before_save``: called once the fit has succeeded, just before its model replaces the
    one in the folder (the run's old results, kept until then, stop describing the folder).
    """
    mdir = member_path(out, spec)
    # built before the cache is read (settings only, nothing fitted): the key includes
    # what the member derives from the periods
    member = registry.build(spec, member_context(spec, cfg, splits, periods, out, progress))
    cached, key, stamps = saved_forecasts(member, spec, cfg, splits, periods, out)
    # what of the periods it uses: the cache key covers the periods and what the member
    # derives from them, so the member built here says it of a reused fit too
    used = member_periods(spec, member)
    if cached is not None:
        cached["timings"] = {**cached["timings"], "reused": True}
        cached["member_periods"] = used
        return cached
    cache = mdir / "forecasts.npz"
    t0 = time.perf_counter()
    try:
        member.fit(splits.train, splits.val)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        with np.errstate(over="ignore"):  # beyond float32: inf, refused below in one line
            val = np.asarray(member.predict(splits.val.windows()), dtype=np.float32)
            test = np.asarray(member.predict(splits.test.windows()), dtype=np.float32)
    except (UserError, MemoryError):
        raise
    except Exception as exc:
        # Mostly settings a factory cannot check (values a library refuses deep inside
        # its fit): one line for the user, the traceback in run.log for a bug report.
        # KeyboardInterrupt and SystemExit are no Exception and pass as they are.
        log.info("%s: fit or forecast failed", spec, exc_info=True)  # run.log only
        raise UserError(
            f"member {spec} failed: {reason(exc)}; check its settings "
            f"(@key=value, --set), or the library versions (hybrid-forecast doctor) if they "
            f"are older than pyproject.toml's; the traceback is in {out / 'run.log'}"
        ) from None
    t_pred = time.perf_counter() - t0
    for part, pred, split in (("val", val, splits.val), ("test", test, splits.test)):
        expect = (split.n_windows, cfg.pred_len, split.n_channels)
        if pred.shape != expect:
            raise RuntimeError(
                f"member {spec} returned {part} forecasts of shape {pred.shape}, expected {expect}"
            )
        hybrid.refuse_non_finite(spec, pred, part)
    # Another fit's forecasts go just before this fit's model replaces its model: a kill
    # between the two saves would otherwise leave the old forecasts beside the new model
    # (reused by a later run of the old settings while `forecast` loads the new model).
    # Not earlier: a refit stopped or failed before this point keeps them reusable.
    if before_save is not None:
        before_save()
    cache.unlink(missing_ok=True)
    (mdir / "model" / MANIFEST).unlink(missing_ok=True)  # a save cut short lists nothing
    member.save(mdir / "model")
    write_manifest(mdir / "model")  # after the save: a later reuse checks its files are there
    timings: dict[str, Any] = {"fit": round(t_fit, 3), "predict": round(t_pred, 3)}
    timings["code"] = code_label()  # results.json credits a reused member to its fit's code
    timings["tree"] = code_tree()  # the same code under a later docs-only commit
    timings["packages"] = fitted_with()  # another torch or lightgbm forecasts otherwise
    if getattr(member, "resumed", False):  # went on from an interrupted process's checkpoint
        timings["resumed"] = True  # the seconds are this process's part only
    write_npz(
        cache,
        val=val,
        test=test,
        key=np.array(key),
        **{k: np.array(v) for k, v in stamps.items()},
        timings=np.array(json.dumps(timings)),
    )
    log.info("%s: fit %.1fs, predict %.1fs", spec, t_fit, t_pred, extra=PROGRESS)
    return {"val": val, "test": test, "timings": timings, "member_periods": used}


def member_periods(spec: str, member: Any) -> dict[str, Any] | None:
    """The period settings ``member`` (built for ``spec``) forecasts with, read off the
    member itself: the run's periods (``periods`` in results.json) are ranked candidates,
    and each member takes what fits its lookback (snaive at L=96 of periods [168, 24]:
    24), or its own ``@`` setting. For results.json's ``member_periods``.

    Returns:
        None for a member that uses no period (naive, window_mean, nlinear,
        itransformer, any other registered member); else, by member: snaive
        ``{"period": p}``; arima ``{"season": s}`` (0: no seasonal difference) and
        ``"fourier"`` [periods] where it has Fourier terms; lightgbm ``{"periods": [..]}``
        (its profile periods, the first its level's); dlinear ``{"kernel": k}`` (its
        moving average, one period long under ``@kernel=auto``); patchtst
        ``{"patch_len": p}``; timellm ``{"patch_len": p}`` and ``"prompt_periods"`` [the
        periods its prompt states] where the prompt states them.
    """
    base = registry.parse_spec(spec)[0]
    try:
        if base == "snaive":
            return {"period": int(member.period)}
        if base == "arima":
            used: dict[str, Any] = {"season": int(member.season)}
            if member.fourier_periods:
                used["fourier"] = [int(p) for p in member.fourier_periods]
            return used
        if base == "lightgbm":
            return {"periods": [int(p) for p in member.periods]}
        if base == "dlinear":
            return {"kernel": int(member.kernel)}
        if base == "patchtst":
            return {"patch_len": int(member.patch_len)}
        if base == "timellm":
            used = {"patch_len": int(member.patch_len)}
            stats = getattr(member, "prompt_stats", None)
            if (
                getattr(member, "prompt", "concise") != "none"
                and str(getattr(member, "backbone", "")) != "none"
                and (stats is None or "periods" in stats)
            ):
                used["prompt_periods"] = [int(p) for p in member.periods[:5]]
            return used
    except (AttributeError, TypeError, ValueError):  # a member of another shape: unknown
        return None
    return None


# What a number was computed with: the same settings give other numbers under another
# torch, on a GPU instead of the CPU, or with another bitsandbytes kernel.
_PACKAGES = (
    "hybrid-forecast",
    "torch",
    "transformers",
    "accelerate",
    "bitsandbytes",
    "numpy",
    "scikit-learn",
    "statsmodels",
    "lightgbm",
)


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """The installed version of each of ``_PACKAGES`` (None: not installed), as first
    asked in this process: `run` asks at its start, so a run records the libraries it
    started with, not those a ``pip install`` during it left behind."""
    return installed_versions()


def installed_versions() -> dict[str, str | None]:
    """The installed version of each of ``_PACKAGES`` now (None: not installed)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def fitted_with() -> dict[str, str | None]:
    """The library versions a member's fit records (this package's code is its own
    record, ``code_label``)."""
    return {k: v for k, v in package_versions().items() if k != "hybrid-forecast"}


@functools.lru_cache(maxsize=1)
def run_code() -> dict[str, Any]:
    """``code_version()`` as first asked in this process: the code it imported. `run`
    asks at its start, so results.json's ``environment.code`` and each member's
    ``member_fits`` code (``code_label``, ``code_tree``) name the code the run started
    with, never a commit made while it ran (`code_changed` says when one was). Once per
    process, not per run: a bench grid's later cells run the modules its first imported,
    whatever was committed between them (and warn that the checkout changed)."""
    return code_version()


def code_label() -> str | None:
    """This code in one word: the commit (``+modified`` with changes to tracked files),
    else the package version; of ``run_code``, the code the process started with."""
    code = run_code()
    if code["commit"]:
        return code["commit"][:12] + ("+modified" if code["modified"] else "")
    return code["version"]


def code_tree() -> str | None:
    """``code_version``'s ``tree`` where this code is the commit's (no edits to the code
    paths), else None: the hash two commits share when only docs or tests changed; of
    ``run_code``, as ``code_label``."""
    code = run_code()
    return None if code["modified"] else code["tree"]


def code_changed(start: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether the checkout's code is other than ``start`` (``code_version`` records): a
    commit made since, edits to the code paths made or undone, or other edits (``diff``:
    a run started on an edited checkout and edited further). Unknown (no git, a timeout,
    a record from before ``diff``: None) is no change."""
    return any(
        start.get(k) is not None and now.get(k) is not None and start.get(k) != now.get(k)
        for k in ("commit", "modified", "diff")
    )


def say_who_fitted(fits: dict[str, dict[str, Any]], members_dir: Path, what: str) -> None:
    """Warn once of the members fitted by other code than this one's: a fix to a member
    since is not in them (results.json's member_fits names the code of each).

    Args:
        fits: member -> its ``member_fits`` entry (``code``: the commit that fitted it;
            ``tree``: its code paths' hash, where recorded: the same code under another
            commit, one that changed only docs or tests, is no other code; ``packages``:
            the library versions it was fitted under, where recorded).
        members_dir: the folder of their member folders (to delete for a refit).
        what: what of theirs is used, e.g. "forecasts reused" or "models loaded".
    """
    ours, tree = code_label(), code_tree()
    unknown = [s for s, f in fits.items() if f.get("code") is None]
    if unknown:
        log.info("%s: %s of fits that did not record their code", ", ".join(unknown), what)
    other = {
        s: f["code"]
        for s, f in fits.items()
        if f.get("code") not in (None, ours) and (tree is None or f.get("tree") != tree)
    }
    if other and ours is not None:
        log.warning(
            "%s: %s from a fit by code %s (this is %s); delete their folders in %s to fit "
            "them with this code",
            ", ".join(other),
            what,
            ", ".join(dict.fromkeys(other.values())),
            ours,
            members_dir,
        )
    _say_which_versions(fits, members_dir, what)


def _say_which_versions(fits: dict[str, dict[str, Any]], members_dir: Path, what: str) -> None:
    """Warn once of the members fitted under other versions of the libraries that make
    their numbers (``fitted_with``): ``lightgbm 4.5.0 -> 4.6.0``."""
    now = fitted_with()
    unknown = [s for s, f in fits.items() if not isinstance(f.get("packages"), dict)]
    if unknown:  # fitted before the versions were recorded: nothing to compare
        log.info(
            "%s: %s of fits that did not record their package versions", ", ".join(unknown), what
        )
    changes: dict[str, str] = {}  # member -> its differences
    for spec, fit in fits.items():
        then = fit.get("packages")
        if not isinstance(then, dict):
            continue
        differ = [
            f"{name} {then[name] or 'not installed'} -> {now[name] or 'not installed'}"
            for name in now
            if name in then and then[name] != now[name]
        ]
        if differ:
            changes[spec] = ", ".join(differ)
    if not changes:
        return
    groups: dict[str, list[str]] = {}  # the same differences: one list of members
    for spec, differ in changes.items():
        groups.setdefault(differ, []).append(spec)
    detail = (
        next(iter(groups))
        if len(groups) == 1
        else "; ".join(f"{', '.join(specs)}: {d}" for d, specs in groups.items())
    )
    log.warning(
        "%s: %s from fits under other package versions (%s); delete their folders in %s "
        "to fit them with these",
        ", ".join(changes),
        what,
        detail,
        members_dir,
    )


# the package's code (``modified`` in results.json's environment counts edits here only)
_CODE_PATHS = (
    "classical",
    "ensemble",
    "experiments",
    "periodicity",
    "router",
    "timellm",
    "pyproject.toml",
)


def code_version() -> dict[str, Any]:
    """This package's version and, where it runs from a git clone (``pip install -e``),
    the commit, ``tree``: one hash over the git trees of the code paths (``_CODE_PATHS``)
    at that commit, and whether those paths' tracked files differ from it: two commits can
    give other numbers for the same settings (the version number alone has not changed
    with them), while two commits with the same ``tree`` (a docs-only commit between them)
    run the same code; ``diff``, the hash of the uncommitted edits (``_edits_hash``), tells
    two edited checkouts of one commit apart. Without git (an installed wheel) only the
    version is known: the rest is None.
    """
    import hashlib
    import subprocess
    from importlib import metadata

    try:
        version = metadata.version("hybrid-forecast")
    except metadata.PackageNotFoundError:
        version = None
    info: dict[str, Any] = {
        **{"version": version, "commit": None, "modified": None, "tree": None},
        "diff": None,
    }
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return info

    def git(*args: str) -> str | None:
        try:
            # --no-optional-locks: `status` refreshes the index otherwise, and a commit
            # made meanwhile in that clone fails on its index.lock
            done = subprocess.run(
                ["git", "--no-optional-locks", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=20,
            )
        except (OSError, subprocess.SubprocessError):  # no git on the machine, a hung disk
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    info["commit"] = git("rev-parse", "HEAD")
    if info["commit"]:
        # `mode type id<TAB>path` of each code path at the commit: equal exactly where the
        # code is, whatever else (README, tests, benchmarks) the commits changed
        listing = git("ls-tree", info["commit"], "--", *_CODE_PATHS)
        if listing:
            info["tree"] = hashlib.sha256(listing.encode("utf-8")).hexdigest()
        # the code that makes the numbers: an edited test, doc or benchmark changes none
        status = git("status", "--porcelain", "--untracked-files=no", "--", *_CODE_PATHS)
        info["modified"] = None if status is None else bool(status)
        info["diff"] = _edits_hash(git, root)
    return info


def _edits_hash(git: Callable[..., str | None], root: Path) -> str | None:
    """12 hex digits of the SHA-256 of the uncommitted edits to the code paths (``git diff
    HEAD``, staged or not) and of the untracked .py files under them (a new module an edit
    imports), "" where there are none; None where git could not say. Two checkouts of one
    commit, both "modified", ran the same code only where these are equal."""
    # the diff's text pinned against the user's git settings (abbreviation, prefixes,
    # algorithm): the same edits on two machines are the same hash
    settings = ("core.abbrev=40", "diff.noprefix=false", "diff.mnemonicPrefix=false")
    pinned = [arg for kv in settings for arg in ("-c", kv)]
    diff = git(
        *pinned,
        "diff",
        "HEAD",
        *("--full-index", "--no-ext-diff", "--no-textconv", "--no-color", "--no-renames"),
        *("--diff-algorithm=myers", "--src-prefix=a/", "--dst-prefix=b/", "-U3"),
        "--",
        *_CODE_PATHS,
    )
    new = git("ls-files", "--others", "--exclude-standard", "-z", "--", *_CODE_PATHS)
    if diff is None or new is None:
        return None
    untracked = sorted(f for f in new.split("\0") if f.endswith(".py"))
    if not diff and not untracked:
        return ""
    digest = hashlib.sha256(diff.encode("utf-8"))
    for name in untracked:
        digest.update(b"\0" + name.encode("utf-8") + b"\0")
        try:
            digest.update((root / name).read_bytes().replace(b"\r\n", b"\n"))  # as git would
        except OSError:  # deleted meanwhile: its name alone
            pass
    return digest.hexdigest()[:12]


def warn_code_changed(env: dict[str, Any]) -> None:
    """Say where the code or the libraries changed while the run ran (``environment``'s
    ``code_at_end``, ``packages_at_end``): results.json records those it started with."""

    def code(c: dict[str, Any]) -> str:
        commit = c.get("commit")
        text = str(commit)[:12] if commit else f"version {c.get('version')}"
        # two edited checkouts of one commit: their edits' hashes tell them apart
        edits = f" (edits {c['diff'][:8]})" if c.get("diff") else ""
        return text + (", modified" if c.get("modified") else "") + edits

    if "code_at_end" in env:
        log.warning(
            "the code changed while this run ran (it started on %s; the checkout is %s "
            "now): results.json records the code it started with, but a module first "
            "imported after the change may be the new code; rerun to be sure of its numbers",
            code(env["code"]),
            code(env["code_at_end"]),
        )
    if "packages_at_end" in env:
        then, now = env["packages"], env["packages_at_end"]
        log.warning(
            "the installed libraries changed while this run ran (%s): results.json records "
            "those it started with; rerun to be sure of its numbers",
            ", ".join(
                f"{k} {then.get(k) or 'not installed'} -> {now.get(k) or 'not installed'}"
                for k in dict.fromkeys([*then, *now])
                if then.get(k) != now.get(k)
            ),
        )


def environment() -> dict[str, Any]:
    """Python, platform, package versions and the devices torch sees, for results.json.

    The code and the package versions are those the run started with (``run_code``,
    ``package_versions``), not those of the checkout when the results are written: a
    commit made during an hours-long run is not this run's code. Where the code or the
    versions changed while it ran, ``code_at_end`` / ``packages_at_end`` say what they
    are now (and `run` warns).

    torch is asked about its GPUs only where a member already imported it, so a
    classical-only run does not pay torch's import for this record.
    """
    import platform

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": dict(package_versions()),
        "code": dict(run_code()),
    }
    now = code_version()
    if code_changed(env["code"], now):
        env["code_at_end"] = now
    installed = installed_versions()
    if installed != env["packages"]:
        env["packages_at_end"] = installed
    torch = sys.modules.get("torch")
    if torch is not None:
        cuda = torch.cuda.is_available()
        env["torch_cuda"] = torch.version.cuda  # None: a CPU-only build of torch
        env["gpus"] = (
            [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if cuda
            else []
        )
        env["cpu_threads"] = torch.get_num_threads()
    return env


# A last epoch that gains less than this share is not worth more epochs: DLinear at
# L=336, its learning rate halved nine times, gained 0.0005 and was told to train on
STILL_IMPROVING = 1e-3


def training_curves(out: Path, specs: list[str]) -> dict[str, dict[str, Any]]:
    """Train and val MSE per epoch of each member that trains by epochs (DLinear,
    NLinear, PatchTST, iTransformer, Time-LLM), from its saved model's history (a reused member's too).

    Returns:
        spec -> {"train_mse": [...], "val_mse": [...], "epochs": n, "best_epoch": k
        (1-based, the lowest finite val MSE, the epoch whose weights were kept),
        "still_improving": whether that was the last of n >= 2 epochs and it lowered the
        val MSE by more than ``STILL_IMPROVING`` of the best before it (the epoch budget,
        not early stopping, ended training: more epochs or a higher learning rate may
        give a better member)}.
    """
    curves: dict[str, dict[str, Any]] = {}
    for spec in specs:
        path = member_path(out, spec) / "model" / "config.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue  # no epochs (ARIMA, naive)
        except (OSError, ValueError) as exc:  # damaged since: results.json lacks its curve
            log.warning(
                "%s: its saved model's %s cannot be read (%s), so its training curve is "
                "left out; delete %s to fit it again",
                spec,
                path,
                reason(exc),
                path.parents[1],
            )
            continue
        try:
            history = meta.get("history") or []
            val = [float(h["val_mse"]) for h in history]
            train = [float(h["train_mse"]) for h in history]
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # no epochs (LightGBM), or not a history we wrote
        finite = [i for i, v in enumerate(val) if np.isfinite(v)]
        if not finite:
            continue
        best = min(finite, key=val.__getitem__)
        before = [val[i] for i in finite if i < best]
        still = (
            len(history) >= 2
            and best == len(history) - 1
            and bool(before)
            and min(before) - val[best] > STILL_IMPROVING * min(before)
        )
        curves[spec] = {
            "train_mse": train,
            "val_mse": val,
            "epochs": len(history),
            "best_epoch": best + 1,
            "still_improving": still,
        }
    return curves


def warn_about_training(curves: dict[str, dict[str, Any]]) -> None:
    """Warn of members the epoch budget cut off, and of members that kept their first
    epoch (whose result then hangs on the seed)."""
    for spec, c in curves.items():
        if c["still_improving"]:
            log.warning(
                "%s: val MSE still falling at its last epoch (%d of %d kept): raise its "
                "epochs or learning rate before comparing it",
                spec,
                c["best_epoch"],
                c["epochs"],
            )
        elif c["epochs"] == 1:  # nothing shows whether a second epoch would help
            log.warning(
                "%s: trained one epoch only: whether more would help is not known; raise "
                "its epochs before comparing it",
                spec,
            )
        elif c["best_epoch"] == 1 and c["epochs"] >= 3:
            # DLinear at L=96: seed 1 kept epoch 1 of 4 (test 0.442, seed 0 0.388)
            log.warning(
                "%s: kept its first epoch; the %d after it did worse on validation, so "
                "its result hangs on the seed: a lower learning rate or more patience may "
                "help (compare several seeds)",
                spec,
                c["epochs"] - 1,
            )


def warn_below_baseline(res: dict[str, Any], curves: dict[str, dict[str, Any]]) -> None:
    """Warn of members whose validation MSE is above the best naive forecast's
    (results.json's ``baseline``, `scoring.seasonal_baseline`): Time-LLM after one epoch on
    ETTh1 L=96 scored 0.94 against seasonal naive's 0.51, and every table and the routing
    analysis then compare a model that has not learned the series."""
    from experiments.report import below_baseline

    base = res["baseline"]
    for spec in below_baseline(res):
        c = curves.get(spec)
        log.warning(
            "%s: validation MSE %.4f is above %s's %.4f, a forecast that only repeats the "
            "input: %s before comparing it",
            spec,
            res["val"][spec]["mse"],
            base["forecast"],
            base["val_mse"],
            (
                f"it has not learned the series yet ({c['epochs']} epoch"
                f"{'s' if c['epochs'] != 1 else ''}); train it longer (@epochs, @lr)"
                if c
                else "check its settings"
            ),
        )


def _warn_identical_members(specs: list[str], val: np.ndarray, test: np.ndarray) -> None:
    """Warn about members that forecast exactly alike: the same model spelled two ways
    (``dlinear`` and ``dlinear@kernel=25``, the default), which mean and median count
    twice. [M, W, H, C] each."""
    for i in range(len(specs)):
        for j in range(i + 1, len(specs)):
            if np.array_equal(val[i], val[j]) and np.array_equal(test[i], test[j]):
                log.warning(
                    "members %s and %s forecast exactly alike (the same settings?): the "
                    "ensemble counts that model twice; drop one or give it other settings",
                    specs[i],
                    specs[j],
                )


def member_context(
    spec: str,
    cfg: RunConfig,
    splits: Splits,
    periods: list[int],
    out: Path,
    progress: bool | None = None,
) -> registry.MemberContext:
    """What ``spec``'s factory builds from: the run's settings, periods and its own folder."""
    base, _ = registry.parse_spec(spec)
    return registry.MemberContext(
        seq_len=cfg.seq_len,
        pred_len=cfg.pred_len,
        n_channels=splits.train.n_channels,
        freq=splits.dataset.freq,
        periods=periods,
        seed=cfg.seed,
        dataset=splits.dataset.name,
        params=dict(cfg.member_params.get(base, {})),
        workdir=str(member_path(out, spec)),
        progress=progress,
    )


# What a finished run writes into its folder (analyse adds the routing_* files). A rerun
# removes them first, so a rerun that fails leaves no results next to its new config.
# Every figure `analyse` draws into a run folder.
ANALYSE_FIGURES = (
    "weights_distribution.png",
    "weights_over_time.png",
    "weights_vs_features.png",
    "win_rates.png",
    "router_vs_mean.png",
    "prompt_probe.png",
)
_RUN_FILES = (
    "results.json",
    "results.md",
    "forecasts.npz",
    "router_weights.npz",
    "test_windows.png",
    "training.png",
    "routing_report.md",
    "routing_analysis.json",
    # `analyse`'s figures, which describe the router of the run they were drawn from
    *ANALYSE_FIGURES,
    # `forecast`'s, made with the models of the run it was drawn from
    "forecast.csv",
)
# with each figure's copies in the formats $HYBRID_FORECAST_FIGURES asked for
RUN_OUTPUTS = _RUN_FILES + tuple(
    f"{name.removesuffix('.png')}.{fmt}"
    for name in _RUN_FILES
    if name.endswith(".png")
    for fmt in VECTOR_FORMATS
)


@dataclass
class _Prepared:
    """What `_prepare` checked and computed before the run folder is touched."""

    dataset: Dataset
    splits: Splits
    periods: list[int]
    periods_seconds: float
    copies: list[tuple[str, Path, Path]]  # (spec, from, to): member folders of reuse_from
    refit: list[str]  # the members to be fitted: neither saved in the folder nor copied


def run(
    cfg: RunConfig,
    progress: bool = True,
    train: bool = True,
    reuse_from: Path | None = None,
    refuse_other_data: str | None = None,
    between: Callable[[], None] | None = None,
    started: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Execute one run and write its folder; returns the results dict (results.json).

    Args:
        cfg: the run's configuration.
        progress: progress bars.
        train: False refuses (before the folder is touched) unless every member's
            forecasts of these data and settings are saved in the folder: the official
            ``--is_training 0``, test a trained model, never train one.
        reuse_from: another run folder (``--config F`` with a new ``--out``): a member
            whose forecasts it saved for these data and settings is copied from there
            (model and forecasts) instead of being fitted again.
        refuse_other_data: the flag that chose ``cfg.out`` (``--config F``, whose run
            folder it is): a finished run there made from other data (its results.json's
            file digest) is refused, as ``--config F --data-dir X`` is, rather than
            replaced. None: replaced with a warning that names both files.
        between: called after each member's fit (saved by then), where stopping is safe:
            ``cmd_run`` raises there a Ctrl-C that a finalizer swallowed.
        started: called once every check has passed and run.log is open, before the
            run's first line there and any fit (``timellm`` says its notes then: a refused
            input is its error line alone).
    """
    from tqdm.auto import tqdm

    from router import make_combiner

    cfg.validate()
    # the code and libraries this run starts with: what results.json records, however
    # long it runs and whatever is committed or installed meanwhile
    run_code()
    package_versions()
    specs = registry.parse_members(cfg.members)
    cfg.members = specs
    combiner = make_combiner(cfg.router, seed=cfg.seed, member_names=specs, progress=progress)
    if not cfg.out:
        cfg.out = default_out(cfg)
    out = Path(cfg.out)
    if held(out):  # before minutes of preparation; the lock itself is taken below
        raise UserError(_busy(out))
    # Everything that can refuse the input runs before the folder is touched: a bad
    # setting must not delete a finished run's results or leave a half-made folder.
    # Warnings on the way (gaps in the data...) are kept for run.log.
    early = logging.handlers.MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1)
    logging.getLogger().addHandler(early)
    try:
        with said_after_checks():  # a refused input: its error alone, not its warnings too
            prep = _prepare(cfg, specs, out, train, reuse_from, progress)
            _refuse_a_folder_of_other_files(out)
            data_change = _data_change(out, prep.dataset)
            if data_change and refuse_other_data:
                raise UserError(
                    f"{refuse_other_data} would overwrite the finished run in {out}, made "
                    f"from other data ({data_change}); give --out for the new run, or point "
                    "--data-dir / $HYBRID_FORECAST_DATA at that run's data"
                )
    finally:
        logging.getLogger().removeHandler(early)
    dataset, splits, periods = prep.dataset, prep.splits, prep.periods
    try:
        lock = FolderLock(out)
    except BlockingIOError:
        raise UserError(_busy(out)) from None
    try:
        handler = _setup_logging(out, progress)
        early.setTarget(handler)
        early.close()  # flushes the buffered records into run.log
    except BaseException:
        lock.release()
        raise
    try:
        # a rerun of the same settings keeps its finished results until this run's
        # replace them (or a member's new model replaces the one they were made with):
        # Ctrl-C in an hours-long refit must not leave the folder without results
        kept = _take_folder(out, cfg, data_change, prep.refit)

        def drop_kept() -> None:
            _remove_outputs(out, kept)
            kept.clear()

        if started is not None:
            started()
        log.info(
            "run %s: %s L=%d H=%d members=%s router=%s seed=%d",
            out,
            dataset.name,
            cfg.seq_len,
            cfg.pred_len,
            specs,
            cfg.router,
            cfg.seed,
        )
        if cfg.periods is not None:
            log.info("periods (given by --periods or the config): %s", periods)
        else:
            log.info("periods (train rows, %.1f s): %s", prep.periods_seconds, periods)
        if prep.copies:
            drop_kept()  # copied members replace the ones the old results were made with
            copy_members(prep.copies, Path(reuse_from))

        results: dict[str, Any] = {}
        bar = tqdm(specs, desc="members", disable=None if progress else True, unit="member")
        for spec in bar:
            bar.set_postfix_str(spec)
            results[spec] = fit_member(
                spec, cfg, splits, periods, out, None if progress else False, drop_kept
            )
            if registry.parse_spec(spec)[0] in HOLDS_A_BACKBONE:
                release_memory()  # the next member must not load beside this one's model
            if between is not None:
                between()

        ch = splits.eval_channels
        val_true = splits.val.targets()[..., ch]
        test_true = splits.test.targets()[..., ch]
        # In the members' own dtype (float32): every combiner, metric and the oracle
        # casts blocks of it to float64 where it computes, so the numbers are those of a
        # float64 stack (weather H=720: 2.6 GB instead of 5.2 GB)
        val_stack = stack_members(results, "val", ch)
        test_stack = stack_members(results, "test", ch)
        _warn_identical_members(specs, val_stack, test_stack)
        # who fitted each member (a reused one: an earlier run's code) apart from the seconds
        fits = {
            k: {
                "code": v["timings"].get("code"),
                "tree": v["timings"].get("tree"),
                "reused": bool(v["timings"].get("reused")),
                # the library versions of its fit (null: a fit before they were recorded)
                "packages": v["timings"].get("packages"),
            }
            for k, v in results.items()
        }
        say_who_fitted(
            {k: f for k, f in fits.items() if f["reused"]}, out / "members", "forecasts reused"
        )
        timings = {
            k: {n: x for n, x in v["timings"].items() if n not in _FIT_RECORD}
            for k, v in results.items()
        }
        used_periods = {k: v.get("member_periods") for k, v in results.items()}
        del results

        t0 = time.perf_counter()
        feats = {"val": None, "test": None}
        feature_names: list[str] = []
        if combiner.needs_features:
            for part, split, stack in (
                ("val", splits.val, val_stack),
                ("test", splits.test, test_stack),
            ):
                feats[part], feature_names = router_features(
                    split.inputs(), stack, periods, specs, ch
                )
            combiner.feature_names = feature_names
            combiner.channel_names = [str(dataset.columns[c]) for c in ch]  # printed rules
        combiner.fit(val_stack, val_true, feats["val"])  # validation forecasts only
        w_val = combiner.weights(val_stack, feats["val"])
        w_test = combiner.weights(test_stack, feats["test"])
        ens_val = hybrid.combined_forecast(combiner, val_stack, feats["val"])
        ens_test = hybrid.combined_forecast(combiner, test_stack, feats["test"])
        t_router = time.perf_counter() - t0
        log.info("router: %s", combiner.describe())

        reference = (val_stack, val_true)  # the mean and median are fitted on validation
        test_losses: dict[str, np.ndarray] = {}  # per-window test MSE [W], for the DM tests
        # the ensembles are float32 from here on (only plotted and written): none is held
        # in float64 while the members' and the references' differences are made
        val_scores, ens_val = score_forecasts(specs, val_stack, val_true, ens_val)
        scores = {"val": val_scores | score_references(val_stack, val_true, reference)}
        test_scores, ens_test = score_forecasts(specs, test_stack, test_true, ens_test, test_losses)
        scores["test"] = test_scores | score_references(
            test_stack, test_true, reference, test_losses
        )
        significance = significance_tests(test_losses, specs, cfg.pred_len)
        every = None
        if getattr(combiner, "fold_scores_", None):  # the learned router: report every candidate
            every = compare_combiners(
                combiner,
                (val_stack, val_true, feats["val"]),
                (test_stack, test_true, feats["test"]),
                test_losses["mean"],
                progress,
            )

        res = {
            "dataset": dataset.name,
            "seq_len": cfg.seq_len,
            "pred_len": cfg.pred_len,
            "seed": cfg.seed,
            "features": cfg.features,
            "split": dataset.split_rule,
            # which bytes: a file named like a registered dataset may be another series
            "data": {
                "file": str(dataset.path),
                "sha256": dataset.sha256,
                "published": dataset.published,
            },
            "members": specs,
            "router": cfg.router,
            "windows": splits.window_counts(),
            "channels": [dataset.columns[c] for c in ch],
            # the papers' units: each channel standardised by its train rows' mean and std
            "metric_space": "scaled",
            "val": scores["val"],
            "test": scores["test"],
            "timings_s": timings,  # member -> {fit, predict}, as ARCHITECTURE §3 has it
            "member_fits": fits,  # member -> the code that fitted it, and whether reused
            "stage_timings_s": {
                "periods": round(prep.periods_seconds, 3),
                "router": round(t_router, 3),
            },
            "periods": periods,
            "periods_given": cfg.periods is not None,  # else the analyser's, on the train rows
            # member -> the period settings it forecast with (null: none), `member_periods`
            "member_periods": used_periods,
            "router_info": combiner.describe(),
            "significance": {"test": significance},
            "environment": environment(),
        }
        warn_code_changed(res["environment"])
        if every is not None:
            res["combiners"] = every
        drop_kept()  # from here the folder holds no results.json until this run's
        curves = training_curves(out, specs)
        if curves:
            res["training"] = curves
        warn_about_training(curves)
        # the floor a member must clear before a comparison with it says anything
        name, floor = seasonal_baseline(splits.val.inputs(), val_true, periods, ch)
        res["baseline"] = {"forecast": name, "val_mse": floor}
        warn_below_baseline(res, curves)
        from experiments.report import plot_training, plot_windows, results_markdown

        if curves:
            plot_training(out / "training.png", curves)
        plot_windows(
            out / "test_windows.png",
            splits,
            {k: test_stack[i] for i, k in enumerate(specs)} | {"ensemble": ens_test},
            test_true,
        )
        write_npz(
            out / "forecasts.npz",
            # the members' float32 stacks are written as they are, not copied
            **{f"test/{k}": np.asarray(test_stack[i], np.float32) for i, k in enumerate(specs)},
            **{"test/ensemble": ens_test, "test/true": test_true.astype(np.float32)},
            **{f"val/{k}": np.asarray(val_stack[i], np.float32) for i, k in enumerate(specs)},
            **{"val/ensemble": ens_val},
        )
        write_router_weights(out, combiner, specs, w_val, w_test, feats, feature_names)
        md = results_markdown(res) + f"\n## Router\n\n```\n{res['router_info']}\n```\n"
        # results.json marks a finished run for every command; the table for people comes
        # after it, so that a run killed before it leaves no results.md that looks finished
        write_json(out / "results.json", res)
        write_text(out / "results.md", md)
        log.info("test: %s", json.dumps(res["test"]))
        return res
    except KeyboardInterrupt:
        log.info(
            "interrupted; a rerun reuses the members already fitted and continues an "
            "interrupted Time-LLM from its last checkpoint"
        )
        raise
    except BaseException as exc:  # the console gets one line; run.log keeps what happened
        log.info("run failed: %s: %s", type(exc).__name__, exc, exc_info=True)
        raise
    finally:
        try:
            handler.close()
        finally:
            lock.release()


def _prepare(
    cfg: RunConfig,
    specs: list[str],
    out: Path,
    train: bool,
    reuse_from: Path | None,
    progress: bool = False,
) -> _Prepared:
    """Load and split the data, find the periods and check every member's settings (and
    what it can reuse) before anything in ``out`` is replaced.

    Raises:
        UserError: bad data, a router that cannot fit these windows, a member setting
            that its ``preflight`` or ``check_splits`` refuses, or (``train=False``) a
            member with no saved forecasts to test.
    """
    from ensemble.figures import extra_formats
    from router import check_router_data

    extra_formats()  # a bad $HYBRID_FORECAST_FIGURES, before anything is replaced
    dataset = cfg.load_dataset()
    splits = make_splits(dataset, cfg.seq_len, cfg.pred_len, percent=cfg.percent)
    check_router_data(cfg.router, len(specs), splits.val.n_windows)
    _seed_everything(cfg.seed)
    t0 = time.perf_counter()
    periods = (
        list(cfg.periods) if cfg.periods is not None else detect_periods(splits, progress=progress)
    )
    t_periods = time.perf_counter() - t0
    copies, refit = [], []
    for spec in specs:  # every member's settings checked before any is fitted
        member = registry.build(spec, member_context(spec, cfg, splits, periods, out, False))
        reused = probe_saved(member, spec, cfg, splits, periods, out)
        if not reused and reuse_from is not None and Path(reuse_from).resolve() != out.resolve():
            if probe_saved(member, spec, cfg, splits, periods, Path(reuse_from)):
                src = member_path(Path(reuse_from), spec)
                copies.append((spec, src, member_path(out, spec)))
                reused = True
        if not train and not reused:
            raise UserError(
                f"{spec} has no trained model of these data and settings in {out} to "
                "test; train it first (--is_training 1), or give the run folder (--out)"
            )
        if not reused:
            refit.append(spec)
        if not reused and hasattr(member, "preflight"):
            member.preflight()  # e.g. Time-LLM's backbone folder, not hours later
        if not reused and hasattr(member, "check_splits"):
            member.check_splits(splits.train, splits.val)  # e.g. LightGBM's rows
    return _Prepared(dataset, splits, periods, t_periods, copies, refit)


_NOT_A_RUNS = "its config.yaml is not a run's: "


def run_folder_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a run folder (None: it is one). A run writes run.log, then a
    config.yaml of its settings; a folder of the user's own (a hand-written config.yaml,
    notes named results.md) lacks one or the other."""
    if not (folder / "run.log").is_file():
        return "no run.log"
    if not (folder / "config.yaml").is_file():
        return "no config.yaml"
    path = folder / "config.yaml"
    try:
        RunConfig.from_file(path)
    except UserError as exc:  # the run rewrites its own file: no advice for a --config file
        return f"{_NOT_A_RUNS}{without_config_fix(str(exc)).removeprefix(f'{path}: ')}"
    return None


def made_by_a_run(folder: Path) -> bool:
    """Whether ``folder`` holds what only a run writes: a results.json whose ``data`` has
    a sha256, or a member's forecasts.npz carrying its cache key."""
    try:
        res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        sha = res["data"]["sha256"]
        if isinstance(sha, str) and sha:
            return True
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no finished run's results: its members may still be there
    for cache in sorted(folder.glob("members/*/forecasts.npz")):
        try:
            with np.load(cache) as z:
                if "key" in z.files:
                    return True
        except Exception:  # noqa: BLE001 - a damaged cache says nothing either way
            continue
    return False


def _refuse_a_folder_of_other_files(out: Path) -> None:
    """A run replaces config.yaml and the outputs of the run before it in its folder;
    only in a folder a run made: files of those names in any other are the user's own,
    not ours to write over or delete. A run's folder whose config.yaml was damaged or
    deleted is still its (hours of Time-LLM in its member caches): used, with a warning."""
    theirs = [n for n in ("config.yaml", *RUN_OUTPUTS) if (out / n).is_file()]
    why = run_folder_problem(out) if theirs else None
    if why and why != "no run.log" and made_by_a_run(out):
        log.warning(
            "%s: its config.yaml %s, so these settings are not compared with its run's: "
            "each member's saved forecasts are reused only where their own key matches, "
            "%sa new config.yaml is written",
            out,
            "is missing"
            if why == "no config.yaml"
            else f"cannot be read ({why.removeprefix(_NOT_A_RUNS)})",
            "its results are replaced and " if (out / "results.json").is_file() else "and ",
        )
        return
    if why:
        raise UserError(
            f"{out} holds {', '.join(theirs)} but is not a run folder ({why}); "
            "choose an empty or new --out"
        )


def _data_change(out: Path, dataset: Dataset) -> str | None:
    """``data: old file (sha256) -> new file (sha256)`` when the finished run in ``out``
    was made from other bytes than ``dataset`` (its results.json's ``data``), else None.
    config.yaml cannot tell: a run of the data folder $HYBRID_FORECAST_DATA names stores
    ``data_dir: null``, the same under any other folder that variable names later."""
    try:
        old = json.loads((out / "results.json").read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, AttributeError):
        return None  # no finished run, or results no command reads either
    if not isinstance(old, dict):
        return None
    sha, file = old.get("sha256"), old.get("file")
    if isinstance(sha, str) and sha:  # the same bytes elsewhere (a moved folder) are the same data
        if sha == dataset.sha256:
            return None
    elif not isinstance(file, str) or Path(file).resolve() == Path(dataset.path).resolve():
        return None  # an older results.json without a digest: the file's name must do
    was = f"{file} (sha256 {sha[:12]})" if isinstance(sha, str) and sha else str(file)
    return f"data: {was} -> {dataset.path} (sha256 {dataset.sha256[:12]})"


def _remove_outputs(out: Path, names: list[str]) -> None:
    """Remove the previous run's outputs, results.json (the mark of a finished run) first."""
    for name in sorted(names, key=lambda n: n != "results.json"):
        (out / name).unlink(missing_ok=True)
    if names:
        log.info("rerun: removed the previous run's %s", ", ".join(names))


def _take_folder(
    out: Path, cfg: RunConfig, data_change: str | None = None, refit: list[str] | tuple = ()
) -> list[str]:
    """Write this run's config.yaml into ``out`` and remove the previous run's outputs,
    saying so when that run had other settings or data (and which members are refitted).

    Returns:
        The outputs kept: those of a finished run of the same settings and data, which
        stay until this run replaces them (``_remove_outputs``); else [].
    """
    stale = [name for name in RUN_OUTPUTS if (out / name).is_file()]
    finished = "results.json" in stale
    changed = _changed_settings(out, cfg) if finished else []
    if finished and data_change:
        changed.insert(0, data_change)
    if changed == [_UNREAD]:  # a run's damaged config: `_refuse_a_folder_of_other_files` said it
        log.info("rerun: the finished run's settings cannot be compared; its results are replaced")
    elif changed:  # the console's only word that a finished run is being replaced
        more = f"; and {len(changed) - 4} more" if len(changed) > 4 else ""
        log.warning(
            "%s held a finished run with other settings (%s%s); its results are "
            "replaced, %s: give another --out to keep both",
            out,
            "; ".join(changed[:4]),
            more,
            f"refitting {', '.join(refit)}" if refit else "no member refitted",
        )
    kept = stale if finished and not changed else []
    _remove_outputs(out, [n for n in stale if n not in kept])
    _remove_orphaned_temp_files(out)
    # `out` absolute: the config names the folder it was written in from any directory
    write_text(out / "config.yaml", replace(cfg, out=str(out.resolve())).to_yaml())
    return list(kept)


def default_out(cfg: RunConfig) -> str:
    """``runs/<data>[_<features>[-<target>]][_p<percent>]_<L>_<H>_s<seed>``: the data
    file's name for a ``--data-path`` run, the features unless M (with the target when
    one is given) and the percent of training data unless 100, so that another file,
    feature set, target or few-shot cut does not replace a finished run of the same
    lookback and horizon (members, router and ``--set`` changes do, with a warning).
    ``--target OT`` is the default's name. A run of these settings begun before the
    target and percent were part of the name keeps its folder (and its fitted members)."""
    name = cfg.dataset or Path(cfg.data_path or "custom").stem
    feats = "" if cfg.features == "M" else f"_{cfg.features}"
    tail = f"_{cfg.seq_len}_{cfg.pred_len}_s{cfg.seed}"
    legacy = f"runs/{safe_name(name + feats)}{tail}"
    if feats and cfg.target not in (None, "OT"):
        feats += f"-{cfg.target}"
    cut = "" if cfg.percent == 100 else f"_p{cfg.percent}"
    out = f"runs/{safe_name(name + feats + cut)}{tail}"
    if out != legacy and not Path(out).exists():
        held = held_config(legacy)
        if held is not None and (held.get("percent", 100), held.get("target")) == (
            cfg.percent,
            cfg.target,
        ):
            return legacy
    return out


def _busy(out: Path) -> str:
    """The refusal of a folder another command holds: a run writing it, or a reader."""
    who = who_holds(out)  # a writer names itself; readers share the lock and do not
    return (
        f"another command is using {out}"
        + (who or " (a run writing it, or analyse or forecast reading it)")
        + "; wait for it to finish or give another --out"
    )


_UNREAD = "its config.yaml cannot be read, so nothing says which"


def _changed_settings(out: Path, cfg: RunConfig) -> list[str]:
    """``key: old -> new`` for each setting (nested ones dotted, ``out`` aside) in which
    ``cfg`` differs from the run held in ``out``; one line saying so when its config
    cannot be read (damaged or edited into something else)."""
    import yaml

    unread = [_UNREAD]
    try:
        held = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):  # deleted too: a run's folder, yet unknown
        return unread
    if not isinstance(held, dict):
        return unread

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        items: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict):
                items |= flat(v, f"{prefix}{k}.")
            else:
                items[f"{prefix}{k}"] = v
        return items

    old, new = flat(held), flat(cfg.to_dict())
    # stored as given before it was made absolute
    if isinstance(old.get("data_path"), str) and isinstance(new.get("data_path"), str):
        old["data_path"] = str(Path(old["data_path"]).expanduser().resolve())

    def same(k: str) -> bool:
        if k == "data_dir":  # null is the folder $HYBRID_FORECAST_DATA names (the data's
            # own digest, `_data_change`, tells whether that folder's file changed since)
            return same_data_dir(old.get(k), new.get(k))
        if k == "periods":  # given now as the held run detected them: the same run
            return old.get(k) == new.get(k) or the_runs_periods(out, old.get(k), new.get(k))
        return old.get(k) == new.get(k)

    # a member's `progress` (`timellm --quiet` sets it) or `resume` changes no number
    runtime = tuple(f".{k}" for k in RUNTIME_PARAMS)
    keys = [
        k
        for k in dict.fromkeys([*old, *new])
        if k != "out" and not k.endswith(runtime) and not same(k)
    ]
    return [f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}" for k in keys]


def the_runs_periods(out: str | Path, held: Any, periods: Any) -> bool:
    """Whether ``periods`` are those the finished run in ``out`` detected itself (its
    config, ``held``, gives none): given now, they change nothing."""
    if held is not None or not isinstance(periods, list):
        return False
    try:
        res = json.loads((Path(out) / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(res, dict) and res.get("periods") == list(periods)


def same_data_dir(a: Any, b: Any) -> bool:
    """Whether two ``data_dir`` values name the same folder: null (or "") is the one
    ``--data-dir`` defaults to now ($HYBRID_FORECAST_DATA, else ./dataset), a relative
    one is taken from this working directory."""
    from ensemble.data import data_dir_from

    def folder(v: Any) -> Path:
        return data_dir_from(v if isinstance(v, str) else None).resolve()

    return a == b or folder(a) == folder(b)


def _remove_orphaned_temp_files(out: Path) -> None:
    """Temp files of atomic writes cut short by a kill -9 (hundreds of MB on weather),
    and member folders half copied from another run."""
    for tmp in [*out.glob(".*.tmp"), *out.glob("members/*/.*.tmp")]:
        tmp.unlink(missing_ok=True)
        log.info("removed %s, left by an interrupted write", tmp)
    for tmp in out.glob("members/.*.copy"):
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("removed %s, left by an interrupted copy", tmp)


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - libraries that draw from the global state
    # torch only where a member has imported it: every torch user seeds itself too (the
    # window nets, Time-LLM, the torch router), and importing it costs a run of naive
    # members and a static router 1.8 s of its 6
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
