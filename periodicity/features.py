"""Per-window series features, vectorised over many windows at once (router, prompt).

STL per window is far too slow for tens of thousands of windows, so each window is
decomposed in closed form, for all windows of a chunk together:

* seasonal S: least-squares fit of the period's first three harmonics (sin/cos pairs)
  to the linearly detrended window -- one small matrix product per candidate period. It
  has 6 degrees of freedom, so white noise scores F_S ~ 0.01 in a 512-step window, where
  folding the window by the period (classical decomposition) would score ~1/cycles.
* trend T: centred moving average (one period long) of the deseasonalised window; the
  strengths are measured where it is defined (the window minus half a period each end).
* remainder R = x - S - T, and F_S, F_T as in ``periodicity.strength``.

Per window and channel the candidate period with the largest F_S is the window's
``period``: 0 when no candidate lies in [3, L/2] or every candidate's F_S is 0 (then
``seasonal_strength`` and ``acf_period`` are 0 and the trend is an L/8 moving average).

A constant window (a dry spell of a rain gauge) has no seasonal part and no trend: its
strengths are 0, its period 0, and its ``spectral_entropy`` and ``fft_period`` NaN
(undefined), not values read off float rounding.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from threadpoolctl import threadpool_limits

from periodicity.strength import FLAT_TOL, strength

FEATURE_NAMES = [
    "period",  # candidate period with the largest F_S in the window (0: none fits or all F_S 0)
    "seasonal_strength",  # F_S at that period
    "trend_strength",  # F_T (moving-average trend one period long, else L/8)
    "acf_period",  # ACF of the detrended window at that period
    "spectral_entropy",  # normalised entropy of the window's periodogram: 0 tone, 1 white
    "fft_period",  # the window's own strongest periodogram period (<= L/2)
    "acf1",  # lag-1 ACF of the detrended window: smoothness
    "trend_slope",  # least-squares line's change across the window, in window stds
    "volatility",  # std of first differences (data units)
    "level_shift",  # largest jump between adjacent eighths' means of the detrended,
    # deseasonalised window, in window stds
    "mean",  # window mean (data units)
    "std",  # window std (data units)
]
_N_HARMONICS = 3
MIN_WINDOW = 16  # shortest window the features are computed on
_EPS = 1e-12
MAX_THREADS = 4  # each thread holds one chunk's ~10 float64 copies (170-340 MB)
_T = TypeVar("_T")


def chunk_threads() -> int:
    """Threads for chunked feature work: torch's intra-op count where torch is loaded (it
    follows OMP_NUM_THREADS and a tune worker's share of the cores), else
    OMP_NUM_THREADS, else the cores this process may use; at most MAX_THREADS."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        n = torch.get_num_threads()
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit():
        n = int(os.environ["OMP_NUM_THREADS"])
    elif hasattr(os, "sched_getaffinity"):
        n = len(os.sched_getaffinity(0))
    else:
        n = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, n))


def map_chunks(
    fn: Callable[[int], _T], starts: Iterable[int], threads: int | None = None
) -> list[_T]:
    """``[fn(s) for s in starts]``, the chunks spread over threads (numpy releases the GIL
    in its array loops). Each chunk runs the same code on the same rows whatever the
    thread count, so the results are bit-identical to a serial loop. Inside the pool BLAS
    runs one thread per call: OpenBLAS's own threads, one per core in every chunk's
    matrix product, would fight the chunks' (2 threads on 2 cores: 1.2x faster than
    serial with them, 1.9x without).

    Args:
        fn: computes one chunk from its first window's index.
        starts: the chunks' first windows.
        threads: None: ``chunk_threads()``; 1: in this thread.
    """
    starts = list(starts)
    threads = min(threads or chunk_threads(), len(starts))
    if threads <= 1:
        return [fn(s) for s in starts]
    # A failed chunk or a Ctrl-C while waiting ends map's iterator, which cancels the
    # chunks not yet started: they are dropped, not run.
    with (
        threadpool_limits(1, user_api="blas"),
        ThreadPoolExecutor(threads, thread_name_prefix="features") as pool,
    ):
        return list(pool.map(fn, starts))


def _moving_average(z: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along the last axis, valid part only.

    Args:
        z: [N, L].
        width: window length; an even width is followed by a 2-average (the 2 x m MA)
            so the result stays centred.

    Returns:
        [N, L - 2 * (width // 2)], aligned with z[:, width // 2 : L - width // 2].
    """
    cs = np.concatenate([np.zeros((z.shape[0], 1)), np.cumsum(z, axis=1)], axis=1)
    ma = (cs[:, width:] - cs[:, :-width]) / width
    return 0.5 * (ma[:, 1:] + ma[:, :-1]) if width % 2 == 0 else ma


def _harmonic_fit(d: np.ndarray, period: int) -> np.ndarray:
    """Least-squares fit of a period's first harmonics to each row.

    Args:
        d: [N, L] detrended rows.
        period: cycle length in steps.

    Returns:
        [N, L] the fitted seasonal part.
    """
    n_harm = max(1, min(_N_HARMONICS, (period - 1) // 2))
    t = np.arange(d.shape[1])
    arg = 2 * np.pi * np.outer(t, np.arange(1, n_harm + 1)) / period
    design = np.concatenate([np.cos(arg), np.sin(arg)], axis=1)  # [L, 2h]
    return (d @ np.linalg.pinv(design).T) @ design.T


def _strengths(z: np.ndarray, seasonal: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """F_S and F_T of each row, given its seasonal part; the trend is a width-long MA.

    Args:
        z: [N, L] rows.
        seasonal: [N, L] seasonal part.
        width: moving-average length of the trend.

    Returns:
        (f_s, f_t), each [N].
    """
    adj = z - seasonal
    trend = _moving_average(adj, width)
    h = width // 2
    sl = slice(h, z.shape[1] - h)
    resid = adj[:, sl] - trend
    var_r = resid.var(axis=1)
    scale = np.mean(z[:, sl] ** 2, axis=1)
    f_s = strength(var_r, (seasonal[:, sl] + resid).var(axis=1), scale)
    f_t = strength(var_r, (trend + resid).var(axis=1), scale)
    return f_s, f_t


def _lag_corr(d: np.ndarray, lag: int, denom: np.ndarray) -> np.ndarray:
    """Autocorrelation of each row of d [N, L] at one lag (biased estimator)."""
    return np.einsum("nl,nl->n", d[:, :-lag], d[:, lag:]) / denom


def _chunk_features(z: np.ndarray, periods: list[int]) -> np.ndarray:
    """Features of rows z: [N, L] (one window-channel each) -> [N, F]."""
    n, length = z.shape
    out = np.zeros((n, len(FEATURE_NAMES)))
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}

    mean = z.mean(axis=1)
    std = z.std(axis=1)
    safe_std = np.maximum(std, _EPS)
    t = np.arange(length) - (length - 1) / 2.0
    slope = (z - mean[:, None]) @ t / (t @ t)
    d = z - mean[:, None] - slope[:, None] * t  # linearly detrended
    denom = np.maximum(np.einsum("nl,nl->n", d, d), _EPS)

    out[:, col["mean"]] = mean
    out[:, col["std"]] = std
    out[:, col["trend_slope"]] = slope * (length - 1) / safe_std
    out[:, col["volatility"]] = np.diff(z, axis=1).std(axis=1)
    out[:, col["acf1"]] = _lag_corr(d, 1, denom)

    spec = np.abs(np.fft.rfft(d * np.hanning(length), axis=1)) ** 2
    spec[:, 0] = 0.0
    p = spec[:, 1:] / np.maximum(spec[:, 1:].sum(axis=1, keepdims=True), _EPS)
    out[:, col["spectral_entropy"]] = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1) / np.log(
        p.shape[1]
    )
    k = 2 + np.argmax(spec[:, 2:], axis=1)  # k >= 2: at least two cycles in the window
    out[:, col["fft_period"]] = length / k
    # A constant window has no spectrum: its entropy and peak would be read off rounding noise.
    flat = std**2 <= FLAT_TOL * np.mean(z**2, axis=1)
    out[flat, col["spectral_entropy"]] = np.nan
    out[flat, col["fft_period"]] = np.nan

    # The best candidate per row: the one with the largest F_S.
    best_fs = np.zeros(n)
    best_ft = np.zeros(n)
    seasonal_best = np.zeros_like(d)
    fits = [p for p in periods if 3 <= p <= length // 2]
    for period in fits:
        seasonal = _harmonic_fit(d, period)
        f_s, f_t = _strengths(z, seasonal, period)
        better = f_s > best_fs
        best_fs = np.where(better, f_s, best_fs)
        best_ft = np.where(better, f_t, best_ft)
        out[:, col["period"]] = np.where(better, period, out[:, col["period"]])
        out[:, col["acf_period"]] = np.where(
            better, _lag_corr(d, period, denom), out[:, col["acf_period"]]
        )
        seasonal_best[better] = seasonal[better]
    no_period = out[:, col["period"]] == 0
    if no_period.any():  # no seasonal part: the trend still gets measured
        _, f_t = _strengths(z[no_period], np.zeros_like(z[no_period]), max(2, length // 8))
        best_ft[no_period] = f_t
    out[:, col["seasonal_strength"]] = best_fs
    out[:, col["trend_strength"]] = best_ft

    blocks = 8
    b = length // blocks
    adj = (d - seasonal_best)[:, length - b * blocks :].reshape(n, blocks, b).mean(axis=2)
    out[:, col["level_shift"]] = np.abs(np.diff(adj, axis=1)).max(axis=1) / safe_std
    return out


def window_features(
    x: np.ndarray, periods: list[int], max_elements: int = 1 << 21, threads: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """Features of every window and channel.

    Args:
        x: [W, L, C] windows (a strided view is fine: only one chunk is copied at a time).
        periods: candidate periods, e.g. ``analyse(train).top_periods()``; those outside
            [3, L / 2] are ignored.
        max_elements: values per chunk (W_chunk * L * C), bounding the memory used
            (about 10 arrays of that many float64 at the peak: ~170 MB per thread at the
            default).
        threads: chunks computed at once (``map_chunks``); None: ``chunk_threads()``.

    Returns:
        (features [W, C, F] float32, FEATURE_NAMES).
    """
    n_win, length, n_ch = x.shape
    if length < MIN_WINDOW:
        raise ValueError(
            f"windows of {length} steps are too short for features (need >= {MIN_WINDOW})"
        )
    out = np.empty((n_win, n_ch, len(FEATURE_NAMES)), dtype=np.float32)
    chunk = max(1, max_elements // (length * n_ch))
    periods = sorted({int(p) for p in periods})

    def one(start: int) -> None:
        part = np.asarray(x[start : start + chunk], dtype=np.float64)  # [w, L, C] copy
        z = part.transpose(0, 2, 1).reshape(-1, length)  # [w * C, L]
        out[start : start + part.shape[0]] = _chunk_features(z, periods).reshape(
            part.shape[0], n_ch, -1
        )

    map_chunks(one, range(0, n_win, chunk), threads)
    return out, list(FEATURE_NAMES)
