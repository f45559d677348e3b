"""Refit the router of finished runs on their saved forecasts; score every combination on test.

A run folder keeps each member's val and test forecasts (``forecasts.npz``) and, for
feature-conditioned routers, the window features (``router_weights.npz``). This script
refits the current ``learned`` router on the validation forecasts of each folder
(nothing is retrained, no test target is seen by any fit) and appends one CSV row per
folder: the learned router's test MSE and choice, the reference combinations, the best
member, what two other selection rules over the same fold scores would have given, and
what the folder's own run had reported (the router of the code that ran it).
It resumes: folders already in the CSV are skipped.

    python benchmarks/reroute.py --csv reroute.csv bench/cells/*
    python benchmarks/reroute.py --csv dev.csv runs/ETTh2_96 runs/weather_96
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from cached_run import load_cached

from router import make_combiner
from router.learned import one_se_choice, registry_name

REFERENCES = ("mean", "median", "stacked", "stacked_pooled")


def reroute(folder: Path) -> dict:
    """One folder's row: test MSE of the refitted learned router and of the references."""
    run = load_cached(folder)
    res, members = run.results, run.results["members"]
    val, val_y, test, test_y = run.val, run.val_y, run.test, run.test_y
    with np.load(folder / "router_weights.npz") as z:
        names = [str(n) for n in z["feature_names"]]
        feats_val, feats_test = z["features_val"], z["features_test"]

    def test_mse(model) -> float:
        return round(float(np.mean((model.forecast(test, feats_test) - test_y) ** 2)), 4)

    t0 = time.perf_counter()
    learned = make_combiner(
        "learned", seed=res["seed"], member_names=members, feature_names=names
    ).fit(val, val_y, feats_val)
    row = {
        "run": str(folder),
        "dataset": res["dataset"],
        "H": res["pred_len"],
        "seed": res["seed"],
        "learned": test_mse(learned),
        "chosen": learned.chosen_,
        "router_seconds": round(time.perf_counter() - t0, 1),
    }
    for name in REFERENCES:
        row[name] = test_mse(make_combiner(name).fit(val, val_y))
    # Other selection rules over the same fold scores, for comparison: the lowest fold
    # mean among every scored combiner, and the one-standard-error rule against the mean.
    folds = learned.fold_scores_
    for rule, pick in (
        ("rule_lowest", min(learned.inner_scores_, key=learned.inner_scores_.get)),
        ("rule_se_mean", one_se_choice(folds, "mean")),
    ):
        model = make_combiner(
            registry_name(pick), seed=res["seed"], member_names=members, feature_names=names
        ).fit(val, val_y, feats_val)
        row[rule], row[f"{rule}_chose"] = test_mse(model), pick
    row["best_member"] = round(min(res["test"][m]["mse"] for m in members), 4)
    row["reported_ensemble"] = round(res["test"]["ensemble"]["mse"], 4)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="finished run folders")
    ap.add_argument("--csv", type=Path, required=True, help="rows are appended here")
    args = ap.parse_args()
    done = set()
    if args.csv.exists():
        with args.csv.open(encoding="utf-8") as fh:
            done = {r["run"] for r in csv.DictReader(fh)}
    for folder in args.folders:
        if str(folder) in done or not (folder / "results.json").is_file():
            continue
        row = reroute(folder)
        print(json.dumps(row), flush=True)
        new = not args.csv.exists()
        with args.csv.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


if __name__ == "__main__":
    main()
