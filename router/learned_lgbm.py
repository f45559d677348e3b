"""FFORMA-style learned router: gradient-boosted trees that output softmax weights.

FFORMA (Montero-Manso et al. 2020) boosts one tree per member on series features and
turns the M scores into softmax weights. Where FFORMA minimises the weighted average of
the members' errors, this router minimises the error of the *combined* forecast, the
quantity we report, via a custom LightGBM objective on the per-window quadratic form
(``router.objective``): with weights ``p = softmax(z)`` and combined forecast
``yhat = sum_m p_m f_m``,

    d MSE / d z_j = 2 p_j mean_h (yhat - y)(f_j - yhat)

and the Gauss-Newton curvature ``2 p_j^2 mean_h (f_j - yhat)^2``. Boosting starts from a
prior: the per-channel greedy (Caruana) weights of the fitting windows, mixed with a floor
of uniform weight so that every member can come back (``prior="uniform"`` starts from the
mean instead). The trees then only learn window-by-window deviations from that static
combination, and early stopping on the inner split keeps the prior when the features do
not help. A tree grows only where a split gains, so the floor's uniform share is never
learned away where no feature singles a member out (a member worse everywhere kept
floor / M; one forecasting 1e6 ruined the forecast): on the inner split the trees
boosted from the first floor compete with the smaller floors' priors alone, as in the
torch router. A blend toward uniform weights, chosen there as
well, shrinks the result further where validation wants it. On wide data (more than
``MAX_ROUTER_ROWS`` window-channel rows) it trains and early-stops on a seeded draw of
the rows.
"""

from __future__ import annotations

import logging

import numpy as np

from router.combiners import PRIORS, Combiner, prior_logits, smaller_floor
from router.objective import (
    choose_shrinkage,
    combined_mse,
    flat_rows,
    inner_split,
    window_gram,
    window_rows,
)

log = logging.getLogger(__name__)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class LGBMRouter(Combiner):
    """Boosted trees from window features to softmax weights over members.

    Args:
        num_leaves, learning_rate, min_data_in_leaf, feature_fraction, lambda_l2:
            LightGBM settings; conservative, because neighbouring windows overlap and the
            effective number of independent validation samples is small.
        max_rounds: boosting rounds at most (early stopping on the inner split).
        patience: early-stopping patience in rounds.
        shrink: blend toward uniform weights chosen on the inner split.
        prior: "greedy" (start from per-channel greedy weights) or "uniform".
        prior_floors: shares of uniform weight mixed into the greedy prior: boosting
            starts from the first; a later one's prior alone replaces the trees where it
            scores better on the inner split (a tie keeps the trees; at 0 a member greedy
            drops is never back).
        seed: LightGBM seed.
        feature_names: names of the F feature columns; ``channel`` is treated as categorical.
    """

    name = "learned_lgbm"
    needs_features = True

    def __init__(
        self,
        num_leaves: int = 8,
        learning_rate: float = 0.1,
        min_data_in_leaf: int = 200,
        feature_fraction: float = 0.7,
        lambda_l2: float = 1.0,
        max_rounds: int = 400,
        patience: int = 30,
        shrink: bool = True,
        prior: str = "greedy",
        prior_floors: tuple[float, ...] = (0.2, 0.05, 0.0),
        seed: int = 0,
        feature_names: list[str] | None = None,
    ):
        if prior not in PRIORS:
            raise ValueError(f"prior must be 'greedy' or 'uniform', not {prior!r}")
        self.prior = prior
        if not prior_floors or not all(0.0 <= f <= 1.0 for f in prior_floors):
            raise ValueError(f"prior_floors must be shares in [0, 1], not {prior_floors!r}")
        self.prior_floors = tuple(prior_floors)
        self.params = dict(
            num_leaves=num_leaves,
            learning_rate=learning_rate,
            min_data_in_leaf=min_data_in_leaf,
            feature_fraction=feature_fraction,
            lambda_l2=lambda_l2,
            max_depth=4,
            seed=seed,
            deterministic=True,
            num_threads=1,  # OpenMP spin-waits badly on a busy 2-core machine
            verbose=-1,
        )
        self.max_rounds = max_rounds
        self.patience = patience
        self.shrink = shrink
        self.feature_names = feature_names
        self.booster_ = None
        self.prior_: np.ndarray | None = None  # [C, M] starting logits
        self.rounds_: int = 0
        self.floor_: float = self.prior_floors[0]
        self.lam_: float = 0.0
        self.inner_score_: float = np.inf

    def _objective(self, gram: np.ndarray, b: np.ndarray):
        """A LightGBM objective closure over the samples' [N, M, M] and [N, M] terms."""

        def fobj(preds: np.ndarray, data) -> tuple[np.ndarray, np.ndarray]:
            p = _softmax(preds)  # [N, M]
            gp = np.einsum("nmk,nk->nm", gram, p)  # mean_h f_m yhat
            pgp = np.sum(gp * p, axis=1, keepdims=True)  # mean_h yhat^2
            pb = np.sum(p * b, axis=1, keepdims=True)  # mean_h y yhat
            grad = 2.0 * p * (gp - b - pgp + pb)
            spread = np.diagonal(gram, axis1=1, axis2=2) - 2.0 * gp + pgp  # mean_h (f_m - yhat)^2
            hess = 2.0 * p * p * np.maximum(spread, 0.0) + 1e-6
            return grad, hess

        return fobj

    def _train(self, x, gram, b, yy, rounds: int, init: np.ndarray, valid=None):
        """Boost from ``init`` ([N, M] logits); ``valid`` = (x, gram, b, yy, init) held out.
        None when no feature can be split on (too few samples)."""
        import lightgbm as lgb

        m = b.shape[1]
        cat = (
            [self.feature_names.index("channel")]
            if self.feature_names and "channel" in self.feature_names
            else []
        )
        params = dict(self.params, num_class=m, objective=self._objective(gram, b))
        if x.shape[0] < 2 * params["min_data_in_leaf"]:
            # no split could keep that many samples per leaf, and LightGBM then drops every
            # feature and stops ("num_features > 0"): one-channel runs on short data
            params["min_data_in_leaf"] = max(1, x.shape[0] // 4)
        dtrain = lgb.Dataset(
            x, init_score=init, free_raw_data=False, categorical_feature=cat or "auto"
        )
        kwargs: dict = {}
        if valid is not None:
            xv, gv, bv, yv, iv = valid

            def feval(preds, data):
                return (
                    "combined_mse",
                    float(combined_mse(_softmax(preds), gv, bv, yv).mean()),
                    False,
                )

            dvalid = lgb.Dataset(
                xv, init_score=iv, reference=dtrain, categorical_feature=cat or "auto"
            )
            kwargs = dict(
                valid_sets=[dvalid],
                feval=feval,
                callbacks=[lgb.early_stopping(self.patience, verbose=False)],
            )
        try:
            return lgb.train(params, dtrain, num_boost_round=rounds, **kwargs)
        except lgb.basic.LightGBMError as exc:
            if "num_features" not in str(exc):
                raise
            # every feature is constant on these few samples (or too rare to bin): no
            # split can be made, so the prior is all a booster could give
            log.info("lgbm router: no usable feature on %d samples; keeping the prior", len(x))
            return None

    def fit(self, val_forecasts, val_targets, features=None, terms=None) -> LGBMRouter:
        if features is None:
            raise ValueError("the LightGBM router needs window features [W, C, F]")
        m, w, h, c = val_forecasts.shape
        if m == 1:  # nothing to weigh: weight 1, as every other rule gives a single member
            log.info("lgbm router: a single member; weight 1")
            self.prior_ = np.zeros((c, 1))
            self.booster_, self.rounds_, self.lam_, self.inner_score_ = None, 0, 0.0, float("nan")
            return self
        terms = window_gram(val_forecasts, val_targets) if terms is None else terms
        fit_w, held_w = inner_split(w, h)
        if held_w.size == 0:  # nothing to check a feature-conditioned model on: the mean
            return self._unchecked(terms)

        def rows_of(ws: np.ndarray) -> tuple[np.ndarray, ...]:
            """Windows ``ws``' rows (``MAX_ROUTER_ROWS`` at most): their channel [N],
            features [N, F], gram, b and yy."""
            rows = window_rows(ws, c, self.params["seed"])
            return rows % c, *(flat_rows(a, rows) for a in (features, *terms))

        fit, held = rows_of(fit_w), rows_of(held_w)
        # boosted from the first floor, against the smaller floors' priors alone: boosting
        # from each would triple the fit, which `learned` repeats in every fold
        self.floor_ = self.prior_floors[0]
        prior = prior_logits(self.prior, terms[fit_w], self.floor_)
        self.rounds_, p_held = self._boost(fit, held, prior)
        del fit
        smaller, p_prior = smaller_floor(
            self.prior,
            terms[fit_w],
            self.prior_floors,
            held[0],
            list(held[2:]),
            float(combined_mse(p_held, *held[2:]).mean()),
        )
        if smaller is not None:  # a floor the trees could not learn away: that prior alone
            self.floor_, self.rounds_, p_held = smaller, 0, p_prior
        if self.shrink:
            self.lam_, self.inner_score_ = choose_shrinkage(p_held, *held[2:])
        else:
            self.inner_score_ = float(combined_mse(p_held, *held[2:]).mean())
        log.info(
            "lgbm router: prior floor %.2f, %d rounds, shrink %.2f, inner-val MSE %.4f (on "
            "the windows that chose them: optimistic)",
            self.floor_,
            self.rounds_,
            self.lam_,
            self.inner_score_,
        )
        # Refit on every validation window (the most recent ones are closest to test).
        self.prior_ = prior_logits(self.prior, terms, self.floor_)  # of all rows, drawn or not
        self.booster_ = None
        if self.rounds_:
            channel, x, g, bb, yy = rows_of(np.arange(w))
            self.booster_ = self._train(x, g, bb, yy, self.rounds_, self.prior_[channel])
            if self.booster_ is None:  # no feature splits on all windows: the prior
                self.rounds_ = 0
        return self

    def _boost(
        self, fit: tuple[np.ndarray, ...], held: tuple[np.ndarray, ...], prior: np.ndarray
    ) -> tuple[int, np.ndarray]:
        """Boost from the per-channel ``prior`` logits [C, M] on the ``fit`` rows, early
        stopping on the ``held`` rows (each ``rows_of``'s channel, features, gram, b, yy).

        Returns:
            (rounds, held-out weights [N, M]) of the better on ``held`` of the trees and
            the prior alone (0 rounds).
        """
        start = prior[held[0]]
        booster = self._train(*fit[1:], self.max_rounds, prior[fit[0]], valid=(*held[1:], start))
        p_prior = _softmax(start)
        if booster is None:
            return 0, p_prior
        rounds = booster.best_iteration or booster.current_iteration()
        p_boost = _softmax(booster.predict(held[1], num_iteration=rounds, raw_score=True) + start)
        prior_score = float(combined_mse(p_prior, *held[2:]).mean())
        if prior_score > float(combined_mse(p_boost, *held[2:]).mean()):
            return rounds, p_boost
        return 0, p_prior

    def _unchecked(self, terms: tuple[np.ndarray, ...]) -> LGBMRouter:
        """No held-out windows (no more validation windows than the horizon): equal weights."""
        (log.debug if self.quiet_fallback else log.warning)(
            "lgbm router: too few validation windows to hold any out; using equal weights"
        )
        self.floor_ = self.prior_floors[0]  # nothing to choose it on (equal weights anyway)
        self.prior_ = prior_logits(self.prior, terms, self.floor_)
        self.booster_, self.rounds_, self.lam_, self.inner_score_ = None, 0, 1.0, float("nan")
        return self

    def weights(self, forecasts, features=None) -> np.ndarray:
        m, w, _, c = forecasts.shape
        raw = np.broadcast_to(self.prior_[None], (w, c, m)).reshape(w * c, m)
        if self.booster_ is not None:
            raw = raw + self.booster_.predict(features.reshape(w * c, -1), raw_score=True)
        p = (1 - self.lam_) * _softmax(raw) + self.lam_ / m
        return p.reshape(w, c, m)

    def describe(self) -> str:
        if self.prior_ is not None and self.prior_.shape[-1] == 1:
            return "lgbm router: a single member, weight 1"
        # the held-out windows chose the floor, the stopping round, prior or trees, and the
        # shrinkage: their MSE is the best of those choices, lower than unseen windows give
        return (
            f"lgbm router: prior floor {self.floor_:.2f}, {self.rounds_} rounds, shrink "
            f"{self.lam_:.2f}, inner-val MSE {self.inner_score_:.4f} (the windows that chose "
            "the floor, the stopping point and shrinkage: optimistic)"
        )
