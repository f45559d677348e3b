"""Stacked weights tilted, window by window, toward the members that did well lately.

Static weights fitted on validation can mislead when the members' relative skill moves
between validation and test (on ETTm1 the per-channel weights favour ARIMA on a load
channel where it becomes the worst). But each window's input already holds the targets
of the windows ``t - H - k`` before it, so every member's error on them is known when
window ``t`` is forecast: the router's "recent skill" features
(``router.features.past_errors``; ``{source}_rel_{member}`` is a member's log MSE over the
last such window (``last``), the last H (``recent``) or 4H (``long``) minus the members'
average). As in
AFTER (Yang 2004), exponential re-weighting by those losses gives weights

    t[w, c, m] ~ exp(-beta * rel[w, c, m])  =  MSE_m ** -beta / sum_n MSE_n ** -beta,

and the combination is a blend with the stacked forecast (``router.stacked``):

    (1 - share) * stacked[w, h, c] + share * sum_m t[w, c, m] f_m[w, h, c].

``share``, ``beta`` and the source are chosen on the stacked rule's own time-ordered
inner split of the validation windows (stacked fitted before, the blend scored after);
``share = 0`` is the stacked forecast, and ties go to it. Windows without an earlier
observed window (the first H of a split) get the stacked forecast.

Pre-registration 7 (``benchmarks/tilt_gate.py``; ``benchmarks/router_preregistration.md``)
tried it as the learned router's incumbent on 19 runs outside the acceptance benchmarks
and rejected it: the inner split chose a tilt in 18, and its test MSE was lower than
the learned router's in 4 of them (mean -2.20 % against the mean, learned -4.21 %). The
held-out validation windows overstate how long a member's recent lead lasts. It stays a
combiner of its own and a reference in every ``learned`` report.
"""

from __future__ import annotations

import logging

import numpy as np

from ensemble.hybrid import by_window_blocks, weighted_sum, windows_per_block
from router.combiners import Combiner
from router.objective import inner_split
from router.stacked import StackedCombiner

log = logging.getLogger(__name__)

SOURCES = ("recent", "long", "last")
SPANS = {
    "recent": "the last H observed windows",
    "long": "the last 4H observed windows",
    "last": "the last observed window",
}


def tilt_weights(rel: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Softmax of ``-beta * rel`` over members, and where it is defined.

    Args:
        rel: [W, C, M] members' relative log MSE on recent windows (NaN: not known yet).
        beta: how sharply lower recent error buys weight (0: equal weights).

    Returns:
        weights [W, C, M] (equal where unknown) and known [W, C] bool.
    """
    known = ~np.isnan(rel).any(axis=-1)
    z = -beta * np.where(known[..., None], rel, 0.0).astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True), known


class TiltedStackedCombiner(Combiner):
    """Stacked weights blended with weights ~ recent MSE ** -beta, per window and channel.

    Args:
        share: fixed blend share of the tilted weights in [0, 1]; None chooses it.
        beta: fixed exponent; None chooses it from ``betas``.
        source: ``last`` (the last observed window), ``recent`` (the last H) or ``long``
            (the last 4H); None chooses it.
        shares, betas: the grids the inner split chooses from.
        feature_names: names of the F feature columns (set by the run).
    """

    name = "stacked_tilted"
    needs_features = True

    def __init__(
        self,
        share: float | None = None,
        beta: float | None = None,
        source: str | None = None,
        shares: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0),
        betas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
        feature_names: list[str] | None = None,
    ):
        if source is not None and source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        self.share = share
        self.beta = beta
        self.source = source
        self.shares = shares
        self.betas = betas
        self.feature_names = feature_names
        self.share_, self.beta_, self.source_ = 0.0, 0.0, SOURCES[0]
        self.stacked_: StackedCombiner | None = None
        self.inner_scores_: dict[tuple[str, float, float], float] = {}
        self.untilted_why_ = ""  # why the fit kept the plain stacked forecast, for describe

    def _columns(self, source: str, m: int) -> list[int] | None:
        """Feature columns of the members' relative recent skill, in member order."""
        names = self.feature_names or []
        cols = [i for i, n in enumerate(names) if n.startswith(f"{source}_rel_")]
        return cols if len(cols) == m else None

    def _tilt(
        self, forecasts: np.ndarray, features: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tilted weights [W, C, M] and the per-(window, channel) share [W, C] applied."""
        m, w, _, c = forecasts.shape
        return self.tilt(features, m, w, c)

    def tilt(
        self, features: np.ndarray | None, m: int, w: int, c: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The per-window part of the fitted rule, from the windows' features alone.

        With the stacked part's per-step weights ``S = self.stacked_.step_weights_``
        [H, C, M], step ``h`` of window ``w`` is combined with
        ``(1 - share[w, c]) * S[h, c] + share[w, c] * t[w, c]``.

        Args:
            features: [W, C, F] window features (None: no tilt).
            m, w, c: members M, windows W and channels C.

        Returns:
            tilted weights t [W, C, M] (equal where no tilt applies) and share [W, C]
            (0 where no earlier window was observed, and everywhere when not tilted).
        """
        cols = None if features is None else self._columns(self.source_, m)
        if cols is None or self.share_ == 0.0:
            return np.full((w, c, m), 1.0 / m), np.zeros((w, c))
        t, known = tilt_weights(features[..., cols], self.beta_)
        return t, np.where(known, self.share_, 0.0)

    def fit(self, val_forecasts, val_targets, features=None, terms=None) -> TiltedStackedCombiner:
        m, w, h, _ = val_forecasts.shape
        fit_w, held_w = inner_split(w, h)
        if features is not None and not self.feature_names:
            # the tilt finds its columns by name: without names it can only stay stacked
            log.warning(
                "stacked_tilted: features were given without feature_names, so the recent-skill "
                "columns cannot be found and it stays stacked; pass feature_names (as "
                "router.features.window_features returns them)"
            )
        sources = [self.source] if self.source else list(SOURCES)
        sources = [s for s in sources if features is not None and self._columns(s, m)]
        self.inner_scores_ = {}
        self.share_, self.beta_, self.source_ = 0.0, 0.0, (sources or [SOURCES[0]])[0]
        # each reason the plain stacked forecast is kept, said apart (describe)
        if not sources:
            if m < 2:
                lack = "a single member has no skill relative to others"
            elif features is None:
                lack = "no features were given"
            elif not self.feature_names:
                lack = "no feature_names were given"
            else:
                lack = "the features hold none for these members"
            self.untilted_why_ = f"no recent-skill (*_rel_*) features to tilt by: {lack}"
        elif not (len(fit_w) and len(held_w)):
            self.untilted_why_ = "too few validation windows to hold any out"
        else:
            self.untilted_why_ = "the inner split preferred it"
        if sources and len(fit_w) and len(held_w):
            held = slice(int(held_w[0]), w)
            f_held, y_held = val_forecasts[:, held], np.asarray(val_targets[held], np.float64)
            inner = StackedCombiner()
            inner.quiet_fallback = True  # its own split of the fitting part: no user's matter
            inner.fit(val_forecasts[:, : len(fit_w)], val_targets[: len(fit_w)])
            e_s = inner.forecast(f_held) - y_held  # [Wh, H, C] stacked errors
            best = np.inf
            if self.share is None:  # the plain stacked forecast is a candidate, tried first
                best = self.inner_scores_[("", 0.0, 0.0)] = float(np.mean(e_s * e_s))
            shares = [self.share] if self.share is not None else list(self.shares)
            betas = [self.beta] if self.beta is not None else list(self.betas)
            for source in sources:
                rel = features[held][..., self._columns(source, m)]  # [Wh, C, M]
                for beta in betas:
                    t, known = tilt_weights(rel, beta)
                    tilted = weighted_sum(f_held, t)
                    e_t = np.where(known[:, None], tilted - y_held, e_s)
                    # the blend's MSE is a quadratic in the share: three sums serve every share
                    ss, st, tt = (
                        float(np.mean(a * b)) for a, b in ((e_s, e_s), (e_s, e_t), (e_t, e_t))
                    )
                    for share in shares:
                        score = (1 - share) ** 2 * ss + 2 * share * (1 - share) * st + share**2 * tt
                        self.inner_scores_[(source, beta, share)] = score
                        if score < best:  # strict: ties keep the plainer rule found first
                            best = score
                            self.source_, self.beta_, self.share_ = source, beta, share
        elif self.share is not None and sources:  # too few windows to choose: fixed values
            self.source_, self.share_ = sources[0], float(self.share)
            self.beta_ = float(self.beta if self.beta is not None else 1.0)
        self.stacked_ = StackedCombiner()
        self.stacked_.quiet_fallback = self.quiet_fallback  # it says the fallback, once
        self.stacked_.fit(val_forecasts, val_targets, terms=terms)
        return self

    def weights(self, forecasts, features=None) -> np.ndarray:
        t, share = self._tilt(forecasts, features)
        s = self.stacked_.weights(forecasts)
        return (1 - share[..., None]) * s + share[..., None] * t

    def step_weights(self, forecasts, features=None) -> np.ndarray:
        t, share = self._tilt(forecasts, features)  # [W, C, M], [W, C]
        s = share[:, None, :, None]
        return (1 - s) * self.stacked_.step_weights(forecasts) + s * t[:, None]

    def forecast(self, forecasts, features=None) -> np.ndarray:
        t, share = self._tilt(forecasts, features)
        if not share.any():
            return self.stacked_.forecast(forecasts)

        # (1 - share) * stacked + share * tilted, block by block of windows: the same
        # numbers as on whole arrays, without four [W, H, C] float64 temporaries
        def part(lo: int, hi: int) -> np.ndarray:
            f = np.asarray(forecasts[:, lo:hi], dtype=np.float64)
            tilted = weighted_sum(f, t[lo:hi], block=hi - lo)
            s = share[lo:hi, None]
            return (1 - s) * self.stacked_.forecast(f) + s * tilted

        return by_window_blocks(part, forecasts.shape[1], windows_per_block(forecasts.shape))

    def describe(self) -> str:
        if self.share_ == 0.0:
            why = self.untilted_why_ or "not fitted"
            return f"stacked, not tilted ({why}); {self.stacked_.describe()}"
        return (
            f"stacked, blended {self.share_:.2f} with weights ~ MSE ** -{self.beta_:g} over "
            f"{SPANS[self.source_]}; {self.stacked_.describe()}"
        )
