"""Pre-registration 4: rule C (a one-sided Diebold-Mariano test on the held-out fold
windows) against rule A (one standard error of the per-fold differences).

Reads finished run folders whose ``results.json`` has the learned router's
``combiners`` with ``val_cv_vs_incumbent`` (runs or router refits from the sixth session
on). Rule A is the run's own choice; rule C keeps ``stacked`` unless a challenger beats
it on the held-out windows with one-sided p < 0.05, and picks the lowest fold mean among
those that do. Prints one Markdown row per folder, then the decision statistics of
``benchmarks/router_preregistration.md``.

    python benchmarks/rule_dm.py runs/dev_* runs/fresh_*
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

CHALLENGERS = ("learned_lgbm", "learned_torch", "rules")
ALPHA = 0.05


def one_sided_p(test: dict) -> float:
    """p of 'the challenger is better' from the two-sided test (dm < 0: better)."""
    if test["dm"] is None:
        return 0.0 if test["diff"] < 0 else 1.0
    return test["p"] / 2 if test["dm"] < 0 else 1 - test["p"] / 2


def rule_c(every: dict, n_folds: int) -> str:
    """The combiner rule C chooses from one run's ``combiners``."""
    if n_folds < 2:  # as rule A: one fold gives no evidence against the incumbent
        return "stacked"
    passed = [
        n
        for n in CHALLENGERS
        if n in every and one_sided_p(every[n]["val_cv_vs_incumbent"]) < ALPHA
    ]
    return min(passed, key=lambda n: every[n]["val_cv"]) if passed else "stacked"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="finished run folders")
    args = ap.parse_args()
    print(
        "| run | A chose | A test | challengers' one-sided p (lgbm, torch, rules) | C chose | C test |"
    )
    print("|---|---|---|---|---|---|")
    differ = []
    for folder in args.folders:
        res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        every = res["combiners"]
        n_folds = int(re.search(r"over (\d+) rolling-origin folds", res["router_info"]).group(1))
        a = next(n for n, r in every.items() if r["chosen"])
        c = rule_c(every, n_folds)
        a_mse, c_mse = every[a]["test"]["mse"], every[c]["test"]["mse"]
        ps = ", ".join(f"{one_sided_p(every[n]['val_cv_vs_incumbent']):.3f}" for n in CHALLENGERS)
        name = f"{res['dataset']} H={res['pred_len']} s{res['seed']}"
        print(f"| {name} | {a} | {a_mse:.4f} | {ps} | {c} | {c_mse:.4f} |")
        if a != c:
            differ.append((c_mse - a_mse) / a_mse)
    lower = sum(d < 0 for d in differ)
    mean = sum(differ) / len(differ) if differ else float("nan")
    print(
        f"\nA and C differ in {len(differ)} of {len(args.folders)} runs; C lower in {lower}; "
        f"mean (C - A) / A = {mean:+.4f}"
    )


if __name__ == "__main__":
    main()
