"""Where DLinear's test MSE sits at each epoch, beside the validation MSE that picks it.

An analysis of a published-number gap, not a way to choose epochs: the test MSE of every
epoch is printed to show how far the epoch validation keeps (best validation MSE, the
protocol) is from the others, never to pick one. Fits DLinear with its defaults but no
early stop (``patience=0``: all epochs run) on one dataset for the given seeds.

    python benchmarks/dlinear_epochs.py --seq-len 336 --pred-len 720 --seeds 0,1,2
"""

from __future__ import annotations

import argparse

import numpy as np

from classical._torch_train import predict_windows
from classical.dlinear import DLinear
from ensemble.data import load_dataset, make_splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ETTh1")
    ap.add_argument("--seq-len", type=int, default=336)
    ap.add_argument("--pred-len", type=int, default=720)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    splits = make_splits(load_dataset(args.dataset), args.seq_len, args.pred_len, warn=False)
    x, truth = splits.test.windows().x, np.asarray(splits.test.targets())
    print(
        "| seed | epoch: val MSE / test MSE (bold: best validation) | kept with patience 3 "
        "(the default) | test MSE range |"
    )
    print("|---|---|---|---|")
    for seed in map(int, args.seeds.split(",")):
        model = DLinear(args.seq_len, args.pred_len, seed=seed, progress=False, patience=0)
        rows: list[tuple[int, float, float]] = []

        def after_epoch(epoch: int, val: float, model: DLinear = model, rows=rows) -> None:
            test = float(((predict_windows(model.net, x) - truth) ** 2).mean())
            model.net.train()  # predict_windows left it in eval mode mid-fit
            rows.append((epoch, val, test))

        model.on_epoch = after_epoch
        model.fit(splits.train, splits.val)
        best = min(rows, key=lambda r: r[1])[0]
        cells = [
            (f"**{e}: {v:.4f} / {t:.4f}**" if e == best else f"{e}: {v:.4f} / {t:.4f}")
            for e, v, t in rows
        ]
        kept = _kept(rows, patience=3)
        tests = [t for _, _, t in rows]
        print(
            f"| {seed} | {', '.join(cells)} | epoch {kept[0]}, test {kept[2]:.4f} | "
            f"{min(tests):.4f} - {max(tests):.4f} |",
            flush=True,
        )


def _kept(rows: list[tuple[int, float, float]], patience: int) -> tuple[int, float, float]:
    """The epoch the trainer keeps with ``patience``: the best validation MSE before
    ``patience`` epochs in a row fail to improve on it."""
    best, bad = rows[0], 0
    for row in rows[1:]:
        if row[1] < best[1]:
            best, bad = row, 0
        else:
            bad += 1
            if bad >= patience:
                break
    return best


if __name__ == "__main__":
    main()
