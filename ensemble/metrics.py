"""Forecast error metrics, computed over all windows at once.

Every metric takes arrays of the same shape ([W, H, C] in the scaled space) and
averages over every element, never a mean of per-batch means (docs/protocol.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean squared error over all elements."""
    d = np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return float(np.mean(d * d))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error over all elements."""
    return float(
        np.mean(np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)))
    )


def smape(pred: np.ndarray, true: np.ndarray, eps: float = 1e-8) -> float:
    """Symmetric MAPE in percent (0..200); pairs where both values are 0 count as 0."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    den = np.abs(p) + np.abs(t)
    return float(200.0 * np.mean(np.where(den > eps, np.abs(p - t) / np.maximum(den, eps), 0.0)))


def mase(pred: np.ndarray, true: np.ndarray, insample: np.ndarray, period: int = 1) -> float:
    """Mean absolute scaled error.

    Args:
        pred, true: [W, H, C].
        insample: [T, C] training rows, for the scale: the in-sample MAE of the seasonal
            naive forecast with ``period`` (1 = last value), per channel.
        period: seasonal period of the naive scale.
    """
    ins = np.asarray(insample, dtype=np.float64)
    scale = np.mean(np.abs(ins[period:] - ins[:-period]), axis=0)  # [C]
    scale = np.where(scale > 0, scale, 1.0)
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(true)) / scale))


def scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """The pair every results table reports: {'mse', 'mae'}."""
    return {"mse": mse(pred, true), "mae": mae(pred, true)}


def window_mse(pred: np.ndarray, true: np.ndarray, block: int = 512) -> np.ndarray:
    """Per-window MSE, [W, H, C] -> [W]; its mean is ``mse(pred, true)``.

    Computed over blocks of windows so that no [W, H, C] float64 temporary is made
    (weather H=720: 1.3 GB each).
    """
    out = np.empty(len(pred))
    for i in range(0, len(pred), block):
        d = np.asarray(pred[i : i + block], np.float64) - np.asarray(
            true[i : i + block], np.float64
        )
        out[i : i + block] = np.mean(d * d, axis=(1, 2))
    return out


# At most this many degrees of freedom (fewer than 12 H windows) the test cannot resolve
# even large differences: t(1) needs |DM| > 12.7 at 5 % (ETTh1 L=96 H=336: naive 1.33
# against snaive 0.65 test MSE, p 0.133).
WEAK_DOF = 2


def caveat(test: dict[str, Any]) -> str:
    """What a reader of this test's p must know: "" or a short clause. With too few
    degrees of freedom a large p says nothing (a small one still counts)."""
    p = test.get("p")
    weak = (test.get("dof") or 0) <= WEAK_DOF and test.get("dm") not in (None, 0.0)
    if weak and p is not None and p >= 0.05:
        return f"dof {test['dof']}: a large p says nothing here (it cannot resolve even large differences)"
    return ""


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None / NaN left out of the
    family and returned as they are): each adjusted p is compared with the level as the
    raw ones would be, but the chance of any false finding stays at that level."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and p == p]
    out: list[float | None] = list(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (len(idx) - rank) * float(pvalues[i])))
        out[i] = running
    return out


def diebold_mariano(
    loss_a: np.ndarray, loss_b: np.ndarray, horizon: int, alternative: str = "two-sided"
) -> dict[str, Any]:
    """Diebold-Mariano test of equal expected loss for two forecasts of the same windows.

    The loss differential ``d = loss_a - loss_b`` of consecutive windows is strongly
    autocorrelated: windows less than ``horizon`` apart share targets, and errors
    persist beyond that. Its long-run variance is estimated by projecting ``d`` on the
    first ``nu`` cosines (the equal-weighted cosine estimator; Lazarus, Lewis, Stock and
    Watson, "HAR inference: recommendations for practice", JBES 2018), and the statistic
    is compared with Student's t with ``nu`` degrees of freedom, which is exact for this
    estimator under fixed-bandwidth asymptotics. ``nu = W // (4 * horizon)`` (at least
    1): with overlapping windows the effective sample size is about W / horizon, and this
    choice kept the test's size at 4.3-5.7 % at the 5 % level in simulations with
    persistent AR(1) errors, where a Newey-West estimate with 2 * horizon lags rejected
    a true null 7.3-15.3 % of the time (``benchmarks/dm_calibration.py``). Fewer than
    8 * horizon windows hold less than two degrees of freedom' worth of information: an
    earlier floor of 2 rejected a true null 7-16 % of the time there.

    The test assumes the loss differences' dependence fades within a few horizons. Where
    it does not, it is too liberal: on a seasonal AR process whose differences stay
    correlated for many horizons it rejected a true null 30 % of the time at 5 % at H=24
    and 17 % at H=96 (``benchmarks/dm_calibration.py --seasonal``), and ETTh1's
    naive-snaive differences (H=96) are still correlated 0.3 one horizon and 0.15-0.19
    four to eight horizons apart. No per-test check of that is reliable on a few thousand
    windows (an autocorrelation that far out is itself uncertain by about 0.15), so the
    reports say it in words; the textbook alternatives (Newey-West, Harvey-Leybourne-
    Newbold) were more liberal still in an audit's simulation.

    Args:
        loss_a, loss_b: [W] per-window losses (``window_mse``) in window order.
        horizon: forecast horizon H of the windows.
        alternative: "two-sided", or "less" (the alternative that a's expected loss is
            lower than b's: a one-sided p).

    Returns:
        {"diff": mean of d (negative: a is better), "dm": the statistic, "p": the
        p-value for ``alternative``, "dof": nu}. Losses equal to within 1e-6 of
        their size (the same forecast up to float32 rounding) give dm 0 and p 1; a
        constant non-zero differential (nothing to scale it by) gives dm None and p 0 (1
        for "less" when a is worse). A single window, or a non-finite loss, cannot be
        tested: dm None, p NaN (undefined, never "significant").

    Raises:
        ValueError: losses that are not two [W] arrays of one length, or another
            ``alternative``.
    """
    from scipy import fft, stats

    if alternative not in ("two-sided", "less"):
        raise ValueError(f"alternative must be 'two-sided' or 'less', not {alternative!r}")
    a, b = np.asarray(loss_a, np.float64), np.asarray(loss_b, np.float64)
    if a.ndim != 1 or a.shape != b.shape:  # [W, C] would be transformed along channels
        raise ValueError(f"losses must be two [W] arrays of one length (got {a.shape}, {b.shape})")
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, answered below
        d = a - b
    n = len(d)
    nu = int(min(max(n // (4 * max(horizon, 1)), 1), n - 1))
    out: dict[str, Any] = {"diff": float(d.mean()), "dof": nu}
    if not np.isfinite(d).all():  # inf - inf, NaN: no test (p 0 read as "certain")
        return out | {"dm": None, "p": float("nan")}
    lam = fft.dct(d - d.mean(), type=2, norm="ortho")[1 : nu + 1]  # [nu] cosine projections
    lrv = float(np.mean(lam * lam)) if nu >= 1 else float("nan")  # long-run variance of d
    # the same forecast up to float32 rounding (e.g. re-read from forecasts.npz): no difference
    scale = float(np.mean(np.abs(a)) + np.mean(np.abs(b)))
    if np.max(np.abs(d), initial=0.0) <= 1e-6 * scale:
        return out | {"dm": 0.0, "p": 1.0}
    if nu < 1:  # one window: no variance to scale the difference by
        return out | {"dm": None, "p": float("nan")}
    if not lrv > 1e-24 * float(np.mean(d * d)):  # a constant differential: nothing to scale by
        certain = alternative == "two-sided" or d.mean() < 0
        return out | {"dm": None, "p": 0.0 if certain else 1.0}
    dm = float(d.mean() / np.sqrt(lrv / n))
    p = 2.0 * stats.t.sf(abs(dm), nu) if alternative == "two-sided" else stats.t.cdf(dm, nu)
    return out | {"dm": dm, "p": float(p)}
