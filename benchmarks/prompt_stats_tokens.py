"""What each prompt statistic costs: tokens added to the ETTh1 prompt, and seconds to
compute for 2048 test windows (docs/timellm.md, "What the prompt states about the window").

    HYBRID_FORECAST_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/prompt_stats_tokens.py
"""

from __future__ import annotations

import time

from ensemble.data import load_dataset, make_splits
from timellm.backbone import load_backbone
from timellm.prompt import DEFAULT_STATS, STAT_LABELS, PromptBuilder, load_description


def main() -> None:
    tok = load_backbone("minilm", llm_layers=1).tokenizer
    splits = make_splits(load_dataset("ETTh1"), 512, 96)
    x = splits.test.inputs()[:2048]  # [2048, 512, 7]
    desc = load_description("ETTh1")

    def measure(stats: tuple[str, ...]) -> tuple[float, float]:
        builder = PromptBuilder(tok, desc, 96, [24, 168], stats=stats)
        start = time.perf_counter()
        texts = builder.build_texts(x)
        seconds = time.perf_counter() - start
        _, mask = builder.encode(texts)
        return float(mask.sum(1).float().mean()), seconds

    base_tokens, base_s = measure(DEFAULT_STATS)
    print(f"default {DEFAULT_STATS}: {base_tokens:.1f} tokens on average, {base_s:.2f} s")
    print("| added statistic | tokens added | seconds (2048 windows x 7 channels) |")
    print("|---|---|---|")
    for name in STAT_LABELS:
        if name in DEFAULT_STATS:
            continue
        tokens, seconds = measure((*DEFAULT_STATS, name))
        print(f"| {name} | {tokens - base_tokens:+.1f} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
