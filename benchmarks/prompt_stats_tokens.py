"""What each prompt statistic costs: tokens added to the ETTh1 prompt, and seconds to
compute it alone for 2048 test windows x 7 channels (median of 3; docs/timellm.md, "What
the prompt states about the window").

    HYBRID_FORECAST_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/prompt_stats_tokens.py
"""

from __future__ import annotations

import time

import numpy as np

from ensemble.data import load_dataset, make_splits
from timellm.backbone import load_backbone
from timellm.prompt import (
    DEFAULT_STATS,
    STAT_LABELS,
    PromptBuilder,
    load_description,
    window_stats,
)


def main() -> None:
    tok = load_backbone("minilm", llm_layers=1).tokenizer
    splits = make_splits(load_dataset("ETTh1"), 512, 96)
    x = splits.test.inputs()[:2048]  # [2048, 512, 7]
    desc = load_description("ETTh1")

    def tokens(stats: tuple[str, ...]) -> float:
        builder = PromptBuilder(tok, desc, 96, [24, 168], stats=stats)
        _, mask = builder.encode(builder.build_texts(x))
        return float(mask.sum(1).float().mean())

    def seconds(name: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            window_stats(x, [name], [24, 168])
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    base = tokens(DEFAULT_STATS)
    print(f"default {DEFAULT_STATS}: {base:.1f} tokens on average")
    print("| statistic | tokens added to the default | seconds alone (median of 3) |")
    print("|---|---|---|")
    for name in STAT_LABELS:
        if name == "periods":
            continue
        added = (
            "(default)"
            if name in DEFAULT_STATS
            else f"{tokens((*DEFAULT_STATS, name)) - base:+.1f}"
        )
        print(f"| {name} | {added} | {seconds(name):.2f} |")


if __name__ == "__main__":
    main()
