"""Stacked combination: simplex weights per horizon step, shrunk toward equal weights.

The members' skill changes along the horizon (an ARIMA is sharp for the first steps and
drifts later; a linear map is the reverse), so one weight vector per step ``h`` is fitted
by constrained least squares on the validation windows:

    w_h = argmin_{w >= 0, sum w = 1}  mean_{windows, channels} (sum_m w_m f_m[h] - y[h])^2.

Weights estimated on a few months of validation are noisy, and noisy weights are why the
equal-weight mean is so hard to beat (Smith & Wallis 2009). So the fitted weights are
blended with equal weights, ``(1 - lam) w_h + lam / M``, and ``lam`` is chosen on a
time-ordered inner split of the validation windows (fit before, score after, a gap of H
windows so no target is shared). ``lam = 1`` is the mean, so on noise it degrades to it.

Three refinements were tried on 19 runs outside the acceptance benchmarks and rejected
(``benchmarks/stacked_variants.py``; BENCHMARKS.md, "Stacked variants"): choosing
``lam`` over the learned router's rolling-origin folds shrinks more and was never lower
on test; weights shared by blocks of horizon steps were no better on average; weighting
the latest validation windows more (a fixed or validation-chosen half-life) was lower in
at most 5 of the 17 runs where it changed anything (pre-registrations 2 and 3,
``benchmarks/router_preregistration.md``).
"""

from __future__ import annotations

import numpy as np

from router.combiners import Combiner
from router.objective import inner_split


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row of ``v`` [..., M] onto the probability simplex.

    The sort-based algorithm of Duchi et al. (2008), vectorised over rows.
    """
    m = v.shape[-1]
    u = -np.sort(-v, axis=-1)
    css = np.cumsum(u, axis=-1) - 1.0
    k = np.arange(1, m + 1)
    rho = np.sum(u - css / k > 0, axis=-1, keepdims=True)  # >= 1 always
    theta = np.take_along_axis(css, rho - 1, axis=-1) / rho
    return np.maximum(v - theta, 0.0)


def simplex_least_squares(gram: np.ndarray, b: np.ndarray, n_iter: int = 3000) -> np.ndarray:
    """Solve ``min_w w'Gw - 2b'w`` over the simplex for a batch of problems.

    Accelerated projected gradient (FISTA, step 1 / (2 * largest eigenvalue)). Members'
    forecasts are strongly correlated, so G is ill-conditioned and plain projected
    gradient crawls; the accelerated version reaches the optimum to ~1e-4 in weight on
    real validation sets. All K problems run at once.

    Args:
        gram: [K, M, M] positive semi-definite.
        b: [K, M].
        n_iter: gradient steps.

    Returns:
        [K, M] weights on the simplex.
    """
    k, m = b.shape
    step = 0.5 / np.maximum(np.linalg.eigvalsh(gram)[:, -1], 1e-12)[:, None]  # [K, 1]
    w = np.full((k, m), 1.0 / m)
    z, t = w, 1.0
    for _ in range(n_iter):
        grad = 2.0 * (np.einsum("kmn,kn->km", gram, z) - b)
        w_next = project_simplex(z - step * grad)
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        z = w_next + ((t - 1.0) / t_next) * (w_next - w)
        w, t = w_next, t_next
    return w


def step_moments(forecasts: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-step quadratic-form terms over windows and channels.

    Args:
        forecasts: [M, W, H, C]; targets: [W, H, C].

    Returns:
        G [H, M, M] = mean_{w,c} f_m f_n and b [H, M] = mean_{w,c} f_m y.
    """
    f = np.asarray(forecasts, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    n = f.shape[1] * f.shape[3]
    return np.einsum("mwhc,nwhc->hmn", f, f) / n, np.einsum("mwhc,whc->hm", f, y) / n


class StackedCombiner(Combiner):
    """Per-horizon-step simplex weights from validation, shrunk toward the mean.

    Args:
        lam: fixed shrinkage toward equal weights in [0, 1]; None chooses it on a
            time-ordered inner split of the validation windows.
        grid: number of ``lam`` values tried in [0, 1].
    """

    name = "stacked"

    def __init__(self, lam: float | None = None, grid: int = 11):
        self.lam = lam
        self.grid = grid
        self.lam_: float | None = None
        self.step_weights_: np.ndarray | None = None  # [H, M]
        self.inner_scores_: dict[float, float] = {}

    @staticmethod
    def _forecast(forecasts: np.ndarray, step_weights: np.ndarray) -> np.ndarray:
        """[M, W, H, C] x [H, M] -> [W, H, C]."""
        return np.einsum("mwhc,hm->whc", np.asarray(forecasts, dtype=np.float64), step_weights)

    def _choose_lam(self, val_forecasts: np.ndarray, val_targets: np.ndarray) -> float:
        m, w, h, _ = val_forecasts.shape
        fit_w, held_w = inner_split(w, h)
        if len(held_w) == 0 or len(fit_w) == 0:
            return 1.0
        fitted = simplex_least_squares(*step_moments(val_forecasts[:, fit_w], val_targets[fit_w]))
        held_f, held_y = val_forecasts[:, held_w], val_targets[held_w]
        self.inner_scores_ = {}
        for lam in np.linspace(0.0, 1.0, self.grid):
            fc = self._forecast(held_f, (1 - lam) * fitted + lam / m)
            self.inner_scores_[round(float(lam), 3)] = float(np.mean((fc - held_y) ** 2))
        return min(self.inner_scores_, key=self.inner_scores_.get)

    def fit(self, val_forecasts, val_targets, features=None, terms=None) -> StackedCombiner:
        m = val_forecasts.shape[0]
        self.lam_ = (
            float(self.lam)
            if self.lam is not None
            else self._choose_lam(val_forecasts, val_targets)
        )
        fitted = simplex_least_squares(*step_moments(val_forecasts, val_targets))
        self.step_weights_ = (1 - self.lam_) * fitted + self.lam_ / m
        return self

    def weights(self, forecasts, features=None) -> np.ndarray:
        m, w, _, c = forecasts.shape
        return np.broadcast_to(self.step_weights_.mean(axis=0), (w, c, m)).copy()

    def forecast(self, forecasts, features=None) -> np.ndarray:
        return self._forecast(forecasts, self.step_weights_)

    def describe(self) -> str:
        first, last = self.step_weights_[0], self.step_weights_[-1]
        return (
            f"stacked per-step weights, shrinkage {self.lam_:.2f} toward equal "
            f"(step 1: {np.round(first, 2).tolist()}, step H: {np.round(last, 2).tolist()})"
        )
