"""Seasonal and trend strength of a candidate period, from an STL decomposition.

Strengths as Wang, Smith & Hyndman (2006) define them, with the series split by STL
into trend T, seasonal S and remainder R:

    F_S = max(0, 1 - var(R) / var(S + R))      F_T = max(0, 1 - var(R) / var(T + R))

STL is ``periodicity.stl``: statsmodels' non-robust STL (to 1e-9) as sparse matrices
built once per stretch length and period, applied to all channels at once (``periods``
on weather's train rows: 28 s with per-channel statsmodels fits, 4 s with it; the
timings below are statsmodels'). Two choices keep this fast and honest on long series
and on noise:

* STL runs on the **last** 16 cycles only, at least 4096 rows (all rows when the series
  is shorter). A full STL of 69,680 rows costs about a second per channel and period; a
  recent stretch of 16 cycles of a daily period measures the same strength in a few
  hundredths. Long periods cost more: 16 cycles of 1500 steps are 24,000 rows (the
  analysis of ETTm1's train rows took 2.05 s with an 8192-row cap, 4.29 s without).
* The seasonal smoother spans 13 cycles instead of STL's usual 7. With 7, pure white
  noise already scores F_S of about 0.35 (the smoother follows the noise of its seven
  points); with 13 it scores about 0.2 on 16 cycles, below the 0.3 that says "seasonal".

Fewer cycles leave each seasonal sub-series only a few points, which the smoother
follows. Median / largest F_S of 18 series per cell (periods 96, 672, 1500;
``python benchmarks/stl_null.py``):

    cycles                  4            8           10           12           16
    white noise         0.52 / 0.57  0.30 / 0.31  0.26 / 0.29  0.23 / 0.27  0.20 / 0.22
    AR(1) 0.99 noise    0.59 / 0.70  0.31 / 0.49  0.26 / 0.48  0.23 / 0.37  0.21 / 0.29

So the stretch is never capped below 16 cycles (an 8192-row cap measured ETTm2's slow
wander at 1500 and 2176 steps on 4-5 cycles, where it scored 0.43 and 0.64; on 16 cycles
0.17 and 0.21), and where the series holds fewer, ``seasonal_threshold`` rises to stay
above red noise.

Known limit: the analyser measures the periods with the most spectral power, where red
noise scores more than at the fixed periods of the table; a single AR(0.99) channel
passed 0.3 on 16+ cycles in 2 of 12 draws (0.30 and 0.38). Channel means are safer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from periodicity.stl import decompose

SEASONAL_WINDOW = 13  # cycles the seasonal smoother spans (odd)
SEASONAL_THRESHOLD = 0.3  # F_S above this counts as a real seasonal cycle (16+ cycles)
FULL_CYCLES = 16  # cycles measured when the series holds them


def _jump(window: int) -> int:
    # Evaluating the LOESS every ~10% of its window and interpolating is what R's stl
    # does by default; it is ~10x faster and changes the components very little.
    return max(1, int(np.ceil(window / 10)))


def stl_settings(period: int) -> dict[str, int]:
    """This module's STL windows and jumps for ``period`` (non-robust, 5 inner passes)."""
    trend = int(np.ceil(1.5 * period / (1 - 1.5 / SEASONAL_WINDOW)))
    trend += trend % 2 == 0  # STL wants odd windows
    low_pass = period + 1 + period % 2
    return {
        "seasonal": SEASONAL_WINDOW,
        "trend": trend,
        "low_pass": low_pass,
        "seasonal_jump": _jump(SEASONAL_WINDOW),
        "trend_jump": _jump(trend),
        "low_pass_jump": _jump(low_pass),
    }


def stl_components(x: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """STL decomposition with this module's settings (``periodicity.stl.decompose``: the
    same components as statsmodels' STL with them, to rounding, all channels at once).

    Args:
        x: [T] or [T, C] finite values, T >= 2 * period.
        period: cycle length in steps (>= 2).

    Returns:
        (trend, seasonal, remainder), each shaped as x.
    """
    return decompose(x, period, **stl_settings(period))


# A component whose variance is below this share of the series' mean square is rounding
# noise: a constant window's (or a straight line's) F_S would otherwise be 0/0, which the
# float rounding turns into any value, mostly 1 ("perfectly seasonal").
FLAT_TOL = 1e-20


def strength(var_r: np.ndarray, var_part: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """1 - var(R) / var(part + R), clipped to [0, 1]; 0 where var(part + R) is rounding noise.

    Args:
        var_r: var(R), any shape.
        var_part: var(S + R) or var(T + R), the same shape.
        scale: mean square of the series (same shape), the yardstick for "rounding noise".
    """
    var_r, var_part = np.asarray(var_r, dtype=np.float64), np.asarray(var_part, dtype=np.float64)
    real = var_part > FLAT_TOL * np.asarray(scale, dtype=np.float64)
    ratio = var_r / np.where(real, var_part, 1.0)
    return np.where(real, np.clip(1.0 - ratio, 0.0, 1.0), 0.0)


def is_flat(x: np.ndarray) -> np.ndarray:
    """Whether each channel of x [T, C] (or a series [T]) is constant: its variance is
    rounding noise beside its mean square (``FLAT_TOL``). Such a channel has no cycle to
    measure, and its F_S is NaN (not measurable), not 0 ("measured: not seasonal").

    Returns:
        [C] booleans (a 0-d array for a series).
    """
    x = np.asarray(x, dtype=np.float64)
    return np.var(x, axis=0) <= FLAT_TOL * np.mean(x**2, axis=0)


def strengths(trend: np.ndarray, seasonal: np.ndarray, resid: np.ndarray) -> tuple[float, float]:
    """(F_S, F_T) from the components of one decomposition (all [T])."""
    scale = np.mean((trend + seasonal + resid) ** 2)
    var_r = np.var(resid)
    f_s = strength(var_r, np.var(seasonal + resid), scale)
    f_t = strength(var_r, np.var(trend + resid), scale)
    return float(f_s), float(f_t)


def seasonal_threshold(cycles: float) -> float:
    """F_S a period measured on ``cycles`` cycles must exceed to count as seasonal.

    0.3 from 16 cycles on; below, 0.3 + 4.8 * (1/cycles - 1/16): 0.40 on 12 cycles, 0.48
    on 10, 0.60 on 8, 0.96 on 5. The slope puts it at or above the largest F_S of AR(0.99)
    noise on 8, 10 and 12 cycles in the table above (0.49, 0.48, 0.37); white noise alone
    would need a third of it. NaN cycles (not measured): never seasonal.
    """
    if not np.isfinite(cycles):
        return float("inf")
    return SEASONAL_THRESHOLD + 4.8 * max(0.0, 1.0 / max(cycles, 1e-9) - 1.0 / FULL_CYCLES)


def recent_rows(n: int, period: int, cycles: int = FULL_CYCLES, min_rows: int = 4096) -> slice:
    """The stretch of rows that strengths are measured on: the last ``cycles`` cycles, at
    least ``min_rows`` rows; all ``n`` rows when the series is shorter."""
    return slice(max(0, n - max(min_rows, cycles * period)), n)


def measured_cycles(n: int, period: int) -> float:
    """Cycles of ``period`` in the stretch ``stl_strength`` measures on a series of n rows."""
    sl = recent_rows(n, period)
    return (sl.stop - sl.start) / period


def stl_strength(
    x: np.ndarray, period: int, cycles: int = FULL_CYCLES, min_rows: int = 4096
) -> tuple[float, float]:
    """Seasonal and trend strength of one period in one series.

    Args:
        x: [T] values.
        period: cycle length in steps.
        cycles: measure on the last ``cycles`` cycles (at least ``min_rows`` rows).
        min_rows: shortest stretch measured, when the series is that long.

    Returns:
        (F_S, F_T) in [0, 1]; (nan, nan) when the stretch holds under two cycles or is
        constant (``is_flat``: a sensor stuck, a dry rain gauge).
    """
    seg = np.asarray(x[recent_rows(x.shape[0], period, cycles, min_rows)], dtype=np.float64)
    if period < 2 or seg.shape[0] < 2 * period or not np.isfinite(seg).all() or is_flat(seg):
        return float("nan"), float("nan")
    return strengths(*stl_components(seg, period))


def column_strengths(x: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """(F_S, F_T) of each channel of x [T, C] at ``period``, each [C]: one STL of all the
    channels, each channel's strengths as ``strengths`` gives them (on a contiguous copy:
    a strided column's variance rounds otherwise)."""
    if x.shape[1] == 0:
        return np.array([]), np.array([])
    parts = stl_components(x, period)
    pairs = [strengths(*(np.ascontiguousarray(a[:, c]) for a in parts)) for c in range(x.shape[1])]
    return np.array([f for f, _ in pairs]), np.array([t for _, t in pairs])


def strength_table(
    x: np.ndarray,
    periods: list[int],
    needed: set[tuple[int, int]] | None = None,
    on_step: Callable[[], object] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """F_S and F_T for every channel and period, as ``stl_strength`` of each; one STL of
    all the channels measured per period (the smoothers are shared by them).

    Args:
        x: [T, C] values.
        periods: P periods.
        needed: (channel, period) pairs to measure; others stay NaN (default: all).
        on_step: called once per (channel, period) measured (a progress bar's ``update``).

    Returns:
        (f_s, f_t), each [P, C].
    """
    f_s = np.full((len(periods), x.shape[1]), np.nan)
    f_t = np.full_like(f_s, np.nan)
    for i, p in enumerate(periods):
        chans = [c for c in range(x.shape[1]) if needed is None or (c, p) in needed]
        seg = np.asarray(x[recent_rows(x.shape[0], p), chans], dtype=np.float64)
        if p >= 2 and seg.shape[0] >= 2 * p:
            # NaN where ``stl_strength`` gives it: not finite, or constant
            ok = np.isfinite(seg).all(axis=0)
            ok[ok] = ~is_flat(seg[:, ok])
            if ok.any():
                cols = np.asarray(chans)[ok]
                f_s[i, cols], f_t[i, cols] = column_strengths(seg[:, ok], p)
        if on_step is not None:
            for _ in chans:
                on_step()
    return f_s, f_t
