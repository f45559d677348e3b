"""The learned router: train the candidates, keep the one validation prefers.

Candidates are the two learned routers (FFORMA-style LightGBM, torch gating network) and
the robust fallbacks (greedy selection, inverse error, rules, mean). They are compared by
rolling-origin cross-validation inside the validation windows: for each fold a candidate
is fitted on the windows before a cut (the learned ones early-stop on the last part of
that) and scored on the windows after it, past a gap of H windows so no target is shared.
The candidate with the lowest mean fold score is refitted on all validation windows. The
scored windows are never used for fitting or early stopping, so the comparison does not
flatter the learned routers; when they cannot beat the simple rules out of sample, the
router degrades to the simple rule instead of overfitting.
"""

from __future__ import annotations

import logging

import numpy as np

from router.combiners import Combiner, GreedyCombiner, InverseErrorCombiner, MeanCombiner
from router.learned_lgbm import LGBMRouter
from router.learned_torch import TorchRouter
from router.objective import combined_mse, inner_split, window_gram
from router.rules import RuleRouter

log = logging.getLogger(__name__)

CANDIDATES = ("lgbm", "torch", "greedy", "inverse_error", "rules", "mean")


def rolling_folds(
    n_windows: int, gap: int, cuts: tuple[float, ...] = (0.5, 0.65, 0.8)
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds: fit on windows before each cut, score up to the next cut.

    Args:
        n_windows: W.
        gap: windows skipped after each cut (H: no target shared across the cut).
        cuts: fold boundaries as shares of W.

    Returns:
        [(fit window indices, scored window indices)] per fold.
    """
    bounds = [int(c * n_windows) for c in cuts] + [n_windows]
    return [
        (np.arange(lo), np.arange(min(lo + gap, hi), hi))
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        if hi - lo > gap
    ]


class LearnedRouter(Combiner):
    """Pick, on held-out validation windows, among learned and simple routers.

    Args:
        candidates: which of ``CANDIDATES`` to try.
        cuts: fold boundaries of the rolling-origin comparison, as shares of W.
        seed: seed of the learned candidates.
        feature_names: names of the F feature columns.
        member_names: names of the M members (for printed rules).
    """

    name = "learned"
    needs_features = True

    def __init__(
        self,
        candidates: tuple[str, ...] = CANDIDATES,
        cuts: tuple[float, ...] = (0.5, 0.65, 0.8),
        seed: int = 0,
        feature_names: list[str] | None = None,
        member_names: list[str] | None = None,
    ):
        unknown = set(candidates) - set(CANDIDATES)
        if unknown:
            raise ValueError(f"unknown candidates {sorted(unknown)}; choose from {CANDIDATES}")
        self.candidates = tuple(candidates)
        self.cuts = tuple(cuts)
        self.seed = seed
        self.feature_names = feature_names
        self.member_names = member_names
        self.chosen_: str | None = None
        self.model_: Combiner | None = None
        self.inner_scores_: dict[str, float] = {}
        self.fold_scores_: dict[str, list[float]] = {}

    def _make(self, name: str) -> Combiner:
        if name == "lgbm":
            return LGBMRouter(seed=self.seed, feature_names=self.feature_names)
        if name == "torch":
            return TorchRouter(seed=self.seed, feature_names=self.feature_names)
        if name == "greedy":
            return GreedyCombiner()
        if name == "inverse_error":
            return InverseErrorCombiner()
        if name == "rules":
            return RuleRouter(feature_names=self.feature_names, member_names=self.member_names)
        return MeanCombiner()

    def fit(self, val_forecasts, val_targets, features=None) -> LearnedRouter:
        m, w, h, c = val_forecasts.shape
        names = [n for n in self.candidates if features is not None or n not in ("lgbm", "torch")]
        self.fold_scores_ = {n: [] for n in names}
        folds = rolling_folds(w, h, self.cuts) or [inner_split(w, h)]  # short val: one fold
        for fit_w, held_w in folds:
            held_f, held_y = val_forecasts[:, held_w], val_targets[held_w]
            gram, b, yy = window_gram(held_f, held_y)
            for name in names:
                sub = None if features is None else features[fit_w]
                model = self._make(name).fit(val_forecasts[:, fit_w], val_targets[fit_w], sub)
                f_held = None if features is None else features[held_w]
                if name == "inverse_error":  # per-step weights: score its forecast directly
                    score = float(np.mean((model.forecast(held_f, f_held) - held_y) ** 2))
                else:
                    score = float(combined_mse(model.weights(held_f, f_held), gram, b, yy).mean())
                self.fold_scores_[name].append(score)
        self.inner_scores_ = {n: float(np.mean(s)) for n, s in self.fold_scores_.items()}
        self.chosen_ = min(self.inner_scores_, key=self.inner_scores_.get)
        self.model_ = self._make(self.chosen_).fit(val_forecasts, val_targets, features)
        log.info("learned router: fold MSE %s -> %s", self.fold_scores_, self.chosen_)
        return self

    def weights(self, forecasts, features=None) -> np.ndarray:
        return self.model_.weights(forecasts, features)

    def forecast(self, forecasts, features=None) -> np.ndarray:
        return self.model_.forecast(forecasts, features)

    def describe(self) -> str:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in self.inner_scores_.items())
        return (
            f"learned router chose {self.chosen_} (mean rolling-origin val MSE: {scores}); "
            f"{self.model_.describe()}"
        )
