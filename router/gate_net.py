"""The torch router's gate: window features (+ channel) -> logits over members, and the
combined-MSE loss it is trained on. Its own module so that ``import router`` does not
import torch: `router.learned_torch` imports this only when a torch router is fitted.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def one_thread():
    """Tiny matrices: extra threads only add synchronisation (and stall on a busy machine)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


class GateNet(nn.Module):
    """features [N, F] (+ channel index [N]) -> logits [N, M]."""

    def __init__(
        self, n_features: int, n_channels: int, n_members: int, hidden: int, dropout: float
    ):
        super().__init__()
        self.channel = nn.Embedding(n_channels, 4)
        self.body = nn.Sequential(
            nn.Linear(n_features + 4, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_members),
        )
        nn.init.zeros_(self.body[-1].weight)  # start from the prior
        nn.init.zeros_(self.body[-1].bias)
        self.register_buffer("prior", torch.zeros(n_channels, n_members))

    def forward(self, x: torch.Tensor, ch: torch.Tensor) -> torch.Tensor:
        return self.prior[ch] + self.body(torch.cat([x, self.channel(ch)], dim=-1))


def gate_loss(
    logits: torch.Tensor, gram: torch.Tensor, b: torch.Tensor, yy: torch.Tensor
) -> torch.Tensor:
    """Mean combined MSE of softmax(logits): [N, M], [N, M, M], [N, M], [N] -> scalar, in
    the terms' precision (float64 from the router: a huge forecast's gram overflows float32)."""
    p = torch.softmax(logits.to(gram.dtype), dim=-1)
    return (torch.einsum("nm,nmk,nk->n", p, gram, p) - 2 * (p * b).sum(-1) + yy).mean()
