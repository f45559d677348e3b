"""`hybrid-forecast bench-step`: time Time-LLM training steps on random windows.

A step is forward, MSE loss, backward and an Adam step over the trainable parameters,
on a batch of random-walk univariate windows whose prompts were built beforehand with
`PromptBuilder` (ETTh1 description), as the trainer does. The frozen backbone runs in
eval mode while the rest trains, as the trainer keeps it (`--backbone-dropout`: in train
mode, the official path). Prints one line of results
(`--json` for machines): windows per second, median seconds per step, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TYPE_CHECKING

from experiments.cli import HelpFormatter

if TYPE_CHECKING:
    import torch


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (exit 2 with a usage line otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench-step",
        help="time Time-LLM training steps (forward, backward, Adam) on random windows",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--backbone",
        default="minilm",
        help="minilm | PATH | gpt2-random, llama-random, qwen2-random, qwen2.5-3b-random (random "
        "weights: the shape without its checkpoint)",
    )
    p.add_argument("--seq-len", type=positive_int, default=512, help="lookback L")
    p.add_argument("--pred-len", type=positive_int, default=96, help="horizon H")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per step")
    p.add_argument("--n-vars", type=positive_int, default=1, help="channels per window")
    p.add_argument(
        "--llm-layers", type=positive_int, default=6, help="backbone layers kept (the first ones)"
    )
    p.add_argument("--d-model", type=positive_int, default=32, help="patch embedding width")
    p.add_argument(
        "--d-ff", type=positive_int, default=128, help="backbone features kept for the head"
    )
    p.add_argument(
        "--n-heads", type=positive_int, default=8, help="heads of the reprogramming attention"
    )
    p.add_argument("--patch-len", type=positive_int, default=16, help="steps per patch")
    p.add_argument("--stride", type=positive_int, default=8, help="steps between patches")
    p.add_argument("--num-prototypes", type=positive_int, default=1000, help="text prototypes")
    p.add_argument(
        "--prototype-map",
        choices=["full", "lowrank"],
        default="lowrank",
        help="vocabulary -> prototypes map: a full matrix or low rank",
    )
    p.add_argument(
        "--no-prefix-cache",
        action="store_true",
        help="run the prompt with the patches (decoders; the official way)",
    )
    p.add_argument(
        "--prompt",
        choices=["concise", "official", "none"],
        default="concise",
        help="our prompt template, the official wording, or no prompt prefix",
    )
    p.add_argument(
        "--dtype",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="dtype of the frozen backbone weights (with --load-in-4bit: its compute dtype)",
    )
    p.add_argument(
        "--autocast",
        choices=["none", "bf16", "fp16"],
        default="none",
        help="autocast the forward to bf16 or fp16 (trainable parameters stay fp32; fp16 "
        "scales the loss); bf16 is slower on CPUs without AMX",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="where to run (default: cuda if available); on cuda the peak GPU memory is "
        "reported too",
    )
    p.add_argument(
        "--load-in-4bit", action="store_true", help="the backbone in 4-bit NF4 (bitsandbytes)"
    )
    p.add_argument("--steps", type=positive_int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument(
        "--threads", type=positive_int, default=None, help="torch threads (default: torch's)"
    )
    p.add_argument(
        "--slow-dropout",
        action="store_true",
        help="keep torch's own dropout in the backbone (the fast one draws the same distribution)",
    )
    p.add_argument(
        "--backbone-dropout",
        action="store_true",
        help="run the frozen backbone in train mode, its dropout on (the official code's "
        "path); by default it stays in eval mode, as our trainer keeps it",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ensemble.errors import UserError
    from timellm.explain import allocation_failure

    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        raise UserError("--steps must be >= 1, --warmup >= 0 and --batch-size >= 1")
    if args.patch_len > args.seq_len:  # no whole patch: negative sizes deep in the model
        raise UserError(
            f"--patch-len {args.patch_len} is longer than --seq-len {args.seq_len}: give a "
            "patch that fits in the lookback"
        )
    if not 0 <= args.seed < 2**32:  # numpy's seeds; torch's would overflow past 2**64
        raise UserError(f"--seed must be from 0 to 4294967295 (got {args.seed})")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu")
    try:
        return _measure(args, device)
    except (MemoryError, RuntimeError) as exc:  # torch's OutOfMemoryError is a RuntimeError
        said = allocation_failure(exc)
        if said is None:
            raise
        sizes = ", ".join(
            f"--{flag.replace('_', '-')} (now {getattr(args, flag)})" for flag in _SIZE_FLAGS
        )
        raise UserError(
            f"bench-step: {said} on the {device.type} building the model or running a step; "
            f"lower {sizes}"
        ) from None


# What a step's memory grows with, in the order it is most often too large
_SIZE_FLAGS = (
    "pred_len",
    "seq_len",
    "num_prototypes",
    "batch_size",
    "n_vars",
    "d_model",
    "llm_layers",
)


def _measure(args: argparse.Namespace, device: torch.device) -> int:
    """Build the model, time the steps and print the result."""
    import statistics

    import numpy as np
    import torch

    from ensemble.errors import UserError
    from timellm.backbone import load_backbone
    from timellm.explain import peak_rss_mb
    from timellm.model import TimeLLM
    from timellm.prompt import PromptBuilder, load_description

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}
    backbone = load_backbone(
        args.backbone,
        llm_layers=args.llm_layers,
        dtype={"fp32": torch.float32, **half}[args.dtype],  # 4-bit in fp32 too, as the member
        load_in_4bit=args.load_in_4bit,
        device=device,
    )
    try:
        model = TimeLLM(
            backbone,
            seq_len=args.seq_len,
            pred_len=args.pred_len,
            patch_len=args.patch_len,
            stride=args.stride,
            d_model=args.d_model,
            d_ff=args.d_ff,
            n_heads=args.n_heads,
            num_prototypes=args.num_prototypes,
            prototype_map=args.prototype_map,
            prefix_cache=not args.no_prefix_cache,
            compute_dtype=half.get(args.autocast),
            fast_dropout=not args.slow_dropout,
        )
    except ValueError as exc:  # sizes the backbone cannot take (d_ff above its width...)
        raise UserError(f"bench-step: {exc}") from None
    for name, module in model.named_children():  # the backbone is placed already
        if name != "llm":
            module.to(device)
    # as the trainer: float16 gradients underflow without loss scaling
    scaler = torch.amp.GradScaler(device.type) if args.autocast == "fp16" else None
    model.train()
    if not args.backbone_dropout:
        model.llm.eval()  # as `timellm.trainer.Trainer` trains (backbone_eval)
    params = model.trainable_parameters()
    optimiser = torch.optim.Adam(params, lr=1e-4)

    # Random-walk windows and their prompts, built before timing as the trainer does.
    rng = np.random.default_rng(args.seed)
    total = args.batch_size * (args.steps + args.warmup)
    series = rng.standard_normal((total, args.seq_len + args.pred_len, args.n_vars)).cumsum(1)
    series = series.astype(np.float32)
    builder = PromptBuilder(
        backbone.tokenizer,
        load_description("ETTh1"),
        args.pred_len,
        [24, 12, 168],
        official=args.prompt == "official",
    )
    t0 = time.perf_counter()
    ids, mask = builder(series[:, : args.seq_len])
    if args.prompt == "none":  # one masked-out token per series: the model drops it
        ids, mask = torch.zeros_like(ids[:, :1]), torch.zeros_like(mask[:, :1])
    prompt_seconds = time.perf_counter() - t0
    x_all = torch.from_numpy(series[:, : args.seq_len]).to(device)
    y_all = torch.from_numpy(series[:, args.seq_len :]).to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    per_batch = args.batch_size * args.n_vars

    times, cpu_times = [], []
    for step in range(args.steps + args.warmup):
        sl = slice(step * args.batch_size, (step + 1) * args.batch_size)
        pl = slice(step * per_batch, (step + 1) * per_batch)
        if cuda:
            torch.cuda.synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        optimiser.zero_grad(set_to_none=True)
        out = model(x_all[sl], ids[pl], mask[pl])
        loss = torch.nn.functional.mse_loss(out.float(), y_all[sl])
        if scaler is None:
            loss.backward()
            optimiser.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
        if cuda:
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)

    seconds = statistics.median(times)
    cpu_seconds = statistics.median(cpu_times)
    result = {
        "backbone": backbone.name,
        "llm_layers": backbone.num_layers,
        "hidden_size": backbone.hidden_size,
        "prototype_map": args.prototype_map,
        "prefix_cache": model.is_decoder and not args.no_prefix_cache,
        "prompt": args.prompt,
        "dtype": args.dtype,  # the weights' (a 4-bit backbone's: its compute dtype)
        "autocast": args.autocast,
        "backbone_dropout": args.backbone_dropout,
        "load_in_4bit": args.load_in_4bit,
        "batch_size": args.batch_size,
        "n_vars": args.n_vars,
        "seq_len": args.seq_len,
        "pred_len": args.pred_len,
        "prompt_tokens_mean": round(float(mask.sum(1).float().mean()), 1),
        "prompt_tokens_max": int(mask.sum(1).max()),
        "prompt_build_s": round(prompt_seconds, 3),
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "seconds_per_step": round(seconds, 4),
        "seconds_per_step_min": round(min(times), 4),
        "samples_per_s": round(args.batch_size / seconds, 2),
        # CPU seconds of this process per step: less sensitive to other processes
        # competing for the cores than wall time (see docs/timellm.md).
        "cpu_seconds_per_step": round(cpu_seconds, 4),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "trainable_params": sum(p.numel() for p in params),
        "peak_rss_mb": None if (peak := peak_rss_mb()) is None else round(peak, 1),
        "device": str(device),
        "cuda_max_allocated_mb": (
            round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None
        ),
        "final_loss": round(loss.item(), 5),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['backbone']}: {result['samples_per_s']} windows/s, "
            f"{result['seconds_per_step']} s/step (median of {args.steps}), "
            f"peak RSS {result['peak_rss_mb']} MiB, "
            + (
                f"peak GPU {result['cuda_max_allocated_mb']} MiB, "
                if result["cuda_max_allocated_mb"] is not None
                else ""
            )
            + f"{result['trainable_params']:,} trainable "
            f"parameters, {result['prompt_tokens_mean']} prompt tokens on average"
        )
    return 0
