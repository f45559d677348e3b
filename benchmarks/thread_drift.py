"""How much the torch members' forecasts move between 1 and 2 CPU threads (README,
"Several runs at once"): the same run twice, with OMP_NUM_THREADS=1 and 2, each in its
own process; the largest absolute difference of each member's test forecasts and the
test MSEs side by side. DLinear and NLinear pin themselves to one thread and must give 0.

    python benchmarks/thread_drift.py [--out /tmp/thread_drift]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

MEMBERS = "dlinear,patchtst,itransformer,timellm"
RUN = [
    "run", "--dataset", "illness", "--seq-len", "36", "--pred-len", "24",
    "--members", MEMBERS, "--router", "mean", "--quiet",
    "--set", "dlinear.epochs=3", "--set", "patchtst.epochs=3", "--set", "itransformer.epochs=3",
    "--set", "timellm.epochs=1", "--set", "timellm.llm_layers=2",
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/thread_drift")
    out = Path(ap.parse_args().out)
    folders = {}
    for threads in (1, 2):
        folder = folders[threads] = out / f"threads{threads}"
        env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "experiments.cli", *RUN, "--out", str(folder)]
        subprocess.run(cmd, env=env, check=True)
    res = {
        t: json.loads((f / "results.json").read_text(encoding="utf-8")) for t, f in folders.items()
    }
    fc = {t: np.load(f / "forecasts.npz") for t, f in folders.items()}
    print(f"threads recorded: {[res[t]['environment']['cpu_threads'] for t in (1, 2)]}")
    print("| member | max abs forecast difference | test MSE, 1 thread | test MSE, 2 threads |")
    print("|---|---|---|---|")
    for name in [*MEMBERS.split(","), "ensemble"]:
        key = f"test/{name}"
        diff = float(np.max(np.abs(fc[1][key].astype(np.float64) - fc[2][key])))
        m1, m2 = (res[t]["test"][name]["mse"] for t in (1, 2))
        print(f"| {name} | {diff:.1e} | {m1:.9f} | {m2:.9f} |")


if __name__ == "__main__":
    main()
