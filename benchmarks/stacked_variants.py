"""Variants of the stacked combination, refitted on finished runs' cached forecasts.

The stacked weights (``router.stacked``) are one simplex vector per horizon step, blended
with equal weights by ``lam`` chosen on one time-ordered inner split of validation. This
script scores, on each folder's full test set, variants of both choices:

* weights per step (``step``), per block of steps (``b8``, ``b4``) or one vector (``glob``);
* ``lam`` from the inner split (``in``, the current rule), from the learned router's
  rolling-origin folds (``cv``), or none (``0``);
* per-step weights fitted with recency-discounted windows, half-life 25 % or 50 % of the
  fitting windows (``disc25_in``, ``disc50_in``; pre-registration 2 in
  ``benchmarks/router_preregistration.md``), or with the half-life chosen together with
  ``lam`` on the inner split from {none, 50 %, 25 %} (``discsel_in``, pre-registration 3).

Every fit sees validation forecasts and targets only. The squared error of any weights is
a quadratic form in them, so the per-window, per-step moments of val and test are
computed once and every variant is scored from them. One JSON line per folder is
appended to ``--out`` (resumable); ``--table`` prints the summary.

    python benchmarks/stacked_variants.py --out variants.jsonl runs/*
    python benchmarks/stacked_variants.py --out variants.jsonl --table
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cached_run import jsonl_main, load_cached

from router.learned import COARSE_CUTS, DEFAULT_CUTS, rolling_folds
from router.objective import inner_split
from router.stacked import simplex_least_squares

LAMS = np.linspace(0.0, 1.0, 11)  # the stacked combiner's grid
VARIANTS = (
    "step_in",
    "step_cv",
    "step_0",
    "b8_in",
    "b8_cv",
    "b4_in",
    "b4_cv",
    "glob_in",
    "glob_cv",
    "glob_0",
    "disc25_in",
    "disc50_in",
    "discsel_in",
)


def window_step_moments(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f [M, W, H, C], y [W, H, C] -> G [W, H, M, M], b [W, H, M], yy [W, H] (channel means)."""
    c = f.shape[-1]
    return (
        np.einsum("mwhc,nwhc->whmn", f, f) / c,
        np.einsum("mwhc,whc->whm", f, y) / c,
        np.einsum("whc,whc->wh", y, y) / c,
    )


def mse(mom: tuple, w: np.ndarray) -> float:
    """MSE of per-step weights w [H, M] over the windows in ``mom``."""
    g, b, yy = mom
    quad = np.einsum("whmn,hm,hn->", g, w, w) - 2.0 * np.einsum("whm,hm->", b, w)
    return float((quad + yy.sum()) / yy.size)


def fit_weights(mom: tuple, blocks: int, half_life: float | None = None) -> np.ndarray:
    """[H, M] simplex least-squares weights, constant within each of ``blocks`` step blocks.

    ``half_life`` (a share of the windows) weights window ``i`` of ``W`` by
    ``0.5 ** ((W - 1 - i) / (half_life * W))``; None weights them equally.
    """
    g, b, _ = mom
    w, h = g.shape[:2]
    r = np.ones(w) if half_life is None else 0.5 ** (np.arange(w)[::-1] / (half_life * w))
    g, b = np.einsum("w,whmn->hmn", r, g) / r.sum(), np.einsum("w,whm->hm", r, b) / r.sum()
    edges = np.linspace(0, h, blocks + 1).astype(int)
    parts = list(zip(edges[:-1], edges[1:], strict=True))
    wb = simplex_least_squares(
        np.stack([g[lo:hi].mean(0) for lo, hi in parts]),
        np.stack([b[lo:hi].mean(0) for lo, hi in parts]),
    )
    return np.repeat(wb, np.diff(edges), axis=0)


def choose_lam(
    mom: tuple, blocks: int, splits: list, half_life: float | None = None
) -> tuple[float, float]:
    """The shrinkage with the lowest held-out MSE summed over ``splits``, and that MSE."""
    m = mom[1].shape[-1]
    score = np.zeros(LAMS.size)
    for fit, held in splits:
        w = fit_weights(tuple(a[fit] for a in mom), blocks, half_life)
        part = tuple(a[held] for a in mom)
        score += [mse(part, (1 - lam) * w + lam / m) for lam in LAMS]
    return float(LAMS[int(np.argmin(score))]), float(score.min())


def variants(folder: Path) -> dict:
    run = load_cached(folder)
    res = run.results
    val = window_step_moments(run.val, run.val_y)
    test = window_step_moments(run.test, run.test_y)
    del run
    w, h, m = val[0].shape[:3]
    splits = {"in": [inner_split(w, h)]}
    folds = rolling_folds(w, h, DEFAULT_CUTS)
    splits["cv"] = folds if len(folds) >= 2 else rolling_folds(w, h, COARSE_CUTS) or splits["in"]
    row = {
        "run": str(folder),
        "dataset": res["dataset"],
        "H": h,
        "seed": res["seed"],
        "members": res["members"],
        "mean": mse(test, np.full((h, m), 1.0 / m)),
        "best_member": min(res["test"][k]["mse"] for k in res["members"]),
    }
    for blocks_name, blocks in (("step", h), ("b8", min(8, h)), ("b4", 4), ("glob", 1)):
        fitted = fit_weights(val, blocks)
        row[f"{blocks_name}_0"] = mse(test, fitted)
        for how, spl in splits.items():
            lam, _ = choose_lam(val, blocks, spl)
            row[f"{blocks_name}_{how}"] = mse(test, (1 - lam) * fitted + lam / m)
            row[f"{blocks_name}_{how}_lam"] = lam
    # recency-discounted per-step weights; None (equal weights) is step_in itself
    scored = {}  # half-life -> (test MSE, inner-split MSE)
    for half_life in (None, 0.5, 0.25):  # ties go to the earlier (simpler) entry
        lam, inner_mse = choose_lam(val, h, splits["in"], half_life)
        test_mse = mse(test, (1 - lam) * fit_weights(val, h, half_life) + lam / m)
        scored[half_life] = (test_mse, inner_mse)
        if half_life is not None:
            row[f"disc{round(100 * half_life)}_in"] = test_mse
            row[f"disc{round(100 * half_life)}_in_lam"] = lam
    best = min(scored, key=lambda k: scored[k][1])
    row["discsel_in"], row["discsel_in_half_life"] = scored[best][0], best
    return row


def table(rows: list[dict]) -> str:
    """Markdown: test MSE per folder and variant, then how each variant compares."""
    keys = [k for k in VARIANTS if k in rows[0]]
    out = [
        "| run | dataset | H | seed | mean | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 5) + "|",
    ]
    for r in rows:
        out.append(
            f"| {Path(r['run']).name} | {r['dataset']} | {r['H']} | {r['seed']} | {r['mean']:.4f} | "
            + " | ".join(f"{r[k]:.4f}" for k in keys)
            + " |"
        )
    for label, f in (
        (
            "mean % vs mean",
            lambda k: f"{np.mean([100 * (r[k] / r['mean'] - 1) for r in rows]):+.2f}",
        ),
        ("below mean", lambda k: f"{sum(r[k] < r['mean'] for r in rows)}/{len(rows)}"),
        (
            "below step_in",
            lambda k: f"{sum(r[k] < r['step_in'] - 1e-12 for r in rows)}/{len(rows)}",
        ),
    ):
        out.append(f"| {label} | | | | | " + " | ".join(f(k) for k in keys) + " |")
    return "\n".join(out)


def main() -> None:
    jsonl_main(
        __doc__.splitlines()[0],
        variants,
        table,
        lambda row: f"step_in {row['step_in']:.4f}, mean {row['mean']:.4f}",
    )


if __name__ == "__main__":
    main()
