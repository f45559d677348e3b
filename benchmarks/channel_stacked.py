"""Per-channel stacked weights (pre-registration 5), refitted on finished runs' cached forecasts.

``step_in`` is today's ``stacked`` (``router.stacked.StackedCombiner``): one simplex vector
per horizon step, pooled over channels, shrunk toward equal weights by ``lam`` chosen on
one time-ordered inner split of validation. ``channel_in`` also fits one vector per
(channel, step) and uses

    (1 - lam) * ((1 - a) * w_ch[c, h] + a * w_pool[h]) + lam / M,

with ``a`` and ``lam`` chosen jointly on the same inner split (ties to the larger ``a``,
then the larger ``lam``) and the weights refitted on all validation windows. ``a = 1``
is ``step_in``. Every fit sees validation forecasts and targets only; the squared error
of any weights is a quadratic form in them, so each part's per-(channel, step) moments
are computed once. One JSON line per folder is appended to ``--out`` (resumable);
``--table`` prints the summary and the pre-registered decision.

    python benchmarks/channel_stacked.py --out channel.jsonl runs/*
    python benchmarks/channel_stacked.py --out channel.jsonl --table
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cached_run import jsonl_main, load_cached, summary

from router.objective import inner_split
from router.stacked import StackedCombiner, simplex_least_squares

LAMS = np.linspace(0.0, 1.0, 11)
POOLS = np.linspace(0.0, 1.0, 5)  # a: 0 = per-channel weights, 1 = pooled (today's stacked)


def channel_moments(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """f [M, W, H, C], y [W, H, C] -> sums over windows: G [C, H, M, M], b [C, H, M], yy [C, H]; W."""
    return (
        np.einsum("mwhc,nwhc->chmn", f, f),
        np.einsum("mwhc,whc->chm", f, y),
        np.einsum("whc,whc->ch", y, y),
        f.shape[1],
    )


def mse(mom: tuple, w: np.ndarray) -> float:
    """MSE of weights w [C, H, M] over the windows summed in ``mom``."""
    g, b, yy, n = mom
    quad = np.einsum("chmn,chm,chn->", g, w, w) - 2.0 * np.einsum("chm,chm->", b, w)
    return float((quad + yy.sum()) / (n * yy.size))


def fit(mom: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Per-(channel, step) weights [C, H, M] and pooled per-step weights broadcast to [C, H, M]."""
    g, b, _, _ = mom
    c, h, m = b.shape
    w_ch = simplex_least_squares(g.reshape(c * h, m, m), b.reshape(c * h, m)).reshape(c, h, m)
    w_pool = simplex_least_squares(g.sum(0), b.sum(0))
    return w_ch, np.broadcast_to(w_pool, (c, h, m))


def blend(w_ch: np.ndarray, w_pool: np.ndarray, a: float, lam: float) -> np.ndarray:
    m = w_ch.shape[-1]
    return (1 - lam) * ((1 - a) * w_ch + a * w_pool) + lam / m


def score(folder: Path) -> dict:
    run = load_cached(folder)
    res = run.results
    m, w, h, c = run.val.shape
    fit_w, held_w = inner_split(w, h)
    inner_fit = channel_moments(run.val[:, fit_w], run.val_y[fit_w])
    inner_held = channel_moments(run.val[:, held_w], run.val_y[held_w])
    full = channel_moments(run.val, run.val_y)
    test = channel_moments(run.test, run.test_y)
    # step_in: the pooled rule (pool = 1), as the library ran it before pre-registration 5
    stacked = StackedCombiner(pool=1.0).fit(run.val, run.val_y)
    library = StackedCombiner().fit(run.val, run.val_y)  # the adopted rule, as the library runs it
    del run
    w_ch, w_pool = fit(inner_fit)
    # larger a, then larger lam first, so the strict < below breaks ties toward them
    grid = [(a, lam) for a in POOLS[::-1] for lam in LAMS[::-1]]
    inner = {g: mse(inner_held, blend(w_ch, w_pool, *g)) for g in grid}
    a, lam = grid[0]
    for g in grid:
        if inner[g] < inner[(a, lam)]:
            a, lam = g
    w_ch, w_pool = fit(full)
    step_in = mse(test, np.moveaxis(stacked.step_weights_, 0, 1))
    channel_in = mse(test, blend(w_ch, w_pool, a, lam))
    in_library = mse(test, np.moveaxis(library.step_weights_, 0, 1))
    if abs(in_library / channel_in - 1) > 1e-6:
        raise RuntimeError(
            f"{folder}: the library's stacked {in_library} is not channel_in {channel_in}"
        )
    return {
        "run": str(folder),
        "dataset": res["dataset"],
        "H": h,
        "C": c,
        "seed": res["seed"],
        "mean": mse(test, np.full((c, h, m), 1.0 / m)),
        "best_member": min(res["test"][k]["mse"] for k in res["members"]),
        "step_in": step_in,
        "step_in_lam": stacked.lam_,
        "channel_in": channel_in,
        "channel_in_a": float(a),
        "channel_in_lam": float(lam),
        "channel_0": mse(test, w_ch),  # no pooling, no shrinkage: for the record
    }


def table(rows: list[dict]) -> str:
    """Markdown: test MSE per folder, then the pre-registered comparison."""
    out = [
        "| run | H | C | mean | step_in (lam) | channel_in (a, lam) | channel_0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {Path(r['run']).name} | {r['H']} | {r['C']} | {r['mean']:.4f} | "
            f"{r['step_in']:.4f} ({r['step_in_lam']:.1f}) | {r['channel_in']:.4f} "
            f"({r['channel_in_a']:.2f}, {r['channel_in_lam']:.1f}) | {r['channel_0']:.4f} |"
        )
    keys = ("step_in", "channel_in")
    out += ["", *summary(rows, keys, "channel_in", "step_in", keep="stacked unchanged")]
    return "\n".join(out)


def main() -> None:
    jsonl_main(
        __doc__.splitlines()[0],
        score,
        table,
        lambda row: f"step_in {row['step_in']:.4f}, channel_in {row['channel_in']:.4f}",
    )


if __name__ == "__main__":
    main()
