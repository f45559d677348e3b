"""DLinear and NLinear (Zeng et al., "Are Transformers Effective for Time Series Forecasting?", AAAI 2023).

DLinear splits each input window into a trend (a moving average with edge replication)
and a seasonal remainder, maps each with its own linear layer over time ``L -> H`` and
adds the two. NLinear subtracts the window's last value, applies one linear map and
adds the value back, which protects it against level shifts between train and test.

Both are channel-independent: the same map is applied to every channel (or one map per
channel with ``individual=True``), so the networks here work channels-first,
``[B, C, L] -> [B, C, H]``; the member transposes at its edges. Training follows the LTSF-Linear scripts: Adam,
MSE loss, learning rate halved after every epoch (LTSF-Linear starts halving one epoch
later; see `classical._torch_train`), early stopping on the validation MSE,
and the best-validation weights reloaded before any forecast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from classical._torch_train import WindowNetForecaster


def kernel_from_period(period: int, seq_len: int) -> int:
    """An odd moving-average kernel spanning one full period (24 -> 25), capped below L."""
    k = int(period) + (1 - int(period) % 2)
    return max(3, min(k, seq_len - (1 - seq_len % 2)))


class MovingAverage(nn.Module):
    """Centred moving average along time with the edges replicated, so length is kept.

    Args:
        kernel: odd window length.
    """

    def __init__(self, kernel: int):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"moving-average kernel must be odd and positive (got {kernel})")
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, L] -> [B, C, L]."""
        pad, lead = (self.kernel - 1) // 2, x.shape[:-1]
        # Window sums as differences of a running sum: O(L) instead of avg_pool's O(L*k),
        # and several times faster on CPU, where this op dominated a training step. The
        # edges are replicated and the sum's leading 0 added in one concatenation
        # (F.pad's replicate mode is the slower op on CPU).
        edges = (x[..., :1].expand(*lead, pad), x[..., -1:].expand(*lead, pad))
        c = torch.cat([x.new_zeros(*lead, 1), edges[0], x, edges[1]], dim=-1).cumsum(dim=-1)
        return (c[..., self.kernel :] - c[..., : -self.kernel]) / self.kernel


class TimeLinear(nn.Module):
    """A linear map over the time axis, shared by all channels or one per channel.

    Initialised like ``nn.Linear`` (uniform in ``±1/sqrt(L)``) in both cases.

    Args:
        seq_len: L (input steps).
        pred_len: H (output steps).
        n_channels: C; used only when ``individual``.
        individual: one weight matrix per channel instead of a shared one.
    """

    def __init__(self, seq_len: int, pred_len: int, n_channels: int, individual: bool):
        super().__init__()
        shape = (n_channels, pred_len, seq_len) if individual else (pred_len, seq_len)
        bound = 1.0 / math.sqrt(seq_len)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(shape[:-1]).uniform_(-bound, bound))
        self.individual = individual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, L] -> [B, C, H]."""
        if self.individual:
            return torch.einsum("bcl,chl->bch", x, self.weight) + self.bias
        return F.linear(x, self.weight, self.bias)


class DLinearNet(nn.Module):
    """Decomposition + two linear maps.

    Args:
        seq_len: L.
        pred_len: H.
        n_channels: C.
        kernel: moving-average length for the trend (odd).
        individual: one pair of maps per channel.
    """

    def __init__(
        self, seq_len: int, pred_len: int, n_channels: int, kernel: int = 25, individual=False
    ):
        super().__init__()
        self.trend = MovingAverage(kernel)
        self.seasonal_map = TimeLinear(seq_len, pred_len, n_channels, individual)
        self.trend_map = TimeLinear(seq_len, pred_len, n_channels, individual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, L] -> [B, C, H]."""
        trend = self.trend(x)
        return self.seasonal_map(x - trend) + self.trend_map(trend)


class NLinearNet(nn.Module):
    """Last-value normalisation + one linear map.

    Args:
        seq_len: L.
        pred_len: H.
        n_channels: C.
        individual: one map per channel.
    """

    def __init__(self, seq_len: int, pred_len: int, n_channels: int, individual: bool = False):
        super().__init__()
        self.map = TimeLinear(seq_len, pred_len, n_channels, individual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, L] -> [B, C, H]."""
        last = x[..., -1:]
        return self.map(x - last) + last


class DLinear(WindowNetForecaster):
    """DLinear member.

    Args:
        seq_len: L.
        pred_len: H.
        kernel: moving-average length (odd; 25 as in the paper).
        individual: one pair of maps per channel instead of shared ones.
        lr: initial Adam learning rate (LTSF ETTh scripts: 0.005).
        batch_size: training batch (LTSF ETTh scripts: 32).
        epochs: maximum epochs.
        patience: early-stopping patience in epochs (0: never stop early).
        lr_decay: learning-rate factor after each epoch, the first too (0.5).
        seed: seeds the initial weights and the shuffling.
        progress: tqdm bar while fitting (None: only on a terminal).
    """

    name = "dlinear"
    _OWN = ("kernel", "individual")

    def __init__(
        self,
        seq_len: int,
        pred_len: int,
        kernel: int = 25,
        individual: bool = False,
        lr: float = 0.005,
        batch_size: int = 32,
        epochs: int = 10,
        patience: int = 3,
        lr_decay: float = 0.5,
        seed: int = 0,
        progress: bool | None = None,
    ):
        super().__init__(
            seq_len,
            pred_len,
            lr=lr,
            batch_size=batch_size,
            epochs=epochs,
            patience=patience,
            lr_decay=lr_decay,
            seed=seed,
            progress=progress,
        )
        self.kernel = int(kernel)
        self.individual = bool(individual)

    def _build(self, n_channels: int) -> nn.Module:
        return DLinearNet(self.seq_len, self.pred_len, n_channels, self.kernel, self.individual)


class NLinear(DLinear):
    """NLinear member: DLinear's training, NLinear's model (no decomposition).

    Takes the same arguments as ``DLinear``; ``kernel`` is ignored.
    """

    name = "nlinear"

    def _build(self, n_channels: int) -> nn.Module:
        return NLinearNet(self.seq_len, self.pred_len, n_channels, self.individual)
