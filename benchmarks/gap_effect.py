"""Learned router against the mean and the best member over finished run folders.

Reads each folder's ``results.json`` (the current code's run or router refit) and, where
present, ``results_before.json`` (a copy of the same folder's results under an earlier
code version), and prints one Markdown row per folder and the aggregate over folders:
mean relative test MSE against the mean, and how often the ensemble is below the mean
and below the best member. Each version is judged against its own mean and best member
(they differ where the change retrained the members; "before → now" in the table).

    python benchmarks/gap_effect.py runs/dev_* runs/fresh_*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _chosen(res: dict) -> str:
    return next(k for k, v in res["combiners"].items() if v["chosen"])


def _best(res: dict) -> float:
    return min(res["test"][m]["mse"] for m in res["members"])


def row(folder: Path) -> dict:
    res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    before = folder / "results_before.json"
    old = json.loads(before.read_text(encoding="utf-8")) if before.is_file() else res
    return {
        "run": folder.name,
        "H": res["pred_len"],
        "seed": res["seed"],
        "mean": res["test"]["mean"]["mse"],
        "best": _best(res),
        "learned": res["test"]["ensemble"]["mse"],
        "chosen": _chosen(res),
        "has_before": before.is_file(),
        "before_mean": old["test"]["mean"]["mse"],
        "before_best": _best(old),
        "before": old["test"]["ensemble"]["mse"],
        "before_chosen": _chosen(old),
    }


def _pair(old: float, new: float) -> str:
    return f"{new:.4f}" if abs(old - new) <= 5e-5 else f"{old:.4f} → {new:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="run folders (others are skipped)")
    folders = sorted(f for f in ap.parse_args().folders if (f / "results.json").is_file())
    rows = [row(f) for f in folders]
    print("| run | H | seed | mean | best member | learned before | learned now |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        before = f"{r['before']:.4f} ({r['before_chosen']})" if r["has_before"] else "–"
        print(
            f"| {r['run']} | {r['H']} | {r['seed']} | {_pair(r['before_mean'], r['mean'])} "
            f"| {_pair(r['before_best'], r['best'])} | {before} | {r['learned']:.4f} ({r['chosen']}) |"
        )
    n = len(rows)
    for label, key, pre in (("now", "learned", ""), ("before", "before", "before_")):
        vals = [r[key] for r in rows]
        means = [r[pre + "mean"] for r in rows]
        bests = [r[pre + "best"] for r in rows]
        rel = np.mean([v / m - 1 for v, m in zip(vals, means, strict=True)])
        below_mean = sum(v < m - 1e-9 for v, m in zip(vals, means, strict=True))
        equal = sum(abs(v - m) <= 1e-9 for v, m in zip(vals, means, strict=True))
        below_best = sum(v < b for v, b in zip(vals, bests, strict=True))
        print(
            f"\n{label}: learned vs the mean {100 * rel:+.2f} % on average; below the mean in "
            f"{below_mean}/{n} (equal in {equal}); below the best member in {below_best}/{n}"
        )


if __name__ == "__main__":
    main()
