"""Stacked combination: simplex weights per horizon step and channel, shrunk twice.

The members' skill changes along the horizon (an ARIMA is sharp for the first steps and
drifts later; a linear map is the reverse) and across channels (ARIMA and LightGBM are
fitted per channel; a load channel and an oil temperature are different series), so one
weight vector per step ``h`` and channel ``c`` is fitted by constrained least squares on
the validation windows:

    w[h, c] = argmin_{w >= 0, sum w = 1}  mean_{windows} (sum_m w_m f_m[h, c] - y[h, c])^2,

next to the pooled per-step vector ``p[h]`` (the same problem averaged over channels).
Weights estimated on a few months of validation are noisy, and noisy weights are why the
equal-weight mean is so hard to beat (Smith & Wallis 2009). So the combination is

    (1 - lam) * ((1 - pool) * w[h, c] + pool * p[h]) + lam / M,

with ``pool`` and ``lam`` chosen together on a time-ordered inner split of the
validation windows (fit before, score after, a gap of H windows so no target is shared).
``pool = 1`` is one vector per step, ``lam = 1`` the mean, so on noise it degrades to it.

The per-channel level was adopted by pre-registration 5 (``benchmarks/channel_stacked.py``;
``benchmarks/router_preregistration.md``): on 19 runs outside the acceptance benchmarks
it changed the test MSE in 17 and lowered it in 14 (mean -4.21 % against the mean,
pooled -3.46 %). Three other refinements were tried on those runs and rejected
(``benchmarks/stacked_variants.py``; BENCHMARKS.md, "Stacked variants"): choosing
``lam`` over the learned router's rolling-origin folds shrinks more and was never lower
on test; weights shared by blocks of horizon steps were no better on average; weighting
the latest validation windows more (a fixed or validation-chosen half-life) was lower in
at most 5 of the 17 runs where it changed anything (pre-registrations 2 and 3).
"""

from __future__ import annotations

import logging
from itertools import combinations

import numpy as np

from ensemble.hybrid import weighted_sum
from router.combiners import Combiner, per_step_weights
from router.objective import inner_split, refuse_non_finite_terms

log = logging.getLogger(__name__)


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


def simplex_least_squares(gram: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``min_w w'Gw - 2b'w`` over the simplex for a batch of problems.

    Exact for up to ``MAX_EXACT_MEMBERS`` members (:func:`simplex_qp_exact`), by FISTA
    beyond (:func:`simplex_qp_fista`).

    Args:
        gram: [K, M, M] positive semi-definite.
        b: [K, M].

    Returns:
        [K, M] weights on the simplex.
    """
    if b.shape[-1] <= MAX_EXACT_MEMBERS:
        return simplex_qp_exact(gram, b)
    return simplex_qp_fista(gram, b)


MAX_EXACT_MEMBERS = 8  # 255 supports; the batch below grows with C(M, M/2)
RIDGE = 1e-10  # relative to each member's diagonal entry of G: makes the optimum unique


def simplex_qp_exact(gram: np.ndarray, b: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The simplex least-squares problems solved exactly, by enumerating supports.

    The optimum has some support S (its nonzero weights), and on S it is the solution of
    the problem with only ``sum w = 1`` as constraint, a linear (KKT) system. So every
    nonempty S is solved, the solutions with a negative weight are dropped, and the
    lowest objective among the rest is the optimum. With M = 4 members that is 15 tiny
    systems per problem, all in a few batched ``solve`` calls: on weather H=720 (15,120
    problems) 0.04 s, against 7 s for 3000 FISTA steps that stop short of the optimum.

    A ridge of ``RIDGE`` times each member's diagonal entry is added to G, so the optimum is unique
    where members coincide (identical members get equal weights) and every system is
    nonsingular; it moves weights by at most 5e-7 on the ETTh1, ETTm1 and exchange_rate
    validation sets checked against no ridge.

    Args:
        gram: [K, M, M] positive semi-definite.
        b: [K, M].
        chunk: problems per batch (memory grows with chunk * C(M, M/2)).

    Returns:
        [K, M] weights on the simplex.
    """
    k, m = b.shape
    if k > chunk:
        return np.concatenate(
            [simplex_qp_exact(gram[i : i + chunk], b[i : i + chunk]) for i in range(0, k, chunk)]
        )
    # each member's ridge scales with its own diagonal: scaled by the mean, a member with
    # huge (finite) errors made the ridge a real penalty on the others (58 % excess MSE
    # at 1e5 times their error); the small floor keeps zero-error members nonsingular
    diag = np.einsum("kmm->km", gram)  # [K, M]
    ridge = RIDGE * (diag + 1e-6 * diag.mean(axis=1, keepdims=True)) + 1e-300
    g = gram + ridge[:, :, None] * np.eye(m)
    best_w, best_f = np.full((k, m), 1.0 / m), np.full(k, np.inf)
    for size in range(1, m + 1):
        sup = np.array(list(combinations(range(m), size)))  # [S, size]
        kkt = np.zeros((k, len(sup), size + 1, size + 1))
        kkt[..., :size, :size] = g[:, sup[:, :, None], sup[:, None, :]]
        kkt[..., :size, size] = kkt[..., size, :size] = 1.0
        rhs = np.concatenate([b[:, sup], np.ones((k, len(sup), 1))], axis=-1)
        x = np.linalg.solve(kkt, rhs[..., None])[..., :size, 0]  # [K, S, size]
        w = np.zeros((k, len(sup), m))
        w[:, np.arange(len(sup))[:, None], sup] = x
        f = np.einsum("kmn,ksm,ksn->ks", g, w, w) - 2.0 * np.einsum("km,ksm->ks", b, w)
        f = np.where((x >= -1e-12).all(axis=-1), f, np.inf)  # the infeasible ones out
        i = np.argmin(f, axis=1)
        f_i = f[np.arange(k), i]
        better = f_i < best_f
        best_f[better], best_w[better] = f_i[better], w[better, i[better]]
    best_w = np.maximum(best_w, 0.0)  # -1e-12 rounding
    return best_w / best_w.sum(axis=-1, keepdims=True)


def simplex_qp_fista(
    gram: np.ndarray, b: np.ndarray, n_iter: int = 3000, tol: float = 1e-12
) -> np.ndarray:
    """The simplex least-squares problems by accelerated projected gradient, for many members.

    FISTA, step 1 / (2 * largest eigenvalue). Members' forecasts are strongly correlated,
    so G is ill-conditioned and plain projected gradient crawls; the accelerated version
    gets the objective within ~1e-6 (relative) of the optimum's on real validation sets,
    but nearly flat directions leave single weights up to ~0.1 off (ETTh1 val, a
    twenty-eighth session audit): above ``MAX_EXACT_MEMBERS`` members, trust the MSE more
    than single weights. All K problems run at once, and stop together once no weight
    moves by more than ``tol`` in a step (checked every 50 steps).

    Args:
        gram: [K, M, M] positive semi-definite.
        b: [K, M].
        n_iter: gradient steps at most.
        tol: the largest change of any weight in one step that counts as converged.

    Returns:
        [K, M] weights on the simplex.
    """
    k, m = b.shape
    step = 0.5 / np.maximum(np.linalg.eigvalsh(gram)[:, -1], 1e-12)[:, None]  # [K, 1]
    w = np.full((k, m), 1.0 / m)
    z, t = w, 1.0
    for i in range(n_iter):
        grad = 2.0 * (np.einsum("kmn,kn->km", gram, z) - b)
        w_next = project_simplex(z - step * grad)
        if i % 50 == 49 and np.max(np.abs(w_next - w)) <= tol:
            return w_next
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        z = w_next + ((t - 1.0) / t_next) * (w_next - w)
        w, t = w_next, t_next
    return w


def channel_step_moments(
    forecasts: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-(step, channel) quadratic-form terms, summed over windows.

    Sums, not means, so the terms of contiguous parts add up to those of their union.

    Args:
        forecasts: [M, W, H, C]; targets: [W, H, C].

    Returns:
        G [H, C, M, M] = sum_w f_m f_n, b [H, C, M] = sum_w f_m y, yy [H, C] = sum_w y y,
        and the number of windows W.
    """
    m, w, h, c = forecasts.shape
    y = np.asarray(targets, dtype=np.float64)
    gram = np.empty((h, c, m, m))
    # Member by member, in float64 (a float32 stack is cast in einsum's small buffers,
    # not copied: the same sums, as they run over windows in the same order)
    for i in range(m):  # pairwise
        for j in range(i, m):
            gram[:, :, i, j] = gram[:, :, j, i] = np.einsum(
                "whc,whc->hc", forecasts[i], forecasts[j], dtype=np.float64
            )
    b = [np.einsum("whc,whc->hc", forecasts[i], y, dtype=np.float64) for i in range(m)]
    b = np.moveaxis(np.stack(b), 0, -1)
    yy = np.einsum("whc,whc->hc", y, y)
    refuse_non_finite_terms(np.moveaxis(np.diagonal(gram, axis1=2, axis2=3), -1, 0), yy)
    return gram, b, yy, w


def _add(*moments: tuple) -> tuple:
    """The terms of the union of disjoint window ranges."""
    return tuple(sum(parts) for parts in zip(*moments, strict=True))


def _mse(moments: tuple, weights: np.ndarray) -> float:
    """MSE of per-(step, channel) weights [H, C, M] over the windows summed in ``moments``."""
    gram, b, yy, n = moments
    quad = np.einsum("hcmn,hcm,hcn->", gram, weights, weights)
    return float((quad - 2.0 * np.einsum("hcm,hcm->", b, weights) + yy.sum()) / (n * yy.size))


def _fit(moments: tuple, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-(step, channel) and pooled per-step simplex weights, both [H, C, M].

    With ``per_channel`` False the first is the pooled one too: the H x C problems are
    most of a fit's time, and ``pool = 1`` does not use them. Otherwise both sets are
    solved in one batch (the problems are independent; one call costs the loop once).
    """
    gram, b, _, _ = moments
    h, c, m = b.shape
    pooled_g, pooled_b = gram.sum(axis=1), b.sum(axis=1)  # [H, M, M], [H, M]
    if not per_channel:
        pooled = np.broadcast_to(simplex_least_squares(pooled_g, pooled_b)[:, None], (h, c, m))
        return pooled, pooled
    w = simplex_least_squares(
        np.concatenate([pooled_g, gram.reshape(h * c, m, m)]),
        np.concatenate([pooled_b, b.reshape(h * c, m)]),
    )
    return w[h:].reshape(h, c, m), np.broadcast_to(w[:h, None], (h, c, m))


class StackedCombiner(Combiner):
    """Per-(horizon step, channel) simplex weights from validation, shrunk toward pooled
    per-step weights and toward the mean.

    Args:
        lam: fixed shrinkage toward equal weights in [0, 1]; None chooses it.
        pool: fixed shrinkage of the per-channel weights toward the pooled ones in [0, 1]
            (1: one weight vector per step for all channels); None chooses it.
        grid: number of ``lam`` values tried in [0, 1].
        pool_grid: number of ``pool`` values tried in [0, 1].

    Free shrinkages are chosen together on a time-ordered inner split of the validation
    windows; ties go to the larger ``pool``, then the larger ``lam`` (the simpler model).
    """

    name = "stacked"

    def __init__(
        self,
        lam: float | None = None,
        pool: float | None = None,
        grid: int = 11,
        pool_grid: int = 5,
    ):
        self.lam = lam
        self.pool = pool
        self.grid = grid
        self.pool_grid = pool_grid
        self.lam_: float | None = None
        self.pool_: float | None = None
        self.step_weights_: np.ndarray | None = None  # [H, C, M]
        self.inner_scores_: dict[tuple[float, float], float] = {}

    @staticmethod
    def _blend(per_channel: np.ndarray, pooled: np.ndarray, pool: float, lam: float) -> np.ndarray:
        m = per_channel.shape[-1]
        return (1 - lam) * ((1 - pool) * per_channel + pool * pooled) + lam / m

    def _grid(self, fixed: float | None, n: int) -> list[float]:
        """Candidate values, largest first (so a strict < keeps the larger on ties)."""
        return [float(fixed)] if fixed is not None else list(np.linspace(0.0, 1.0, n)[::-1])

    def fit(self, val_forecasts, val_targets, features=None, terms=None) -> StackedCombiner:
        _, w, h, _ = val_forecasts.shape
        fit_w, held_w = inner_split(w, h)
        if len(fit_w) == 0 or len(held_w) == 0:  # too few windows to choose: the mean
            if self.pool is None or self.lam is None:
                (log.debug if self.quiet_fallback else log.warning)(
                    "stacked router: too few validation windows (%d) to hold any out; "
                    "shrunk fully toward equal weights",
                    w,
                )
            moments = channel_step_moments(val_forecasts, val_targets)
            self.inner_scores_ = {}
            self.pool_ = 1.0 if self.pool is None else float(self.pool)
            self.lam_ = 1.0 if self.lam is None else float(self.lam)
        else:
            # contiguous parts: fit, the gap, held out; their sums are the full set's terms
            parts = (
                slice(0, len(fit_w)),
                slice(len(fit_w), int(held_w[0])),
                slice(int(held_w[0]), w),
            )
            fit_m, gap_m, held_m = (
                channel_step_moments(val_forecasts[:, p], val_targets[p]) for p in parts
            )
            moments = _add(fit_m, gap_m, held_m)
            per_channel, pooled = _fit(fit_m, self.pool != 1.0)
            self.inner_scores_ = {
                (pool, lam): _mse(held_m, self._blend(per_channel, pooled, pool, lam))
                for pool in self._grid(self.pool, self.pool_grid)
                for lam in self._grid(self.lam, self.grid)
            }
            # min keeps the first of equal scores: the grids run largest first
            self.pool_, self.lam_ = min(self.inner_scores_, key=self.inner_scores_.get)
        self.step_weights_ = self._blend(*_fit(moments, self.pool_ != 1.0), self.pool_, self.lam_)
        return self

    def weights(self, forecasts, features=None) -> np.ndarray:
        m, w, _, c = forecasts.shape
        return np.broadcast_to(self.step_weights_.mean(axis=0)[None], (w, c, m)).copy()

    def step_weights(self, forecasts, features=None) -> np.ndarray:
        return per_step_weights(self.step_weights_, forecasts.shape[1])

    def forecast(self, forecasts, features=None) -> np.ndarray:
        return weighted_sum(forecasts, self.step_weights_, per_step=True)

    def describe(self) -> str:
        first, last = self.step_weights_[0].mean(axis=0), self.step_weights_[-1].mean(axis=0)
        return (
            f"stacked per-step, per-channel weights, shrinkage {self.pool_:.2f} toward the "
            f"pooled per-step weights and {self.lam_:.2f} toward equal (channel averages, "
            f"step 1: {np.round(first, 2).tolist()}, step H: {np.round(last, 2).tolist()})"
        )


class PooledStackedCombiner(StackedCombiner):
    """The stacked combination with one weight vector per step for all channels (``pool = 1``).

    The rule before pre-registration 5; the learned router's simplest weighted incumbent.
    """

    name = "stacked_pooled"

    def __init__(self, lam: float | None = None, grid: int = 11):
        super().__init__(lam=lam, pool=1.0, grid=grid)
