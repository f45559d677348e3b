"""Building blocks of Time-LLM: instance normalisation, patching, text prototypes,
the reprogramming cross-attention and the flatten head.

Each block follows the official Time-LLM model (KimMeen/Time-LLM) in its maths; the
places where we differ are named in `docs/timellm.md`.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ensemble.dropout import FastDropout, fast_dropout

log = logging.getLogger(__name__)


def fast_dropout_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: object,
) -> tuple[Tensor, None]:
    """Hugging Face attention function: SDPA, except attention dropout on CPU in training.

    SDPA with dropout on CPU falls back to a math path that draws its mask with the slow
    generator; there we compute the same softmax attention with `fast_dropout`.
    Masked scores use the dtype's minimum instead of -inf so that rows with no visible
    key (left padding) stay finite.

    Args:
        query: [B, H, Tq, d]; key, value: [B, Hkv, Tk, d]; attention_mask: boolean
            [B, 1, Tq, Tk] (True = attend), additive float, or None.

    Returns:
        ([B, Tq, H, d] attention output, None).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if dropout == 0.0 or query.device.type != "cpu":
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    low = torch.finfo(scores.dtype).min
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, low)
        else:
            scores = scores + attention_mask
    elif (is_causal if is_causal is not None else getattr(module, "is_causal", False)) and (
        query.shape[2] > 1
    ):
        tq, tk = query.shape[2], key.shape[2]
        causal = torch.ones(tq, tk, dtype=torch.bool, device=query.device).tril(tk - tq)
        scores = scores.masked_fill(~causal, low)
    probs = fast_dropout(torch.softmax(scores, dim=-1), dropout, True)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


_FAST_ATTENTION = "timellm_fast_dropout"


def use_fast_dropout(model: nn.Module) -> None:
    """Make a Hugging Face model's dropout use `fast_dropout` (in place; same maths).

    Swaps every `nn.Dropout` for a `FastDropout` with the same p and, where the model
    routes attention through `AttentionInterface`, selects `fast_dropout_attention`.
    """
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))
    if not hasattr(model, "set_attn_implementation"):
        return
    if not getattr(model, "_supports_attention_backend", True):
        return  # its own attention code (RoFormer, Megatron-BERT): setting one only warns
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(_FAST_ATTENTION, fast_dropout_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(_FAST_ATTENTION, sdpa_mask)
    if getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager"):
        model.set_attn_implementation(_FAST_ATTENTION)


class RevIN(nn.Module):
    """Reversible instance normalisation without affine parameters.

    Statistics are taken per series over time and detached, as in the official code, so
    the gradient does not flow through the mean and standard deviation.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def normalise(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalise each series.

        Args:
            x: [B, L, N] input windows.

        Returns:
            The normalised windows [B, L, N], the mean [B, 1, N] and the std [B, 1, N].
        """
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        return (x - mean) / std, mean, std

    @staticmethod
    def denormalise(y: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        """Undo `normalise` on a forecast.

        Args:
            y: [B, H, N] forecast in normalised units.
            mean: [B, 1, N].
            std: [B, 1, N].

        Returns:
            [B, H, N] forecast in the input's units.
        """
        return y * std + mean


class PatchEmbedding(nn.Module):
    """Cut each series into overlapping patches and embed them.

    The series is padded at its end with `stride` copies of its last value, then cut into
    patches of `patch_len` every `stride` steps; a circular conv1d (kernel 3, no bias)
    along the patch axis maps each patch to `d_model` features, mixing neighbouring
    patches, as in the official `TokenEmbedding`.
    """

    def __init__(self, d_model: int, patch_len: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.patch_len = patch_len
        self.stride = stride
        self.conv = nn.Conv1d(
            patch_len, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False
        )
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="leaky_relu")
        self.dropout = FastDropout(dropout)

    @staticmethod
    def num_patches(seq_len: int, patch_len: int, stride: int) -> int:
        """Number of patches for a series of `seq_len` after the end padding."""
        return (seq_len + stride - patch_len) // stride + 1

    def forward(self, x: Tensor) -> Tensor:
        """Embed patches.

        Args:
            x: [S, L] series (S = batch x channels).

        Returns:
            [S, P, d_model] patch embeddings, P = `num_patches(L, ...)`.
        """
        x = torch.cat([x, x[:, -1:].expand(-1, self.stride)], dim=1)
        patches = x.unfold(dimension=1, size=self.patch_len, step=self.stride)  # [S, P, patch_len]
        out = self.conv(patches.transpose(1, 2)).transpose(1, 2)
        return self.dropout(out)


class FullPrototypes(nn.Module):
    """Text prototypes as the official code makes them: a linear map over the vocabulary.

    prototypes = W @ E + b, with E the frozen word embedding [V, D] and W [P, V]. It costs
    P x V x D multiply-adds forward and again for W's gradient, every training step.
    """

    def __init__(self, vocab_size: int, num_prototypes: int) -> None:
        super().__init__()
        self.mapping = nn.Linear(vocab_size, num_prototypes)

    def forward(self, word_embeddings: Tensor) -> Tensor:
        """Map the vocabulary to prototypes.

        Args:
            word_embeddings: [V, D] frozen input embedding of the backbone.

        Returns:
            [P, D] prototypes.
        """
        e = word_embeddings.to(self.mapping.weight.dtype)
        return self.mapping(e.t()).t()


class LowRankPrototypes(nn.Module):
    """The same set of prototype functions as `FullPrototypes`, at P x D x D cost.

    With the thin decomposition E = U S Vt (rank r <= D), W @ E = (W @ U) @ (S Vt). We
    train A = W @ U [P, r] directly and keep B = S Vt [r, D] as a buffer. Every prototype
    matrix the full map can express is expressible here and the reverse, so the function
    class is unchanged; Adam's per-coordinate steps differ, which is why this is a named
    deviation. A starts with the distribution W @ U has under the full map's default
    initialisation: U has orthonormal columns, so the entries are i.i.d. with variance
    1 / (3V), drawn here as a normal.

    The basis is saved with the weights (a persistent buffer): eigenvector signs are
    arbitrary and may differ between machines or libraries, and A is only meaningful
    with the B it was trained against. State dicts written before it was saved lack it;
    loading one keeps the basis recomputed here.
    """

    def __init__(self, word_embeddings: Tensor, num_prototypes: int) -> None:
        super().__init__()
        vocab_size = word_embeddings.shape[0]
        # E^T E = V S^2 V^T: a [D, D] eigenproblem instead of an SVD of the tall E. The
        # gram is formed in float32 (V x D^2 multiply-adds: seconds even for a 150k x 2048
        # vocabulary), the eigendecomposition in float64.
        e = word_embeddings.detach().float()
        eigvals, eigvecs = torch.linalg.eigh((e.t() @ e).double())
        keep = eigvals > eigvals.max() * 1e-10  # drop numerically null directions
        s = eigvals[keep].sqrt()
        basis = (s[:, None] * eigvecs[:, keep].t()).to(torch.float32)  # [r, D]
        self.register_buffer("basis", basis)
        self.weight = nn.Parameter(
            torch.randn(num_prototypes, basis.shape[0]) / math.sqrt(3 * vocab_size)
        )
        bound = 1 / math.sqrt(vocab_size)
        self.bias = nn.Parameter(torch.empty(num_prototypes).uniform_(-bound, bound))

    def _load_from_state_dict(
        self, state_dict: dict[str, Tensor], prefix: str, *args: object
    ) -> None:
        if prefix + "basis" not in state_dict:
            # An older checkpoint: keep the recomputed basis (the right one only if this
            # machine's eigh returns the signs of the one it was trained on).
            log.warning(
                "%sbasis missing from the state dict (written before it was saved): "
                "using the basis recomputed from the backbone's embeddings",
                prefix,
            )
            state_dict[prefix + "basis"] = self.basis
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, word_embeddings: Tensor) -> Tensor:
        """Prototypes [P, D]; `word_embeddings` is unused (its factor lives in `basis`)."""
        return self.weight @ self.basis + self.bias[:, None]


class ReprogrammingLayer(nn.Module):
    """Cross-attention from patch embeddings (queries) to text prototypes (keys, values).

    Args:
        d_model: patch embedding size.
        n_heads: attention heads.
        d_keys: size per head (the official passes d_ff here).
        d_llm: the width of the backbone's input embeddings (its hidden size, but for
            factorised embeddings: ALBERT, ELECTRA), the prototypes' and output size.
        attention_dropout: dropout on the attention weights.
    """

    def __init__(
        self, d_model: int, n_heads: int, d_keys: int, d_llm: int, attention_dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_keys * n_heads)
        self.key = nn.Linear(d_llm, d_keys * n_heads)
        self.value = nn.Linear(d_llm, d_keys * n_heads)
        self.out = nn.Linear(d_keys * n_heads, d_llm)
        self.dropout = FastDropout(attention_dropout)

    def project_prototypes(self, prototypes: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of the prototypes.

        Args:
            prototypes: [P, d_llm].

        Returns:
            Keys and values, each [P, n_heads, d_keys].
        """
        p = prototypes.shape[0]
        return (
            self.key(prototypes).view(p, self.n_heads, -1),
            self.value(prototypes).view(p, self.n_heads, -1),
        )

    def forward(self, patches: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """Reprogram patches into the backbone's embedding space.

        Args:
            patches: [S, Np, d_model] patch embeddings.
            keys: [P, n_heads, d_keys] from `project_prototypes`.
            values: [P, n_heads, d_keys].

        Returns:
            [S, Np, d_llm].
        """
        s, n, _ = patches.shape
        q = self.query(patches).view(s, n, self.n_heads, -1)
        if self.training and self.dropout.p > 0:  # dropout on the attention weights
            scores = torch.einsum("blhe,she->bhls", q, keys) / math.sqrt(q.shape[-1])
            attn = self.dropout(torch.softmax(scores, dim=-1))
            out = torch.einsum("bhls,she->blhe", attn, values)
        else:  # the same attention in one fused kernel, without the [S, h, Np, P] scores
            # (2.4x on CPU: benchmarks/hot_paths.py; float32 sums in another order). Every
            # series' queries form one sequence per head, against the prototypes' keys
            # once: not expanded over the S series (equal up to float32 rounding, about
            # 20 % faster on CPU: BENCHMARKS.md, thirtieth session)
            q = q.reshape(s * n, self.n_heads, -1).transpose(0, 1)[None]  # [1, h, S*Np, e]
            k, v = (t.transpose(0, 1)[None] for t in (keys, values))  # [1, h, P, e]
            out = F.scaled_dot_product_attention(q, k, v)[0].transpose(0, 1)  # [S*Np, h, e]
        return self.out(out.reshape(s, n, -1))


class FlattenHead(nn.Module):
    """Flatten [d_ff, patches] per series and map linearly to the horizon, then dropout."""

    def __init__(self, in_features: int, pred_len: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, pred_len)
        self.dropout = FastDropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x: [B, N, d_ff, Np]. Returns: [B, N, H]."""
        return self.dropout(self.linear(x.flatten(start_dim=-2)))
