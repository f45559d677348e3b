"""Explain a Time-LLM model: data flow with shapes, parameters, memory of one step.

`explain(model, batch_size, seq_len, n_vars)` runs one real training step (forward,
backward; no optimiser update, so the model is left unchanged, and Adam's state is added
by arithmetic: two float32 moments per trainable parameter) on random windows with a
realistic prompt, records the tensor shape at every stage with forward hooks, counts
parameters per component and measures peak memory: RSS on CPU (sampled while the step
runs; Linux only), `torch.cuda.max_memory_allocated` on GPU. `render` turns the result
into text.
"""

from __future__ import annotations

import math
import os
import re
import sys
import textwrap
import threading
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from timellm.model import TimeLLM
from timellm.prompt import PromptBuilder, load_description

_COMPONENTS = ("patch_embedding", "prototypes", "reprogramming", "head", "llm")


def _param_stats(module: nn.Module) -> dict[str, int]:
    """Trainable / frozen counts (logical, i.e. unpacked for 4-bit) and storage bytes,
    buffers included (the low-rank prototypes' basis, BERT's position ids): they are
    held on the device as the weights are, though neither trained nor counted as
    parameters."""
    out = {"trainable": 0, "frozen": 0, "bytes": 0, "quantized_4bit": 0}
    for p in module.parameters():
        count = p.numel()
        state = getattr(p, "quant_state", None)
        if state is not None and getattr(state, "shape", None) is not None:
            count = math.prod(state.shape)  # bitsandbytes packs two 4-bit values per byte
            out["quantized_4bit"] += count
            absmax = getattr(state, "absmax", None)
            if absmax is not None:
                out["bytes"] += absmax.numel() * absmax.element_size()
        out["bytes"] += p.numel() * p.element_size()
        out["trainable" if p.requires_grad else "frozen"] += count
    out["bytes"] += sum(b.numel() * b.element_size() for b in module.buffers())
    return out


# torch's CPU allocator ("you tried to allocate 6144000000000 bytes"), CUDA's ("Tried to
# allocate 20.00 GiB") and numpy's ("Unable to allocate 71.5 GiB") say how much
_ASKED = re.compile(r"allocate (\d+ bytes|[\d.]+ ?[KMGTP]i?B)", re.IGNORECASE)


def allocation_failure(exc: BaseException) -> str | None:
    """The reason to print for an allocation that failed ("out of memory", with the size
    asked for when the message gives it), else None. torch's CPU allocator raises a plain
    RuntimeError, so its message is what tells it apart."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    text = str(exc)
    if not (
        isinstance(exc, (MemoryError, oom))
        or (
            isinstance(exc, RuntimeError)
            and any(
                m in text.lower()
                for m in ("can't allocate memory", "cannot allocate memory", "out of memory")
            )
        )
    ):
        return None
    asked = _ASKED.search(text)
    if asked is None:
        return "out of memory"
    number, unit = re.match(r"([\d.]+) ?(\w+)", asked.group(1)).groups()
    if unit == "bytes":
        number, unit = str(int(number) / 2**30), "GiB"
    return f"out of memory (an allocation of {float(number):,.1f} {unit})"


def rss_mb() -> float | None:
    """This process's resident set size now, in MiB; None where there is no /proc
    (Windows, macOS)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float | None:
    """This process's peak resident set size so far, in MiB; None on Windows."""
    try:
        import resource  # Unix only
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


class _PeakRss:
    """Sample the resident set size in a thread while a block runs (where `rss_mb`
    measures; elsewhere ``start`` and ``peak`` stay None)."""

    def __enter__(self) -> _PeakRss:
        self.start = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        if self.start is not None:
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        if self.start is None:
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


class _SavedTensors:
    """Bytes of the tensors autograd saves for the backward pass while a block runs:
    the activations a training step holds when its backward starts, counted the same
    way on any device (each storage once; parameters, which are counted as weights,
    left out)."""

    def __init__(self, model: nn.Module):
        self._params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._seen: dict[tuple[int, str], int] = {}

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            key, size = (storage.data_ptr(), str(t.device)), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensor subclasses without storage
            key, size = (id(t), str(t.device)), t.numel() * t.element_size()
        if key[0] not in self._params:
            self._seen[key] = size
        return t

    def __enter__(self) -> _SavedTensors:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)

    @property
    def mib(self) -> float:
        return sum(self._seen.values()) / 2**20


# What a GPU needs beyond the tensors PyTorch allocates (CUDA context, cuBLAS workspace)
# and the share the caching allocator loses to fragmentation: an assumption, stated
# wherever the verdict is printed (no GPU was lent to check it).
CUDA_OVERHEAD_MIB = 600
FRAGMENTATION = 0.10


def gpu_budget(
    memory: dict[str, float], batch_size: int, series_per_item: int, gpu_gib: float
) -> dict[str, Any]:
    """Whether training fits a GPU of ``gpu_gib`` GiB, and the largest batch that does.

    Training holds weights + gradients + Adam's moments (fixed), the tensors saved for
    backward, which grow linearly with the batch (their slope and intercept from the
    explained batch and a batch of one), and the step's other memory (temporaries and
    buffers: the step's measured growth on a GPU, else its RSS growth here, beyond the
    saved tensors and the gradients), taken as fixed; plus ``CUDA_OVERHEAD_MIB`` and
    ``FRAGMENTATION``. Backward's temporaries grow somewhat with the batch, so the
    largest batch is an extrapolation: explaining again at that batch checks it (on a
    GPU, against the measured peak).

    Args:
        memory: `explain`'s "memory" (with "weights_mb", "gradients_mb", "adam_state_mb",
            "saved_for_backward_mb" and "saved_for_backward_one_mb").
        batch_size: the explained batch's --batch_size.
        series_per_item: univariate series per batch item (1, or the channels when a batch
            holds whole windows).
        gpu_gib: the GPU's memory.
    """
    fixed = memory["weights_mb"] + memory["gradients_mb"] + memory["adam_state_mb"]
    saved, one = memory["saved_for_backward_mb"], memory.get("saved_for_backward_one_mb", 0.0)
    if batch_size > 1 and one > 0:
        slope = max(saved - one, 0.0) / (batch_size - 1)
        base = max(one - slope, 0.0)  # what the saved tensors hold at any batch
    else:  # no second point: everything grows with the batch (the safe side)
        slope, base = saved / batch_size, 0.0
    if "cuda_step_mb" in memory:
        step, basis = memory["cuda_step_mb"], "GPU memory measured in the step"
    else:
        step, basis = memory.get("rss_step_mb", 0.0), "RSS growth in the step here"
    other = max(step - saved - memory["gradients_mb"], 0.0)  # the gradients are in `fixed`
    if not other:
        basis = "tensors saved for backward"

    def need(batch: int | float) -> float:
        return (fixed + base + other + slope * batch) * (1 + FRAGMENTATION) + CUDA_OVERHEAD_MIB

    room = (gpu_gib * 1024 - CUDA_OVERHEAD_MIB) / (1 + FRAGMENTATION) - fixed - base - other
    return {
        "gpu_gib": gpu_gib,
        "need_mb": round(need(batch_size), 1),
        "fits": need(batch_size) <= gpu_gib * 1024,
        "max_batch_size": max(0, int(room // slope)) if slope > 0 else None,
        "per_series_mb": round(slope / series_per_item, 2),
        "fixed_mb": round(fixed + base + other, 1),
        "activations_from": basis,
    }


def explain(
    model: TimeLLM,
    batch_size: int,
    seq_len: int,
    n_vars: int,
    *,
    description: str | None = None,
    periods: list[int] | None = None,
    prompt: str = "concise",
    backbone_eval: bool = True,
    repeats: int = 2,
) -> dict[str, Any]:
    """Data flow, parameters, measured memory and time of one training step.

    Args:
        model: a `TimeLLM`.
        batch_size: windows per batch B.
        seq_len: lookback L (must equal the model's).
        n_vars: channels per window N.
        description: dataset description for the sample prompt (default: generic).
        periods: periods written into the sample prompt (default [24, 12]).
        prompt: "concise", "official" (the official wording) or "none" (no prefix), as
            the member's ``prompt`` setting.
        backbone_eval: the frozen backbone in eval mode, as the trainer runs it (False:
            train mode, the official code's and ``backbone_dropout``'s).
        repeats: timed steps after the measured one (median; 0: no timing).

    Returns:
        {"stages": [{"stage", "shape", "note"}], "parameters": {component: stats},
         "totals": stats, "memory": {...}, "timing": {...}, "config": {...}}.
    """
    device = next(model.head.parameters()).device
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((batch_size, seq_len, n_vars)).cumsum(axis=1).astype(np.float32)
    builder = PromptBuilder(
        model.tokenizer,
        description or load_description(None),
        model.pred_len,
        periods or [24, 12],
        official=prompt == "official",
    )
    ids, mask = builder(x_np)
    sample_prompt = builder.build_texts(x_np[:1, :, :1])[0]  # what the backbone reads
    if prompt == "none":  # one masked-out token per series, which the model drops
        ids, mask = torch.zeros_like(ids[:, :1]), torch.zeros_like(mask[:, :1])
        sample_prompt = ""
    x = torch.from_numpy(x_np).to(device)
    target = torch.zeros(batch_size, model.pred_len, n_vars, device=device)

    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name: str):
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            t = output[0] if isinstance(output, tuple) else output
            t = getattr(t, "last_hidden_state", t)
            if torch.is_tensor(t):
                shapes.setdefault(name, tuple(t.shape))

        return record

    handles = [getattr(model, n).register_forward_hook(hook(n)) for n in _COMPONENTS]
    was_training = model.training
    model.train()
    if backbone_eval and getattr(model, "llm", None) is not None:
        model.llm.eval()  # the step measured is the step the trainer takes
    is_cuda = device.type == "cuda"
    if is_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    try:
        with _PeakRss() as rss:
            with _SavedTensors(model) as saved:
                out = model(x, ids, mask)
                loss = torch.nn.functional.mse_loss(out, target)
            loss.backward()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        for p in model.trainable_parameters():
            p.grad = None
    memory: dict[str, float] = {}
    if rss.start is not None:
        memory["rss_before_mb"] = round(rss.start, 1)
        memory["rss_peak_mb"] = round(rss.peak, 1)
        memory["rss_step_mb"] = round(rss.peak - rss.start, 1)
    if is_cuda:
        memory["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        memory["cuda_step_mb"] = round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)
    timing = _time_steps(model, x, ids, mask, target, backbone_eval, repeats)

    b, n, s = batch_size, n_vars, batch_size * n_vars
    t = int(mask.any(dim=0).sum())
    np_, d, dff = model.num_patches, model.hidden_size, model.d_ff
    e = model.embedding_size  # the backbone's input width (< d for ALBERT, ELECTRA)
    prefix = "prompt once without grad, patches reuse its KV cache"
    stages = [
        {"stage": "input", "shape": (b, seq_len, n), "note": "windows"},
        {"stage": "RevIN + channel independence", "shape": (s, seq_len), "note": "no affine"},
        {
            "stage": "patching",
            "shape": (s, np_, model.patch_embedding.patch_len),
            "note": f"pad {model.patch_embedding.stride} at the end",
        },
        {"stage": "patch embedding", "shape": shapes.get("patch_embedding"), "note": "conv1d k=3"},
        {
            "stage": "text prototypes",
            "shape": shapes.get("prototypes"),
            "note": f"{model.prototype_map} map from vocabulary "
            f"{tuple(model.llm.get_input_embeddings().weight.shape)}",
        },
        {"stage": "reprogramming", "shape": shapes.get("reprogramming"), "note": "cross-attention"},
        {
            "stage": "prompt prefix",
            "shape": (s, t, e),
            "note": prefix if model.is_decoder and model.prefix_cache else "concatenated",
        },
        {"stage": "backbone", "shape": (s, t + np_, d), "note": model.backbone_name},
        {"stage": "keep patches, first d_ff", "shape": (s, np_, dff), "note": ""},
        {"stage": "flatten head", "shape": shapes.get("head"), "note": "[B, N, H]"},
        {"stage": "output (de-normalised)", "shape": tuple(out.shape), "note": "[B, H, N]"},
    ]
    params = {name: _param_stats(getattr(model, name)) for name in _COMPONENTS}
    totals = {k: sum(p[k] for p in params.values()) for k in params["llm"]}
    # The step above updates nothing, so Adam's two float32 moments per trainable
    # parameter are not in its peak; training holds them from the first update on.
    memory["adam_state_mb"] = round(2 * 4 * totals["trainable"] / 2**20, 1)
    # Device-independent: what training holds besides the CUDA context and allocator
    memory["weights_mb"] = round(totals["bytes"] / 2**20, 1)
    memory["gradients_mb"] = round(
        sum(p.numel() * p.element_size() for p in model.trainable_parameters()) / 2**20, 1
    )
    memory["saved_for_backward_mb"] = round(saved.mib, 1)
    if batch_size > 1:  # a second point: how the saved tensors grow with the batch
        memory["saved_for_backward_one_mb"] = round(
            _saved_at_batch_one(model, x, ids, mask, backbone_eval), 1
        )
    return {
        "stages": stages,
        "parameters": params,
        "totals": totals,
        "memory": memory,
        "timing": timing,
        "config": {
            "batch_size": b,
            "seq_len": seq_len,
            "n_vars": n,
            "pred_len": model.pred_len,
            "prompt_tokens": t,
            "sample_prompt": sample_prompt,
            "num_patches": np_,
            "hidden_size": d,
            "device": str(device),
        },
    }


def _saved_at_batch_one(
    model: TimeLLM, x: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, backbone_eval: bool
) -> float:
    """MiB saved for backward by the forward of the batch's first window alone (its
    series: the first ``n_vars`` prompts), in the measured step's modes; nothing is kept
    and no backward runs.

    Args:
        x: [B, L, N] the explained batch; ids, mask: [B * N, T] its prompts.
    """
    n_vars = x.shape[2]
    was_training = model.training
    model.train()
    if backbone_eval and getattr(model, "llm", None) is not None:
        model.llm.eval()
    try:
        with _SavedTensors(model) as saved:
            model(x[:1], ids[:n_vars], mask[:n_vars])
    finally:
        model.train(was_training)
    return saved.mib


def _time_steps(
    model: TimeLLM,
    x: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    target: torch.Tensor,
    backbone_eval: bool,
    repeats: int,
) -> dict[str, float]:
    """Median seconds of a training step (forward, backward and an Adam update, as the
    trainer and `bench-step` take it) and of a forward pass without gradient in eval
    mode (a validation batch of the same series), over ``repeats`` runs after the
    warm-up step `explain` measured. The weights are put back afterwards."""
    if repeats < 1:
        return {}
    device = x.device

    def timed(step) -> float:
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    params = list(model.trainable_parameters())
    before = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=1e-4)  # a throw-away: its updates are undone below

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x, ids, mask), target).backward()
        opt.step()

    was_training = model.training
    try:
        model.train()
        if backbone_eval and getattr(model, "llm", None) is not None:
            model.llm.eval()
        train_s = timed(train_step)
        model.eval()
        with torch.no_grad():
            model(x, ids, mask)  # untimed: builds the prototype cache, once per evaluation
            forward_s = timed(lambda: model(x, ids, mask))
    finally:
        model.train(was_training)
        with torch.no_grad():
            for p, kept in zip(params, before, strict=True):
                p.copy_(kept)
                p.grad = None
    return {"train_step_s": round(train_s, 4), "forward_s": round(forward_s, 4)}


def epoch_estimate(
    timing: dict[str, float], series_per_step: int, train_steps: int, val_series: int
) -> dict[str, float]:
    """Seconds of one epoch from the timed steps: ``train_steps`` optimiser steps, plus
    the validation forward passes over ``val_series`` series (time proportional to the
    series, at the timed forward's rate). An estimate: the timed batch is random data
    with one sample prompt, and real batches' prompt lengths vary."""
    train_s = train_steps * timing["train_step_s"]
    val_s = val_series / series_per_step * timing["forward_s"]
    return {
        "train_steps": train_steps,
        "val_series": val_series,
        "train_s": round(train_s, 1),
        "val_s": round(val_s, 1),
        "epoch_s": round(train_s + val_s, 1),
    }


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render(info: dict[str, Any]) -> str:
    """Human-readable text of an `explain` result."""
    lines = ["Data flow (one batch):"]
    for st in info["stages"]:
        shape = "[" + ", ".join(map(str, st["shape"])) + "]" if st["shape"] else "?"
        lines.append(f"  {st['stage']:<30} {shape:<22} {st['note']}")
    sample = info["config"].get("sample_prompt")
    if sample:
        lines += ["", "Prompt of one series (random data; the description is the run's):"]
        lines += textwrap.wrap(sample, 88, initial_indent="  ", subsequent_indent="  ")
    lines.append("")
    lines.append(f"{'component':<18}{'trainable':>14}{'frozen':>14}{'storage MiB':>12}")
    for name, p in [*info["parameters"].items(), ("total", info["totals"])]:
        lines.append(
            f"{name:<18}{p['trainable']:>14,}{p['frozen']:>14,}{p['bytes'] / 2**20:>12.1f}"
            + (f"  ({p['quantized_4bit']:,} in 4-bit)" if p["quantized_4bit"] else "")
        )
    mem = info["memory"]
    lines.append("")
    if "rss_peak_mb" in mem:
        lines.append(
            f"Peak RSS during one training step: {mem['rss_peak_mb']} MiB "
            f"(+{mem['rss_step_mb']} MiB over {mem['rss_before_mb']} MiB before)"
        )
    else:
        lines.append("Peak RSS during one training step: not measured (needs Linux's /proc)")
    if "cuda_max_allocated_mb" in mem:
        lines.append(
            f"GPU max allocated: {mem['cuda_max_allocated_mb']} MiB (+{mem['cuda_step_mb']} MiB)"
        )
    if "adam_state_mb" in mem:
        peak = mem.get("cuda_max_allocated_mb", mem.get("rss_peak_mb"))
        total = f": about {peak + mem['adam_state_mb']:.1f} MiB in all" if peak else ""
        where = (
            " (plus the CUDA context, which PyTorch does not count)"
            if ("cuda_max_allocated_mb" in mem)
            else ""
        )
        lines.append(
            f"Training adds Adam's two moments per trainable parameter, "
            f"{mem['adam_state_mb']} MiB, not in the step above{total}{where}"
        )
    if "saved_for_backward_mb" in mem:
        total = sum(
            mem[k] for k in ("weights_mb", "gradients_mb", "adam_state_mb", "saved_for_backward_mb")
        )
        lines.append(
            f"Training holds, on any device: weights {mem['weights_mb']} MiB + gradients "
            f"{mem['gradients_mb']} MiB + Adam {mem['adam_state_mb']} MiB + activations saved "
            f"for backward {mem['saved_for_backward_mb']} MiB = {total:.1f} MiB"
        )
    budget = info.get("gpu_budget")
    if budget:
        per = f"{budget['per_series_mb']} MiB more per series, on {budget['fixed_mb']:.0f} MiB"
        if budget["activations_from"] != "tensors saved for backward":
            per += f" (with the step's other memory, from the {budget['activations_from']})"
        most = budget["max_batch_size"]
        fit = (
            f"fits in {budget['gpu_gib']:g} GiB"
            if budget["fits"]
            else f"does NOT fit in {budget['gpu_gib']:g} GiB"
        )
        if most is None:  # nothing measured grows with the batch
            room = "the batch does not change the estimate here"
        elif most:
            room = (
                f"--batch_size {most} or less fits ({per}; extrapolated from --batch_size "
                f"{info['config']['batch_size']}: explain at the batch you pick to check it)"
            )
        else:
            room = (
                f"not even --batch_size 1 fits ({per}): fewer --llm_layers, a shorter "
                "--seq_len or --load_in_4bit"
            )
        lines.append(
            f"GPU estimate: about {budget['need_mb']:.0f} MiB, so it {fit}; {room}. "
            f"(Assumes {CUDA_OVERHEAD_MIB} MiB of CUDA context and {FRAGMENTATION:.0%} "
            "fragmentation; not checked on a GPU. On one, this command also prints "
            "PyTorch's measured peak.)"
            + (
                f" Measured in {info['memory']['measured_in']}: a GPU computing in bf16 "
                "needs about half of the activations and unquantised weights, so the "
                "estimate is on the safe side."
                if info["memory"].get("measured_in")
                else ""
            )
        )
    timing = info.get("timing") or {}
    if timing:
        lines.append(
            f"Time per training step (forward, backward, Adam): {timing['train_step_s']:.3f} s; "
            f"a forward pass without gradient: {timing['forward_s']:.3f} s (median of the timed repeats)"
        )
    epoch = info.get("epoch")
    if epoch:
        lines.append(
            f"One epoch, estimated: {epoch['train_steps']:,} training steps "
            f"~ {_duration(epoch['train_s'])}, validation over {epoch['val_series']:,} series "
            f"~ {_duration(epoch['val_s'])}: ~ {_duration(epoch['epoch_s'])} on this machine"
        )
    return "\n".join(line.rstrip() for line in lines)
