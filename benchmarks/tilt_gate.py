"""Stacked weights tilted toward recently better members (pre-registration 7), on cached forecasts.

One learned-router fit per folder, with ``stacked_tilted`` as incumbent and LightGBM,
torch, the rule tree and the per-channel ``stacked`` as challengers, scores every
candidate on the same rolling-origin folds. Two rules' choices follow from those held-out
losses (``router.learned.significance_choice``, one-sided DM p < 0.05):

* T: incumbent ``stacked_tilted``, challengers lgbm, torch, rules;
* U, today's rule: incumbent ``stacked``, challengers lgbm, torch, rules.

Each choice is refitted on all validation windows and scored on the full test set, as
are ``stacked_tilted`` and ``stacked`` on their own. No fit sees a test target: the
tilt's recent errors on a test window come from targets inside that window's input. One
JSON line per folder is appended to ``--out`` (resumable); ``--table`` prints the summary
and the pre-registered decision (T against U).

    python benchmarks/tilt_gate.py --out tilt.jsonl runs/*
    python benchmarks/tilt_gate.py --out tilt.jsonl --table
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cached_run import jsonl_main, load_cached, verdict

from router import make_combiner
from router.learned import LearnedRouter, registry_name, significance_choice

FEATURED = ("lgbm", "torch", "rules")
RULES = {"U": ("stacked", FEATURED), "T": ("stacked_tilted", FEATURED)}


def score(folder: Path) -> dict:
    run = load_cached(folder)
    res, members = run.results, run.results["members"]
    with np.load(folder / "router_weights.npz") as z:
        names = [str(n) for n in z["feature_names"]]
        feats_val, feats_test = z["features_val"], z["features_test"]
    context = {"seed": res["seed"], "member_names": members, "feature_names": names}
    learned = LearnedRouter(incumbent="stacked_tilted", static_challengers=("stacked",), **context)
    learned.fit(run.val, run.val_y, feats_val)
    h = run.val.shape[2]
    test_mse: dict[str, float] = {}
    described: dict[str, str] = {}

    def tested(name: str) -> float:
        if name not in test_mse:
            model = make_combiner(registry_name(name), **context).fit(run.val, run.val_y, feats_val)
            test_mse[name] = float(
                np.mean((model.forecast(run.test, feats_test) - run.test_y) ** 2)
            )
            described[name] = model.describe()
        return test_mse[name]

    row = {
        "run": str(folder),
        "dataset": res["dataset"],
        "H": h,
        "seed": res["seed"],
        "mean": tested("mean"),
        "stacked": tested("stacked"),
        "stacked_tilted": tested("stacked_tilted"),
        "best_member": min(res["test"][m]["mse"] for m in members),
    }
    for rule, (incumbent, challengers) in RULES.items():
        losses = {n: learned.held_losses_[n] for n in (*challengers, incumbent)}
        pick = significance_choice(losses, learned.fold_scores_, incumbent, h)
        row[rule], row[f"{rule}_chose"] = tested(pick), pick
    row["tilt"] = described["stacked_tilted"].split(";")[0]
    row["p_stacked_vs_tilted"] = learned.held_out_test("stacked")["p"]  # two-sided, held out
    return row


def table(rows: list[dict]) -> str:
    """Markdown: test MSE per folder and rule, then the pre-registered comparison."""
    out = [
        "| run | H | seed | mean | best member | U | T | stacked_tilted | tilt chosen on the inner split |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = " | ".join(f"{r[k]:.4f} ({r[k + '_chose']})" for k in RULES)
        out.append(
            f"| {Path(r['run']).name} | {r['H']} | {r['seed']} | {r['mean']:.4f} | "
            f"{r['best_member']:.4f} | {cells} | {r['stacked_tilted']:.4f} | {r['tilt']} |"
        )
    keys = (*RULES, "stacked_tilted")
    rel = {k: np.mean([r[k] / r["mean"] - 1 for r in rows]) for k in keys}
    differ, lower, adopt = verdict(rows, "T", "U")
    out += [
        "",
        "mean test MSE vs the mean: " + ", ".join(f"{k} {100 * v:+.2f} %" for k, v in rel.items()),
        "below the mean: "
        + ", ".join(f"{k} {sum(r[k] < r['mean'] for r in rows)}/{len(rows)}" for k in keys),
        "below the best member: "
        + ", ".join(f"{k} {sum(r[k] < r['best_member'] for r in rows)}/{len(rows)}" for k in keys),
        f"T differs from U in {differ} of {len(rows)} runs and is lower in {lower}",
        f"pre-registered decision: {'adopt T' if adopt else 'keep U'}",
    ]
    return "\n".join(out)


def main() -> None:
    jsonl_main(
        __doc__.splitlines()[0],
        score,
        table,
        lambda row: (
            f"U {row['U']:.4f}, T {row['T']:.4f} ({row['T_chose']}), mean {row['mean']:.4f}"
        ),
    )


if __name__ == "__main__":
    main()
