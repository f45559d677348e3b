"""The learned router: train the candidates, keep one only if validation clearly prefers it.

Candidates are the two learned routers (FFORMA-style LightGBM, torch gating network) and
the validation-fitted rules (stacked per-step weights, greedy selection, inverse error,
rules, median). They are compared by rolling-origin cross-validation inside the
validation windows: for each fold a candidate is fitted on the windows before a cut (the
learned ones early-stop on the last part of that) and scored on the windows after it,
past a gap of H windows so no target is shared. The scored windows are never used for
fitting or early stopping, so the comparison does not flatter the learned routers.

The equal-weight mean is the incumbent (the forecast-combination puzzle: estimated
weights are noisy, so it is hard to beat out of sample). A candidate replaces it only if
it beats the mean by more than one standard error of the per-fold differences (the
one-standard-error rule); among those that do, the lowest mean fold score wins and is
refitted on all validation windows. When none does, the router is the mean: a router
that cannot show it is better on held-out validation does not get to be different.
Long horizons leave room for few folds (each scored part must be longer than the gap of
H windows): two coarser folds are tried, and with a single fold there is no standard
error, so the mean stays.
"""

from __future__ import annotations

import logging

import numpy as np

from router.combiners import (
    Combiner,
    GreedyCombiner,
    InverseErrorCombiner,
    MeanCombiner,
    MedianCombiner,
)
from router.learned_lgbm import LGBMRouter
from router.learned_torch import TorchRouter
from router.objective import inner_split
from router.rules import RuleRouter
from router.stacked import StackedCombiner

log = logging.getLogger(__name__)

CANDIDATES = ("lgbm", "torch", "stacked", "greedy", "inverse_error", "rules", "median", "mean")
DEFAULT_CUTS = (0.5, 0.6, 0.7, 0.8, 0.9)
COARSE_CUTS = (0.5, 0.75)


def rolling_folds(
    n_windows: int, gap: int, cuts: tuple[float, ...] = DEFAULT_CUTS
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


def registry_name(candidate: str) -> str:
    """A candidate's ``--router`` name (``lgbm`` -> ``learned_lgbm``)."""
    return f"learned_{candidate}" if candidate in ("lgbm", "torch") else candidate


def one_se_choice(fold_scores: dict[str, list[float]], incumbent: str = "mean") -> str:
    """The candidate with the lowest mean fold score among those that beat the incumbent
    by more than one standard error of their paired per-fold differences.

    Args:
        fold_scores: candidate -> held-out MSE per fold (same folds for all; must include
            ``incumbent``).
        incumbent: kept unless a candidate clearly beats it.

    Returns:
        The chosen candidate's name.
    """
    base = np.asarray(fold_scores[incumbent])
    chosen, best = incumbent, float(base.mean())
    if base.size < 2:  # one fold gives no standard error: nothing can show it is better
        return incumbent
    for name, scores in fold_scores.items():
        diff = np.asarray(scores) - base
        se = float(diff.std(ddof=1) / np.sqrt(diff.size))
        if name != incumbent and diff.mean() + se < 0 and np.mean(scores) < best:
            chosen, best = name, float(np.mean(scores))
    return chosen


class LearnedRouter(Combiner):
    """Pick, on held-out validation windows, among learned and simple routers.

    Args:
        candidates: which of ``CANDIDATES`` to try (the mean is always scored: it is the
            incumbent of the one-standard-error rule).
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
        cuts: tuple[float, ...] = DEFAULT_CUTS,
        seed: int = 0,
        feature_names: list[str] | None = None,
        member_names: list[str] | None = None,
    ):
        unknown = set(candidates) - set(CANDIDATES)
        if unknown:
            raise ValueError(f"unknown candidates {sorted(unknown)}; choose from {CANDIDATES}")
        self.candidates = tuple(dict.fromkeys((*candidates, "mean")))
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
        if name == "stacked":
            return StackedCombiner()
        if name == "greedy":
            return GreedyCombiner()
        if name == "inverse_error":
            return InverseErrorCombiner()
        if name == "rules":
            return RuleRouter(feature_names=self.feature_names, member_names=self.member_names)
        if name == "median":
            return MedianCombiner()
        return MeanCombiner()

    def fit(self, val_forecasts, val_targets, features=None) -> LearnedRouter:
        m, w, h, c = val_forecasts.shape
        names = [n for n in self.candidates if features is not None or n not in ("lgbm", "torch")]
        self.fold_scores_ = {n: [] for n in names}
        folds = rolling_folds(w, h, self.cuts)
        if len(folds) < 2:  # long horizons: fewer, longer folds, each longer than the gap
            folds = rolling_folds(w, h, COARSE_CUTS) or [inner_split(w, h)]
        for fit_w, held_w in folds:
            held_f, held_y = val_forecasts[:, held_w], val_targets[held_w]
            sub = None if features is None else features[fit_w]
            f_held = None if features is None else features[held_w]
            for name in names:
                model = self._make(name).fit(val_forecasts[:, fit_w], val_targets[fit_w], sub)
                score = float(np.mean((model.forecast(held_f, f_held) - held_y) ** 2))
                self.fold_scores_[name].append(score)
        self.inner_scores_ = {n: float(np.mean(s)) for n, s in self.fold_scores_.items()}
        self.chosen_ = one_se_choice(self.fold_scores_)
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
            f"learned router chose {self.chosen_} by the one-standard-error rule against the "
            f"mean over {len(next(iter(self.fold_scores_.values())))} rolling-origin folds "
            f"(mean held-out val MSE: {scores}); {self.model_.describe()}"
        )
