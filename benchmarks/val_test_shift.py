"""Does a member's skill relative to a control member shift between validation and test?

For each finished run folder, prints each member's MSE divided by the control member's
(default ``arima``, which is not selected on validation) on val and on test, and counts
the folders where the ratio is lower on test. Members that early-stop on validation
would look optimistic there (ratio higher on test) if selection bias drove the
val-to-test gap.

    python benchmarks/val_test_shift.py bench/cells/*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="finished run folders")
    ap.add_argument("--control", default="arima", help="member the others are divided by")
    args = ap.parse_args()
    lower: dict[str, list[bool]] = {}
    for folder in args.folders:
        path = folder / "results.json"
        if not path.is_file():
            continue
        res = json.loads(path.read_text(encoding="utf-8"))
        val, test = res["val"], res["test"]
        if args.control not in val:
            continue
        cells = []
        for m in res["members"]:
            if m == args.control:
                continue
            rv = val[m]["mse"] / val[args.control]["mse"]
            rt = test[m]["mse"] / test[args.control]["mse"]
            lower.setdefault(m, []).append(rt < rv)
            cells.append(f"{m} {rv:.3f} -> {rt:.3f}")
        print(f"{res['dataset']} H={res['pred_len']} seed {res['seed']}: " + ", ".join(cells))
    for m, flags in lower.items():
        print(
            f"{m}: ratio to {args.control} lower on test than on val in {sum(flags)} of {len(flags)}"
        )


if __name__ == "__main__":
    main()
