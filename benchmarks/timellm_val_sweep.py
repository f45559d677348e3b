"""Choose Time-LLM training settings on validation only: fit the member, print its val MSE.

Every window of the validation split is scored; the test split is never loaded into the
model, so settings picked with this script do not peek at test. One JSON line per call,
also appended to ``--log`` (JSON lines), so a sweep is a shell loop:

    python benchmarks/timellm_val_sweep.py --name base
    python benchmarks/timellm_val_sweep.py --name nollm backbone=none
    python benchmarks/timellm_val_sweep.py --name nollm_ts1 backbone=none train_stride=1 epochs=6

Defaults: ETTh1, L=512, H=96, MiniLM cut to 1 layer, patch 16 / stride 16, d_ff 128,
random (window, channel) batches of 16, every 8th train window, early stopping on every
16th val window, 4 epochs, patience 2, lr 2e-3, cosine schedule. ``key=value`` arguments
override any `TimeLLMForecaster` argument (values parsed as JSON when they parse).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import torch

from ensemble.data import load_dataset, make_splits
from experiments.run import detect_periods
from timellm.member import TimeLLMForecaster

DEFAULTS = dict(
    llm_layers=1,
    stride=16,
    d_ff=128,
    sample="series",
    batch_size=16,
    train_stride=8,
    val_stride=16,
    epochs=4,
    patience=2,
    lr=2e-3,
)


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("overrides", nargs="*", help="key=value member arguments")
    ap.add_argument("--name", required=True)
    ap.add_argument("--dataset", default="ETTh1")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--pred-len", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log", default="timellm_val_sweep.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    splits = make_splits(load_dataset(args.dataset), args.seq_len, args.pred_len)
    params = {**DEFAULTS, **parse_overrides(args.overrides)}
    # the periods `run` would hand the member (train rows only): ETTh1's are 24, 168
    periods = detect_periods(splits)
    member = TimeLLMForecaster(
        dataset=args.dataset,
        seq_len=args.seq_len,
        pred_len=args.pred_len,
        periods=periods,
        progress=False,
        **params,
    )
    t0 = time.perf_counter()
    member.fit(splits.train, splits.val)
    fit_s = time.perf_counter() - t0
    pred = member.predict(splits.val.windows())
    val_mse = float(np.mean((pred - splits.val.targets()) ** 2))
    row = {
        "name": args.name,
        "dataset": args.dataset,
        "periods": periods,
        "params": params,
        "val_mse": round(val_mse, 4),
        "fit_s": round(fit_s, 1),
        "best_epoch": member.best_epoch,
        "history": member.history,
    }
    print(json.dumps(row))
    with open(args.log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
