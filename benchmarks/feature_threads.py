"""Window features on one thread and on ``chunk_threads()`` threads.

Times ``router.features.window_features`` (series statistics, periodicity features,
members' spread and recent skill) or, with ``--analyse``, ``analyse``'s report features
(``experiments.analyse.window_features`` at the first period) over the validation-sized
stretch of a wide CSV, the two settings run alternately in one process (the machine is
shared and noisy), and checks that both give the same bytes. The members' forecasts are stand-ins (the next H
rows plus noise): the features' cost does not depend on them.

    python benchmarks/wide_csv.py elec.csv --rows 26304 --channels 321
    python benchmarks/feature_threads.py elec.csv --rows 3200 --reps 3
    python benchmarks/feature_threads.py elec.csv --rows 3200 --reps 3 --analyse
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
import torch  # loaded as in `run`: chunk_threads() follows torch's thread count
from numpy.lib.stride_tricks import sliding_window_view

import periodicity.features as pf
from experiments import analyse
from router import features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="a CSV with a date column first")
    parser.add_argument("--rows", type=int, default=3200, help="rows read (W = rows - L - H + 1)")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--pred-len", type=int, default=96)
    parser.add_argument("--periods", default="24,168")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--analyse", action="store_true", help="analyse's report features")
    args = parser.parse_args()

    v = pd.read_csv(args.csv, nrows=args.rows).iloc[:, 1:].to_numpy(np.float64)
    v = (v - v.mean(0)) / (v.std(0) + 1e-9)
    L, H = args.seq_len, args.pred_len
    w = v.shape[0] - L - H + 1
    x = sliding_window_view(v, L, axis=0)[:w].transpose(0, 2, 1)  # [W, L, C] view
    future = sliding_window_view(v[L:], H, axis=0)[:w].transpose(0, 2, 1)  # [W, H, C]
    rng = np.random.default_rng(0)
    stack = np.stack([future + 0.1 * rng.standard_normal(future.shape) for _ in range(3)])
    stack = stack.astype(np.float32)  # [M, W, H, C], as members' forecasts are kept
    periods = [int(p) for p in args.periods.split(",")]

    default = pf.chunk_threads
    settings = {"1 thread": lambda: 1, f"{default()} threads": default}
    times: dict[str, list[float]] = {k: [] for k in settings}
    outs: dict[str, bytes] = {}
    for _ in range(args.reps):
        for tag, threads in settings.items():
            pf.chunk_threads = threads
            t0 = time.perf_counter()
            if args.analyse:
                report = analyse.window_features(x, periods[0])
                got = b"".join(report[k].tobytes() for k in sorted(report))
            else:
                got = features.window_features(x, stack, periods, ["a", "b", "c"])[0].tobytes()
            times[tag].append(time.perf_counter() - t0)
            outs[tag] = got
    pf.chunk_threads = default
    what = "analyse's report features" if args.analyse else "the router's features"
    print(f"{what}: W={w} L={L} C={v.shape[1]} H={H}; torch threads {torch.get_num_threads()}")
    for tag, t in times.items():
        print(f"  {tag}: median {statistics.median(t):.1f} s over {len(t)} runs")
    print("  identical bytes:", len(set(outs.values())) == 1)


if __name__ == "__main__":
    main()
