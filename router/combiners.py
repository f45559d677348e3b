"""Fixed and validation-fitted combination rules. The learned routers live in their own modules.

Every combiner follows one interface (``router/__init__.py``):

* ``fit(val_forecasts [M, W, H, C], val_targets [W, H, C], features [W, C, F] | None,
  terms) -> self`` on validation forecasts only; ``terms`` (``router.objective.WindowTerms``
  of those forecasts) is optional: rules that need it compute it when it is not given;
* ``weights(forecasts [M, W, H, C], features [W, C, F] | None) -> [W, C, M]``, rows on the
  simplex;
* ``forecast(forecasts, features) -> [W, H, C]``, the combined forecast. For most rules it
  is the weights applied to the forecasts; the median and the per-horizon-step inverse
  error weight each step separately and report the step average as their weights;
* ``step_weights(forecasts, features) -> [W, H, C, M]``, the weights each step is
  combined with: ``sum_m step_weights * forecasts`` is ``forecast`` for every rule
  (tested). W x H x C x M values: for a few windows (the ``forecast`` command's last).
"""

from __future__ import annotations

import logging

import numpy as np

from ensemble.hybrid import by_window_blocks, weighted_sum, windows_per_block
from router.objective import (
    WindowTerms,
    combined_mse,
    inner_split,
    refuse_non_finite_terms,
    window_gram,
)

log = logging.getLogger(__name__)


class Combiner:
    """Base class: equal weights, combined forecast = weights applied to the forecasts.

    Attributes:
        name: registry name.
        needs_features: whether ``weights`` uses the ``features`` argument (the run only
            computes features for combiners that need them).
        quiet_fallback: log a fallback for too little data (equal weights...) at debug
            level, not as a warning: set on the throwaway fits of `LearnedRouter`'s folds.
    """

    name = "base"
    needs_features = False
    quiet_fallback = False

    def fit(
        self,
        val_forecasts: np.ndarray,
        val_targets: np.ndarray,
        features: np.ndarray | None = None,
        terms: WindowTerms | None = None,
    ) -> Combiner:
        """val_forecasts: [M, W, H, C]; val_targets: [W, H, C]; features: [W, C, F] or None;
        terms: ``window_gram(val_forecasts, val_targets)`` if the caller already has it."""
        return self

    def weights(self, forecasts: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """forecasts: [M, W, H, C] -> weights [W, C, M]."""
        m, w, _, c = forecasts.shape
        return np.full((w, c, m), 1.0 / m)

    def forecast(self, forecasts: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """forecasts: [M, W, H, C] (float32 or float64) -> combined forecast [W, H, C] float64."""
        # block by block of windows, each cast to float64: no float64 copy of the stack
        return weighted_sum(forecasts, self.weights(forecasts, features))

    def step_weights(self, forecasts: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """forecasts: [M, W, H, C] -> the weights of each step [W, H, C, M] (a read-only
        view where they do not change with the step)."""
        h = forecasts.shape[2]
        w = self.weights(forecasts, features)
        return np.broadcast_to(w[:, None], (w.shape[0], h, *w.shape[1:]))

    def describe(self) -> str:
        """A human-readable summary of what was fitted."""
        return self.name


def warn_few_windows(combiner: Combiner, shape: tuple[int, ...]) -> None:
    """Say that a rule fitted without shrinkage rests on too few validation windows.

    The threshold of the shrunk rules' fallback (stacked, rules, the learned routers): no
    window can be held out past a gap of H (``inner_split``). Those fall back to equal
    weights; greedy, best and inverse_error keep their fitted weights, which on so few
    windows are mostly noise, so the user is told (their weights are unchanged).

    Args:
        combiner: the rule being fitted (its name; its ``quiet_fallback``).
        shape: the validation forecasts' [M, W, H, C]; a single member has weight 1
            whatever the windows, so nothing is said.
    """
    m, n_windows, horizon, _ = shape
    if m < 2 or inner_split(n_windows, horizon)[1].size:
        return
    (log.debug if combiner.quiet_fallback else log.warning)(
        "%s router: too few validation windows (%d) to hold any out; its weights are fitted "
        "on them unshrunk and may be noise; the router mean fits nothing to them",
        combiner.name,
        n_windows,
    )


def _member_errors(forecasts: np.ndarray, targets: np.ndarray, axis) -> np.ndarray:
    """Each member's mean squared error over ``axis`` of its [W, H, C] errors, in float64.

    ``np.mean((forecasts - targets[None]) ** 2, axis=axis + 1)`` member by member, with
    the same numbers (the mean of each member runs over its own errors in the same
    order): one [W, H, C] temporary instead of two [M, W, H, C] ones (2.6 GB on ETTm2 at
    H=720).
    """
    out = []
    for i in range(forecasts.shape[0]):
        d = np.subtract(forecasts[i], targets, dtype=np.float64)
        np.square(d, out=d)
        out.append(np.mean(d, axis=axis))
        del d
    refuse_non_finite_terms(out, np.sum(targets, dtype=np.float64))
    return np.stack(out)


class MeanCombiner(Combiner):
    """Equal weights over members: the forecast-combination puzzle's hard-to-beat baseline."""

    name = "mean"


class MedianCombiner(Combiner):
    """Per-step median of the members' forecasts (robust to one member going astray).

    Its weights are the share of horizon steps at which each member is the median
    (half shares for the two middle members when M is even), so that applying them per
    step gives exactly the median.
    """

    name = "median"

    def _step_weights(self, forecasts: np.ndarray) -> np.ndarray:
        """[M, W, H, C] -> per-step weights [M, W, H, C] (each step sums to one).

        Members equal to the median share its weight evenly (identical members get
        identical weights); otherwise, for even M, the two middle members get half each.
        """
        m = forecasts.shape[0]
        ranks = np.argsort(np.argsort(forecasts, axis=0, kind="stable"), axis=0, kind="stable")
        if m % 2:
            by_rank = (ranks == m // 2).astype(np.float64)
        else:
            by_rank = 0.5 * ((ranks == m // 2 - 1) | (ranks == m // 2))
        at_median = forecasts == np.median(forecasts, axis=0, keepdims=True)
        n_at = at_median.sum(axis=0, keepdims=True)
        return np.where(n_at > 0, at_median / np.maximum(n_at, 1), by_rank)

    def weights(self, forecasts: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        def block(lo: int, hi: int) -> np.ndarray:  # [M, w, C]
            # float64 as the median is compared in float64 (a float32 stack's median of
            # an even number of members would be rounded to float32)
            return self._step_weights(np.asarray(forecasts[:, lo:hi], np.float64)).mean(axis=2)

        n, per = forecasts.shape[1], windows_per_block(forecasts.shape)
        return np.moveaxis(by_window_blocks(block, n, per, axis=1), 0, -1)

    def step_weights(self, forecasts, features=None) -> np.ndarray:
        return np.moveaxis(self._step_weights(np.asarray(forecasts, np.float64)), 0, -1)

    def forecast(self, forecasts: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        # blocks of windows sized by H x C: the median sorts a copy of its input
        return by_window_blocks(
            lambda lo, hi: np.median(np.asarray(forecasts[:, lo:hi], np.float64), axis=0),
            forecasts.shape[1],
            windows_per_block(forecasts.shape),
        )


class InverseErrorCombiner(Combiner):
    """Weights proportional to the inverse validation MSE, per channel and horizon step.

    Args:
        power: exponent of the inverse error (1: Bates-Granger style; larger is sharper).
        per_step: one weight vector per horizon step (else one per channel).
    """

    name = "inverse_error"

    def __init__(self, power: float = 1.0, per_step: bool = True):
        self.power = power
        self.per_step = per_step
        self.step_weights_: np.ndarray | None = None  # [H, C, M]

    def fit(self, val_forecasts, val_targets, features=None, terms=None) -> InverseErrorCombiner:
        warn_few_windows(self, val_forecasts.shape)
        err = _member_errors(val_forecasts, val_targets, axis=0)  # [M, H, C]
        if not self.per_step:
            err = np.broadcast_to(err.mean(axis=1, keepdims=True), err.shape)
        inv = np.maximum(err, 1e-12) ** -self.power
        self.step_weights_ = np.moveaxis(inv / inv.sum(axis=0, keepdims=True), 0, -1)
        return self

    def weights(self, forecasts, features=None) -> np.ndarray:
        m, w, _, c = forecasts.shape
        return np.broadcast_to(self.step_weights_.mean(axis=0)[None], (w, c, m)).copy()

    def step_weights(self, forecasts, features=None) -> np.ndarray:
        return per_step_weights(self.step_weights_, forecasts.shape[1])

    def forecast(self, forecasts, features=None) -> np.ndarray:
        return weighted_sum(forecasts, self.step_weights_, per_step=True)


def per_step_weights(step_weights: np.ndarray, n_windows: int) -> np.ndarray:
    """[H, C, M] weights of each step and channel -> [W, H, C, M], a read-only view."""
    return np.broadcast_to(step_weights[None], (n_windows, *step_weights.shape))


class BestMemberCombiner(Combiner):
    """All weight on the member with the lowest validation MSE (per channel by default).

    Args:
        per_channel: pick the best member for each channel separately.
    """

    name = "best"

    def __init__(self, per_channel: bool = True):
        self.per_channel = per_channel
        self.channel_weights_: np.ndarray | None = None  # [C, M] one-hot

    def fit(self, val_forecasts, val_targets, features=None, terms=None) -> BestMemberCombiner:
        warn_few_windows(self, val_forecasts.shape)
        err = _member_errors(val_forecasts, val_targets, axis=(0, 1))  # [M, C]
        if not self.per_channel:
            err = np.broadcast_to(err.mean(axis=1, keepdims=True), err.shape)
        best = err <= err.min(axis=0, keepdims=True) * (1 + 1e-12)  # ties (duplicates) share
        self.channel_weights_ = (best / best.sum(axis=0, keepdims=True)).T  # [C, M]
        return self

    def weights(self, forecasts, features=None) -> np.ndarray:
        m, w, _, c = forecasts.shape
        return np.broadcast_to(self.channel_weights_[None], (w, c, m)).copy()


def caruana_counts(gram: np.ndarray, b: np.ndarray, n_iter: int) -> np.ndarray:
    """Greedy forward selection with replacement on a quadratic loss (Caruana et al. 2004).

    Args:
        gram: [M, M] mean of f_m f_n over the fitting samples.
        b: [M] mean of f_m y.
        n_iter: members added (with replacement).

    Returns:
        [M] how many times each member was picked (weights = counts / n_iter); members
        with identical forecasts share their group's count evenly.
    """
    m = b.shape[0]
    counts = np.zeros(m)
    eye = np.eye(m)
    for it in range(n_iter):
        cand = (counts[None] + eye) / (it + 1)  # [M candidates, M]
        loss = np.einsum("km,mn,kn->k", cand, gram, cand) - 2.0 * cand @ b
        counts[np.argmin(loss)] += 1
    # Duplicates (mean squared difference ~ 0) are indistinguishable: split their picks.
    diag = np.diagonal(gram)
    dist = diag[:, None] + diag[None, :] - 2.0 * gram
    # each pair on its own scale: one member far off scale made every other pair "same"
    same = dist <= 1e-12 * (1.0 + np.minimum.outer(diag, diag))
    return (same @ counts) / same.sum(axis=1)


class GreedyCombiner(Combiner):
    """Caruana's greedy ensemble selection with replacement, fitted on validation MSE.

    The selection repeatedly adds the member that most lowers the validation MSE of the
    running average; members picked several times get proportionally more weight. This is
    what AutoGluon's weighted ensemble does.

    Args:
        n_iter: selection rounds (the weight resolution is 1 / n_iter).
        per_channel: a separate selection per channel.
    """

    name = "greedy"

    def __init__(self, n_iter: int = 25, per_channel: bool = True):
        self.n_iter = n_iter
        self.per_channel = per_channel
        self.channel_weights_: np.ndarray | None = None  # [C, M]

    def fit(self, val_forecasts, val_targets, features=None, terms=None) -> GreedyCombiner:
        warn_few_windows(self, val_forecasts.shape)
        self.channel_weights_ = self.channel_weights(
            window_gram(val_forecasts, val_targets) if terms is None else terms
        )
        return self

    def channel_weights(self, terms: WindowTerms) -> np.ndarray:
        """[C, M] greedy weights from the fitting windows' terms."""
        gram, b, _ = terms
        gram_c, b_c = gram.mean(axis=0), b.mean(axis=0)  # [C, M, M], [C, M]
        if self.per_channel:
            counts = np.stack(
                [caruana_counts(g, v, self.n_iter) for g, v in zip(gram_c, b_c, strict=True)]
            )
        else:
            counts = np.broadcast_to(
                caruana_counts(gram_c.mean(0), b_c.mean(0), self.n_iter), b_c.shape
            )
        return counts / counts.sum(axis=-1, keepdims=True)

    def weights(self, forecasts, features=None) -> np.ndarray:
        m, w, _, c = forecasts.shape
        return np.broadcast_to(self.channel_weights_[None], (w, c, m)).copy()

    def describe(self) -> str:
        return f"greedy weights per channel [C, M]: {np.round(self.channel_weights_, 2).tolist()}"


def greedy_prior(terms: WindowTerms, floor: float = 0.2) -> np.ndarray:
    """Starting logits of the learned routers: log of per-channel greedy weights, floored.

    Args:
        terms: the fitting windows' quadratic-form terms.
        floor: share of uniform weight mixed in, so that every member can come back; at
            0 a member greedy drops gets the smallest finite logit (weight ~1e-308, never
            back), not log(0): LightGBM starts from these logits.

    Returns:
        [C, M] logits (softmax gives ``(1 - floor) * greedy + floor / M``).
    """
    m = terms.b.shape[-1]
    w = GreedyCombiner().channel_weights(terms)
    return np.log(np.maximum((1 - floor) * w + floor / m, np.finfo(np.float64).tiny))


PRIORS = ("greedy", "uniform")


def prior_logits(kind: str, terms: WindowTerms, floor: float = 0.2) -> np.ndarray:
    """[C, M] starting logits of a learned router: floored greedy weights, or zeros (the mean).

    Args:
        kind: one of ``PRIORS``.
        terms: the fitting windows' quadratic-form terms.
        floor: share of uniform weight mixed into the greedy prior.
    """
    if kind == "uniform":
        return np.zeros(terms.b.shape[1:])
    return greedy_prior(terms, floor)


def smaller_floor(
    kind: str,
    terms: WindowTerms,
    floors: tuple[float, ...],
    channel: np.ndarray,
    held: list[np.ndarray],
    fitted: float,
) -> tuple[float | None, np.ndarray | None]:
    """Whether a learned router's fit from ``floors[0]`` should give way to a smaller
    floor's prior alone: the fit keeps the first floor's uniform share where no feature
    singles a member out (a tree grows only where a split gains; Adam steps by about its
    learning rate), and a member forecasting 1e6 kept floor / M of the weight.

    Args:
        kind: the router's prior (``PRIORS``; "uniform" has no floor to choose).
        terms: the fitting windows' quadratic-form terms.
        floors: the router's floors, the fitted one first.
        channel: [N] the held-out rows' channels.
        held: the held-out rows' gram [N, M, M], b [N, M] and yy [N].
        fitted: the fit's held-out MSE.

    Returns:
        (floor, held-out weights [N, M]) of the smaller floor whose prior alone scores
        below ``fitted``, the lowest if several; (None, None) where none does (a tie keeps
        the fit, or the larger floor).
    """
    best: tuple[float, float | None, np.ndarray | None] = (fitted, None, None)
    for floor in floors[1:] if kind == "greedy" else ():
        z = prior_logits(kind, terms, floor)[channel]
        p = np.exp(z - z.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        score = float(combined_mse(p, *held).mean())
        if score < best[0] - 1e-12:
            best = (score, floor, p)
    return best[1], best[2]
