"""Rule-based router: a shallow tree over readable window features, printed as rules.

Each leaf holds a small greedy (Caruana) combination of members fitted on the leaf's
validation windows; each split is the threshold on one feature that most lowers the
validation MSE when each side uses its best member or the mean. The depth (0 = one
global greedy combination) is chosen on a time-ordered inner split of the validation
windows, then the tree is refitted on all of them (on wide data, a seeded draw of
``MAX_ROUTER_ROWS`` window-channel rows each time). The printed tree is the "rule book"
a forecaster can read and argue with::

    if recent_rel_dlinear <= -0.21:
        use 0.80 dlinear + 0.20 arima          (n=6120)
    else:
        use 0.40 dlinear + 0.60 lightgbm       (n=13375)
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from router.combiners import Combiner, caruana_counts
from router.objective import (
    combined_mse,
    flat_rows,
    inner_split,
    member_mse,
    window_gram,
    window_rows,
)

log = logging.getLogger(__name__)


def _shortest_between(t: float, lo: float, hi: float) -> float:
    """The value with the fewest significant digits in ``[lo, hi)`` near ``t``: it splits
    the fitted rows as ``t`` does, and the printed rules then apply exactly (printed to
    3 digits, 0.40524017 read 0.405 and sent other windows the other way)."""
    for digits in range(1, 18):
        r = float(f"{t:.{digits}g}")
        if lo <= r < hi:
            return r
    return t


class RuleRouter(Combiner):
    """A depth-limited tree of readable rules, each leaf a weighted combination of members.

    Args:
        max_depth: deepest tree tried (the inner split picks 0..max_depth).
        min_leaf: smallest leaf, as a share of the validation windows x channels.
        n_thresholds: candidate thresholds per feature (quantiles), for readable cut points.
        leaf_iter: greedy rounds per leaf (weights in steps of 1 / leaf_iter).
        feature_names: the F names of the feature columns (for the printed rules).
        member_names: the M members' names (for the printed rules).
        channel_names: the C evaluated channels' names, in order: a split on the
            ``channel`` feature is printed as the channels it sends left, not as an index.
        seed: seeds the draw of rows on wide data (above ``MAX_ROUTER_ROWS``), as the
            learned routers' seed does theirs: each run's seed draws its own rows.
    """

    name = "rules"
    needs_features = True

    def __init__(
        self,
        max_depth: int = 2,
        min_leaf: float = 0.1,
        n_thresholds: int = 16,
        leaf_iter: int = 10,
        feature_names: list[str] | None = None,
        member_names: list[str] | None = None,
        channel_names: list[str] | None = None,
        seed: int = 0,
    ):
        self.max_depth = max_depth
        self.min_leaf = min_leaf
        self.n_thresholds = n_thresholds
        self.leaf_iter = leaf_iter
        self.feature_names = feature_names
        self.member_names = member_names
        self.channel_names = channel_names
        self.seed = seed
        self.tree_: dict | None = None
        self.fill_: np.ndarray | None = None
        self.missing_: np.ndarray | None = None  # [F] features missing on some val window
        self.depth_: int | None = None
        self.inner_scores_: dict[int, float] = {}

    # -------------------------------------------------------------------- fitting

    def _grow(self, x, gram, b, yy, losses, idx, depth, min_n) -> dict:
        """Grow a node over sample indices ``idx`` (rows of the flattened [W * C] arrays)."""
        counts = caruana_counts(gram[idx].mean(0), b[idx].mean(0), self.leaf_iter)
        leaf = {"weights": counts / counts.sum(), "n": int(idx.size)}
        if depth == 0 or idx.size < 2 * min_n:
            return leaf
        node_loss = losses[idx]  # [n, K]
        best = (node_loss.sum(0).min(), None, None)
        qs = np.linspace(0, 1, self.n_thresholds + 1)[1:-1]
        for j in range(x.shape[1]):
            v = x[idx, j]
            order = np.argsort(v, kind="stable")
            sv = v[order]
            cs = np.cumsum(node_loss[order], axis=0)
            for t in np.unique(np.quantile(sv, qs)):
                k = np.searchsorted(sv, t, side="right")
                if k < min_n or idx.size - k < min_n:
                    continue
                score = cs[k - 1].min() + (cs[-1] - cs[k - 1]).min()
                if score < best[0] - 1e-12:
                    best = (score, j, _shortest_between(float(t), sv[k - 1], sv[k]))
        if best[1] is None:
            return leaf
        go_left = x[idx, best[1]] <= best[2]
        return {
            "feature": best[1],
            "threshold": best[2],
            "n": int(idx.size),
            "left": self._grow(x, gram, b, yy, losses, idx[go_left], depth - 1, min_n),
            "right": self._grow(x, gram, b, yy, losses, idx[~go_left], depth - 1, min_n),
        }

    def _fit_tree(self, feats, gram, b, yy, depth) -> dict:
        n, m = b.shape
        # Split candidates: each member alone, and the mean.
        losses = np.concatenate(
            [member_mse(gram, b, yy), combined_mse(np.full(m, 1.0 / m), gram, b, yy)[:, None]],
            axis=1,
        )
        min_n = max(1, int(self.min_leaf * n))
        return self._grow(feats, gram, b, yy, losses, np.arange(n), depth, min_n)

    def fit(self, val_forecasts, val_targets, features=None, terms=None) -> RuleRouter:
        m, w, h, c = val_forecasts.shape
        if features is None:
            features = np.zeros((w, c, 0))
        with warnings.catch_warnings():  # a feature never defined on short data: all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            self.fill_ = (
                np.nan_to_num(np.nanmedian(features.reshape(w * c, -1), axis=0))
                if features.shape[-1]
                else np.zeros(0)
            )
        self.missing_ = np.isnan(features).reshape(w * c, -1).any(axis=0)
        feats = self._fill(features)  # [W, C, F]
        gram, b, yy = window_gram(val_forecasts, val_targets) if terms is None else terms
        fit_w, held_w = inner_split(w, h)

        def rows_of(ws: np.ndarray) -> tuple[np.ndarray, ...]:
            """Features, gram, b, yy of windows ``ws``' rows (``MAX_ROUTER_ROWS`` at most)."""
            rows = window_rows(ws, c, self.seed)
            return tuple(flat_rows(a, rows) for a in (feats, gram, b, yy))

        scores = {}
        # no held-out windows (no more than the horizon): no depth can be checked, so none
        if held_w.size:
            fit, held = rows_of(fit_w), rows_of(held_w)  # once for every depth
            for depth in range(self.max_depth + 1):
                wts = self._apply(self._fit_tree(*fit, depth), held[0])
                scores[depth] = float(combined_mse(wts, *held[1:]).mean())
        self.inner_scores_ = scores
        if not scores:  # as the other learned routers: a mix nothing could check is not fitted
            (log.debug if self.quiet_fallback else log.warning)(
                "rules router: too few validation windows (%d) to hold any out; using equal "
                "weights",
                w,
            )
            self.depth_, self.tree_ = 0, {"weights": np.full(m, 1.0 / m), "n": int(w * c)}
            return self
        self.depth_ = min(scores, key=lambda d: scores[d] + 1e-9 * d)
        self.tree_ = self._fit_tree(*rows_of(np.arange(w)), self.depth_)
        return self

    # -------------------------------------------------------------------- applying

    def _fill(self, features: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(features), self.fill_, features)

    def _apply(self, node: dict, x: np.ndarray) -> np.ndarray:
        """x: [N, F] -> weights [N, M]."""
        if "weights" in node:
            return np.broadcast_to(node["weights"], (x.shape[0], node["weights"].size)).copy()
        left = x[:, node["feature"]] <= node["threshold"]
        m = self._leaf_size(node)
        out = np.empty((x.shape[0], m))
        out[left] = self._apply(node["left"], x[left])
        out[~left] = self._apply(node["right"], x[~left])
        return out

    def _leaf_size(self, node: dict) -> int:
        while "weights" not in node:
            node = node["left"]
        return node["weights"].size

    def weights(self, forecasts, features=None) -> np.ndarray:
        m, w, _, c = forecasts.shape
        if features is None:
            features = np.zeros((w, c, self.fill_.size))
        x = self._fill(features).reshape(w * c, -1)
        return self._apply(self.tree_, x).reshape(w, c, m)

    # -------------------------------------------------------------------- printing

    def rules(self) -> str:
        """The fitted tree as indented if/else rules."""
        fnames = self.feature_names or []
        mnames = self.member_names or []

        def fname(j: int) -> str:
            return fnames[j] if j < len(fnames) else f"feature_{j}"

        def mix(wts: np.ndarray) -> str:
            parts = [
                f"{v:.2f} {mnames[i] if i < len(mnames) else f'member_{i}'}"
                for i, v in sorted(enumerate(wts), key=lambda t: -t[1])
                if v > 0
            ]
            return " + ".join(parts)

        cnames = self.channel_names or []
        lines: list[str] = []

        def walk(node: dict, indent: str, reach: list[int]) -> None:
            """``reach``: the channels that can come to ``node`` (a split on the channel
            below another names only those it sends left)."""
            if "weights" in node:
                lines.append(f"{indent}use {mix(node['weights'])}    (n={node['n']})")
                return
            j, t = node["feature"], node["threshold"]
            left = right = reach
            if fname(j) == "channel" and cnames:  # the feature is the channel's index
                left, right = [c for c in reach if c <= t], [c for c in reach if c > t]
                test = f"channel in {{{', '.join(cnames[c] for c in left)}}}"
            else:  # the threshold as applied: it was chosen short enough to print whole
                test = f"{fname(j)} <= {t!r}"
                # a missing value is read as the validation median: say where that goes
                # (a literal reading sends it to the else branch)
                missing = getattr(self, "missing_", None)
                if missing is not None and missing[j] and self.fill_[j] <= t:
                    test += f" or {fname(j)} is missing"
            lines.append(f"{indent}if {test}:")
            walk(node["left"], indent + "    ", left)
            lines.append(f"{indent}else:")
            walk(node["right"], indent + "    ", right)

        walk(self.tree_, "", list(range(len(cnames))))
        return "\n".join(lines)

    def describe(self) -> str:
        if not self.inner_scores_:
            return "rules: equal weights (too few validation windows to hold any out)"
        return f"rules (depth {self.depth_}, inner-val MSE by depth {self.inner_scores_}):\n{self.rules()}"
