"""Time-LLM without the language model: the ablation of Tan et al. (2024).

"Are Language Models Actually Useful for Time Series Forecasting?" (NeurIPS 2024) removes
the LLM from Time-LLM and finds the forecasts about as good. This model keeps exactly what
Time-LLM trains outside the backbone that still makes sense without it: RevIN (no
affine), channel independence, the same patching and patch embedding, and a flatten head
to the horizon. No prototypes, no reprogramming, no prompt, no backbone.

Data flow for input windows x: [B, L, N]:

1. RevIN per series; channel independence: [B, L, N] -> [B*N, L].
2. Patches and the circular conv1d embedding: [B*N, Np, d_model].
3. Flatten head over the d_model features of every patch: [B, N, d_model, Np] -> [B, H, N].
"""

from __future__ import annotations

from torch import Tensor, nn

from timellm.layers import FlattenHead, PatchEmbedding, RevIN


class PatchLinear(nn.Module):
    """Patch embedding + linear head (Time-LLM with the LLM removed).

    Args:
        seq_len: lookback L.
        pred_len: horizon H.
        patch_len: patch length.
        stride: patch stride.
        d_model: patch embedding size.
        dropout: dropout of the patch embedding and the head.
    """

    def __init__(
        self,
        seq_len: int,
        pred_len: int,
        patch_len: int = 16,
        stride: int = 8,
        d_model: int = 32,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if patch_len > seq_len:
            raise ValueError(f"patch_len {patch_len} is longer than seq_len {seq_len}")
        self.seq_len, self.pred_len, self.d_model = seq_len, pred_len, d_model
        self.num_patches = PatchEmbedding.num_patches(seq_len, patch_len, stride)
        self.revin = RevIN()
        self.patch_embedding = PatchEmbedding(d_model, patch_len, stride, dropout)
        self.head = FlattenHead(d_model * self.num_patches, pred_len, dropout)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """All of them (no frozen backbone): `TimeLLM`'s interface."""
        return [p for p in self.parameters() if p.requires_grad]

    def forward(
        self, x: Tensor, prompt_ids: Tensor | None = None, prompt_mask: Tensor | None = None
    ) -> Tensor:
        """Forecast [B, L, N] -> [B, H, N]; the prompt arguments are accepted and ignored,
        so the Time-LLM trainer drives both models alike."""
        b, seq_len, n = x.shape
        if seq_len != self.seq_len:
            raise ValueError(f"expected windows of length {self.seq_len}, got {seq_len}")
        x_norm, mean, std = self.revin.normalise(x.float())
        series = x_norm.permute(0, 2, 1).reshape(b * n, seq_len)
        patches = self.patch_embedding(series)  # [B*N, Np, d_model]
        hidden = patches.reshape(b, n, self.num_patches, self.d_model).permute(0, 1, 3, 2)
        y = self.head(hidden).permute(0, 2, 1)  # [B, H, N]
        return self.revin.denormalise(y, mean, std)
