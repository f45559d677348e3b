"""Naive baselines: last value, seasonal naive and window mean.

They set the floor every other member must clear, cost nothing to fit and are the
reference for MASE-style comparisons.
"""

from __future__ import annotations

import numpy as np

from ensemble.data import Split, Windows
from ensemble.forecaster import BaseForecaster


class NaiveLast(BaseForecaster):
    """Repeat the last observed value over the horizon."""

    name = "naive"

    def predict(self, windows: Windows) -> np.ndarray:
        """windows.x: [W, L, C] -> [W, H, C]."""
        last = windows.x[:, -1:, :]
        return np.repeat(last, windows.pred_len, axis=1)


class SeasonalNaive(BaseForecaster):
    """Repeat the last full period: y[t + h] = x[t + h - period * ceil((h + 1) / period)].

    Args:
        period: season length in steps; must not exceed the lookback.
    """

    name = "snaive"

    def __init__(self, period: int = 24):
        if period < 1:
            raise ValueError("period must be >= 1")
        self.period = int(period)

    def fit(self, train: Split, val: Split) -> SeasonalNaive:
        if self.period > train.seq_len:
            raise ValueError(f"seasonal period {self.period} exceeds the lookback {train.seq_len}")
        return self

    def predict(self, windows: Windows) -> np.ndarray:
        """windows.x: [W, L, C] -> [W, H, C]."""
        h = np.arange(windows.pred_len)
        # index into the last `period` inputs, cycling over the horizon
        idx = windows.seq_len - self.period + (h % self.period)
        return windows.x[:, idx, :]


class WindowMean(BaseForecaster):
    """Forecast the mean of the input window, flat over the horizon."""

    name = "mean"

    def predict(self, windows: Windows) -> np.ndarray:
        """windows.x: [W, L, C] -> [W, H, C]."""
        m = windows.x.mean(axis=1, keepdims=True)
        return np.repeat(m, windows.pred_len, axis=1)
