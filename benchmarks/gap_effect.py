"""Learned router against the mean and the best member over finished run folders.

Reads each folder's ``results.json`` (the current code's run or router refit) and, where
present, ``results_before.json`` (a copy of the same folder's results under an earlier
code version), and prints one Markdown row per folder and the aggregate over folders:
mean relative test MSE against the mean, and how often the ensemble is below the mean
and below the best member.

    python benchmarks/gap_effect.py runs/dev_* runs/fresh_*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def row(folder: Path) -> dict:
    res = json.loads((folder / "results.json").read_text())
    before = folder / "results_before.json"
    old = json.loads(before.read_text()) if before.is_file() else None
    chosen = lambda r: next(k for k, v in r["combiners"].items() if v["chosen"])  # noqa: E731
    test = res["test"]
    return {
        "run": folder.name,
        "H": res["pred_len"],
        "seed": res["seed"],
        "mean": test["mean"]["mse"],
        "best": min(test[m]["mse"] for m in res["members"]),
        "learned": test["ensemble"]["mse"],
        "chosen": chosen(res),
        "before": None if old is None else old["test"]["ensemble"]["mse"],
        "before_chosen": None if old is None else chosen(old),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="run folders (others are skipped)")
    folders = sorted(f for f in ap.parse_args().folders if (f / "results.json").is_file())
    rows = [row(f) for f in folders]
    print("| run | H | seed | mean | best member | learned before | learned now |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        before = "–" if r["before"] is None else f"{r['before']:.4f} ({r['before_chosen']})"
        print(
            f"| {r['run']} | {r['H']} | {r['seed']} | {r['mean']:.4f} | {r['best']:.4f} "
            f"| {before} | {r['learned']:.4f} ({r['chosen']}) |"
        )
    n = len(rows)
    for label, key in (("now", "learned"), ("before", "before")):
        vals = [r[key] if r[key] is not None else r["learned"] for r in rows]
        rel = np.mean([v / r["mean"] - 1 for v, r in zip(vals, rows, strict=True)])
        below_mean = sum(v < r["mean"] - 1e-9 for v, r in zip(vals, rows, strict=True))
        equal = sum(abs(v - r["mean"]) <= 1e-9 for v, r in zip(vals, rows, strict=True))
        below_best = sum(v < r["best"] for v, r in zip(vals, rows, strict=True))
        print(
            f"\n{label}: learned vs the mean {100 * rel:+.2f} % on average; below the mean in "
            f"{below_mean}/{n} (equal in {equal}); below the best member in {below_best}/{n}"
        )


if __name__ == "__main__":
    main()
