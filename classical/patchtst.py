"""PatchTST (Nie et al., "A Time Series is Worth 64 Words: Long-term Forecasting with
Transformers", ICLR 2023): the Transformer baseline Time-LLM's patching comes from.

Every channel is forecast as its own univariate series (channel independence) by one
shared network:

```
x                        [B, C, L]
RevIN (per window)       [B, C, L]          subtract the mean, divide by the std
pad the end, patch       [B, C, N, P]       N = (L - P) // S + 2 (S copies of the last value)
patch embedding + pos    [B*C, N, D]        linear P -> D, learned positions, dropout
encoder x n_layers       [B*C, N, D]        attention with residual scores, BatchNorm
flatten head             [B, C, H]          linear N*D -> H
de-normalise             [B, C, H]
```

Differences from the authors' supervised model: no optional parts (individual heads,
learned RevIN affine, pre-norm, local attention masks). With ``residual_attention`` the
attention scores of each layer before the softmax are added to the next layer's, as
theirs does by default. The training is this package's (Adam, learning rate times
``lr_decay`` after each epoch, early stopping on validation MSE, the best weights kept);
the defaults follow their ETTh1 script (patch 16, stride 8, D=16, 4 heads, 3 layers,
d_ff 128, dropout 0.3, batch 128, lr 1e-4) with fewer epochs (see `PatchTST`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from classical._torch_train import WindowNetForecaster
from ensemble.dropout import FastDropout


def n_patches(seq_len: int, patch_len: int, stride: int) -> int:
    """Patches of a window padded at the end with ``stride`` copies of its last value."""
    return (seq_len - patch_len) // stride + 2


def check_shape(seq_len: int, patch_len: int, stride: int, d_model: int, n_heads: int) -> None:
    """Raise ValueError for a patch that does not fit L or heads that do not divide D."""
    if not 0 < patch_len <= seq_len or stride < 1:
        raise ValueError(
            f"patch_len must be in 1..seq_len ({seq_len}) and stride >= 1 "
            f"(got {patch_len}, {stride})"
        )
    if d_model % n_heads:
        raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")


class ResidualScoreAttention(nn.Module):
    """Multi-head self-attention whose pre-softmax scores can carry over from the
    previous layer (``prev``) and are returned for the next one.

    Args:
        d_model: D.
        n_heads: heads; D must be a multiple.
        dropout: dropout on the output projection.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Sequential(nn.Linear(d_model, d_model), FastDropout(dropout))

    def forward(self, x: Tensor, prev: Tensor | None) -> tuple[Tensor, Tensor]:
        """x: [B, N, D], prev: [B, heads, N, N] or None -> ([B, N, D], scores [B, heads, N, N])."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        scores = (q / math.sqrt(self.d_head)) @ k.transpose(-1, -2)  # scale the smaller
        if prev is not None:
            scores = scores + prev
        z = torch.softmax(scores, dim=-1) @ v  # [B, heads, N, d_head]
        return self.out(z.transpose(1, 2).reshape(b, n, -1)), scores


class BatchNormTokens(nn.Module):
    """BatchNorm over the feature axis of token sequences: [B, N, D] -> [B, N, D]."""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class EncoderLayer(nn.Module):
    """Post-norm Transformer layer: attention, add, norm; feed-forward, add, norm.

    Args:
        d_model: D.
        n_heads: attention heads.
        d_ff: feed-forward width.
        dropout: on the attention output, inside and after the feed-forward.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.attn = ResidualScoreAttention(d_model, n_heads, dropout)
        self.drop = FastDropout(dropout)
        self.norm_attn = BatchNormTokens(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff),
            nn.GELU(),
            FastDropout(dropout),
            nn.Linear(d_ff, d_model),
            FastDropout(dropout),
        )
        self.norm_ff = BatchNormTokens(d_model)

    def forward(self, x: Tensor, prev: Tensor | None) -> tuple[Tensor, Tensor]:
        """x: [B, N, D] -> ([B, N, D], this layer's attention scores)."""
        a, scores = self.attn(x, prev)
        x = self.norm_attn(x + self.drop(a))
        return self.norm_ff(x + self.ff(x)), scores


class PatchTSTNet(nn.Module):
    """The network, channels-first: [B, C, L] -> [B, C, H].

    Args:
        seq_len: L.
        pred_len: H.
        patch_len: P.
        stride: S.
        d_model: D.
        n_heads: attention heads.
        n_layers: encoder layers.
        d_ff: feed-forward width.
        dropout: dropout after the positions and inside the encoder.
        head_dropout: dropout on the forecast.
        residual_attention: add each layer's attention scores to the next layer's.
    """

    def __init__(
        self,
        seq_len: int,
        pred_len: int,
        patch_len: int = 16,
        stride: int = 8,
        d_model: int = 16,
        n_heads: int = 4,
        n_layers: int = 3,
        d_ff: int = 128,
        dropout: float = 0.3,
        head_dropout: float = 0.0,
        residual_attention: bool = True,
    ):
        super().__init__()
        check_shape(seq_len, patch_len, stride, d_model, n_heads)
        self.patch_len, self.stride = patch_len, stride
        self.n_patches = n_patches(seq_len, patch_len, stride)
        self.residual_attention = residual_attention
        self.embed = nn.Linear(patch_len, d_model)
        self.position = nn.Parameter(torch.empty(self.n_patches, d_model).uniform_(-0.02, 0.02))
        self.drop = FastDropout(dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)
        )
        self.head = nn.Sequential(
            nn.Flatten(start_dim=-2),
            nn.Linear(self.n_patches * d_model, pred_len),
            FastDropout(head_dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, L] -> [B, C, H]."""
        b, c, _ = x.shape
        mean = x.mean(dim=-1, keepdim=True)
        std = torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + 1e-5)
        x = (x - mean) / std
        x = torch.cat([x, x[..., -1:].expand(b, c, self.stride)], dim=-1)
        patches = x.unfold(-1, self.patch_len, self.stride)  # [B, C, N, P]
        z = self.drop(self.embed(patches) + self.position).flatten(0, 1)  # [B*C, N, D]
        prev = None
        for layer in self.layers:
            z, scores = layer(z, prev)
            prev = scores if self.residual_attention else None
        y = self.head(z).view(b, c, -1)
        return y * std + mean


class PatchTST(WindowNetForecaster):
    """PatchTST member.

    Args:
        seq_len: L.
        pred_len: H.
        patch_len: P (16 in the paper).
        stride: S (8).
        d_model: D (16 in the authors' ETTh scripts, 128 for the larger datasets).
        n_heads: attention heads (4; 16 for the larger datasets).
        n_layers: encoder layers (3).
        d_ff: feed-forward width (128; 256 for the larger datasets).
        dropout: encoder dropout (0.3; 0.2 for the larger datasets).
        head_dropout: dropout on the forecast (0).
        residual_attention: carry attention scores between layers (on, as theirs).
        lr: initial Adam learning rate (1e-4, theirs).
        batch_size: windows per step (128, theirs).
        epochs: maximum epochs (theirs: 100, with patience 100 on ETTh).
        patience: early-stopping patience in epochs (0: never stop early).
        lr_decay: learning-rate factor after each epoch (their ETTh schedule keeps the
            rate for 3 epochs, then multiplies it by 0.9 per epoch).
        seed: seeds the initial weights and the shuffling.
        progress: tqdm bar while fitting (None: only on a terminal).
        threads: torch intra-op threads (None: as set, e.g. by OMP_NUM_THREADS; the
            attention and feed-forward layers gain from several, unlike DLinear).
        device: "cpu", "cuda", or None (a GPU where torch sees one).
    """

    name = "patchtst"
    _OWN = (
        "patch_len stride d_model n_heads n_layers d_ff dropout head_dropout residual_attention"
    ).split()
    # [256 x C windows, N, d_ff] activations per forward pass: ~0.2 GB at ETTh1's C=7, L=512
    _EVAL_BATCH = _PREDICT_BATCH = 256

    def __init__(
        self,
        seq_len: int,
        pred_len: int,
        patch_len: int = 16,
        stride: int = 8,
        d_model: int = 16,
        n_heads: int = 4,
        n_layers: int = 3,
        d_ff: int = 128,
        dropout: float = 0.3,
        head_dropout: float = 0.0,
        residual_attention: bool = True,
        lr: float = 1e-4,
        batch_size: int = 128,
        epochs: int = 30,
        patience: int = 5,
        lr_decay: float = 0.9,
        seed: int = 0,
        progress: bool | None = None,
        threads: int | None = None,
        device: str | None = None,
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
            threads=threads,
            device=device,
        )
        self.patch_len, self.stride = int(patch_len), int(stride)
        self.d_model, self.n_heads, self.n_layers = int(d_model), int(n_heads), int(n_layers)
        self.d_ff, self.dropout, self.head_dropout = int(d_ff), float(dropout), float(head_dropout)
        self.residual_attention = bool(residual_attention)
        # a bad shape fails when the member is built, not after the members before it fit
        if min(self.d_model, self.n_heads, self.n_layers, self.d_ff) < 1:
            raise ValueError("d_model, n_heads, n_layers and d_ff must be > 0")
        check_shape(self.seq_len, self.patch_len, self.stride, self.d_model, self.n_heads)
        if not (0 <= self.dropout < 1 and 0 <= self.head_dropout < 1):
            raise ValueError("dropout and head_dropout must be in [0, 1)")

    def _build(self, n_channels: int) -> nn.Module:
        # channel-independent: the network does not depend on n_channels
        return PatchTSTNet(
            self.seq_len,
            self.pred_len,
            self.patch_len,
            self.stride,
            self.d_model,
            self.n_heads,
            self.n_layers,
            self.d_ff,
            self.dropout,
            self.head_dropout,
            self.residual_attention,
        )
