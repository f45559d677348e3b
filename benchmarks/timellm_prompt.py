"""Time-LLM's prompt, three ways: the concise prompt, no prompt, the ridge forecast injected.

Reads finished run folders (members dlinear, arima, lightgbm, timellm) that differ only in
``timellm.prompt`` / ``timellm.inject`` and the seed, and prints, per dataset, seed and
prompt variant: Time-LLM's val and test MSE, the learned ensemble's and the mean's test
MSE, and a Diebold-Mariano test of the variant's Time-LLM against the concise-prompt
Time-LLM of the same seed on the same test windows (two-sided p; ``ensemble.metrics``).
Then the means over seeds per variant, beside the concise prompt's over the same seeds.
Nothing is refitted.

    python benchmarks/timellm_prompt.py runs/h1_ens_s0 runs/h1_ens_s1 runs/h1_noprompt_s0 ...
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from ensemble import metrics


def variant(folder: Path) -> str:
    cfg = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    tl = (cfg.get("member_params") or {}).get("timellm") or {}
    if tl.get("backbone") == "none":
        return "no LLM"
    inject = tl.get("inject")
    if inject and inject != "none":
        return f"inject {inject if isinstance(inject, str) else '+'.join(inject)}"
    return {"none": "no prompt", "official": "official"}.get(tl.get("prompt"), "concise")


def window_losses(folder: Path) -> tuple[np.ndarray, int]:
    """[W] per-window MSE of the folder's Time-LLM on test, and H."""
    with np.load(folder / "forecasts.npz") as f:
        err = (f["test/timellm"].astype(np.float64) - f["test/true"]) ** 2
    return err.mean(axis=(1, 2)), err.shape[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="finished run folders")
    args = ap.parse_args()
    rows = []
    for folder in args.folders:
        res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        rows.append(
            {
                "folder": folder,
                "dataset": res["dataset"],
                "seed": res["seed"],
                "variant": variant(folder),
                "val": res["val"]["timellm"]["mse"],
                "test": res["test"]["timellm"]["mse"],
                "ensemble": res["test"]["ensemble"]["mse"],
                "mean": res["test"]["mean"]["mse"],
            }
        )
    base = {(r["dataset"], r["seed"]): r for r in rows if r["variant"] == "concise"}
    print(
        "| dataset | seed | prompt | Time-LLM val | Time-LLM test | DM p vs concise "
        "| ensemble test | mean test |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(
        rows, key=lambda r: (r["dataset"], r["variant"] != "concise", r["variant"], r["seed"])
    ):
        ref = base.get((r["dataset"], r["seed"]))
        p = "–"
        if ref is not None and ref is not r:
            a, h = window_losses(r["folder"])
            b, _ = window_losses(ref["folder"])
            p = f"{metrics.diebold_mariano(a, b, h)['p']:.3f}"
        print(
            f"| {r['dataset']} | {r['seed']} | {r['variant']} | {r['val']:.4f} | {r['test']:.4f} "
            f"| {p} | {r['ensemble']:.4f} | {r['mean']:.4f} |"
        )
    groups = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["variant"])].append(r)
    print(
        "\n| dataset | prompt | seeds | Time-LLM val | Time-LLM test | ensemble test "
        "| concise, same seeds: Time-LLM test | ensemble test |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (ds, var), rs in sorted(groups.items()):
        seeds = sorted(r["seed"] for r in rs)
        cells = [f"{np.mean([r[k] for r in rs]):.4f}" for k in ("val", "test", "ensemble")]
        refs = [base[(ds, sd)] for sd in seeds if (ds, sd) in base]
        ref = (
            [f"{np.mean([r[k] for r in refs]):.4f}" for k in ("test", "ensemble")]
            if len(refs) == len(seeds)
            else ["–", "–"]
        )
        print(f"| {ds} | {var} | {','.join(map(str, seeds))} | " + " | ".join(cells + ref) + " |")


if __name__ == "__main__":
    main()
