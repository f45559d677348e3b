"""The exact simplex solver against FISTA, on finished runs' cached validation forecasts.

``stacked`` and ``stacked_pooled`` are fitted twice per folder: with the exact solver
(support enumeration, the default) and with the FISTA solver it replaced (patched in).
Printed per folder: fit seconds, the chosen (pool, lam), the largest weight difference
and the relative difference of the test MSE. Nothing is retrained.

    python benchmarks/solver_check.py runs/*
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from cached_run import load_cached

import router.stacked as stacked


def fits(run, solver) -> dict[str, tuple[float, float, float, np.ndarray, float]]:
    """name -> (seconds, pool, lam, weights [H, C, M], test MSE) with ``solver`` patched in."""
    saved, stacked.simplex_least_squares = stacked.simplex_least_squares, solver
    try:
        out = {}
        for cls in (stacked.StackedCombiner, stacked.PooledStackedCombiner):
            t = time.perf_counter()
            c = cls().fit(run.val, run.val_y)
            seconds = time.perf_counter() - t
            mse = float(np.mean((c.forecast(run.test) - run.test_y) ** 2))
            out[cls.name] = (seconds, c.pool_, c.lam_, c.step_weights_, mse)
        return out
    finally:
        stacked.simplex_least_squares = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    args = ap.parse_args()
    print(
        "| run | combiner | fit s, FISTA | fit s, exact | same (pool, lam) | max weight diff | test MSE rel. diff |"
    )
    print("|---|---|---|---|---|---|---|")
    for folder in args.folders:
        if not (folder / "results.json").is_file():
            continue
        run = load_cached(folder)
        exact, fista = fits(run, stacked.simplex_qp_exact), fits(run, stacked.simplex_qp_fista)
        for name, (s_e, pool_e, lam_e, w_e, mse_e) in exact.items():
            s_f, pool_f, lam_f, w_f, mse_f = fista[name]
            print(
                f"| {folder.name} | {name} | {s_f:.2f} | {s_e:.2f} | "
                f"{(pool_e, lam_e) == (pool_f, lam_f)} | {np.abs(w_e - w_f).max():.1e} | "
                f"{abs(mse_e / mse_f - 1):.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
