"""Forecast error metrics, computed over all windows at once.

Every metric takes arrays of the same shape ([W, H, C] in the scaled space) and
averages over every element, never a mean of per-batch means (ARCHITECTURE §4).
"""

from __future__ import annotations

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
