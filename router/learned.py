"""The learned router: static stacked weights unless a feature-conditioned router proves better.

The incumbent is the stacked combination (``router.stacked``): simplex weights per
horizon step and channel, fitted on validation and shrunk toward per-step weights pooled
over channels and toward equal weights by amounts chosen on held-out validation windows,
so it is the mean when the members are indistinguishable and leans on the better
members when they are not. The challengers are the feature-conditioned routers:
FFORMA-style LightGBM, the torch gating network and the rule tree. Per-window routing
is where the headroom is (the oracle) and also where overfitting is easiest, so a
challenger replaces the incumbent only if its held-out losses are lower with one-sided
Diebold-Mariano p < 0.05 (``significance_choice``);
among those that do, the lowest mean fold score wins and is refitted on all validation
windows. Each challenger is tested at 5 % on its own: with three, a false switch happens
in up to 11.5 % of simulated runs where none is better, but such a switch costs almost
nothing, and Holm's correction would give up half of the switches that help
(pre-registration 9, ``benchmarks/router_null.py``). Those runs' errors forgot within a
few horizons; where loss differences stay correlated longer (seasonal data) the test is
liberal (``metrics.diebold_mariano``), so false switches are more frequent. At long
horizons the held-out windows give the test one or two degrees of freedom (ETT at
H >= 192), and only a large gain passes: there the incumbent is kept almost always
(``describe`` says so). ``stacked_pooled`` (one vector per step) can be the incumbent instead, with
the per-channel ``stacked`` as a challenger under the same test
(``static_challengers``); on 19 development runs that never admitted it
(pre-registration 6), so the default is the per-channel incumbent. Those 19 runs had
three classical members; with Time-LLM as a fourth (ETTh2, exchange_rate;
pre-registration 8) the pooled incumbent was lower in 1 of 3 runs, so it stays.

The comparison is rolling-origin cross-validation inside the validation windows: for
each fold every candidate is fitted on the windows before a cut (the learned ones
early-stop on the last part of that) and scored on the windows after it, past a gap of H
windows so no target is shared. The scored windows are never used for fitting or early
stopping. Long horizons leave room for few folds (each scored part must be longer than
the gap): two coarser folds are tried, and with a single fold the incumbent stays. The
references (mean, median, inverse error, greedy, pooled stacked, and stacked tilted by
recent skill) are scored on the same folds for the report, not chosen from: the stacked
weights already span the static ones (equal weights at full shrinkage, fitted static
weights at none), picking among many near-equal rules by a few noisy folds is how
validation gets overfitted, and the tilt was rejected as incumbent by pre-registration 7.

The design was chosen on datasets outside the acceptance benchmarks (ETTh2, ETTm2,
weather, exchange_rate; BENCHMARKS.md, "Router selection rule"). The significance test
replaced a one-standard-error rule over the five fold scores (about p < 0.19) after a
pre-registered comparison on 19 runs of those datasets: the two rules chose differently
in 7, and the test's choice had the lower test MSE in 6 (mean -1.3 %;
``benchmarks/router_preregistration.md``, pre-registration 4).
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm.auto import tqdm

from ensemble import metrics
from router.combiners import Combiner
from router.objective import WindowTerms, inner_split, window_gram

log = logging.getLogger(__name__)

CANDIDATES = ("lgbm", "torch", "rules")  # challengers: feature-conditioned routers
STATIC_CHALLENGERS = ("stacked",)  # challengers that need no features
INCUMBENTS = ("stacked", "stacked_pooled", "stacked_tilted", "mean")
REFERENCES = (  # for the report only
    "greedy",
    "inverse_error",
    "median",
    "mean",
    "stacked_pooled",
    "stacked_tilted",
)
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


def _as_slice(idx: np.ndarray) -> slice:
    """A contiguous, increasing index range as a slice."""
    return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0)


def registry_name(candidate: str) -> str:
    """A candidate's ``--router`` name (``lgbm`` -> ``learned_lgbm``)."""
    return f"learned_{candidate}" if candidate in ("lgbm", "torch") else candidate


def one_se_choice(fold_scores: dict[str, list[float]], incumbent: str = "mean") -> str:
    """The candidate with the lowest mean fold score among those that beat the incumbent
    by more than one standard error of their paired per-fold differences.

    The learned router's rule before ``significance_choice``; kept for the comparisons of
    ``benchmarks/reroute.py``.

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


def significance_choice(
    held_losses: dict[str, np.ndarray],
    fold_scores: dict[str, list[float]],
    incumbent: str,
    horizon: int,
    alpha: float = 0.05,
) -> str:
    """The candidate with the lowest mean fold score among those whose held-out losses
    beat the incumbent's with one-sided Diebold-Mariano p < ``alpha``.

    Args:
        held_losses: candidate -> [n_held] per-window held-out MSE, every fold's windows
            in time order (the same windows for all; must include ``incumbent``).
        fold_scores: candidate -> held-out MSE per fold.
        incumbent: kept unless a candidate clearly beats it.
        horizon: H, for the test's long-run variance.
        alpha: the one-sided level.

    Returns:
        The chosen candidate's name; the incumbent when there is a single fold.
    """
    if len(fold_scores[incumbent]) < 2:  # one fold: too little held-out evidence
        return incumbent
    base = held_losses[incumbent]
    passed = [
        n
        for n in held_losses
        if n != incumbent
        and metrics.diebold_mariano(held_losses[n], base, horizon, "less")["p"] < alpha
    ]
    return min(passed, key=lambda n: np.mean(fold_scores[n])) if passed else incumbent


class LearnedRouter(Combiner):
    """Pick, on held-out validation windows, among learned and simple routers.

    Args:
        candidates: the feature-conditioned challengers, a subset of ``CANDIDATES``.
        static_challengers: challengers that need no features, a subset of
            ``STATIC_CHALLENGERS`` (not the incumbent).
        incumbent: kept unless a challenger clearly beats it (one of ``INCUMBENTS``).
        references: combiners scored on the same folds for the report only (static rules,
            or feature-conditioned routers that are not challengers).
        cuts: fold boundaries of the rolling-origin comparison, as shares of W.
        seed: seed of the learned candidates.
        feature_names: names of the F feature columns.
        member_names: names of the M members (for printed rules).
        channel_names: names of the C evaluated channels (for printed rules).
        progress: a bar over the folds' fits, on a terminal (minutes on wide data).
    """

    name = "learned"
    needs_features = True

    def __init__(
        self,
        candidates: tuple[str, ...] = CANDIDATES,
        static_challengers: tuple[str, ...] = (),
        incumbent: str = "stacked",
        references: tuple[str, ...] = REFERENCES,
        cuts: tuple[float, ...] = DEFAULT_CUTS,
        seed: int = 0,
        feature_names: list[str] | None = None,
        member_names: list[str] | None = None,
        channel_names: list[str] | None = None,
        progress: bool = False,
    ):
        unknown = set(candidates) - set(CANDIDATES)
        if unknown:
            raise ValueError(f"unknown candidates {sorted(unknown)}; choose from {CANDIDATES}")
        if incumbent not in INCUMBENTS:
            raise ValueError(f"incumbent must be one of {INCUMBENTS}, not {incumbent!r}")
        if set(static_challengers) - set(STATIC_CHALLENGERS) or incumbent in static_challengers:
            raise ValueError(
                f"static challengers must come from {STATIC_CHALLENGERS} and differ from the "
                f"incumbent, not {static_challengers!r}"
            )
        unknown = set(references) - set(REFERENCES) - set(CANDIDATES)
        if unknown:
            raise ValueError(
                f"unknown references {sorted(unknown)}; choose from {CANDIDATES + REFERENCES}"
            )
        self.candidates = tuple(candidates)
        self.static_challengers = tuple(static_challengers)
        self.incumbent = incumbent
        self.references = tuple(
            r
            for r in references
            if r != incumbent and r not in candidates and r not in static_challengers
        )
        self.cuts = tuple(cuts)
        self.seed = seed
        self.feature_names = feature_names
        self.member_names = member_names
        self.channel_names = channel_names
        self.progress = progress
        self.chosen_: str | None = None
        self.model_: Combiner | None = None
        self.inner_scores_: dict[str, float] = {}
        self.fold_scores_: dict[str, list[float]] = {}
        self.held_losses_: dict[str, np.ndarray] = {}  # per-window MSE, folds in time order
        self.horizon_ = 0
        self.terms_: WindowTerms | None = None  # of the validation windows, for refits

    def _make(self, name: str) -> Combiner:
        from router import make_combiner  # the registry imports this module

        return make_combiner(
            registry_name(name),
            seed=self.seed,
            feature_names=self.feature_names,
            member_names=self.member_names,
            channel_names=self.channel_names,
        )

    def fit(self, val_forecasts, val_targets, features=None, terms=None) -> LearnedRouter:
        m, w, h, c = val_forecasts.shape
        self.horizon_ = h
        # once for all candidates and folds: each fold's windows are a slice of these terms
        terms = window_gram(val_forecasts, val_targets) if terms is None else terms
        self.terms_ = terms
        if m == 1:  # nothing to weigh: the incumbent (weight 1), with no contest
            log.info("learned router: a single member; weight 1")
            self.fold_scores_, self.inner_scores_ = {self.incumbent: []}, {}
            self.held_losses_ = {self.incumbent: np.zeros(0)}
            self.chosen_ = self.incumbent
            self.model_ = self._make(self.incumbent)
            self.model_.quiet_fallback = True  # its own fallback is no matter with one member
            self.model_.fit(val_forecasts, val_targets, features, terms)
            return self
        # the feature-conditioned routers (challengers, and references among them) need features
        challengers = [*(self.candidates if features is not None else ()), *self.static_challengers]
        refs = [r for r in self.references if features is not None or r not in CANDIDATES]
        names = [*challengers, self.incumbent, *refs]
        self.fold_scores_ = {n: [] for n in names}
        held_losses: dict[str, list[np.ndarray]] = {n: [] for n in names}
        folds = rolling_folds(w, h, self.cuts)
        if len(folds) < 2:  # long horizons: fewer, longer folds, each longer than the gap
            folds = rolling_folds(w, h, COARSE_CUTS) or [inner_split(w, h)]
        folds = [(fit, held) for fit, held in folds if held.size]
        if not folds:  # no more windows than the horizon: nothing to hold out, no contest
            log.warning(
                "learned router: %d validation windows leave none held out at horizon %d; "
                "keeping %s",
                w,
                h,
                self.incumbent,
            )
        bar = tqdm(
            total=len(folds) * len(names),
            desc="router folds",
            unit="fit",
            leave=False,
            disable=None if self.progress else True,
        )
        for fit_idx, held_idx in folds:
            # contiguous ranges as slices: views, not copies of [M, W, H, C] per candidate
            fit_w, held_w = _as_slice(fit_idx), _as_slice(held_idx)
            held_f, held_y = val_forecasts[:, held_w], val_targets[held_w]
            sub = None if features is None else features[fit_w]
            f_held = None if features is None else features[held_w]
            for name in names:
                model = self._make(name)
                model.quiet_fallback = True  # a fold's fallback: its score tells, not a warning
                model.fit(val_forecasts[:, fit_w], val_targets[fit_w], sub, terms[fit_w])
                losses = metrics.window_mse(model.forecast(held_f, f_held), held_y)
                held_losses[name].append(losses)
                self.fold_scores_[name].append(float(losses.mean()))  # every window H x C values
                bar.update()
        bar.close()
        if folds:
            self.inner_scores_ = {n: float(np.mean(s)) for n, s in self.fold_scores_.items()}
            self.held_losses_ = {n: np.concatenate(v) for n, v in held_losses.items()}
            selectable = {n: self.held_losses_[n] for n in (*challengers, self.incumbent)}
            self.chosen_ = significance_choice(selectable, self.fold_scores_, self.incumbent, h)
        else:
            self.inner_scores_, self.held_losses_ = {}, {n: np.zeros(0) for n in names}
            self.chosen_ = self.incumbent
        self.model_ = self._make(self.chosen_).fit(val_forecasts, val_targets, features, terms)
        log.info("learned router: fold MSE %s -> %s", self.fold_scores_, self.chosen_)
        return self

    def held_out_test(self, name: str) -> dict:
        """Diebold-Mariano test of ``name``'s held-out fold losses against the incumbent's.

        The windows of every fold, concatenated in time order; ``diff`` < 0 means
        ``name`` did better. Two-sided, for the report (the choice uses the one-sided p).
        """
        return metrics.diebold_mariano(
            self.held_losses_[name], self.held_losses_[self.incumbent], self.horizon_
        )

    def weights(self, forecasts, features=None) -> np.ndarray:
        return self.model_.weights(forecasts, features)

    def forecast(self, forecasts, features=None) -> np.ndarray:
        return self.model_.forecast(forecasts, features)

    def step_weights(self, forecasts, features=None) -> np.ndarray:
        return self.model_.step_weights(forecasts, features)

    def describe(self) -> str:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in self.inner_scores_.items())
        folds = len(self.fold_scores_[self.incumbent])
        if self.terms_ is not None and self.terms_.b.shape[-1] == 1:
            return f"learned router: a single member, weight 1; {self.model_.describe()}"
        if not folds:
            return (
                f"learned router kept {self.incumbent}: the validation windows are too few "
                f"to hold any out at this horizon, so no challenger was tried; "
                f"{self.model_.describe()}"
            )
        how = (
            f"kept {self.incumbent}: no challenger beat it"
            if self.chosen_ == self.incumbent
            else f"chose {self.chosen_}: it beat {self.incumbent}"
        )
        held = len(self.held_losses_[self.incumbent])
        dof = max(held // (4 * max(self.horizon_, 1)), 1)  # as metrics.diebold_mariano's
        weak = (
            f" (with {held} held-out windows at H={self.horizon_} the test has {dof} degree(s) "
            "of freedom: only a large gain could pass, so the incumbent is kept almost always)"
            if dof <= metrics.WEAK_DOF
            else ""
        )
        return (
            f"learned router {how} with a one-sided Diebold-Mariano p < 0.05 over {folds} "
            f"rolling-origin folds{weak} (mean held-out val MSE: {scores}); "
            f"{self.model_.describe()}"
        )
