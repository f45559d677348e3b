"""What a trained Time-LLM's text prototypes stand for, and how much its patches use each.

The paper pictures the prototypes as words a patch is translated into ("short up",
"steady down"). Each prototype is a learned linear combination of the frozen backbone's
word embeddings, so the closest thing to "its word" is the vocabulary entry nearest to it
by cosine similarity. Three references say how much that nearness means:

* the same prototypes at initialisation (the member's seed rebuilds them exactly), which
  no data has touched;
* random directions in the embedding space, as far from every word as chance allows;
* words themselves: how near a vocabulary entry's nearest other entry is.

The patches use the prototypes through the reprogramming layer's attention: the mean
attention weight a prototype receives over heads, patches and the given windows is its
share (the shares sum to 1; uniform is 1 / P).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from timellm.layers import FullPrototypes, LowRankPrototypes, PatchEmbedding

if TYPE_CHECKING:
    from timellm.member import TimeLLMForecaster
    from timellm.model import TimeLLM


def nearest_words(
    prototypes: Tensor, embeddings: Tensor, k: int = 5, chunk: int = 8192
) -> tuple[Tensor, Tensor]:
    """The k vocabulary entries nearest to each prototype by cosine similarity.

    Args:
        prototypes: [P, E].
        embeddings: [V, E] the backbone's input word embeddings.
        k: entries per prototype.
        chunk: vocabulary rows compared at a time (bounds the [P, chunk] scores).

    Returns:
        (cosines [P, k] descending, token ids [P, k]).
    """
    p = F.normalize(prototypes.float(), dim=1)
    best_cos = torch.full((p.shape[0], 0), -2.0)
    best_ids = torch.zeros((p.shape[0], 0), dtype=torch.long)
    for start in range(0, embeddings.shape[0], chunk):
        e = F.normalize(embeddings[start : start + chunk].float(), dim=1)
        cos, ids = (p @ e.T).topk(min(k, e.shape[0]), dim=1)
        best_cos = torch.cat([best_cos, cos], dim=1)
        best_ids = torch.cat([best_ids, ids + start], dim=1)
        best_cos, order = best_cos.topk(min(k, best_cos.shape[1]), dim=1)
        best_ids = best_ids.gather(1, order)
    return best_cos, best_ids


def initial_prototypes(member: TimeLLMForecaster, embeddings: Tensor) -> Tensor:
    """The member's prototypes before training, [P, E]: `TimeLLM` draws the patch
    embedding's weights and then the prototypes' from the seed `build` sets, so drawing
    the same two modules in that order gives them again (`tests/test_timellm_prototypes.py`
    checks this against a freshly built model)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(member.seed)
        PatchEmbedding(member.d_model, member.patch_len, member.stride, member.dropout)
        if member.prototype_map == "full":
            module: torch.nn.Module = FullPrototypes(embeddings.shape[0], member.num_prototypes)
        else:
            module = LowRankPrototypes(embeddings, member.num_prototypes)
            saved = member.model.prototypes.basis.detach().float().cpu()
            if saved.shape == module.basis.shape:  # the basis trained with (eigh's signs)
                module.basis.copy_(saved)
    with torch.no_grad():
        return module(embeddings).float()


def attention_share(model: TimeLLM, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Mean reprogramming attention each prototype receives, [P] summing to 1.

    Args:
        model: a Time-LLM in eval mode.
        x: [W, L, C] windows (the model's input scale).
        batch: windows per forward pass.
    """
    device = next(model.head.parameters()).device
    total = None
    count = 0
    with torch.no_grad():
        keys, _ = model.prototype_kv()  # [P, h, dk]
        keys = keys.float()
        for start in range(0, len(x), batch):
            xb = torch.tensor(np.asarray(x[start : start + batch]), dtype=torch.float32)
            xb = xb.to(device)
            b, seq_len, n = xb.shape
            x_norm, _, _ = model.revin.normalise(xb)
            series = x_norm.permute(0, 2, 1).reshape(b * n, seq_len)
            patches = model.patch_embedding(series)  # [S, Np, d_model]
            s, n_patches, _ = patches.shape
            q = model.reprogramming.query(patches).view(s, n_patches, keys.shape[1], -1)
            scores = torch.einsum("snhe,phe->snhp", q.float(), keys) / math.sqrt(q.shape[-1])
            attn = torch.softmax(scores, dim=-1).sum(dim=(0, 1, 2))  # [P]
            total = attn if total is None else total + attn
            count += s * n_patches * keys.shape[1]
    return (total / count).cpu().numpy()


def _tokens(tokenizer: Any, ids: Tensor) -> list[list[str]]:
    return [[str(t) for t in tokenizer.convert_ids_to_tokens(row)] for row in ids.tolist()]


def describe_prototypes(
    member: TimeLLMForecaster, x: np.ndarray, top: int = 15, k: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Nearest words of the most-used prototypes, trained and at initialisation.

    Args:
        member: a fitted (or loaded) Time-LLM member with a backbone.
        x: [W, L, C] windows whose attention is averaged (e.g. the test windows).
        top: prototypes listed, by attention share.
        k: nearest words per prototype.
        seed: seed of the random reference directions.

    Returns:
        {"prototypes": [{"index", "share", "words", "cosines", "initial_words",
        "initial_cosines"}], "num_prototypes", "uniform_share", "top_share" (the listed
        prototypes' total share), "top1_cosine" {"trained", "initial", "random", "word"}
        (mean cosine to the nearest word; "word": of vocabulary entries to their nearest
        other entry), "moved" (relative change of the prototype matrix from its
        initialisation)}.
    """
    model = member.model
    if model is None or not hasattr(model, "prototypes"):
        raise ValueError("describe_prototypes needs a fitted Time-LLM with a backbone")
    embeddings = model.llm.get_input_embeddings().weight.detach().float().cpu()
    with torch.no_grad():
        trained = model.prototypes(embeddings.to(next(model.prototypes.parameters()).device))
    trained = trained.float().cpu()
    initial = initial_prototypes(member, embeddings)
    share = attention_share(model, x)
    order = np.argsort(-share)[:top]
    cos, ids = nearest_words(trained[order], embeddings, k)
    cos0, ids0 = nearest_words(initial[order], embeddings, k)
    gen = torch.Generator().manual_seed(seed)
    random = torch.randn(trained.shape, generator=gen)
    sample = torch.randperm(embeddings.shape[0], generator=gen)[: trained.shape[0]]
    mean_top1 = {
        "trained": float(nearest_words(trained, embeddings, 1)[0].mean()),
        "initial": float(nearest_words(initial, embeddings, 1)[0].mean()),
        "random": float(nearest_words(random, embeddings, 1)[0].mean()),
        # a word's nearest other word (the nearest is itself)
        "word": float(nearest_words(embeddings[sample], embeddings, 2)[0][:, 1].mean()),
    }
    words, words0 = _tokens(model.tokenizer, ids), _tokens(model.tokenizer, ids0)
    rows = [
        {
            "index": int(p),
            "share": float(share[p]),
            "words": words[i],
            "cosines": [round(float(c), 4) for c in cos[i]],
            "initial_words": words0[i],
            "initial_cosines": [round(float(c), 4) for c in cos0[i]],
        }
        for i, p in enumerate(order)
    ]
    return {
        "prototypes": rows,
        "num_prototypes": int(trained.shape[0]),
        "uniform_share": 1.0 / trained.shape[0],
        "top_share": float(share[order].sum()),
        "top1_cosine": mean_top1,
        "moved": float((trained - initial).norm() / initial.norm().clamp_min(1e-12)),
    }
