"""A small gating network: window features -> softmax weights over members.

A mixture-of-experts gate over frozen experts: a two-layer MLP maps each window's
(and channel's) features to M logits; the loss is the combined forecast's MSE, computed
exactly from the per-window quadratic form (``router.objective``), so a training step
costs O(M^2) per sample whatever the horizon. The last layer starts at zero, i.e. at the
prior: the per-channel greedy (Caruana) weights of the fitting windows mixed with a floor
of uniform weight (``prior="uniform"``: the mean). Weight decay, dropout, early stopping
on a time-ordered inner split and a blend toward uniform weights keep it close to the
prior unless validation says otherwise. Adam moves each parameter by about ``lr`` a step
whatever the gradient's size, so in a few hundred steps the net could not learn the floor
away (a member forecasting 1e6 kept weight 0.005, a combined MSE of 3e7): on the inner
split the gate trained from the first floor competes with the priors alone of the
smaller floors, and a prior that beats it is kept without a net (training from each
floor would triple the fit, which ``learned`` repeats in every fold). On
wide data (more than ``MAX_ROUTER_ROWS`` window-channel rows) it trains and early-stops
on a seeded draw of the rows.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np

from router.combiners import PRIORS, Combiner, prior_logits, smaller_floor
from router.objective import (
    choose_shrinkage,
    combined_mse,
    inner_split,
    window_gram,
    window_rows,
)

if TYPE_CHECKING:
    import torch

    from router.gate_net import GateNet

log = logging.getLogger(__name__)


class TorchRouter(Combiner):
    """MLP gate trained to minimise the combined forecast's validation MSE.

    Args:
        hidden: hidden units.
        dropout: dropout rate.
        lr, weight_decay: AdamW settings.
        batch_size: samples (window x channel) per step.
        max_epochs, patience: early stopping on the inner split.
        shrink: blend toward uniform weights chosen on the inner split.
        prior: "greedy" (start from per-channel greedy weights) or "uniform".
        prior_floors: shares of uniform weight mixed into the greedy prior: the gate
            trains from the first; a later one's prior alone replaces the trained gate
            where it scores better on the inner split (a tie keeps the gate). At 0 a
            member that greedy drops is never back.
        seed: torch seed.
        feature_names: names of the F feature columns (``channel`` is embedded).
    """

    name = "learned_torch"
    needs_features = True

    def __init__(
        self,
        hidden: int = 32,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-3,
        batch_size: int = 512,
        max_epochs: int = 60,
        patience: int = 8,
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
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.shrink = shrink
        self.seed = seed
        self.feature_names = feature_names
        self.net_: GateNet | None = None
        self.epochs_: int = 0
        self.floor_: float = self.prior_floors[0]
        self.lam_: float = 0.0
        self.inner_score_: float = np.inf

    # -------------------------------------------------------------------- inputs

    def _prepare(self, features: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """[W, C, F] -> standardised features with NaN as 0 plus missing flags [N, F'], channel [N]."""
        import torch

        w, c, _ = features.shape
        x = features.reshape(w * c, -1).astype(np.float64)
        miss = np.isnan(x[:, self.miss_cols_]).astype(np.float64)
        x = np.nan_to_num((x - self.mu_) / self.sd_)
        x = np.clip(x, -6, 6)  # heavy-tailed log errors must not dominate a step
        ch = np.broadcast_to(np.arange(c)[None], (w, c)).reshape(-1)
        return torch.tensor(np.concatenate([x, miss], 1), dtype=torch.float32), torch.tensor(ch)

    def _new_net(self, n_in: int, n_channels: int, m: int, prior: np.ndarray) -> GateNet:
        import torch

        from router.gate_net import GateNet

        torch.manual_seed(self.seed)
        net = GateNet(n_in, n_channels, m, self.hidden, self.dropout)
        net.prior.copy_(torch.tensor(prior, dtype=torch.float32))
        return net

    def _train(
        self, data, epochs: int, m: int, prior: np.ndarray, valid=None
    ) -> tuple[GateNet, int]:
        """Train for up to ``epochs`` (early stopping on ``valid``); returns (net, best epoch count)."""
        import torch

        from router import gate_net

        x, ch, gram, b, yy = data
        net = self._new_net(x.shape[1], prior.shape[0], m, prior)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        best = (np.inf, 0, None)
        if valid is not None:  # epoch 0: the prior alone
            with torch.no_grad():
                net.eval()
                score = float(gate_net.gate_loss(net(valid[0], valid[1]), *valid[2:]))
            best = (score, 0, {k: v.clone() for k, v in net.state_dict().items()})
        for epoch in range(1, epochs + 1):
            net.train()
            for idx in torch.randperm(x.shape[0], generator=gen).split(self.batch_size):
                opt.zero_grad()
                gate_net.gate_loss(net(x[idx], ch[idx]), gram[idx], b[idx], yy[idx]).backward()
                opt.step()
            if valid is None:
                continue
            net.eval()
            with torch.no_grad():
                score = float(gate_net.gate_loss(net(valid[0], valid[1]), *valid[2:]))
            if score < best[0] - 1e-7:
                best = (score, epoch, {k: v.clone() for k, v in net.state_dict().items()})
            elif epoch - best[1] >= self.patience:
                break
        if valid is not None:
            net.load_state_dict(best[2])
            return net, best[1]
        return net, epochs

    # -------------------------------------------------------------------- interface

    def fit(self, val_forecasts, val_targets, features=None, terms=None) -> TorchRouter:
        from router.gate_net import one_thread

        with one_thread():
            return self._fit(val_forecasts, val_targets, features, terms)

    def _fit(self, val_forecasts, val_targets, features, terms) -> TorchRouter:
        import torch

        if features is None:
            raise ValueError("the torch router needs window features [W, C, F]")
        m, w, h, c = val_forecasts.shape
        if m == 1:  # nothing to weigh: weight 1, as every other rule gives a single member
            log.info("torch router: a single member; weight 1")
            self.net_, self.epochs_, self.lam_, self.inner_score_ = None, 0, 0.0, float("nan")
            return self
        fit_w, held_w = inner_split(w, h)
        self.lam_ = 0.0  # chosen below, or 1 (the mean) when nothing can be held out
        if held_w.size == 0:  # nothing to check a feature-conditioned model on: the mean
            (log.debug if self.quiet_fallback else log.warning)(
                "torch router: too few validation windows to hold any out; using equal weights"
            )
            fit_w, self.lam_, self.epochs_ = np.arange(w), 1.0, 0
        flat = features[fit_w].reshape(fit_w.size * c, -1).astype(np.float64)
        with warnings.catch_warnings():  # a feature never defined on short data: all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            self.mu_ = np.nan_to_num(np.nanmean(flat, axis=0))
            self.sd_ = np.nan_to_num(np.nanstd(flat, axis=0)) + 1e-6
        self.miss_cols_ = np.flatnonzero(np.isnan(features).reshape(w * c, -1).any(axis=0))
        x, ch = self._prepare(features)
        terms = window_gram(val_forecasts, val_targets) if terms is None else terms
        # float64: a member forecasting 1e20 has a gram of 1e40, inf in float32, and the
        # loss would be NaN even at weight 0 (the net itself stays float32)
        gram, b, yy = (
            torch.tensor(a.reshape(w * c, *a.shape[2:]), dtype=torch.float64) for a in terms
        )
        # windows' rows of the flattened [W * C] arrays, MAX_ROUTER_ROWS at most
        rows = lambda ws: torch.tensor(window_rows(ws, c, self.seed))  # noqa: E731
        part = lambda r: (x[r], ch[r], gram[r], b[r], yy[r])  # noqa: E731
        self.inner_score_ = float("nan")
        self.floor_ = self.prior_floors[0]  # chosen below, unless nothing is held out
        if held_w.size:
            fit_r, held_r = rows(fit_w), rows(held_w)
            held_np = [a[held_r].numpy() for a in (gram, b, yy)]
            prior = prior_logits(self.prior, terms[fit_w], self.floor_)
            net, self.epochs_ = self._train(
                part(fit_r), self.max_epochs, m, prior, valid=part(held_r)
            )
            net.eval()
            with torch.no_grad():
                p_held = torch.softmax(net(x[held_r], ch[held_r]).double(), -1).numpy()
            # the gate trained from the first floor against each smaller floor's prior alone
            floor, p_prior = smaller_floor(
                self.prior,
                terms[fit_w],
                self.prior_floors,
                held_r.numpy() % c,
                held_np,
                float(combined_mse(p_held, *held_np).mean()),
            )
            if floor is not None:  # a floor the gate could not learn away: that prior, no net
                self.floor_, self.epochs_, p_held = floor, 0, p_prior
            if self.shrink:
                self.lam_, self.inner_score_ = choose_shrinkage(p_held, *held_np)
            else:
                self.inner_score_ = float(combined_mse(p_held, *held_np).mean())
        log.info(
            "torch router: prior floor %.2f, %d epochs, shrink %.2f, inner-val MSE %.4f (on "
            "the windows that chose them: optimistic)",
            self.floor_,
            self.epochs_,
            self.lam_,
            self.inner_score_,
        )
        prior = prior_logits(self.prior, terms, self.floor_)
        self.net_, _ = self._train(part(rows(np.arange(w))), self.epochs_, m, prior)
        self.net_.eval()
        return self

    def weights(self, forecasts, features=None) -> np.ndarray:
        m, w, _, c = forecasts.shape
        if self.net_ is None:  # fitted on a single member: no gate
            return np.full((w, c, m), 1.0 / m)
        import torch

        from router.gate_net import one_thread

        x, ch = self._prepare(features)
        with torch.no_grad(), one_thread():
            p = torch.softmax(self.net_(x, ch).double(), -1).numpy()
        return ((1 - self.lam_) * p + self.lam_ / m).reshape(w, c, m)

    def describe(self) -> str:
        if self.net_ is None:
            return "torch router: a single member, weight 1"
        # the held-out windows chose the floor, the epoch count and the shrinkage: their
        # MSE is the best of those choices, lower than unseen windows would give
        return (
            f"torch router: prior floor {self.floor_:.2f}, {self.epochs_} epochs, shrink "
            f"{self.lam_:.2f}, inner-val MSE {self.inner_score_:.4f} (the windows that chose "
            "the floor, the stopping point and shrinkage: optimistic)"
        )
