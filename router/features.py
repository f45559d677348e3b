"""Per-window, per-channel router features, computed from window inputs only.

Three groups, all causal (nothing a window's targets could leak into):

* **series statistics** of the input window: volatility, level and trend, smoothness,
  seasonal strength and autocorrelation at the analyser's top periods, and the
  periodicity package's ``window_features`` (prefixed ``per_``; windows of 16 steps or
  more);
* **member disagreement**: how far the members' forecasts for this window spread apart,
  in window stds (forecasts are inputs of the combination, not targets); NaN where the
  window is constant on the channel, whose seasonal strength is 0;
* **members' recent skill**: for window ``t`` the targets of the earlier windows
  ``t - H - k`` (k >= 0) lie entirely inside window ``t``'s input, so each member's
  error on them is known when window ``t`` is forecast: on the last such window, and
  averaged over the last H and 4H of them (a single window's winner says little about
  the next one; a longer record says a bit more). Missing (NaN) for the first ``H``
  windows of a split.

Everything is vectorised over windows and channels and computed in chunks of windows, so
ETTm1 (11k windows x 512 steps x 7 channels) stays within a few hundred MB, and the
forecast-based parts never build more than one [chunk, H, C] temporary per member.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from periodicity.features import map_chunks
from periodicity.strength import FLAT_TOL

_EPS = 1e-8


def _flat(x: np.ndarray) -> np.ndarray:
    """[W, L, C] -> [W, C] True where a window is constant on a channel (up to rounding).

    Its seasonal strength and its members' spread relative to its std are 0/0; the
    ``_EPS`` guards alone would turn them into strength 1 and spreads of about 1e6.
    """
    return np.var(x, axis=1) <= FLAT_TOL * np.mean(x * x, axis=1)


def _series_stats(
    x: np.ndarray, pred_len: int, periods: list[int]
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Summary statistics of each input window.

    Args:
        x: [W, L, C] input windows (scaled space).
        pred_len: H, the span of the "recent" statistics.
        periods: ranked periods; the first two that fit twice into L are used.

    Returns:
        feats [W, C, F], the F names, and the [W, C] mask of constant windows.
    """
    w, length, c = x.shape
    recent = max(2, min(pred_len, length // 2))
    x = np.asarray(x, dtype=np.float64)
    flat = _flat(x)
    mean = x.mean(axis=1)  # [W, C]
    std = x.std(axis=1) + _EPS
    xs = (x - mean[:, None]) / std[:, None]  # standardised per window
    t = np.linspace(-1.0, 1.0, length)
    slope = np.einsum("wlc,l->wc", xs, t) / np.sum(t * t)  # total rise over the window / 2, in stds
    tr = np.linspace(-1.0, 1.0, recent)
    recent_slope = np.einsum("wlc,l->wc", xs[:, -recent:], tr) / np.sum(tr * tr)
    dx = np.diff(xs, axis=1)
    vol_ratio = np.log((dx[:, -recent:].std(axis=1) + _EPS) / (dx.std(axis=1) + _EPS))
    acf1 = np.mean(xs[:, 1:] * xs[:, :-1], axis=1)
    feats = [
        np.log(std),
        xs[:, -recent:].mean(axis=1),  # level of the recent past against the window
        xs[:, -1],
        slope,
        recent_slope,
        vol_ratio,
        acf1,
        np.log(dx.std(axis=1) + _EPS),  # roughness: noise level relative to the window's spread
    ]
    names = [
        "log_std",
        "recent_level",
        "last_value",
        "trend",
        "recent_trend",
        "recent_vol_ratio",
        "acf1",
        "log_roughness",
    ]
    for p in [p for p in periods if 2 <= p <= length // 2][:2]:
        k = length // p
        prof = xs[:, -k * p :].reshape(w, k, p, c)
        seasonal = prof.mean(axis=1, keepdims=True)  # mean profile over the k cycles
        resid = prof - seasonal
        strength = 1.0 - resid.var(axis=(1, 2)) / (prof.var(axis=(1, 2)) + _EPS)
        strength = np.where(flat, 0.0, strength)  # no cycle in a constant window
        acf_p = np.mean(xs[:, p:] * xs[:, :-p], axis=1)
        # Where in its cycle the window ends, as the seasonal profile's value there.
        phase_level = seasonal[:, 0, -1]
        feats += [strength, acf_p, phase_level]
        names += [f"season_strength_p{p}", f"acf_p{p}", f"season_now_p{p}"]
    return np.stack(feats, axis=-1), names, flat


def _periodicity_features(x: np.ndarray, periods: list[int]) -> tuple[np.ndarray, list[str]] | None:
    """The periodicity package's window features; None for windows too short for them."""
    from periodicity.features import MIN_WINDOW, window_features

    if x.shape[1] < MIN_WINDOW:
        return None
    feats, names = window_features(np.asarray(x), periods)
    return np.asarray(feats, dtype=np.float64), [f"per_{n}" for n in names]


def _chunk_windows(pred_len: int, n_ch: int, max_elements: int = 1 << 21) -> int:
    """Windows per chunk so that one [chunk, H, C] array holds about ``max_elements`` values
    (weather at H=720 would otherwise build [M, W, H, C] temporaries of ~1 GB each)."""
    return max(1, max_elements // (pred_len * n_ch))


def _spreads(forecasts: np.ndarray) -> np.ndarray:
    """Each member's RMS distance from the members' mean forecast.

    Args:
        forecasts: [M, W, H, C].

    Returns:
        [M, W, C].
    """
    m, w, h, c = forecasts.shape
    dev = np.empty((m, w, c), dtype=np.result_type(forecasts.dtype, np.float32))
    step = _chunk_windows(h, c)
    for lo in range(0, w, step):
        f = forecasts[:, lo : lo + step]
        dev[:, lo : lo + step] = np.sqrt(np.mean((f - f.mean(axis=0)) ** 2, axis=2))
    return dev


# The "long" skill features average the errors of the last LONG * H fully observed windows
LONG = 4


def skill_context_rows(seq_len: int, pred_len: int) -> int:
    """Rows before the end of a window that its skill features read: its own L rows and
    the inputs of the windows ``t - H`` back to ``t - (LONG + 1) H + 1`` whose errors they
    average, so that a forecast of the last window alone has the features it had when
    the router was fitted."""
    return seq_len + (LONG + 1) * pred_len - 1


def past_errors(x: np.ndarray, forecasts: np.ndarray, smooth: int = 1) -> np.ndarray:
    """Each member's MSE on the most recent windows whose targets window ``t`` already sees.

    Args:
        x: [W, L, C] input windows of consecutive origins (stride 1).
        forecasts: [M, W, H, C] the members' forecasts for the same windows.
        smooth: average over the ``smooth`` most recent fully observed windows.

    Returns:
        [W, C, M] mean squared errors; NaN where no earlier window is fully observed
        (the first ``H`` windows).
    """
    m, w, h, c = forecasts.shape
    length = x.shape[1]
    if w != x.shape[0]:
        raise ValueError(f"forecasts cover {w} windows but x has {x.shape[0]}")
    # The context rows: window 0's input, then each later window's last input row.
    context = np.concatenate([x[0], x[1:, -1]], axis=0)  # [W + L - 1, C]
    n_obs = w - h  # windows s whose target rows s+L..s+L+H-1 are all in the context
    out = np.full((w, c, m), np.nan)
    if n_obs <= 0:
        return out
    seen = np.lib.stride_tricks.sliding_window_view(context[length:], h, axis=0)  # [n_obs, C, H]
    err = np.empty((n_obs, c, m))
    step = _chunk_windows(h, c)
    for lo in range(0, n_obs, step):  # chunks of windows, one member at a time: memory
        hi = min(n_obs, lo + step)  # stays at one [step, H, C] array
        target = seen[lo:hi].transpose(0, 2, 1)
        for i in range(m):
            d = forecasts[i, lo:hi] - target
            err[lo:hi, :, i] = np.mean(d * d, axis=1)
    # Window t uses windows s = t - H - k for k in [0, smooth): a running mean over s.
    cs = np.concatenate([np.zeros((1, c, m)), np.cumsum(err, axis=0)])
    s_hi = np.arange(n_obs) + 1  # exclusive upper end of s for t = H + j
    s_lo = np.maximum(0, s_hi - smooth)
    out[h:] = (cs[s_hi] - cs[s_lo]) / (s_hi - s_lo)[:, None, None]
    return out


@dataclass(frozen=True)
class InputFeatures:
    """The features of a split's windows that depend on their inputs only.

    Attributes:
        blocks: [W, C, k] arrays (or broadcastable to it), in feature order.
        names: the feature names of ``blocks``, in order.
        log_std: [W, C] log standard deviation of each window.
        flat: [W, C] True where a window is constant.
    """

    blocks: list[np.ndarray]
    names: list[str]
    log_std: np.ndarray
    flat: np.ndarray


def input_features(
    x: np.ndarray, pred_len: int, periods: list[int] | None = None, chunk: int | None = None
) -> InputFeatures:
    """Series statistics, channel id and periodicity features of the input windows.

    Computed once per split where several member sets are routed over the same windows
    (``analyse``'s member ablations), and passed to ``window_features``.

    Args:
        x: [W, L, C] input windows (a strided view is fine), consecutive origins.
        pred_len: H (sets the "recent" spans).
        periods: ranked periods of the train rows.
        chunk: windows per chunk of the series statistics; None: as many as hold about
            4M values (W_chunk * L * C). The statistics keep about ten float64 copies of
            a chunk (~340 MB), one chunk per thread (``map_chunks``): a fixed 1024
            windows took 3.4 GB more at L=96 on 862 channels.
    """
    periods = list(periods or [])
    w, length, c = x.shape
    chunk = chunk or max(1, (1 << 22) // (length * c))
    done = map_chunks(  # [(feats, names, flat)] per chunk, in order
        lambda lo: _series_stats(x[lo : lo + chunk], pred_len, periods), range(0, w, chunk)
    )
    names = done[0][1]
    stats = np.concatenate([f for f, _, _ in done], axis=0)
    flats = [flat for _, _, flat in done]
    blocks = [stats, np.broadcast_to(np.arange(c, dtype=np.float64)[None, :, None], (w, c, 1))]
    all_names = [*names, "channel"]
    per = _periodicity_features(x, periods)
    if per is not None and per[0].shape[:2] == (w, c):
        blocks.append(per[0])
        all_names += per[1]
    log_std = stats[..., names.index("log_std")]
    return InputFeatures(blocks, all_names, log_std, np.concatenate(flats, axis=0))


def window_features(
    x: np.ndarray,
    forecasts: np.ndarray | None = None,
    periods: list[int] | None = None,
    member_names: list[str] | None = None,
    chunk: int | None = None,
    inputs: InputFeatures | None = None,
) -> tuple[np.ndarray, list[str]]:
    """All router features of a split's windows.

    Args:
        x: [W, L, C] input windows (a strided view is fine), consecutive origins.
        forecasts: [M, W, H, C] members' forecasts for the same windows, or None to skip
            the disagreement and recent-skill features.
        periods: ranked periods of the train rows (for the seasonal statistics).
        member_names: M names used in the feature names (default m0, m1...).
        chunk: windows per chunk of the series statistics (None: bounded by values).
        inputs: ``input_features`` of the same x, pred_len and periods, if computed already.

    Returns:
        feats [W, C, F] float32 (NaN marks a missing value) and the F names.
    """
    w, _, c = x.shape
    pred_len = forecasts.shape[2] if forecasts is not None else max(1, x.shape[1] // 4)
    if inputs is None:
        inputs = input_features(x, pred_len, periods, chunk)
    blocks, all_names = list(inputs.blocks), list(inputs.names)
    if forecasts is not None:
        m = forecasts.shape[0]
        member_names = member_names or [f"m{i}" for i in range(m)]
        # relative to a constant window's std, any spread is undefined (not ~1e6): NaN
        std = np.where(inputs.flat, np.nan, np.exp(inputs.log_std))  # [W, C]
        dev = _spreads(forecasts)  # [M, W, C]
        blocks.append(np.log(dev.mean(axis=0) / std + _EPS)[..., None])
        all_names.append("log_spread")
        if m > 1:
            blocks.append(np.moveaxis(dev / std, 0, -1))
            all_names += [f"dev_{n}" for n in member_names]
        for smooth, tag in ((1, "last"), (pred_len, "recent"), (LONG * pred_len, "long")):
            e = np.log(past_errors(x, forecasts, smooth) + _EPS)  # [W, C, M]
            level = e.mean(axis=-1, keepdims=True)
            blocks.append(level)
            all_names.append(f"{tag}_log_mse")
            if m > 1:  # relative skill is what routing depends on
                blocks.append(e - level)
                all_names += [f"{tag}_rel_{n}" for n in member_names]
    feats = np.concatenate([np.broadcast_to(b, (w, c, b.shape[-1])) for b in blocks], axis=-1)
    return feats.astype(np.float32), all_names
