"""Seasonal strength F_S of seasonless noise, by the number of cycles STL sees.

The calibration behind ``periodicity.strength.seasonal_threshold``: for white noise and
AR(1) red noise, STL (this project's settings) at periods 96, 672 and 1500 on 4 to 24
cycles; prints the median and the maximum F_S over the draws, and the threshold the
analyser applies at that many cycles.

    python benchmarks/stl_null.py            # 6 draws per period, 18 per cell
    python benchmarks/stl_null.py --draws 20
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.signal import lfilter

from periodicity.strength import seasonal_threshold, stl_components, strengths

CYCLES = [4, 6, 8, 10, 12, 16, 24]
PERIODS = [96, 672, 1500]


def null_strengths(phi: float, period: int, cycles: int, draws: int, rng) -> np.ndarray:
    """F_S of ``draws`` AR(1) series (phi 0: white noise) of ``cycles`` cycles: [draws]."""
    burn = 2000  # lets the AR(1) recursion forget its zero start
    out = np.empty(draws)
    for i in range(draws):
        x = lfilter([1], [1, -phi], rng.standard_normal(cycles * period + burn))[burn:]
        out[i] = strengths(*stl_components(x, period))[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=6, help="series per (noise, period, cycles)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print("| noise | " + " | ".join(f"{k} cycles" for k in CYCLES) + " |")
    print("|---|" + "---|" * len(CYCLES))
    for phi in (0.0, 0.99):
        cells = []
        for k in CYCLES:
            f = np.concatenate([null_strengths(phi, p, k, args.draws, rng) for p in PERIODS])
            cells.append(f"{np.median(f):.2f} / {f.max():.2f}")
        name = "white" if phi == 0 else f"AR(1) {phi}"
        print(f"| {name}: median / max F_S | " + " | ".join(cells) + " |")
    print("| threshold | " + " | ".join(f"{seasonal_threshold(k):.2f}" for k in CYCLES) + " |")


if __name__ == "__main__":
    main()
