"""The learned router: train the candidates, keep the one validation prefers.

Candidates are the two learned routers (FFORMA-style LightGBM, torch gating network) and
the robust fallbacks (greedy selection, inverse error, mean, rules). Each is fitted on
the first 80 % of the validation windows and scored on the last 20 % (after a gap of H
windows, so no target is shared); the best inner score wins and is refitted on all
validation windows. If the learned routers cannot beat the simple rules on held-out
validation windows, the router degrades to the simple rule instead of overfitting.

The learned candidates also use the held-out part for early stopping and for their blend
toward uniform weights, which flatters them slightly in this comparison; the test split,
never seen by any of this, is the honest judge.
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


class LearnedRouter(Combiner):
    """Pick, on held-out validation windows, among learned and simple routers.

    Args:
        candidates: which of ``CANDIDATES`` to try.
        seed: seed of the learned candidates.
        feature_names: names of the F feature columns.
        member_names: names of the M members (for printed rules).
    """

    name = "learned"
    needs_features = True

    def __init__(
        self,
        candidates: tuple[str, ...] = CANDIDATES,
        seed: int = 0,
        feature_names: list[str] | None = None,
        member_names: list[str] | None = None,
    ):
        unknown = set(candidates) - set(CANDIDATES)
        if unknown:
            raise ValueError(f"unknown candidates {sorted(unknown)}; choose from {CANDIDATES}")
        self.candidates = tuple(candidates)
        self.seed = seed
        self.feature_names = feature_names
        self.member_names = member_names
        self.chosen_: str | None = None
        self.model_: Combiner | None = None
        self.inner_scores_: dict[str, float] = {}
        self.models_: dict[str, Combiner] = {}

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
        fit_w, held_w = inner_split(w, h)
        held_f, held_y = val_forecasts[:, held_w], val_targets[held_w]
        gram, b, yy = window_gram(held_f, held_y)
        for name in self.candidates:
            if name in ("lgbm", "torch"):
                if features is None:
                    continue
                # Fitted on all val windows; the score is its own held-out score on the same split.
                model = self._make(name).fit(val_forecasts, val_targets, features)
                score = model.inner_score_
            else:
                inner = self._make(name).fit(
                    val_forecasts[:, fit_w],
                    val_targets[fit_w],
                    None if features is None else features[fit_w],
                )
                f_held = None if features is None else features[held_w]
                if name == "inverse_error":  # per-step weights: score its forecast directly
                    score = float(np.mean((inner.forecast(held_f, f_held) - held_y) ** 2))
                else:
                    score = float(combined_mse(inner.weights(held_f, f_held), gram, b, yy).mean())
                model = self._make(name).fit(val_forecasts, val_targets, features)
            self.inner_scores_[name] = score
            self.models_[name] = model
        self.chosen_ = min(self.inner_scores_, key=self.inner_scores_.get)
        self.model_ = self.models_[self.chosen_]
        log.info("learned router: inner-val MSE %s -> %s", self.inner_scores_, self.chosen_)
        return self

    def weights(self, forecasts, features=None) -> np.ndarray:
        return self.model_.weights(forecasts, features)

    def forecast(self, forecasts, features=None) -> np.ndarray:
        return self.model_.forecast(forecasts, features)

    def describe(self) -> str:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in self.inner_scores_.items())
        return f"learned router chose {self.chosen_} (inner-val MSE: {scores}); {self.model_.describe()}"
