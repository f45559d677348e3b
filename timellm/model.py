"""Time-LLM: reprogram time-series patches into a frozen language model.

Data flow for input windows x: [B, L, N] (see `timellm.explain` for a printed version):

1. RevIN (no affine) per series; channel independence: [B, L, N] -> [B*N, L].
2. Patches (pad `stride` copies of the last value, length 16, stride 8) and a circular
   conv1d embedding: [B*N, Np, d_model].
3. Text prototypes [P, E] from the backbone's word embeddings [V, E] (learned map).
4. Reprogramming: multi-head cross-attention, patches query the prototypes: [B*N, Np, E].
5. Prompt prefix: embeddings of the pre-tokenised prompt [B*N, T, E] before the patches.
6. The frozen, truncated backbone ([B*N, T + Np, E] in, hidden size D out); keep the
   patch positions' first d_ff features: [B*N, Np, d_ff].
7. Flatten head to the horizon, undo RevIN: [B, H, N].

E is the width the backbone takes its inputs in, D the width of its hidden states: equal
except for factorised embeddings (ALBERT, ELECTRA: E < D, projected up inside the model).

Differences from the official code (all listed with their measured effects in
docs/timellm.md): prompts are masked and left-padded with position ids from the mask;
decoder backbones run the prompt once without gradient and reuse its key/value cache;
prototypes and their keys/values are cached whenever no gradient is needed; optional
low-rank prototype parameterisation; no attention/hidden-state outputs.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ensemble.errors import UserError
from timellm.backbone import Backbone
from timellm.layers import (
    FlattenHead,
    FullPrototypes,
    LowRankPrototypes,
    PatchEmbedding,
    ReprogrammingLayer,
    RevIN,
    use_fast_dropout,
)


class TimeLLM(nn.Module):
    """Time-LLM forecaster over a frozen backbone.

    Args:
        backbone: from `timellm.backbone.load_backbone`; its weights stay frozen.
        seq_len: lookback L.
        pred_len: horizon H.
        patch_len: patch length (16 in the paper).
        stride: patch stride (8).
        d_model: patch embedding size.
        d_ff: backbone features kept per patch position (and the reprogramming size per
            head, as in the official code).
        n_heads: reprogramming heads.
        num_prototypes: text prototypes P.
        dropout: dropout of the patch embedding and the head.
        prototype_map: "full" (official: Linear over the whole vocabulary, P*V*D per step)
            or "lowrank" (same function class through E's thin decomposition, P*D*D).
        prefix_cache: for causal backbones, run the prompt without gradient once and let
            the patches attend to its cached keys/values (exact; saves the prompt's
            backward). Ignored for bidirectional backbones, where the prompt attends to
            the patches.
        compute_dtype: run the forward under autocast to this dtype (e.g. torch.bfloat16);
            None keeps the parameters' dtypes. On CPUs without AMX bf16 autocast was
            slower than float32 in our measurements (docs/timellm.md).
        fast_dropout: draw the backbone's dropout masks (in training mode) with the
            cheaper CPU generator of `timellm.layers.fast_dropout`; same distribution.
            Modifies the backbone module in place.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        seq_len: int,
        pred_len: int,
        patch_len: int = 16,
        stride: int = 8,
        d_model: int = 32,
        d_ff: int = 128,
        n_heads: int = 8,
        num_prototypes: int = 1000,
        dropout: float = 0.1,
        prototype_map: Literal["full", "lowrank"] = "full",
        prefix_cache: bool = True,
        compute_dtype: torch.dtype | None = None,
        fast_dropout: bool = True,
    ) -> None:
        super().__init__()
        if d_ff > backbone.hidden_size:
            raise ValueError(f"d_ff {d_ff} exceeds the backbone hidden size {backbone.hidden_size}")
        self.seq_len, self.pred_len, self.d_ff = seq_len, pred_len, d_ff
        self.is_decoder = backbone.is_decoder
        self.prefix_cache = prefix_cache
        # transformers 5 renamed the key/value cache argument (past_key_values -> cache,
        # the old name to be removed in 5.40); 4.x only knows the old one.
        forward_args = inspect.signature(backbone.model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        # transformers 4.x gives some encoders no ``use_cache`` (ALBERT, DeBERTa, MPNet)
        # or ``position_ids`` (DistilBERT), and no ``**kwargs`` that would take them.
        anything = any(p.kind is p.VAR_KEYWORD for p in forward_args.values())
        self._takes_use_cache = anything or "use_cache" in forward_args
        self._takes_positions = anything or "position_ids" in forward_args
        # A BERT-shaped encoder's last layer computes the patch rows only (`_last_layer_rows`):
        # the model reads no other row of it.
        self._patch_rows_last = _bert_shaped(backbone.model)
        self.compute_dtype = compute_dtype
        self.backbone_name = backbone.name
        self.hidden_size = backbone.hidden_size
        self.tokenizer = backbone.tokenizer  # for callers building prompts (not a module)
        self.num_patches = PatchEmbedding.num_patches(seq_len, patch_len, stride)

        self.llm = backbone.model  # frozen; registered so .to(device) moves it too
        if fast_dropout:
            use_fast_dropout(self.llm)
        self.revin = RevIN()
        self.patch_embedding = PatchEmbedding(d_model, patch_len, stride, dropout)
        embeddings = backbone.input_embeddings()
        # E: the width inputs_embeds must have (the prototypes' and the prompt's), not the
        # hidden size D, which ALBERT / ELECTRA make wider than their embeddings.
        self.embedding_size = int(embeddings.shape[1])
        self.vocab_rows = int(embeddings.shape[0])  # token ids the table can look up
        if prototype_map == "full":
            self.prototypes: nn.Module = FullPrototypes(embeddings.shape[0], num_prototypes)
        elif prototype_map == "lowrank":
            self.prototypes = LowRankPrototypes(embeddings, num_prototypes)
        else:
            raise ValueError(f"prototype_map must be 'full' or 'lowrank', got {prototype_map!r}")
        self.prototype_map = prototype_map
        self.reprogramming = ReprogrammingLayer(d_model, n_heads, d_ff, self.embedding_size)
        self.head = FlattenHead(d_ff * self.num_patches, pred_len, dropout)
        self._kv_cache: tuple[tuple[object, ...], Tensor, Tensor] | None = None
        # Absolute position tables: BERT family (`embeddings.position_embeddings`), GPT-2
        # (`wpe`). RoBERTa-style tables reserve rows up to their padding index: real
        # positions start after it (BERT, GPT-2, LLaMA: at 0).
        table = getattr(getattr(self.llm, "embeddings", None), "position_embeddings", None)
        if table is None:
            table = getattr(self.llm, "wpe", None)
        if table is not None and not self._takes_positions:
            # the left padding would shift every prompt's positions by its own amount
            import transformers

            raise UserError(
                f"backbone {backbone.name}: {type(self.llm).__name__} in transformers "
                f"{transformers.__version__} takes no position_ids, which Time-LLM's "
                "left-padded prompts need; upgrade transformers (pip install -U transformers)"
            )
        pad = getattr(table, "padding_idx", None)
        self.position_offset = 0 if pad is None else pad + 1
        # Positions an absolute table can give (prompt + patches); None: rotary or
        # relative positions only (LLaMA, Qwen2, most DeBERTa), no table to run past.
        self.max_positions = (
            table.num_embeddings - self.position_offset if isinstance(table, nn.Embedding) else None
        )
        self.check_positions(0)

    def check_positions(self, prompt_tokens: int) -> None:
        """Refuse a prompt of ``prompt_tokens`` real tokens plus the patches when they run
        past the backbone's absolute position table (else an IndexError deep inside it).

        Raises:
            UserError: naming seq_len, patch_len, stride and the limit, and what to change.
        """
        need = prompt_tokens + self.num_patches
        if self.max_positions is None or need <= self.max_positions:
            return
        emb = self.patch_embedding
        prompt = f"the prompt's {prompt_tokens} tokens + " if prompt_tokens else ""
        fixes = "a larger stride or patch_len, or a shorter seq_len"
        if prompt_tokens and self.num_patches <= self.max_positions:
            fixes = "a larger stride or patch_len, a shorter seq_len, or a shorter prompt "
            fixes += "(prompt=concise or prompt=none)"
        raise UserError(
            f"timellm: {prompt}{self.num_patches} patches (seq_len {self.seq_len}, patch_len "
            f"{emb.patch_len}, stride {emb.stride}) need {need} positions, but backbone "
            f"'{self.backbone_name}' has {self.max_positions}; use {fixes}"
        )

    def check_token_ids(self, max_id: int) -> None:
        """Refuse prompts holding a token id past the backbone's embedding table: a
        tokenizer of another model copied next to the weights (else an IndexError, or a
        device-side assert on a GPU, at the first batch).

        Raises:
            UserError: naming the id, the table's size and what to copy.
        """
        if max_id < self.vocab_rows:
            return
        raise UserError(
            f"timellm: the prompt has token id {max_id} but backbone '{self.backbone_name}' "
            f"embeds only {self.vocab_rows} ids: its tokenizer belongs to another model; copy "
            "the tokenizer files saved with these weights next to its config.json"
        )

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser should update (everything but the backbone)."""
        return [p for p in self.parameters() if p.requires_grad]

    def prototype_kv(self) -> tuple[Tensor, Tensor]:
        """Keys and values of the text prototypes, each [P, n_heads, d_ff].

        Recomputed while gradients are needed; otherwise cached and reused until one of
        the tensors they depend on changes: in-place updates bump tensor versions, and
        ``.to(dtype)`` / ``.to(device)`` keep a parameter's id and version, so its dtype and
        device are part of the key too.
        """
        params = [*self.prototypes.parameters(), *self.reprogramming.key.parameters()]
        params += list(self.reprogramming.value.parameters())
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        if needs_grad:
            self._kv_cache = None
            return self._compute_kv()
        tensors = [*params, *self.prototypes.buffers(), self.llm.get_input_embeddings().weight]
        key = tuple(v for t in tensors for v in (id(t), t._version, t.dtype, t.device))
        if self._kv_cache is None or self._kv_cache[0] != key:
            keys, values = self._compute_kv()
            self._kv_cache = (key, keys, values)
        return self._kv_cache[1], self._kv_cache[2]

    def _compute_kv(self) -> tuple[Tensor, Tensor]:
        word_embeddings = self.llm.get_input_embeddings().weight
        return self.reprogramming.project_prototypes(self.prototypes(word_embeddings))

    def forward(self, x: Tensor, prompt_ids: Tensor, prompt_mask: Tensor) -> Tensor:
        """Forecast.

        Args:
            x: [B, L, N] input windows.
            prompt_ids: [B*N, T] token ids from `PromptBuilder` (window-major, channel),
                left-padded.
            prompt_mask: [B*N, T], 1 for real tokens.

        Returns:
            [B, H, N] forecast in the input's units.
        """
        autocast = (
            torch.autocast(x.device.type, dtype=self.compute_dtype)
            if self.compute_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            return self._forecast(x, prompt_ids, prompt_mask)

    def _forecast(self, x: Tensor, prompt_ids: Tensor, prompt_mask: Tensor) -> Tensor:
        b, seq_len, n = x.shape
        if seq_len != self.seq_len:
            raise ValueError(f"expected windows of length {self.seq_len}, got {seq_len}")
        if prompt_ids.shape[0] != b * n:
            raise ValueError(f"need one prompt per series ({b * n}), got {prompt_ids.shape[0]}")
        x_norm, mean, std = self.revin.normalise(x.float())
        series = x_norm.permute(0, 2, 1).reshape(b * n, seq_len)  # channel independence

        patches = self.patch_embedding(series)  # [B*N, Np, d_model]
        keys, values = self.prototype_kv()
        tokens = self.reprogramming(patches, keys, values)  # [B*N, Np, E]

        hidden = self._run_backbone(tokens, prompt_ids, prompt_mask)  # [B*N, Np, D]
        hidden = hidden[..., : self.d_ff].float()
        hidden = hidden.reshape(b, n, self.num_patches, self.d_ff).permute(0, 1, 3, 2)
        y = self.head(hidden).permute(0, 2, 1)  # [B, H, N]
        return self.revin.denormalise(y, mean, std)

    def _positions(self, positions: Tensor) -> dict[str, Any]:
        """``position_ids`` for a backbone whose forward takes them. The others (OPT in
        transformers 4.x, RoFormer) derive positions themselves, from the mask or as
        rotary ones, which a shift by the left padding leaves alone; a backbone with an
        absolute table that takes none was refused at construction."""
        return {"position_ids": positions} if self._takes_positions else {}

    def _run_backbone(self, tokens: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        """Prompt prefix + reprogrammed patches through the frozen backbone.

        Args:
            tokens: [S, Np, E] reprogrammed patches (E: the input embedding width).
            ids: [S, T] left-padded prompt ids.
            mask: [S, T] prompt mask.

        Returns:
            [S, Np, D] last hidden states of the patch positions.
        """
        ids = ids.to(tokens.device, torch.long)
        mask = mask.to(tokens.device, torch.long)  # callers may store int32 / bool
        # Columns that are padding in every row change nothing under the mask: drop them.
        real = mask.any(dim=0).nonzero()
        start = int(real[0]) if len(real) else mask.shape[1]
        ids, mask = ids[:, start:], mask[:, start:]
        if self.max_positions is not None and mask.shape[1]:
            self.check_positions(int(mask.sum(dim=1).max()))

        embed = self.llm.get_input_embeddings()
        prompt = embed(ids)  # frozen table: no gradient
        tokens = tokens.to(prompt.dtype)
        s, n_patch = tokens.shape[:2]
        # Positions count real tokens only, so left padding shifts nothing.
        prompt_pos = (mask.cumsum(dim=1) - 1).clamp(min=0) + self.position_offset
        patch_pos = mask.sum(dim=1, keepdim=True) + torch.arange(n_patch, device=mask.device)
        patch_pos = patch_pos + self.position_offset
        ones = torch.ones(s, n_patch, dtype=mask.dtype, device=mask.device)
        full_mask = torch.cat([mask, ones], dim=1)

        if self.is_decoder and self.prefix_cache and ids.shape[1] > 0:
            # The prompt depends on no trainable parameter and, being causal, never sees
            # the patches: compute its keys/values once, without a graph.
            with torch.no_grad():
                prefix = self.llm(
                    inputs_embeds=prompt,
                    attention_mask=mask,
                    use_cache=True,
                    **self._positions(prompt_pos),
                )
            past = prefix["cache"] if "cache" in prefix else prefix["past_key_values"]
            out = self.llm(
                inputs_embeds=tokens,
                attention_mask=full_mask,
                use_cache=True,
                **self._positions(patch_pos),
                **{self._cache_arg: past},
            )
            return out.last_hidden_state

        extra = self._positions(torch.cat([prompt_pos, patch_pos], dim=1))
        if self._takes_use_cache:
            extra["use_cache"] = False
        inputs = torch.cat([prompt, tokens], dim=1)
        # In eval mode (the backbone's, unless backbone_dropout) the last layer's prompt rows
        # are dropped before its queries: 85 % of its rows at a 66-token prompt and 12
        # patches, 20-40 % of a 2-layer MiniLM epoch on a CPU. Keys and values keep them.
        if self._patch_rows_last and not self.llm.training:
            layers = self.llm.encoder.layer
            self.llm.encoder.layer = layers[:-1]
            try:
                out = self.llm(inputs_embeds=inputs, attention_mask=full_mask, **extra)
            finally:
                self.llm.encoder.layer = layers
            return _last_layer_rows(layers[-1], out.last_hidden_state, full_mask, n_patch)
        out = self.llm(inputs_embeds=inputs, attention_mask=full_mask, **extra)
        return out.last_hidden_state[:, -n_patch:]


# Layers that compute what `_last_layer_rows` does: post-LayerNorm softmax attention over
# absolute positions. Others of BERT's shape do not (Megatron-BERT and ESM normalise first,
# ESM and RoFormer rotate, BigBird, YOSO and MRA approximate the attention): the shortcut
# changed their forecasts by 0.1-5 %, so they keep the full path.
_BERT_LAYERS = frozenset(
    {
        "BertLayer",
        "RobertaLayer",
        "XLMRobertaLayer",
        "CamembertLayer",
        "ElectraLayer",
        "Data2VecTextLayer",
        "ErnieLayer",
        "LayoutLMLayer",
    }
)


def _bert_shaped(model: nn.Module) -> bool:
    """Whether ``model`` is an encoder whose layers are BERT's (BERT, RoBERTa, ELECTRA,
    MiniLM; `_BERT_LAYERS`): self-attention query/key/value with absolute positions, an
    attention output taking the residual, a feed-forward chunk. `_last_layer_rows` runs
    such a layer."""
    config = getattr(model, "config", None)
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if config is None or not isinstance(layers, nn.ModuleList) or not len(layers):
        return False
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return False
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return False  # relative positions enter the attention scores
    last = layers[-1]
    if type(last).__name__ not in _BERT_LAYERS:
        return False
    attention = getattr(last, "attention", None)
    heads = getattr(attention, "self", None)
    return (
        all(isinstance(getattr(heads, k, None), nn.Module) for k in ("query", "key", "value"))
        and hasattr(heads, "num_attention_heads")
        and hasattr(heads, "attention_head_size")
        and isinstance(getattr(attention, "output", None), nn.Module)
        and callable(getattr(last, "feed_forward_chunk", None))
    )


def _last_layer_rows(layer: nn.Module, hidden: Tensor, mask: Tensor, n: int) -> Tensor:
    """A BERT layer's output at the last ``n`` rows only, in eval mode (no dropout).

    Args:
        layer: the encoder's last layer (`_bert_shaped`).
        hidden: [S, T, D] its input (the previous layer's output).
        mask: [S, T] 1 for real tokens (left padding 0).
        n: rows kept (the patches).

    Returns:
        [S, n, D]: what the full layer gives at those rows (queries of the other rows
        are not computed; every row is still a key and a value).
    """
    heads = layer.attention.self
    h, d = heads.num_attention_heads, heads.attention_head_size
    s, t = hidden.shape[:2]
    rows = hidden[:, -n:]

    def split(x: Tensor, length: int) -> Tensor:  # [S, length, h*d] -> [S, h, length, d]
        return x.view(s, length, h, d).transpose(1, 2)

    q = split(heads.query(rows), n)
    k, v = split(heads.key(hidden), t), split(heads.value(hidden), t)
    keep = mask.bool()[:, None, None, :]  # [S, 1, 1, T]
    context = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    context = context.transpose(1, 2).reshape(s, n, h * d)
    attended = layer.attention.output(context, rows)
    return layer.feed_forward_chunk(attended)
