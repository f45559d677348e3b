"""iTransformer (Liu et al., "iTransformer: Inverted Transformers Are Effective for Time
Series Forecasting", ICLR 2024): the Transformer turned on its side. Each channel's
whole lookback is one token and attention mixes the channels, not the time steps; the
time axis is handled by the token embedding and the feed-forward layers.

```
x                        [B, C, L]
normalise (per window)   [B, C, L]          subtract each channel's mean, divide by its std
embed                    [B, C, D]          linear L -> D, dropout (one token per channel)
encoder x n_layers       [B, C, D]          attention over the C tokens, LayerNorm (post-norm)
LayerNorm, project       [B, C, H]          linear D -> H
de-normalise             [B, C, H]
```

It is the channel-mixing counterpart of PatchTST and DLinear (which forecast each
channel alone): a channel's forecast depends on the other channels' windows, but not on
their order (no position is given to the channel tokens).

Differences from the authors' model: the timestamp features their data loader appends as
extra tokens (4 for hourly data) are not used, as the window networks here do not see
the dates (LightGBM alone reads the first forecast step's calendar); the
optional attention variants (Flowformer, Reformer...) are not included. The training is
this package's (Adam on the MSE, learning rate times ``lr_decay`` after every epoch, early
stopping on the validation MSE over all windows, the best weights kept; theirs halves the
rate from the second epoch on, drops the last partial training batch and averages the
validation loss over batches). The defaults are their ETTh1 script's for H = 96 and 192
(D = d_ff = 256, 2 layers, 8 heads, dropout 0.1, lr 1e-4, batch 32, 10 epochs, patience
3); for H = 336 and 720 the script sets D = d_ff = 512, which this member takes only when
asked (``itransformer@d_model=512@d_ff=512``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from classical._torch_train import WindowNetForecaster
from ensemble.dropout import FastDropout


class ChannelAttention(nn.Module):
    """Multi-head self-attention over channel tokens, dropout on the attention weights.

    Args:
        d_model: D.
        n_heads: heads; D must be a multiple.
        dropout: on the attention probabilities (while training).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads, self.d_head, self.dropout = n_heads, d_model // n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, D] -> [B, C, D]."""
        b, c, _ = x.shape
        q, k, v = self.qkv(x).view(b, c, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        z = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # [B, heads, C, d_head]
        return self.out(z.transpose(1, 2).reshape(b, c, -1))


class EncoderLayer(nn.Module):
    """Post-norm Transformer layer: attention, add, LayerNorm; feed-forward, add, LayerNorm.

    Args:
        d_model: D.
        n_heads: attention heads.
        d_ff: feed-forward width.
        dropout: on the attention weights, its output, inside and after the feed-forward.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.attn = ChannelAttention(d_model, n_heads, dropout)
        self.drop = FastDropout(dropout)
        self.norm_attn = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff),
            nn.GELU(),
            FastDropout(dropout),
            nn.Linear(d_ff, d_model),
            FastDropout(dropout),
        )
        self.norm_ff = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, D] -> [B, C, D]."""
        x = self.norm_attn(x + self.drop(self.attn(x)))
        return self.norm_ff(x + self.ff(x))


class ITransformerNet(nn.Module):
    """The network, channels-first: [B, C, L] -> [B, C, H]. No weight depends on C.

    Args:
        seq_len: L.
        pred_len: H.
        d_model: D.
        n_heads: attention heads.
        n_layers: encoder layers.
        d_ff: feed-forward width.
        dropout: after the embedding and inside the encoder.
    """

    def __init__(
        self,
        seq_len: int,
        pred_len: int,
        d_model: int = 256,
        n_heads: int = 8,
        n_layers: int = 2,
        d_ff: int = 256,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(seq_len, d_model), FastDropout(dropout))
        self.layers = nn.Sequential(
            *(EncoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        )
        self.norm = nn.LayerNorm(d_model)
        self.project = nn.Linear(d_model, pred_len)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, L] -> [B, C, H]."""
        mean = x.mean(dim=-1, keepdim=True)
        std = torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + 1e-5)
        z = self.layers(self.embed((x - mean) / std))  # [B, C, D]
        return self.project(self.norm(z)) * std + mean


class ITransformer(WindowNetForecaster):
    """iTransformer member.

    Args:
        seq_len: L.
        pred_len: H.
        d_model: D (256 in the authors' ETTh1 script for H <= 192, 512 beyond).
        n_heads: attention heads (8).
        n_layers: encoder layers (2).
        d_ff: feed-forward width (as D in their scripts).
        dropout: dropout (0.1).
        lr: initial Adam learning rate (1e-4, theirs).
        batch_size: windows per step (32, theirs).
        epochs: maximum epochs (10, theirs).
        patience: early-stopping patience in epochs (3, theirs; 0: never stop early).
        lr_decay: learning-rate factor after each epoch (0.5: their "type1" halves it
            from the second epoch on, this from the first).
        seed: seeds the initial weights and the shuffling.
        progress: tqdm bar while fitting (None: only on a terminal).
        threads: torch intra-op threads (None: as set, e.g. by OMP_NUM_THREADS).
        device: "cpu", "cuda", or None (a GPU where torch sees one).
    """

    name = "itransformer"
    _OWN = ("d_model", "n_heads", "n_layers", "d_ff", "dropout")
    # [1024 windows x C tokens, d_ff] activations per forward pass: small for any C here
    _EVAL_BATCH = _PREDICT_BATCH = 1024

    def __init__(
        self,
        seq_len: int,
        pred_len: int,
        d_model: int = 256,
        n_heads: int = 8,
        n_layers: int = 2,
        d_ff: int = 256,
        dropout: float = 0.1,
        lr: float = 1e-4,
        batch_size: int = 32,
        epochs: int = 10,
        patience: int = 3,
        lr_decay: float = 0.5,
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
        self.d_model, self.n_heads, self.n_layers = int(d_model), int(n_heads), int(n_layers)
        self.d_ff, self.dropout = int(d_ff), float(dropout)
        # a bad shape fails when the member is built, not after the members before it fit
        if min(self.d_model, self.n_heads, self.n_layers, self.d_ff) < 1:
            raise ValueError("d_model, n_heads, n_layers and d_ff must be > 0")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")

    def _build(self, n_channels: int) -> nn.Module:
        # channels are tokens: the network does not depend on n_channels
        return ITransformerNet(
            self.seq_len,
            self.pred_len,
            self.d_model,
            self.n_heads,
            self.n_layers,
            self.d_ff,
            self.dropout,
        )
