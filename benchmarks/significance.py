"""Diebold-Mariano p-values of finished runs, one Markdown row per run folder.

Reads each folder's ``results.json`` (written by ``hybrid-forecast run``, which tests the
ensemble against every member and reference on the test windows, and each combiner of
the learned router against the mean): the ensemble's test MSE and p-values against the
mean, the median and the best member on test, and the same for ``stacked``.

    python benchmarks/significance.py runs/h1_ens_s0 runs/h1_ens_s1 ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def row(folder: Path) -> str:
    res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    test, sig = res["test"], res["significance"]["test"]["ensemble_vs"]
    best = min(res["members"], key=lambda m: test[m]["mse"])
    every = res.get("combiners", {})
    chosen = next((n for n, r in every.items() if r["chosen"]), res["router"])
    stacked = every.get("stacked")
    cells = [
        res["dataset"],
        str(res["pred_len"]),
        str(res["seed"]),
        chosen,
        f"{test['ensemble']['mse']:.4f}",
        f"{test['mean']['mse']:.4f} (p {_p(sig['mean']['p'])})",
        f"{test['median']['mse']:.4f} (p {_p(sig['median']['p'])})",
        f"{best} {test[best]['mse']:.4f} (p {_p(sig[best]['p'])})",
        ""
        if stacked is None
        else f"{stacked['test']['mse']:.4f} (p {_p(stacked['test_vs_mean']['p'])})",
        str(sig["mean"]["dof"]),
    ]
    return "| " + " | ".join(cells) + " |"


def member_row(folder: Path, member: str) -> str:
    """``member`` against each other member: test MSE difference and p."""
    res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    pairs = res["significance"]["test"]["members"]
    cells = [res["dataset"], str(res["pred_len"]), str(res["seed"])]
    for other in res["members"]:
        if other == member:
            continue
        r, sign = (
            (pairs[member][other], 1)
            if other in pairs.get(member, {})
            else (
                pairs[other][member],
                -1,
            )
        )
        cells.append(f"{sign * r['diff']:+.4f} (p {_p(r['p'])})")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="finished run folders")
    ap.add_argument("--member", help="instead: this member against each other member")
    args = ap.parse_args()
    if args.member:
        others = [
            m
            for m in json.loads((args.folders[0] / "results.json").read_text(encoding="utf-8"))[
                "members"
            ]
            if m != args.member
        ]
        print("| dataset | H | seed | " + " | ".join(f"{args.member} - {m}" for m in others) + " |")
        print("|---|---|---|" + "---|" * len(others))
        for folder in args.folders:
            print(member_row(folder, args.member))
        return
    print(
        "| dataset | H | seed | chosen | ensemble | mean (p ens vs mean) | median (p) "
        "| best member (p) | stacked (p vs mean) | dof |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for folder in args.folders:
        print(row(folder))


if __name__ == "__main__":
    main()
