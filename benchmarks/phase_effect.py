"""Test MSE of members by where their windows start in the day.

A fixed train stride that shares a factor with the period (8 on hourly data, whose
period is 24) trains only on windows starting at some hours of the day. This prints, per
member of each run folder, the test MSE over all windows, over the windows starting at
a multiple of the stride, and over the others; a ratio near 1 means no phase effect.

    python benchmarks/phase_effect.py RUN_DIR... [--stride 8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ensemble.data import make_splits
from experiments.config import RunConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--stride", type=int, default=8)
    args = ap.parse_args()
    for run in args.runs:
        cfg = RunConfig.from_file(run / "config.yaml")
        splits = make_splits(cfg.load_dataset(), cfg.seq_len, cfg.pred_len, percent=cfg.percent)
        true = splits.test.targets()[..., splits.eval_channels]
        # the row of each test window's first input, counted from the file's first row
        on = (splits.test.start + np.arange(splits.test.n_windows)) % args.stride == 0
        res = json.loads((run / "results.json").read_text(encoding="utf-8"))
        with np.load(run / "forecasts.npz") as z:
            for name in res["members"]:
                err = ((z[f"test/{name}"] - true) ** 2).mean(axis=(1, 2))
                print(
                    f"{run.name:<12} {name:<32} all {err.mean():.4f}  "
                    f"start % {args.stride} == 0: {err[on].mean():.4f}  "
                    f"others {err[~on].mean():.4f}  ratio {err[~on].mean() / err[on].mean():.3f}"
                )


if __name__ == "__main__":
    main()
