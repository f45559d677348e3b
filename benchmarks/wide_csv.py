"""Synthetic hourly CSVs for scale measurements: a daily and a weekly cycle per channel
(random amplitudes and level), plus noise. Not a forecasting benchmark: the files exist
to measure memory and time on many channels or many rows.

    python benchmarks/wide_csv.py wide862.csv --rows 4000 --channels 862
    python benchmarks/wide_csv.py wide300.csv --rows 3000 --channels 300
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def frame(rows: int, channels: int, seed: int = 0) -> pd.DataFrame:
    """[rows, 1 + channels]: a date column, then c0..c{n-2} and OT."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    daily = np.sin(2 * np.pi * t / 24)[:, None] * rng.uniform(0.5, 2, channels)
    weekly = np.sin(2 * np.pi * t / 168)[:, None] * rng.uniform(0, 1, channels)
    noise = 0.3 * rng.standard_normal((rows, channels))
    level = rng.uniform(0, 10, channels).astype(np.float32)
    x = (daily + weekly + noise).astype(np.float32) + level
    df = pd.DataFrame(x, columns=[f"c{i}" for i in range(channels - 1)] + ["OT"])
    dates = pd.date_range("2000-01-01", periods=rows, freq="h")
    df.insert(0, "date", dates.strftime("%Y-%m-%d %H:%M:%S"))
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="CSV to write")
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--channels", type=int, default=862)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    frame(args.rows, args.channels, args.seed).to_csv(args.out, index=False, float_format="%.4f")


if __name__ == "__main__":
    main()
