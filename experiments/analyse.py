"""Routing report of a run folder: when does the router prefer which member, and does it pay?

Reads ``results.json``, ``forecasts.npz`` (``test/<member>``, ``test/ensemble``,
``test/true``, ``val/...``), ``router_weights.npz`` (``test`` [W, C, M], ``members``,
optionally ``features_test`` / ``feature_names``) and ``config.yaml``, and writes
``routing_report.md``, ``routing_analysis.json`` and the figures:

* ``weights_distribution.png``: each member's weight over test windows and channels;
* ``weights_over_time.png``: mean weight per member along the test period;
* ``weights_vs_features.png``: mean weight per member in each decile (within its channel)
  of four window features (seasonal strength, trend strength, volatility, dominant period);
* ``win_rates.png``: how often each member is the best one, per regime;
* ``router_vs_mean.png``: where the router's combination beats or loses to the plain mean;
* ``prompt_probe.png`` (with ``--prompt-probe``): how far each counterfactual prompt moves
  Time-LLM's forecasts and its test MSE.

The four features are computed here from the test windows' inputs (the data are
reloaded with the run's config.yaml; train-row scaling as in the run), so the report
reads the same whatever features the router itself used:

* seasonal strength ``max(0, 1 - Var(R) / Var(S + R))`` and trend strength
  ``max(0, 1 - Var(R) / Var(T + R))`` of a classical decomposition at the run's top
  period (moving-average trend T, mean cycle profile S, remainder R), as defined by
  Wang, Smith & Hyndman (2006);
* volatility: standard deviation of the first differences (scaled units);
* dominant period: ``L / k`` for the strongest Fourier frequency ``k >= 1`` of the window.

Weights against features are compared within each channel (the correlations, the
figure's deciles and the regime tables' terciles): a router with one weight per channel
(``stacked``) would otherwise seem to respond to features that only differ between
channels.

The ablations (the ensemble without each member; Time-LLM variants read from sibling
runs) are in `experiments.analyse_ablations`; the figures and the report's Markdown are
drawn in `experiments.analyse_report`.
"""

from __future__ import annotations

import json
import logging
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from ensemble import metrics
from ensemble.errors import UserError
from ensemble.io import FolderLock, read_lock, who_holds, write_json, write_text
from experiments import shell
from experiments.analyse_ablations import (
    check_ablation_runs,
    member_ablations,
    timellm_specs,
    training_ablations,
)
from periodicity.features import map_chunks
from periodicity.strength import FLAT_TOL, strength

if TYPE_CHECKING:
    from ensemble.data import Splits
    from timellm.member import TimeLLMForecaster

log = logging.getLogger("hybrid_forecast.analyse")

FEATURES = ("seasonal_strength", "trend_strength", "volatility", "dominant_period")


@dataclass
class RunData:
    """What the report needs from a run folder.

    Attributes:
        path: the run folder.
        results: results.json.
        config: config.yaml as a dict (empty when missing).
        members: member names, in the order of the weights' last axis.
        test: {member: [W, H, C]} test forecasts (float32, as written).
        val: {member: [W, H, C]} validation forecasts (float32; may be empty).
        ensemble: [W, H, C] the router's test forecast.
        true: [W, H, C] test targets.
        weights: [W, C, M] router weights on test, or None.
    """

    path: Path
    results: dict[str, Any]
    config: dict[str, Any]
    members: list[str]
    test: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    ensemble: np.ndarray
    true: np.ndarray
    weights: np.ndarray | None
    step_weights: np.ndarray | None = None  # [H, M] for per-step rules (stacked, inverse_error)
    # ``weights`` are each window's average over the horizon of weights applied per step
    horizon_averaged: bool = False
    # stacked_tilted: its stacked part's step weights averaged over channels [H, M], and
    # the tilt's share of each test window and channel [W, C] (None in other runs)
    tilt_steps: np.ndarray | None = None
    tilt_share: np.ndarray | None = None


@dataclass
class RefitInputs:
    """What refitting a feature-using router needs besides the forecasts.

    Attributes:
        val_x: [W_val, L, C_all] validation input windows.
        test_x: [W, L, C_all] test input windows.
        periods: the run's periods (train rows), as its router features used them.
        channels: the evaluated channels (indices into C_all).
    """

    val_x: np.ndarray
    test_x: np.ndarray
    periods: list[int]
    channels: list[int]


def load_run(run_dir: str | Path) -> RunData:
    """Read a run folder.

    Raises:
        UserError: the folder is not a finished run folder, or one of its files is damaged
            (the message names the file).
    """
    path = Path(run_dir)
    res_path = path / "results.json"
    if not res_path.is_file():
        _not_finished(path)
    with _reading(res_path):
        results = json.loads(res_path.read_text(encoding="utf-8"))
        if not isinstance(results, dict) or not isinstance(results.get("test"), dict):
            raise ValueError("not the mapping `hybrid-forecast run` writes")
        # str() of a hand-edited "members": "naive" gave one member per letter
        members = results["members"]
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ValueError("members is not a list of member names")
        if not members or len(set(members)) != len(members):
            raise ValueError("members is empty or names a member twice")
        int(results["seq_len"]), int(results["pred_len"])  # the report needs both
        periods = results.get("periods") or []
        if not isinstance(periods, list):
            raise ValueError("periods is not a list")
        # as ints: regimes compare features with them, and "24" would fail there
        results["periods"] = [_whole(p, "periods") for p in periods]
    fc_path = path / "forecasts.npz"
    if not fc_path.is_file():
        raise UserError(f"{path}: forecasts.npz missing; rerun the run to write it")
    with _reading(fc_path), np.load(fc_path) as z:
        arrays = {k: z[k] for k in z.files}  # reading every member finds a cut-off file
    missing = [m for m in members if f"test/{m}" not in arrays]
    if missing or "test/true" not in arrays or "test/ensemble" not in arrays:
        raise UserError(
            f"{fc_path}: expected test/<member>, test/ensemble and test/true; missing "
            f"{', '.join([f'test/{m}' for m in missing] + [k for k in ('test/true', 'test/ensemble') if k not in arrays])}"
        )
    with _reading(fc_path):  # arrays of other shapes only broadcast, or fail, much later
        shape = np.shape(arrays["test/true"])
        if len(shape) != 3 or 0 in shape:
            raise ValueError(f"test/true has shape {list(shape)}, not [windows, horizon, channels]")
        for key in [f"test/{m}" for m in members] + ["test/ensemble"]:
            if np.shape(arrays[key]) != shape:
                raise ValueError(
                    f"{key} has shape {list(np.shape(arrays[key]))}, test/true {list(shape)}"
                )
        for m in members:  # validation: any number of windows, the test's horizon and channels
            v_shape = np.shape(arrays.get(f"val/{m}", np.empty((0, *shape[1:]))))
            if len(v_shape) != 3 or v_shape[1:] != shape[1:]:
                raise ValueError(f"val/{m} has shape {list(v_shape)}, test/true {list(shape)}")
    # a run refuses non-finite forecasts, so these come from a damaged or edited file
    for key in [f"test/{m}" for m in members] + ["test/ensemble", "test/true"]:
        bad = int(np.size(arrays[key]) - np.count_nonzero(np.isfinite(arrays[key])))
        if bad:
            raise UserError(
                f"{fc_path}: {key} has {bad} non-finite value(s), which no run writes; "
                "rerun the run into a fresh folder"
            )
    weights = step = tilt_steps = tilt_share = None
    averaged = False
    w_path = path / "router_weights.npz"
    if w_path.is_file():
        with _reading(w_path), np.load(w_path) as z:
            weights = z["test"].astype(np.float64)
            order = [str(m) for m in z["members"]] if "members" in z.files else members
            if sorted(order) != sorted(members):  # index() below would pick a wrong subset
                raise ValueError(f"members {order} are not the run's {members}")
            w_want = (shape[0], shape[2], len(members))
            if weights.shape != w_want:
                raise ValueError(f"test has shape {list(weights.shape)}, not {list(w_want)}")
            if not np.isfinite(weights).all():
                raise ValueError("test has non-finite weights, which no run writes")
            if order != members:  # align the weights' member axis with results.json
                weights = weights[..., [order.index(m) for m in members]]
            if "step_weights" in z.files:
                step = z["step_weights"].astype(np.float64)
                if step.shape != (shape[1], len(members)) or not np.isfinite(step).all():
                    raise ValueError(
                        f"step_weights has shape {list(step.shape)} (want "
                        f"{[shape[1], len(members)]}) or non-finite values"
                    )
                step = step[:, [order.index(m) for m in members]]
            # folders from before the flag: the step-wise rules that saved step weights
            averaged = (
                bool(z["horizon_averaged"]) if "horizon_averaged" in z.files else (step is not None)
            )
            if {"stacked_step_channel_weights", "tilt_share_test"} <= set(z.files):
                parts = z["stacked_step_channel_weights"].astype(np.float64)  # [H, C, M]
                share = z["tilt_share_test"].astype(np.float64)  # [W, C]
                want = (shape[1], shape[2], len(members))
                if parts.shape != want or share.shape != (shape[0], shape[2]):
                    raise ValueError(
                        f"stacked_step_channel_weights {list(parts.shape)} / tilt_share_test "
                        f"{list(share.shape)} do not match the test forecasts ({list(want)})"
                    )
                if not (np.isfinite(parts).all() and np.isfinite(share).all()):
                    raise ValueError("stacked_tilted's saved parts hold non-finite values")
                tilt_steps = parts.mean(axis=1)[:, [order.index(m) for m in members]]
                tilt_share = share
    config: dict[str, Any] = {}
    cfg_path = path / "config.yaml"
    if cfg_path.is_file():
        import yaml

        with _reading(cfg_path):
            config = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
            if not isinstance(config, dict):
                raise ValueError("not a mapping")
    return RunData(
        path=path,
        results=results,
        config=config,
        members=members,
        # the members' forecasts stay float32, as written: float64 copies took about 1 GB
        # more per member on 321 channels at H=96. Mixed with the float64 targets, or cast
        # where summed, they give the float64 results exactly (reports byte-identical).
        test={m: arrays[f"test/{m}"] for m in members},
        val={m: arrays[f"val/{m}"] for m in members if f"val/{m}" in arrays},
        ensemble=arrays["test/ensemble"].astype(np.float64),
        true=arrays["test/true"].astype(np.float64),
        weights=weights,
        step_weights=step,
        horizon_averaged=averaged,
        tilt_steps=tilt_steps,
        tilt_share=tilt_share,
    )


def _not_finished(path: Path) -> NoReturn:
    """Raise the UserError for a folder without results.json: an interrupted run (its
    config.yaml is there) resumes into it with its own settings; any other folder needs
    a run first."""
    cfg = path / "config.yaml"
    if cfg.is_file():
        # --config keeps the run's settings (a bare `run --out` would run the defaults
        # over it), --out keeps the folder (a config.yaml without run.log names none);
        # its finished members are reused
        resume = shell.join(["hybrid-forecast", "run", "--config", str(cfg), "--out", str(path)])
        raise UserError(
            f"{path} is an unfinished run (config.yaml but no results.json); finish it "
            f"with `{resume}`, then analyse it"
        )
    if path.is_file():  # `run --out afile` would fail on it too: no run to suggest
        raise UserError(
            f"{path} is a file, not a run folder; give the folder `hybrid-forecast run` wrote"
        )
    raise UserError(
        f"{path} is not a finished run folder (no results.json); run "
        f"`{shell.join(['hybrid-forecast', 'run', '--out', str(path)])}` first"
    )


def _whole(value: Any, name: str) -> int:
    """``value`` as an int; ValueError (a damaged file) where it is not a whole number."""
    try:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            number = int(value)
            if number == float(value):  # not 24.5
                return number
    except (ValueError, OverflowError):  # "x", inf
        pass
    raise ValueError(f"{name} holds {value!r}, not a whole number")


@contextmanager
def _reading(file: Path, fix: str = "rerun the run into a fresh folder") -> Iterator[None]:
    """Turn what a damaged file raises while it is read (cut short, hand-edited, not what
    `hybrid-forecast run` writes) into a UserError naming the file."""
    import zipfile
    import zlib

    import yaml

    try:
        yield
    except UserError:
        raise
    except (
        ValueError,  # JSON, numpy headers, pickled arrays, UTF-8
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        yaml.YAMLError,
    ) as exc:
        text = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(f"{file} is damaged ({type(exc).__name__}: {text}); {fix}") from None


# ---------------------------------------------------------------------------- data


def _splits(run: RunData, run_data: str | Path | None = None):
    """The run's splits, reloaded from its config or from ``run_data`` (the run's file
    where the config no longer finds it); None when the data cannot be found."""
    from ensemble.data import load_dataset, make_splits

    cfg = run.config
    if run_data:  # the run's file named here: from this folder, not from the data folder
        _check_run_data(run, Path(run_data))
        run_data = Path(run_data).expanduser().resolve()
    elif not (cfg.get("dataset") or cfg.get("data_path")):
        # load_dataset's own message names `run`'s --dataset and --data-path
        cfg_path = run.path / "config.yaml"
        why = f"{cfg_path} names no data" if cfg_path.is_file() else f"no {cfg_path}"
        log.warning(
            "cannot reload the run's data (%s); feature analyses are skipped; give the "
            "run's data file with --run-data FILE",
            why,
        )
        return None
    try:
        ds = load_dataset(
            run.results.get("dataset") if run_data else cfg.get("dataset"),
            data_path=run_data or cfg.get("data_path"),
            data_dir=cfg.get("data_dir"),
            features=cfg.get("features", run.results.get("features", "M")),
            target=cfg.get("target"),
            fill=cfg.get("fill"),
        )
        saved = (run.results.get("data") or {}).get("sha256")
        if saved and ds.sha256 != saved:  # an edited file gives other features and refits
            raise UserError(
                f"{ds.path} is not the file the run was fitted on (its SHA-256 differs from "
                "results.json's); give the run's own file"
            )
        return make_splits(
            ds,
            int(run.results["seq_len"]),
            int(run.results["pred_len"]),
            percent=int(cfg.get("percent", 100)),
        )
    except UserError as exc:
        if run_data:  # asked for by name: not a silent skip
            raise UserError(f"--run-data {run_data}: {exc}") from None
        log.warning(
            "cannot reload the run's data (%s); feature analyses are skipped; give the run's "
            "data file with --run-data FILE",
            exc,
        )
        return None


def _check_run_data(run: RunData, given: Path) -> None:
    """Refuse a --run-data that cannot be the run's file, in analyse's own words:
    load_dataset's would name `run`'s --dataset and --data-path.

    Raises:
        UserError: the path is missing or a folder, or is the file of another
            registered dataset than the run's.
    """
    from ensemble.data import DATASETS, registered_stems

    path = given.expanduser()
    name = run.results.get("dataset")
    name = name if isinstance(name, str) else None  # a hand-edited list is no dataset
    if path.is_dir():
        data = run.results.get("data")
        saved = (data.get("file") or data.get("path")) if isinstance(data, dict) else None
        near = [path / Path(str(saved)).name] if saved else []
        near += [path / DATASETS[name][0]] if name in DATASETS else []
        found = next((f for f in near if f.is_file()), None)
        raise UserError(
            f"--run-data {given} is a folder; give the run's CSV file"
            + (f", e.g. --run-data {found}" if found else "")
        )
    if not path.is_file():
        raise UserError(f"--run-data {given} is not found; check the path")
    named = registered_stems().get(path.stem.lower())
    if name and named and named != name:  # another split, other numbers
        raise UserError(
            f"--run-data {given} is {named}'s file, but the run was fitted on {name}: give "
            "the run's own file"
        )


def window_features(
    x: np.ndarray, period: int | None, max_elements: int = 1 << 22, threads: int | None = None
) -> dict[str, np.ndarray]:
    """The four report features of each input window and channel.

    Args:
        x: [W, L, C] input windows (scaled; a strided view is fine).
        period: the seasonal period for the strengths (None or > L/2: strengths are NaN).
        max_elements: values per step (memory bound: the strengths hold about eight
            float64 copies of a step; 512 windows a step took 14 GB at 862 channels).
        threads: steps computed at once (``periodicity.features.map_chunks``); None:
            ``chunk_threads()``.

    Returns:
        {name: [W, C]} for the names in ``FEATURES``.
    """
    w, length, c = x.shape
    chunk = max(1, max_elements // max(1, length * c))
    out = {k: np.full((w, c), np.nan) for k in FEATURES}

    def one(lo: int) -> None:  # each chunk writes its own rows: bit-identical on threads
        xb = np.asarray(x[lo : lo + chunk], dtype=np.float64)
        hi = lo + xb.shape[0]
        out["volatility"][lo:hi] = np.diff(xb, axis=1).std(axis=1)
        spec = np.abs(np.fft.rfft(xb - xb.mean(axis=1, keepdims=True), axis=1)) ** 2
        k = spec[:, 1:].argmax(axis=1) + 1  # [w, C]; skip the mean
        # a constant window has no dominant period (its argmax would be rounding noise)
        flat = xb.var(axis=1) <= FLAT_TOL * np.mean(xb * xb, axis=1)
        out["dominant_period"][lo:hi] = np.where(flat, np.nan, length / k)
        if period and 2 <= period <= length // 2:
            fs, ft = _strengths(xb, int(period))
            out["seasonal_strength"][lo:hi] = fs
            out["trend_strength"][lo:hi] = ft

    map_chunks(one, range(0, w, chunk), threads)
    return out


def _strengths(x: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Seasonal and trend strength of windows x [w, L, C] at period p (classical decomposition)."""
    n = (x.shape[1] // p) * p
    y = x[:, -n:]
    cs = np.concatenate([np.zeros_like(y[:, :1]), np.cumsum(y, axis=1)], axis=1)
    trend = (cs[:, p:] - cs[:, :-p]) / p  # [w, n - p + 1], centred at offset (p - 1) / 2
    if p % 2 == 0:  # the 2 x p average, centred on a row (offset p / 2), as in a classical
        trend = 0.5 * (trend[:, :-1] + trend[:, 1:])  # decomposition: [w, n - p]
    yc = y[:, p // 2 : p // 2 + trend.shape[1]]
    detr = yc - trend
    phase = (np.arange(detr.shape[1]) + p // 2) % p
    seasonal = np.empty_like(detr)
    for ph in range(p):  # mean cycle profile, centred to sum to zero
        sel = phase == ph
        seasonal[:, sel] = detr[:, sel].mean(axis=1, keepdims=True)
    seasonal -= seasonal.mean(axis=1, keepdims=True)
    resid = detr - seasonal
    var_r = resid.var(axis=1)
    scale = np.mean(yc * yc, axis=1)  # 0 where var(S + R) is rounding noise (flat window)
    return strength(var_r, detr.var(axis=1), scale), strength(
        var_r, (yc - seasonal).var(axis=1), scale
    )


# ---------------------------------------------------------------------------- analyses


def stored_mean(forecasts: list[np.ndarray]) -> np.ndarray:
    """The members' equal-weight mean, summed in float64 and stored in float32 as a run
    stores its ensemble: [W, H, C] each -> [W, H, C] float32."""
    total = np.zeros(forecasts[0].shape, dtype=np.float64)
    for f in forecasts:
        total += f
    return (total / len(forecasts)).astype(np.float32)


def top_weight_shares(w: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """[..., M] weights -> [..., M]: 1 for the member with the largest weight, split evenly
    among members tied within ``tol`` (argmax would give every tie to the first member:
    the `mean` router's first member "on top" everywhere)."""
    top = w >= w.max(axis=-1, keepdims=True) - tol
    return top / top.sum(axis=-1, keepdims=True)


def win_shares(err: np.ndarray) -> np.ndarray:
    """[M, W, C] errors -> [M, W, C]: 1 for the member with the lowest error, split evenly
    among members with the same error (argmin gave every tie, e.g. two members making
    the same forecast, to the first listed)."""
    best = err == err.min(axis=0, keepdims=True)
    return best / best.sum(axis=0, keepdims=True)


def per_window_mse(f: np.ndarray, true: np.ndarray) -> np.ndarray:
    """[W, H, C] -> [W, C] mean over the horizon."""
    return np.mean((f - true) ** 2, axis=1)


def regimes(feats: dict[str, np.ndarray], periods: list[int]) -> dict[str, np.ndarray]:
    """A label per window and channel for each feature: its tercile within the channel, or
    the period it matches.

    Returns:
        {feature: [W, C] array of str labels}.
    """
    out = {}
    for name, v in feats.items():
        if np.all(np.isnan(v)):
            continue
        if name == "dominant_period":
            lab = np.full(v.shape, "other", dtype=object)
            for p in sorted(periods[:2], reverse=True):  # shorter period wins a tie
                lab[np.abs(v - p) <= 0.15 * p] = f"≈{p}"
            out[name] = lab
            continue
        # within each channel: pooled terciles would mostly sort the channels (ETTh1's OT
        # is all "low volatility"), and a per-channel router would seem to follow them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a channel with no value
            q1, q2 = np.nanquantile(v, [1 / 3, 2 / 3], axis=0)  # [C] each
        lab = np.where(v <= q1, "low", np.where(v <= q2, "mid", "high")).astype(object)
        lab[np.isnan(v)] = "n/a"
        out[name] = lab
    return out


def regime_weights(
    w: np.ndarray, lab: np.ndarray, order: list[str]
) -> dict[str, np.ndarray | None]:
    """Each regime's mean weight per member, channel by channel: the mean over the
    channels that have windows in every regime (each channel counted once) of the router's
    mean weight in the regime on that channel.

    Pooled over (window, channel) pairs, a channel mostly in one regime (ETTh1's MUFL is
    95 % "dominant period ≈24", LUFL 17 %) made a per-channel rule's weights look like a
    preference for that regime; net of each channel's mean, a real preference shrank
    where the channels' mixes differ. Compared within the same channels, a rule fixed per
    channel weighs every regime alike, and one that follows the regime shows its gap.

    Args:
        w: [W, C, M] weights; lab: [W, C] regime labels; order: the regimes.

    Returns:
        {regime: [M] mean weights, or None for "n/a" and where no channel has every regime}.
    """
    real = [r for r in order if r != "n/a"]
    sel = {r: lab == r for r in real}  # [W, C] each
    counts = {r: s.sum(axis=0) for r, s in sel.items()}  # [C]
    every = np.all([counts[r] > 0 for r in real], axis=0)  # [C]
    out: dict[str, np.ndarray | None] = dict.fromkeys(order)
    if not every.any():
        return out
    for r in real:
        sums = np.einsum("wc,wcm->cm", sel[r][:, every], w[:, every])  # [C', M]
        out[r] = (sums / counts[r][every, None]).mean(axis=0)
    return out


def analyse_run(
    run: RunData,
    feats: dict[str, np.ndarray] | None,
    val_true: np.ndarray | None,
    refit: RefitInputs | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """All numbers of the report (JSON-serialisable).

    Args:
        run: the run folder's contents.
        feats: {feature: [W, C]} of the test windows, or None.
        val_true: [W_val, H, C] validation targets (for refitting the rule without a
            member), or None.
        refit: the windows' inputs, for refitting a feature-using router without a
            member, or None.
        progress: a bar over the member ablations, on a terminal.
    """
    members = run.members
    err = np.stack([per_window_mse(run.test[m], run.true) for m in members])  # [M, W, C]
    # in float64 and stored in float32 as the run stores its ensemble: the `mean` router's
    # ensemble is then this array, not one that differs by float32 rounding everywhere
    mean_fc = stored_mean([run.test[m] for m in members])
    err_mean = per_window_mse(mean_fc, run.true)
    err_ens = per_window_mse(run.ensemble, run.true)
    wins = win_shares(err)  # [M, W, C]
    out: dict[str, Any] = {"members": members, "router": run.results.get("router")}

    w = run.weights
    if w is not None:
        top = top_weight_shares(w)
        out["weights"] = {
            m: {
                "mean": float(w[..., i].mean()),
                "median": float(np.median(w[..., i])),
                "std": float(w[..., i].std()),
                "p10": float(np.quantile(w[..., i], 0.1)),
                "p90": float(np.quantile(w[..., i], 0.9)),
                "top_share": float(top[..., i].mean()),
            }
            for i, m in enumerate(members)
        }
        out["weights_constant"] = bool(np.allclose(w, w.reshape(-1, w.shape[-1])[0]))
        # per-channel rules (stacked, inverse_error...) give every window the same weights
        out["weights_vary_by_window"] = bool((w.std(axis=0) > 1e-9).any())
        if w.shape[1] > 1:  # per channel: the router's mean weight and each member's test MSE
            out["channel_weights"] = w.mean(axis=0).tolist()  # [C][M]
            out["channel_mse"] = [  # [C][M]
                list(v)
                for v in zip(
                    *(np.mean((run.test[m] - run.true) ** 2, axis=(0, 1)) for m in members),
                    strict=True,
                )
            ]
    out["val_vs_test"] = val_vs_test(run.results, members, w)
    out["win_rate"] = {m: float(wins[i].mean()) for i, m in enumerate(members)}
    out["error_corr"] = error_correlation(run)
    # three-way: better, worse, or the same up to float32 rounding (the `mean` router, a
    # router that gave every member equal weight)
    diff = err_ens - err_mean
    tie = 1e-6 * np.maximum(err_mean, 1e-12)
    better, worse = diff < -tie, diff > tie
    out["router_vs_mean"] = {
        "router_mse": float(err_ens.mean()),
        "mean_mse": float(err_mean.mean()),
        "router_better_share": float(np.mean(better)),
        "router_worse_share": float(np.mean(worse)),
        "dm": metrics.diebold_mariano(err_ens.mean(1), err_mean.mean(1), run.true.shape[1]),
    }

    if feats is not None:
        labels = regimes(feats, list(run.results.get("periods") or []))
        per_regime: dict[str, dict[str, Any]] = {}
        for fname, lab in labels.items():
            rows = {}
            order = regime_order(np.unique(lab.astype(str)))
            weights_in = regime_weights(w, lab, order) if w is not None else {}
            for r in order:
                sel = lab == r
                rows[r] = {
                    "share": float(sel.mean()),
                    "win_rate": {m: float(wins[i][sel].mean()) for i, m in enumerate(members)},
                    "router_mse": float(err_ens[sel].mean()),
                    "mean_mse": float(err_mean[sel].mean()),
                    "router_better_share": float(np.mean(better[sel])),
                    "mean_weight": (
                        {m: float(v) for m, v in zip(members, weights_in[r], strict=True)}
                        if weights_in.get(r) is not None
                        else None
                    ),
                }
            per_regime[fname] = rows
        out["regimes"] = per_regime
        if w is not None:
            out["weight_feature_corr"] = {
                f: {m: _within_channel_spearman(feats[f], w[..., i]) for i, m in enumerate(members)}
                for f in FEATURES
                if f in feats and not np.all(np.isnan(feats[f]))
            }
    if w is not None and len(members) > 1:
        out["weight_follows_skill"] = weight_follows_skill(w, err, wins, members)
    out["disagreement"] = disagreement(run, err_ens, err_mean, err)
    out["ablation"] = member_ablations(run, val_true, refit, progress=progress)
    return out


def weight_follows_skill(
    w: np.ndarray, err: np.ndarray, wins: np.ndarray, members: list[str]
) -> dict[str, dict[str, Any] | None]:
    """Does the router give a member more weight in the windows where it does better?

    Within each channel, the test windows where the member's weight is above its average
    weight on that channel are compared with those where it is below: how often the
    member is the best one there, and its MSE relative to the other members' average MSE
    there. Split at the average, not at quantiles: a router with a few distinct weights
    (`rules`' leaves) ties most windows at any quantile. Channels where its weight does not
    vary from window to window (a per-channel rule) are left out.

    Args:
        w: [W, C, M] router weights.
        err: [M, W, C] per-window MSE of each member.
        wins: [M, W, C] each member's share of being the best (``win_shares``).
        members: the M names.

    Returns:
        {member: {"above": {...}, "below": {...}, "channels": n} or None where no channel's
        weights vary}; each side holds "share" (of the varying channels' pairs),
        "win_rate" and "mse_ratio" (member MSE / the other members' mean MSE, pooled).
    """
    out: dict[str, dict[str, Any] | None] = {}
    m_count = w.shape[-1]
    for i, name in enumerate(members):
        wi = w[..., i]
        varies = np.ptp(wi, axis=0) > 1e-9  # [C]
        if not varies.any():
            out[name] = None
            continue
        wv = wi[:, varies]
        level = wv.mean(axis=0)  # [C']
        others = (err.sum(axis=0) - err[i]) / (m_count - 1)  # [W, C]
        sides = {}
        for side, sel in (("above", wv > level + 1e-9), ("below", wv < level - 1e-9)):
            e_i, e_o = err[i][:, varies][sel], others[:, varies][sel]
            sides[side] = {
                "share": float(sel.mean()),
                "win_rate": float(wins[i][:, varies][sel].mean()),
                "mse_ratio": float(e_i.mean() / e_o.mean()) if e_o.mean() > 0 else None,
            }
        out[name] = {**sides, "channels": int(varies.sum())}
    return out


def disagreement(
    run: RunData,
    err_ens: np.ndarray,
    err_mean: np.ndarray,
    err: np.ndarray,
    bins: int = 5,
) -> dict[str, Any]:
    """Does the members' disagreement warn of a bad forecast? Known before the targets, it
    would say which windows to trust.

    Spread: per (window, channel), the standard deviation across members of their
    forecasts, averaged over the horizon (scaled units). Each channel's test windows are
    cut into equal bins by the rank of their spread (from the forecasts alone; within a
    channel, so that a channel that is both volatile and hard to forecast does not make
    the bins; a channel whose spread never varies is left out), pooled over channels;
    per bin its share, mean spread and the test MSE of the ensemble, the mean and each
    member. And the rank correlation of spread and the
    ensemble's error within each channel, averaged over channels.

    Args:
        err_ens, err_mean: [W, C] per-window MSE of the ensemble and of the mean.
        err: [M, W, C] per-window MSE of each member.
    """
    members = run.members
    # two passes over the differences to the first member, one member at a time: no
    # [M, W, H, C] stack, and identical members give a spread of exactly 0
    base = np.asarray(run.test[members[0]], dtype=np.float64)

    def diff(m: str) -> np.ndarray:
        return np.asarray(run.test[m], dtype=np.float64) - base

    mean = sum(diff(m) for m in members) / len(members)
    var = sum((diff(m) - mean) ** 2 for m in members)
    spread = np.sqrt(var / len(members)).mean(axis=1)  # [W, C]
    # bins of equal size by rank within each channel (ties in stable order); a channel
    # where the members' spread never varies (say a constant one) has no ranking: left out
    W = spread.shape[0]
    ranks = np.argsort(np.argsort(spread, axis=0, kind="stable"), axis=0, kind="stable")
    which = ranks * bins // max(W, 1)  # [W, C] bin of each pair
    flat = np.ptp(spread, axis=0) == 0  # [C]
    which[:, flat] = -1
    rows = []
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue  # no channel with a varying spread
        rows.append(
            {
                "bin": b + 1,
                "spread": float(spread[sel].mean()),
                "share": float(sel.sum() / (which >= 0).sum()),
                "ensemble_mse": float(err_ens[sel].mean()),
                "mean_mse": float(err_mean[sel].mean()),
                "member_mse": {m: float(err[i][sel].mean()) for i, m in enumerate(members)},
            }
        )
    return {
        "spearman": _within_channel_spearman(spread, err_ens),
        "bins": rows,
        "channels_left_out": [int(c) for c in np.flatnonzero(flat)],
    }


def val_vs_test(
    results: dict[str, Any], members: list[str], weights: np.ndarray | None
) -> list[dict[str, Any]]:
    """Each member's MSE on validation and on test, relative to the member best on validation.

    Every fitted combination sees only the validation column, so where a member's ratio
    is higher on validation than on test, validation underrates it and the weights give
    it less than test would have rewarded (and the reverse). Empty without validation
    scores for every member.

    Args:
        results: results.json (``val`` and ``test`` hold ``{member: {"mse": ...}}``).
        members: member names, in the order of the weights' last axis.
        weights: [W, C, M] the router's test weights, or None.

    Returns:
        One row per member: val and test MSE, their ratios to the reference member's,
        the member's rank (1 = lowest MSE) on each, and its mean router weight (or None).
    """
    val, test = results.get("val") or {}, results.get("test") or {}
    if not members or any(m not in val or m not in test for m in members):
        return []
    v = np.array([val[m]["mse"] for m in members], dtype=np.float64)
    t = np.array([test[m]["mse"] for m in members], dtype=np.float64)
    ref = int(np.argmin(v))
    v_rank, t_rank = v.argsort().argsort() + 1, t.argsort().argsort() + 1
    return [
        {
            "member": m,
            "reference": i == ref,
            "val_mse": float(v[i]),
            "test_mse": float(t[i]),
            "val_ratio": float(v[i] / v[ref]),
            "test_ratio": float(t[i] / t[ref]),
            "val_rank": int(v_rank[i]),
            "test_rank": int(t_rank[i]),
            "mean_weight": None if weights is None else float(weights[..., i].mean()),
        }
        for i, m in enumerate(members)
    ]


def regime_order(labels) -> list[str]:
    rank = {"low": 0, "mid": 1, "high": 2, "other": 9, "n/a": 10}
    return sorted(labels, key=lambda s: (rank.get(s, 5), s))


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Rank correlation of two [W] vectors, ties given their average rank (None when
    either side is constant)."""
    from scipy.stats import rankdata

    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def _within_channel_spearman(feature: np.ndarray, weight: np.ndarray) -> float | None:
    """Mean over channels of the rank correlation across windows of [W, C] arrays.

    Pooling windows of all channels would mostly measure which channels have high
    features and high weights: a router with one weight per channel would show strong
    "responses" to window features it never reads.
    """
    rho = [_spearman(feature[:, c], weight[:, c]) for c in range(feature.shape[1])]
    rho = [r for r in rho if r is not None]
    return float(np.mean(rho)) if rho else None


def _saved_timellm(
    run: RunData,
    flag: str,
    needs_prompt: bool,
    progress: bool = True,
    backbone: str | Path | None = None,
) -> TimeLLMForecaster:
    """The run's saved Time-LLM member, checked before any work is done; ``backbone``:
    its backbone folder where the saved path no longer finds it (a moved run)."""
    from timellm.member import TimeLLMForecaster, backbone_override

    specs = timellm_specs(run.members)
    if len(specs) > 1:
        raise UserError(
            f"{flag}: the run has {len(specs)} Time-LLM members ({', '.join(specs)}); analyse "
            "a run with one (its config.yaml reruns with --members naming it)"
        )
    from experiments.member_cache import member_path

    if not specs:
        raise UserError(f"{flag} needs a Time-LLM member; rerun with timellm among --members")
    model_dir = member_path(run.path, specs[0]) / "model"
    rerun = (  # a plain rerun would reuse the saved forecasts and not save the model again
        f"delete {model_dir.parent / 'forecasts.npz'} and rerun the run to fit and save it "
        f"again ({shell.join(['hybrid-forecast', 'run', '--config', str(run.path / 'config.yaml')])})"
    )
    missing = [f for f in ("config.json", "trainable.pt") if not (model_dir / f).is_file()]
    if missing:
        raise UserError(
            f"{flag} needs the run's saved Time-LLM, but {model_dir} has no "
            f"{' or '.join(missing)}; {rerun}"
        )
    damaged = f"{flag}: the saved Time-LLM in {model_dir} is damaged"
    try:
        meta = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["kwargs"]
        saved_backbone, prompt = meta.get("backbone"), meta.get("prompt")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # ValueError: bad JSON
        raise UserError(f"{damaged} (config.json: {exc.__class__.__name__}); {rerun}") from None
    if saved_backbone == "none":
        raise UserError(f"{flag}: this run's Time-LLM has no LLM (backbone=none)")
    if needs_prompt and prompt == "none":
        raise UserError(f"{flag}: this run's Time-LLM has no prompt (prompt=none)")
    try:  # bars on a terminal; the best device here, whichever the run trained on
        return TimeLLMForecaster.load(
            model_dir,
            progress=None if progress else False,
            device=None,
            **backbone_override(model_dir, backbone, specs[0]),
        )
    except UserError:
        raise
    except (RuntimeError, EOFError, pickle.UnpicklingError, KeyError, TypeError) as exc:
        # torch.load of a truncated or foreign trainable.pt, weights of another shape, or
        # a config.json naming a setting this version does not take
        raise UserError(f"{damaged} ({exc.__class__.__name__}); {rerun}") from None


def _run_prototypes(member: TimeLLMForecaster, splits: Splits | None) -> dict[str, Any]:
    """`timellm.prototypes.describe_prototypes` over the run's test windows."""
    from timellm.prototypes import describe_prototypes

    if splits is None:
        raise UserError("--prototypes: the run's data could not be reloaded; check its config.yaml")
    log.info("prototypes: nearest words and attention over %d test windows", splits.test.n_windows)
    return describe_prototypes(member, splits.test.inputs())


def _run_probe(run: RunData, member, splits) -> dict[str, Any]:
    """`timellm.probe.prompt_probe` on the run's test windows."""
    from timellm.probe import VARIANTS, prompt_probe, stat_variants

    if splits is None:
        raise UserError(
            "--prompt-probe: the run's data could not be reloaded; check its config.yaml"
        )
    ch = list(splits.eval_channels)
    targets = np.asarray(splits.test.targets()[..., ch], dtype=np.float64)
    log.info(
        "prompt probe: forecasting %d test windows %d times",
        len(targets),
        len(VARIANTS) + len(stat_variants(member)),
    )
    return prompt_probe(
        member, splits.test.windows(), targets, channels=ch, seed=int(run.results.get("seed", 0))
    )


def error_correlation(run: RunData, max_values: int = 2_000_000) -> list[list[float]]:
    """Pearson correlation of the members' test errors (forecast - target), [M, M].

    Members whose errors correlate strongly add little to a weighted average whatever
    their own accuracy. Windows are thinned to at most ``max_values`` values per member.
    """
    w, h, c = run.true.shape
    step = max(1, (w * h * c) // max_values)
    err = np.stack([(run.test[m][::step] - run.true[::step]).ravel() for m in run.members])
    return np.round(np.corrcoef(err), 4).tolist()


def _kept_checks(out: Path, run, prompt_probe: bool, prototypes: bool) -> dict[str, Any]:
    """The prompt probe and prototype list of this run's previous analyse, where this one
    does not redo them: ``analyse --prompt-probe`` then ``analyse --prototypes`` keeps
    both in the report. Only in the run's own folder, which a rerun of the run clears of
    analyses (another --out may hold another run's)."""
    if out.resolve() != run.path.resolve():
        return {}
    try:
        before = json.loads((out / "routing_analysis.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(before, dict):
        return {}
    kept = {
        key: before[key]
        for key, redone in (("prompt_probe", prompt_probe), ("prototypes", prototypes))
        if not redone and isinstance(before.get(key), dict)
    }
    for key in kept:
        flag = "--prompt-probe" if key == "prompt_probe" else "--prototypes"
        log.info("analyse: kept the previous analyse's %s (give %s to redo it)", key, flag)
    return kept


def analyse(
    run_dir: str | Path,
    out: str | Path | None = None,
    ablation_runs: dict[str, str] | None = None,
    prompt_probe: bool = False,
    prototypes: bool = False,
    progress: bool = True,
    run_data: str | Path | None = None,
    backbone: str | Path | None = None,
) -> Path:
    """Write the routing report of a run folder; returns the report's path.

    Args:
        run_dir: a finished run folder.
        out: where to write (default: the run folder).
        ablation_runs: {variant: run folder} overriding the ``<RUN_DIR>-<variant>`` convention.
        prompt_probe: also forecast the test windows with the run's saved Time-LLM under
            counterfactual prompts (`timellm.probe`; minutes on a CPU).
        prototypes: also list the saved Time-LLM's most-used text prototypes with their
            nearest words (`timellm.prototypes`; seconds).
        progress: bars (ablations, the saved Time-LLM's forecasts) on a terminal;
            False: none.
        run_data: the file the run was fitted on, where its config no longer finds it
            (a run folder moved to another machine); checked against the run's targets.
        backbone: the saved Time-LLM's backbone folder where its saved path no longer
            finds it (``prompt_probe``, ``prototypes``); checked to hold its files.
    """
    # lock files this analyse makes: taken out again from a folder that is no run
    made = [n for n in (".lock", ".analyse.lock") if not (Path(run_dir) / n).exists()]
    # a rerun that replaced the files meanwhile left a report of the old router beside
    # the new results; other readers (forecast, a run copying members) share the lock
    lock = read_lock(run_dir, "analyse it when that has finished")
    report = None  # two analyses writing into the run folder would mix their files
    try:
        into_run = out is None or Path(out).resolve() == Path(run_dir).resolve()
        if into_run and Path(run_dir).is_dir():
            try:
                report = FolderLock(run_dir, name=".analyse.lock")
            except BlockingIOError:
                raise UserError(
                    f"another analyse is writing its report into {run_dir}"
                    f"{who_holds(run_dir, '.analyse.lock')}; wait for it to "
                    "finish, or write this one elsewhere with --out"
                ) from None
            except OSError:  # a read-only folder: the report's own write says so
                report = None
        return _analyse(
            run_dir, out, ablation_runs, prompt_probe, prototypes, progress, run_data, backbone
        )
    finally:
        # removed while still held: a run that opened one meanwhile is refused by the
        # lock, not handed a file no longer in the folder; Windows, which cannot remove
        # an open file, once they are released
        _drop_lock_files(Path(run_dir), made)
        for held_lock in (report, lock):
            if held_lock is not None:
                held_lock.release()
        _drop_lock_files(Path(run_dir), made)


def _drop_lock_files(folder: Path, made: list[str]) -> None:
    """Remove the lock files ``made`` by this analyse from a folder it refused for want of
    results.json: from the user's own folder (no config.yaml either) both, leaving it as
    it was; from an unfinished run the report's ``.analyse.lock`` (``.lock`` is the
    run's, which its resume takes)."""
    if (folder / "results.json").exists():
        return
    run = (folder / "config.yaml").exists()
    for name in made:
        if run and name == ".lock":
            continue
        try:
            (folder / name).unlink(missing_ok=True)
        except OSError:  # open, on Windows; a folder gone or read-only
            pass


def _check_out(run: RunData, out: str | Path | None) -> Path:
    """The folder the report goes to (default: the run folder), refused before any work
    where it is another run's or cannot take files: the write came after the analysis.

    Raises:
        UserError: another run's folder, a file on the way, or a folder that refuses a
            new file.
    """
    from ensemble.io import cannot_create_in

    folder = Path(out) if out else run.path
    where = f"--out {out}" if out else f"the run folder {folder}"
    if folder.resolve() != run.path.resolve() and (folder / "results.json").is_file():
        raise UserError(
            f"--out {out} is another run's folder: its own routing report would be replaced "
            "by this one's; give a new folder"
        )
    near, why = cannot_create_in(folder)
    if why == "is a file":
        raise UserError(f"{where}: {near} is a file, not a folder; give --out a new folder")
    if why:
        raise UserError(
            f"{where}: cannot create files in {near} ({why}); give --out a folder you can write to"
        )
    return folder


def _analyse(
    run_dir: str | Path,
    out: str | Path | None,
    ablation_runs: dict[str, str] | None,
    prompt_probe: bool,
    prototypes: bool,
    progress: bool,
    run_data: str | Path | None,
    backbone: str | Path | None,
) -> Path:
    """`analyse`, once the run folder is locked."""
    from ensemble.figures import VECTOR_FORMATS
    from experiments.analyse_report import FIGURES, make_figures, probe_figure, report_markdown

    run = load_run(run_dir)
    out = _check_out(run, out)
    siblings = check_ablation_runs(run, ablation_runs or {})
    member = None
    if prompt_probe or prototypes:
        flag = "--prompt-probe" if prompt_probe else "--prototypes"
        member = _saved_timellm(run, flag, prompt_probe, progress, backbone)
    periods = [int(p) for p in run.results.get("periods") or []]
    length = int(run.results["seq_len"])
    period = next((p for p in periods if 2 <= p <= length // 2), None)
    splits = _splits(run, run_data)  # a refused --run-data leaves no empty --out behind
    out.mkdir(parents=True, exist_ok=True)
    feats = None
    val_true = None
    refit = None
    if splits is not None:
        ch = splits.eval_channels
        # every channel or the target alone, as a slice: it keeps the strided view, where a
        # list index copied [W, L, C] (2.5 GB at 862 channels, L=512)
        x = splits.test.inputs()[..., ch[0] : ch[-1] + 1]
        # the same data as the run's, not only as many windows: a file changed since the run
        # would give features and router refits of other numbers than the saved forecasts
        same = x.shape[0] == run.true.shape[0] and np.allclose(
            np.asarray(splits.test.targets()[..., ch], dtype=np.float32),
            run.true,
            rtol=1e-4,
            atol=1e-5,
        )
        if same:
            feats = window_features(x, period)
            val_true = np.asarray(splits.val.targets()[..., ch], dtype=np.float64)
            refit = RefitInputs(splits.val.inputs(), splits.test.inputs(), periods, list(ch))
            strengths = (
                f"seasonal and trend strength at period {period}"
                if period is not None
                else "no seasonal or trend strength: no detected period fits twice in the "
                f"lookback of {length}"
            )
            feat_note = (
                f"Features computed from the test windows' inputs ({strengths}, "
                "volatility, dominant period)."
            )
        else:
            feat_note = "The reloaded data do not match the run's test windows; features skipped."
    else:
        feat_note = "The run's data could not be reloaded; features skipped."
    an = analyse_run(run, feats, val_true, refit, progress=progress)
    kept = _kept_checks(out, run, prompt_probe, prototypes)
    an.update(kept)
    if prompt_probe:
        an["prompt_probe"] = _run_probe(run, member, splits)
    if prototypes:
        an["prototypes"] = _run_prototypes(member, splits)
    training = training_ablations(run, siblings, period)
    # the old report goes before anything is written: killed while drawing, this analyse
    # would otherwise leave it, looking finished, beside figures it does not describe.
    # The run folder's JSON stays (it holds the checks a later analyse keeps); in another
    # --out it may be another run's, and goes too.
    stale = ["routing_report.md"]
    if out.resolve() != run.path.resolve():
        stale.append("routing_analysis.json")
    for name in stale:
        (out / name).unlink(missing_ok=True)
    figures = make_figures(run, feats, out)
    if prompt_probe:
        figures += probe_figure(an["prompt_probe"], out)
    elif "prompt_probe" in kept and (out / "prompt_probe.png").is_file():
        figures.append("prompt_probe.png")
    for name in set(FIGURES) - set(figures):  # an earlier analyse's, of other weights or data
        for fmt in ("png", *VECTOR_FORMATS):  # with its copies ($HYBRID_FORECAST_FIGURES)
            (out / f"{name.removesuffix('.png')}.{fmt}").unlink(missing_ok=True)
    write_json(out / "routing_analysis.json", {**an, "training_ablations": training})
    path = out / "routing_report.md"
    write_text(path, report_markdown(run, an, training, figures, feat_note))
    return path
