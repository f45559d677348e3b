"""How often the learned router leaves its incumbent when it should not, and when it should.

`LearnedRouter` keeps the stacked incumbent unless a challenger (the LightGBM, torch and
rule-tree routers) beats it on held-out validation windows with one-sided
Diebold-Mariano p < 0.05. Three challengers tested at 5 % each can switch more often
than 5 % of the time when none is better; Holm's step-down correction bounds that
family-wise rate. This benchmark measures both rules on simulated validation and test
sets (pre-registration 9 in ``benchmarks/router_preregistration.md``):

* null: three members whose errors are persistent AR(1) processes (a common part and
  an own part, fixed scales 1.0, 1.1, 1.2) and window features that are pure noise, so
  static weights are the best a router can do and every switch is a false one;
* alternative (``strength`` s): member 0's errors are scaled by 1 - s and member 1's by
  1 + s while feature 0 is positive, the reverse while it is negative, so a router
  reading feature 0 beats static weights.

Windows overlap in H - 1 steps as in every run (W = ETTh1's validation windows at
L=512). For each replication both rules choose from the same fitted router's held-out
losses; the chosen combiner is refitted on all validation windows and scored on a test
set drawn from the same process.

    python benchmarks/router_null.py --reps 200 --alt-reps 60 --out null.jsonl
    python benchmarks/router_null.py --out null.jsonl --table
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

CONFIGS = ((2785, 96), (2545, 336), (2161, 720))  # (W, H): ETTh1 validation at L=512
STRENGTHS = (0.15, 0.3)
M, C, F = 3, 2, 8
SCALES = (1.0, 1.1, 1.2)
ALPHA = 0.05


def ar1(rng: np.random.Generator, lead: tuple[int, ...], n: int, phi: float) -> np.ndarray:
    """[*lead, n] stationary AR(1) paths with unit variance."""
    z = rng.normal(size=(*lead, n + 500)) * np.sqrt(1 - phi**2)
    return lfilter([1.0], [1.0, -phi], z, axis=-1)[..., 500:]


def sample(rng: np.random.Generator, w: int, h: int, strength: float):
    """Forecasts [M, W, H, C], targets [W, H, C] and features [W, C, F] of one split.

    Targets are 0 (only the errors matter to a combiner); feature 0 is persistent, so
    its sign marks regimes many windows long.
    """
    t = w + h - 1
    e = np.sqrt(0.5) * ar1(rng, (1, C), t, 0.95) + np.sqrt(0.5) * ar1(rng, (M, C), t, 0.95)
    e *= np.asarray(SCALES)[:, None, None]
    feats = np.moveaxis(ar1(rng, (C, F), w, 0.99), -1, 0)  # [W, C, F]
    idx = np.arange(w)[:, None] + np.arange(h)[None]  # [W, H]
    err = np.moveaxis(e[:, :, idx], 1, -1)  # [M, W, H, C]
    if strength:
        sign = np.where(feats[:, :, 0] > 0, 1.0, -1.0)[:, None, :]  # [W, 1, C]
        err[0] *= 1 - strength * sign
        err[1] *= 1 + strength * sign
    y = np.zeros((w, h, C), np.float32)
    return err.astype(np.float32), y, feats.astype(np.float32)


def one_sided_p(router, name: str) -> float:
    from ensemble import metrics

    inc = router.held_losses_[router.incumbent]
    return metrics.diebold_mariano(router.held_losses_[name], inc, router.horizon_, "less")["p"]


def holm(pvals: dict[str, float], alpha: float = ALPHA) -> list[str]:
    """Challengers Holm's step-down procedure rejects (NaN p: never)."""
    passed, m = [], len(pvals)
    for i, name in enumerate(sorted(pvals, key=lambda n: np.nan_to_num(pvals[n], nan=2.0))):
        if not pvals[name] < alpha / (m - i):
            break
        passed.append(name)
    return passed


def replicate(seed: int, w: int, h: int, strength: float) -> dict:
    from ensemble import metrics
    from router.learned import LearnedRouter

    rng = np.random.default_rng(seed)
    val, test = sample(rng, w, h, strength), sample(rng, w, h, strength)
    router = LearnedRouter(references=(), seed=seed, feature_names=[f"f{i}" for i in range(F)]).fit(
        *val
    )
    challengers = [n for n in router.held_losses_ if n != router.incumbent]
    p = {n: one_sided_p(router, n) for n in challengers}

    def pick(passed: list[str]) -> str:
        if len(router.fold_scores_[router.incumbent]) < 2 or not passed:
            return router.incumbent
        return min(passed, key=lambda n: np.mean(router.fold_scores_[n]))

    unadjusted = pick([n for n in challengers if p[n] < ALPHA])
    assert unadjusted == router.chosen_, (unadjusted, router.chosen_)
    corrected = pick(holm(p))
    test_mse = {}
    for name in {router.incumbent, unadjusted, corrected}:
        model = router._make(name).fit(*val)
        test_mse[name] = float(metrics.window_mse(model.forecast(test[0], test[2]), test[1]).mean())
    return {
        "seed": seed,
        "W": w,
        "H": h,
        "strength": strength,
        "p": p,
        "unadjusted": unadjusted,
        "holm": corrected,
        "incumbent": router.incumbent,
        "test_mse": test_mse,
    }


def run(out: Path, reps: int, alt_reps: int) -> None:
    done = set()
    if out.is_file():
        for line in out.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            done.add((r["seed"], r["W"], r["H"], r["strength"]))
    jobs = [(s, w, h, 0.0) for w, h in CONFIGS for s in range(reps)]
    jobs += [(s, w, h, st) for st in STRENGTHS for w, h in CONFIGS for s in range(alt_reps)]
    todo = [j for j in jobs if j not in done]
    t0 = time.perf_counter()
    for i, (s, w, h, st) in enumerate(todo, 1):
        row = replicate(s, w, h, st)
        with out.open(
            "a", encoding="utf-8"
        ) as f:  # one line per replication: an interrupted run resumes
            f.write(json.dumps(row) + "\n")
        if i % 20 == 0 or i == len(todo):
            print(f"{i}/{len(todo)} ({time.perf_counter() - t0:.0f}s)", flush=True)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion k / n."""
    centre = (k + z * z / 2) / (n + z * z)
    half = z * np.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return centre - half, centre + half


def table(out: Path) -> None:
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    print(
        "| setting | W | H | reps | switches: unadjusted (95 % CI) | switches: Holm | "
        "switches lowering test MSE: unadjusted | Holm | test MSE vs incumbent when "
        "switched: unadjusted | Holm |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for st in (0.0, *STRENGTHS):
        for w, h in CONFIGS:
            rs = [r for r in rows if r["strength"] == st and (r["W"], r["H"]) == (w, h)]
            if not rs:
                continue
            n = len(rs)
            cells = []
            for rule in ("unadjusted", "holm"):
                k = sum(r[rule] != r["incumbent"] for r in rs)
                lo, hi = wilson(k, n)
                cells.append(f"{k}/{n} = {100 * k / n:.1f} % ({100 * lo:.1f}-{100 * hi:.1f})")
            for rule in ("unadjusted", "holm"):
                good = sum(r["test_mse"][r[rule]] < r["test_mse"][r["incumbent"]] for r in rs)
                cells.append(str(good))
            for rule in ("unadjusted", "holm"):
                ch = [r for r in rs if r[rule] != r["incumbent"]]
                rel = [r["test_mse"][r[rule]] / r["test_mse"][r["incumbent"]] - 1 for r in ch]
                cells.append(f"{100 * np.mean(rel):+.2f} %" if rel else "-")
            name = "null" if st == 0 else f"alternative s={st}"
            print(f"| {name} | {w} | {h} | {n} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200, help="null replications per (W, H)")
    ap.add_argument("--alt-reps", type=int, default=60, help="per (W, H) and strength")
    ap.add_argument("--out", type=Path, default=Path("router_null.jsonl"))
    ap.add_argument("--table", action="store_true", help="only print the table of --out")
    args = ap.parse_args()
    if not args.table:
        run(args.out, args.reps, args.alt_reps)
    table(args.out)


if __name__ == "__main__":
    main()
