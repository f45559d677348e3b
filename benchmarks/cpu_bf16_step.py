"""Seconds per TimeLLM training step on a 4-bit (NF4) random backbone on this CPU, with
the backbone computing in float32 and in bf16: whether the CPU runs bf16 natively
(AVX512-BF16 or AMX) decides which `--precision auto` picks for a 4-bit backbone here.

    python benchmarks/cpu_bf16_step.py --backbone qwen2-random
    python benchmarks/cpu_bf16_step.py --backbone qwen2.5-3b-random --llm-layers 1 --dtypes fp32
"""

from __future__ import annotations

import argparse
import time

import torch

from timellm.backbone import cpu_has_native_bf16, load_backbone
from timellm.model import TimeLLM

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def step_seconds(backbone: str, layers: int, dtype: torch.dtype, steps: int) -> list[float]:
    """Seconds of each of ``steps`` Adam steps on 4 series, L=96, H=24, a 128-token prompt."""
    bb = load_backbone(backbone, load_in_4bit=True, dtype=dtype, llm_layers=layers)
    torch.manual_seed(0)
    model = TimeLLM(
        bb,
        seq_len=96,
        pred_len=24,
        patch_len=16,
        stride=8,
        d_model=16,
        d_ff=32,
        n_heads=4,
        num_prototypes=100,
        compute_dtype=None if dtype == torch.float32 else dtype,
    )
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x = torch.randn(4, 96, 1)
    ids, mask = torch.randint(0, 1000, (4, 128)), torch.ones(4, 128, dtype=torch.long)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model(x, ids, mask).float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="qwen2-random")
    parser.add_argument("--llm-layers", type=int, default=2)
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU {torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_native_bf16()}")
    for name in args.dtypes.split(","):
        times = step_seconds(args.backbone, args.llm_layers, DTYPES[name], args.steps)
        print(
            f"{args.backbone} x{args.llm_layers} layers, {name}: median step "
            f"{sorted(times)[len(times) // 2]:.3f} s ({', '.join(f'{t:.3f}' for t in times)})"
        )


if __name__ == "__main__":
    main()
