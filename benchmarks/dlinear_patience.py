"""DLinear's early-stopping patience across seeds: how often a patience of 3 stops before
the epoch that validation would have preferred, per lookback.

Fits DLinear with its defaults (10 epochs at most, the learning rate halved after each)
on ETTh1 for seeds 0..N-1, once with ``patience=3`` (the default) and once with
``patience=10`` (never stops early; the best-validation epoch is still the one kept),
and prints the test MSE of each seed, their mean, sample std and maximum.

    python benchmarks/dlinear_patience.py --seq-len 96 --seeds 10
"""

from __future__ import annotations

import argparse

import numpy as np

from classical.dlinear import DLinear
from ensemble.data import load_dataset, make_splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ETTh1")
    ap.add_argument("--seq-len", type=int, default=96)
    ap.add_argument("--pred-len", type=int, default=96)
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()
    splits = make_splits(load_dataset(args.dataset), args.seq_len, args.pred_len)
    truth = splits.test.targets()
    for patience in (3, 10):
        mse, epochs = [], []
        for seed in range(args.seeds):
            model = DLinear(
                args.seq_len, args.pred_len, seed=seed, patience=patience, progress=False
            )
            model.fit(splits.train, splits.val)
            mse.append(float(((model.predict(splits.test.windows()) - truth) ** 2).mean()))
            epochs.append(len(model.history))
        m = np.array(mse)
        print(
            f"{args.dataset} L={args.seq_len} H={args.pred_len} patience {patience}: test MSE "
            f"{m.mean():.4f} ± {m.std(ddof=1):.4f}, max {m.max():.4f}; per seed "
            f"{' '.join(f'{v:.4f}' for v in m)}; epochs run {epochs}"
        )


if __name__ == "__main__":
    main()
