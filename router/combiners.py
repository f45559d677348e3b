"""Fixed combination rules. The learned routers live in their own modules."""

from __future__ import annotations

import numpy as np


class MeanCombiner:
    """Equal weights over members: the forecast-combination puzzle's hard-to-beat baseline."""

    name = "mean"

    def fit(
        self, val_forecasts: np.ndarray, val_targets: np.ndarray, features: np.ndarray | None = None
    ) -> MeanCombiner:
        """val_forecasts: [M, W, H, C]; val_targets: [W, H, C]."""
        return self

    def weights(self, forecasts: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """forecasts: [M, W, H, C] -> weights [W, C, M]."""
        m, w, _, c = forecasts.shape
        return np.full((w, c, m), 1.0 / m)
