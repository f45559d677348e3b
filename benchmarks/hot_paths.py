"""Hot paths sped up in the eighteenth session, each timed against the code it replaced.

The replaced code is written out below as the reference; both run interleaved in one
process on one thread (the machine is shared and noisy), and the medians are printed
with the largest difference between their outputs.

- Time-LLM's reprogramming attention at predict time (448 series = 64 windows x 7
  channels, 63 patches, 8 heads of 128, 1000 prototypes, MiniLM's 384), alone and inside
  a full forward through MiniLM's 6 layers.
- Left-padding the tokenised prompts of ETTh1's 2785 test windows (19495 prompts).
- DLinear's replicate-padded moving average (kernel 25, L=512).

    HYBRID_FORECAST_DATA=../shared/data python benchmarks/hot_paths.py
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F


def compare(name: str, old: Callable, new: Callable, reps: int = 5, inner: int = 1) -> None:
    """Median seconds of ``old`` and ``new`` run alternately, and max |old - new|."""
    times: dict[str, list[float]] = {"old": [], "new": []}
    with torch.no_grad():
        for _ in range(reps):
            for tag, fn in (("old", old), ("new", new)):
                t0 = time.perf_counter()
                for _ in range(inner):
                    out = fn()
                times[tag].append((time.perf_counter() - t0) / inner)
                outs = out if isinstance(out, tuple) else (out,)
                if tag == "old":
                    ref = outs
        diff = max(
            float((a.double() - b.double()).abs().max()) for a, b in zip(ref, outs, strict=True)
        )
    o, n = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"{name}: {o * 1e3:.1f} ms -> {n * 1e3:.1f} ms ({o / n:.2f}x), max |diff| {diff:.1e}")


def einsum_reprogramming(layer, patches, keys, values):
    """The reprogramming forward before: explicit [S, h, Np, P] scores."""
    s, n, _ = patches.shape
    q = layer.query(patches).view(s, n, layer.n_heads, -1)
    scores = torch.einsum("blhe,she->bhls", q, keys) / math.sqrt(q.shape[-1])
    out = torch.einsum("bhls,she->blhe", torch.softmax(scores, -1), values)
    return layer.out(out.reshape(s, n, -1))


def reprogramming() -> None:
    from timellm import layers
    from timellm.backbone import load_backbone
    from timellm.model import TimeLLM
    from timellm.prompt import PromptBuilder, load_description

    torch.manual_seed(0)
    layer = layers.ReprogrammingLayer(d_model=32, n_heads=8, d_keys=128, d_llm=384).eval()
    patches = torch.randn(448, 63, 32)
    keys, values = layer.project_prototypes(torch.randn(1000, 384))
    compare(
        "reprogramming layer",
        lambda: einsum_reprogramming(layer, patches, keys, values),
        lambda: layer(patches, keys, values),
    )

    bb = load_backbone("minilm", llm_layers=6)
    model = TimeLLM(bb, seq_len=512, pred_len=96, d_model=32, d_ff=128, n_heads=8).eval()
    x = np.random.default_rng(1).standard_normal((64, 512, 7)).cumsum(axis=1)
    x = x.astype(np.float32)
    ids, mask = PromptBuilder(bb.tokenizer, load_description("ETTh1"), 96, [24, 168])(x)
    xt = torch.from_numpy(x)
    fused = layers.ReprogrammingLayer.forward

    def forward(reprogram) -> torch.Tensor:
        layers.ReprogrammingLayer.forward = reprogram
        try:
            return model(xt, ids, mask)
        finally:
            layers.ReprogrammingLayer.forward = fused

    compare(
        "Time-LLM forward, MiniLM 6 layers, 64 windows x 7 channels",
        lambda: forward(einsum_reprogramming),
        lambda: forward(fused),
        reps=3,
    )


def prompt_padding() -> None:
    from ensemble.data import load_dataset, make_splits
    from timellm.backbone import load_backbone
    from timellm.prompt import PromptBuilder, load_description

    splits = make_splits(load_dataset("ETTh1"), 512, 96)
    bb = load_backbone("minilm", llm_layers=1)
    builder = PromptBuilder(bb.tokenizer, load_description("ETTh1"), 96, [24, 168])
    texts = builder.build_texts(splits.test.inputs())
    builder.encode(texts)  # tokenise once: both sides read the cache

    def loop() -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [builder._cache[t] for t in texts]
        width = max((len(s) for s in seqs), default=0)
        ids = torch.full((len(seqs), width), builder.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                mask[i, width - len(s) :] = 1
        return ids, mask

    compare(f"left-padding {len(texts)} prompts", loop, lambda: builder.encode(texts))


def moving_average() -> None:
    from classical.dlinear import MovingAverage

    def replicate_pad(x: torch.Tensor, k: int = 25) -> torch.Tensor:
        pad = (k - 1) // 2
        c = F.pad(F.pad(x, (pad, pad), mode="replicate").cumsum(dim=-1), (1, 0))
        return (c[..., k:] - c[..., :-k]) / k

    ma = MovingAverage(25)
    for shape, inner in (((2785, 7, 512), 3), ((32, 7, 512), 300)):
        x = torch.randn(*shape)
        compare(
            f"moving average {list(shape)}",
            lambda x=x: replicate_pad(x),
            lambda x=x: ma(x),
            inner=inner,
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    moving_average()
    prompt_padding()
    reprogramming()
