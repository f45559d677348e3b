"""Non-robust STL as sparse linear operators, every channel of a block in one pass.

STL (Cleveland, Cleveland, McRae & Terpenning 1990, "STL: A Seasonal-Trend Decomposition
Procedure Based on Loess", Journal of Official Statistics 6(1), 3-73) alternates, in its
inner loop, four smoothers: LOESS of each cycle-subseries (extended by one point at each
end), a low-pass filter of the result (moving averages of length period, period and 3,
then a LOESS), and a LOESS of the deseasonalised series for the trend. Without the robust
outer loop every smoother is linear, and its LOESS weights depend only on the length of
the series, the window, the degree and the jump, never on the data. So each smoother is
built once as a sparse matrix and applied to a [T, C] block: one decomposition serves
all channels, and the matrices serve every later series of the same length and period.

The edge rules follow the paper's Fortran (as statsmodels runs it, which this module is
tested against to 1e-9): windows shifted inside the series at its ends, the tricube's
bandwidth widened by (window - n) // 2 when the window exceeds the series, a degree-1
fit only where the spread of the weighted positions allows, LOESS evaluated every
``jump`` points with linear interpolation between, and the last point of a jumped
smoother fitted with the window of the last evaluated one.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

INNER_ITER = 5  # the inner-loop passes STL makes without robustness weights (the paper's)
# Smoothers kept for reuse, in bytes: those of 37k rows and a 3000-step period take 11 MB
# and 0.05 s to build. Weather's analysis: peak RSS 224 / 254 / 316 MB with 16 / 32 /
# 64 MB kept (and 420 MB with 32 entries of any size), 4.15 / 4.02 / 3.99 s.
CACHE_BYTES = 32 * 2**20


def _loess_weights(
    n: int, window: int, deg: int, xs: np.ndarray, nleft: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """LOESS weights of the fits at positions ``xs`` of a series of n points.

    Args:
        n: length of the series smoothed.
        window: LOESS window (points).
        deg: local polynomial degree, 0 or 1.
        xs: [m] 1-based positions where the fit is evaluated (0 or n + 1: extrapolated).
        nleft: [m] 1-based first point of each fit's neighbourhood.
        width: points in each neighbourhood (the same for all).

    Returns:
        (w, ok): w [width, m] the weight of point nleft + i in the fit at xs; ok [m] False
        where every weight vanished (the caller decides the fallback).
    """
    # Neighbourhood points along axis 0: numpy sums an outer axis row after row, the
    # paper's order. The fitted centre of a window far into a long series (positions near
    # 40,000) carries that sum's rounding; pairwise sums, more accurate, moved the fits of
    # a series near 1000 by 3e-10 from statsmodels' (1e-12 in its order).
    xs = xs.astype(np.float64)
    pos = (nleft + np.arange(width)[:, None]).astype(np.float64)  # [width, m], 1-based
    h = np.maximum(xs - nleft, nleft + width - 1 - xs)
    if window > n:  # a window wider than the series widens the bandwidth
        h = h + (window - n) // 2
    r = np.abs(pos - xs)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(r <= 0.001 * h, 1.0, (1.0 - (r / h) ** 3) ** 3)
    w[r > 0.999 * h] = 0.0
    total = w.sum(axis=0)
    ok = total > 0
    w /= np.where(ok, total, 1.0)
    if deg > 0:
        centre = (w * pos).sum(axis=0)
        pos -= centre  # now offsets from the centre
        spread = (w * pos**2).sum(axis=0)
        # a local line only where the weighted positions are not all (nearly) one point
        line = (h > 0) & (np.sqrt(spread) > 0.001 * (n - 1.0))
        slope = (xs[line] - centre[line]) / spread[line]
        w[:, line] *= slope * pos[:, line] + 1.0
    return w, ok


def _rows(
    n: int, window: int, deg: int, xs: np.ndarray, nleft: np.ndarray, width: int
) -> tuple[sp.csr_matrix, np.ndarray]:
    """[m, n] CSR of the fits at ``xs`` (see ``_loess_weights``) and their ok flags [m];
    a failed fit's row is zero."""
    w, ok = _loess_weights(n, window, deg, xs, nleft, width)
    w[:, ~ok] = 0.0
    m = xs.shape[0]
    cols = (nleft[:, None] - 1 + np.arange(width)).ravel()
    mat = sp.csr_matrix((w.T.ravel(), cols, np.arange(m + 1) * width), shape=(m, n))
    mat.eliminate_zeros()
    return mat, ok


@dataclass(frozen=True)
class Loess:
    """A LOESS smoother of series of n points: ``interp @ (fit @ y)``.

    Attributes:
        fit: [m, n] the fits at the m evaluated points.
        interp: [n, m] linear interpolation between them; None when every point is fitted.
    """

    fit: sp.csr_matrix
    interp: sp.csr_matrix | None

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """Smooth y [n, C] (or [n]); same shape out."""
        out = self.fit @ y
        return out if self.interp is None else self.interp @ out

    def matrix(self) -> sp.csr_matrix:
        """[n, n] the whole smoother (small series only: dense-ish for wide windows)."""
        return self.fit if self.interp is None else (self.interp @ self.fit).tocsr()


def loess(n: int, window: int, deg: int, jump: int) -> Loess:
    """The LOESS smoother STL applies to a whole series of n points.

    Evaluated at points 1, 1 + jump, ... and at n, interpolated linearly between; a fit
    whose weights all vanish keeps the point's own value.
    """
    if n < 2:
        return Loess(sp.identity(max(n, 1), format="csr"), None)
    jump = min(jump, n - 1)
    xs = np.arange(1, n + 1, jump)
    if window >= n:
        nleft, width = np.ones_like(xs), n
    else:
        # neighbourhoods centred where they fit, else flush with the series' ends (the
        # paper's unjumped loop puts an even window one point earlier than its jumped one)
        half = (window + 2) // 2 if jump == 1 else (window + 1) // 2
        nleft, width = np.clip(xs - half + 1, 1, n - window + 1), window
    if xs[-1] != n:  # the last point, fitted with the last evaluated point's window
        xs, nleft = np.append(xs, n), np.append(nleft, nleft[-1])
    fit, ok = _rows(n, window, deg, xs, nleft, width)
    if not ok.all():  # the point's own value
        bad = np.flatnonzero(~ok)
        fit = (
            fit + sp.csr_matrix((np.ones(bad.size), (bad, xs[bad] - 1)), shape=fit.shape)
        ).tocsr()
    if jump == 1:
        return Loess(fit, None)
    # linear interpolation between the evaluated points (0-based positions e)
    e = xs - 1
    t = np.arange(n)
    left = np.searchsorted(e, t, side="right") - 1
    right = np.minimum(left + 1, e.size - 1)
    frac = np.where(right > left, (t - e[left]) / np.maximum(e[right] - e[left], 1), 0.0)
    rows = np.concatenate([t, t])
    cols = np.concatenate([left, right])
    vals = np.concatenate([1.0 - frac, frac])
    interp = sp.csr_matrix((vals, (rows, cols)), shape=(n, e.size))
    interp.eliminate_zeros()
    return Loess(fit, interp)


def subseries_smoother(k: int, window: int, deg: int, jump: int) -> sp.csr_matrix:
    """[k + 2, k] the LOESS of a cycle-subseries of k points, extended by the fits
    extrapolated to positions 0 and k + 1 (each as its neighbour where that fit fails)."""
    inner = loess(k, window, deg, jump).matrix()
    width = min(window, k)
    ends, ok = _rows(
        k, window, deg, np.array([0, k + 1]), np.array([1, max(1, k - window + 1)]), width
    )
    first = ends[0] if ok[0] else inner[0]
    last = ends[1] if ok[1] else inner[k - 1]
    return sp.vstack([first, inner, last], format="csr")


@dataclass(frozen=True)
class Operators:
    """STL's smoothers for series of n points and one period (see ``operators``)."""

    n: int
    period: int
    long: sp.csr_matrix  # [q + 3, q + 1] subseries smoother of the phases with q + 1 points
    short: sp.csr_matrix  # [q + 2, q] that of the phases with q points
    low_pass: Loess
    trend: Loess

    def cycle_subseries(self, y: np.ndarray) -> np.ndarray:
        """Each phase's subseries of y [n, C] smoothed and extended: [n + 2 * period, C],
        row m * period + j holding phase j's point m (m = 0 and the last: extrapolated)."""
        n, p, c = self.n, self.period, y.shape[1]
        q, r = divmod(n, p)  # phases j < r hold q + 1 points, the others q
        padded = np.zeros(((q + 1) * p, c))
        padded[:n] = y
        cube = padded.reshape(q + 1, p, c)
        out = np.zeros((q + 3, p, c))
        if r:
            out[:, :r] = (self.long @ cube[:, :r].reshape(q + 1, r * c)).reshape(q + 3, r, c)
        out[: q + 2, r:] = (self.short @ cube[:q, r:].reshape(q, (p - r) * c)).reshape(
            q + 2, p - r, c
        )
        return out.reshape(-1, c)[: n + 2 * p]

    @property
    def nbytes(self) -> int:
        """Memory the matrices hold."""
        mats = [self.long, self.short, self.low_pass.fit, self.low_pass.interp]
        mats += [self.trend.fit, self.trend.interp]
        return sum(
            m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in mats if m is not None
        )


def _moving_average(y: np.ndarray, length: int) -> np.ndarray:
    """Means of y [n, C] over each run of ``length`` rows: [n - length + 1, C]."""
    # A running sum, added up in the paper's order (first window, then + entering -
    # leaving row): O(n) whatever the length, and its rounding drift (1e-10 over 40k rows
    # of values near 1000) the same as statsmodels', not one of its own.
    steps = np.empty((y.shape[0] - length + 1, y.shape[1]))
    steps[0] = np.cumsum(y[:length], axis=0)[-1]
    np.subtract(y[length:], y[:-length], out=steps[1:])
    return np.cumsum(steps, axis=0, out=steps) / float(length)


_CACHE: OrderedDict[tuple[int, ...], Operators] = OrderedDict()


def operators(
    n: int,
    period: int,
    seasonal: int,
    trend: int,
    low_pass: int,
    seasonal_deg: int = 1,
    trend_deg: int = 1,
    low_pass_deg: int = 1,
    seasonal_jump: int = 1,
    trend_jump: int = 1,
    low_pass_jump: int = 1,
) -> Operators:
    """The smoothers of ``decompose`` for n rows and these settings; the latest ones are
    kept (``CACHE_BYTES``): the analyser decomposes the same stretch per channel and per
    period removed first."""
    key = (n, period, seasonal, trend, low_pass, seasonal_deg, trend_deg, low_pass_deg)
    key += (seasonal_jump, trend_jump, low_pass_jump)
    ops = _CACHE.get(key)
    if ops is not None:
        _CACHE.move_to_end(key)
        return ops
    q = n // period
    ops = Operators(
        n=n,
        period=period,
        long=subseries_smoother(q + 1, seasonal, seasonal_deg, seasonal_jump),
        short=subseries_smoother(q, seasonal, seasonal_deg, seasonal_jump),
        low_pass=loess(n, low_pass, low_pass_deg, low_pass_jump),
        trend=loess(n, trend, trend_deg, trend_jump),
    )
    _CACHE[key] = ops
    while len(_CACHE) > 1 and sum(o.nbytes for o in _CACHE.values()) > CACHE_BYTES:
        _CACHE.popitem(last=False)
    return ops


def decompose(
    x: np.ndarray,
    period: int,
    seasonal: int = 7,
    trend: int | None = None,
    low_pass: int | None = None,
    seasonal_deg: int = 1,
    trend_deg: int = 1,
    low_pass_deg: int = 1,
    seasonal_jump: int = 1,
    trend_jump: int = 1,
    low_pass_jump: int = 1,
    inner_iter: int = INNER_ITER,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-robust STL of every channel: the same as statsmodels' ``STL(...).fit()`` with
    these settings and ``robust=False`` (to rounding), channel by channel.

    Args:
        x: [T] or [T, C] finite values, T >= 2 * period.
        period: cycle length in steps (>= 2).
        seasonal: window of the cycle-subseries LOESS, in cycles (odd, >= 3).
        trend: trend LOESS window (odd, > period); default as STL's.
        low_pass: low-pass LOESS window (odd, > period); default the smallest odd > period.
        seasonal_deg, trend_deg, low_pass_deg: LOESS degrees, 0 or 1.
        seasonal_jump, trend_jump, low_pass_jump: LOESS evaluated every this many points.
        inner_iter: inner-loop passes.

    Returns:
        (trend, seasonal, resid), each shaped as x.
    """
    x = np.asarray(x, dtype=np.float64)
    flat = x.ndim == 1
    y = x[:, None] if flat else x
    n = y.shape[0]
    if low_pass is None:
        low_pass = period + 1 + period % 2
    if trend is None:
        trend = int(np.ceil(1.5 * period / (1 - 1.5 / seasonal)))
        trend += trend % 2 == 0
    if period < 2 or n < 2 * period:
        raise ValueError(f"need period >= 2 and T >= 2 * period, got {period} and {n}")
    if seasonal < 3 or seasonal % 2 == 0 or trend % 2 == 0 or low_pass % 2 == 0:
        raise ValueError("seasonal (>= 3), trend and low_pass windows must be odd")
    if trend <= period or low_pass <= period:
        raise ValueError("trend and low_pass windows must exceed the period")
    if {seasonal_deg, trend_deg, low_pass_deg} - {0, 1}:
        raise ValueError("LOESS degrees must be 0 or 1")
    ops = operators(
        n, period, seasonal, trend, low_pass, seasonal_deg, trend_deg, low_pass_deg,
        max(1, seasonal_jump), max(1, trend_jump), max(1, low_pass_jump),
    )  # fmt: skip
    trend_part = np.zeros_like(y)
    season = np.zeros_like(y)
    for _ in range(inner_iter):
        cycles = ops.cycle_subseries(y - trend_part)  # [T + 2 * period, C]
        smooth = _moving_average(_moving_average(cycles, period), period)
        low = ops.low_pass(_moving_average(smooth, 3))  # [T, C]
        season = cycles[period : period + n] - low
        trend_part = ops.trend(y - season)
    resid = y - season - trend_part
    if flat:
        return trend_part[:, 0], season[:, 0], resid[:, 0]
    return trend_part, season, resid
