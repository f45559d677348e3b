"""Per-channel stacked weights as a challenger (pre-registration 6), on finished runs' cached forecasts.

One learned-router fit per folder, with the pooled ``stacked_pooled`` as incumbent and
LightGBM, torch, the rule tree and the per-channel ``stacked`` as challengers, scores
every candidate on the same rolling-origin folds. From those held-out losses three
rules' choices follow (all by ``router.learned.significance_choice``, one-sided DM
p < 0.05):

* G, the gate: incumbent ``stacked_pooled``, challengers lgbm, torch, rules, ``stacked``;
* U, pre-registration 5: incumbent ``stacked`` (per-channel), challengers lgbm, torch, rules;
* P, before it: incumbent ``stacked_pooled``, challengers lgbm, torch, rules.

Each choice is refitted on all validation windows and scored on the full test set. No
fit sees a test target. One JSON line per folder is appended to ``--out`` (resumable);
``--table`` prints the summary and the pre-registered decision (G against P).

    python benchmarks/channel_gate.py --out gate.jsonl runs/*
    python benchmarks/channel_gate.py --out gate.jsonl --table
"""

from __future__ import annotations

from pathlib import Path

from cached_run import Refits, jsonl_main, summary

FEATURED = ("lgbm", "torch", "rules")
RULES = {
    "G": ("stacked_pooled", (*FEATURED, "stacked")),
    "U": ("stacked", FEATURED),
    "P": ("stacked_pooled", FEATURED),
}


def score(folder: Path) -> dict:
    tested = Refits(folder)
    learned, row = tested.gate(folder, "stacked_pooled", ("stacked",), RULES)
    row["reported"] = tested.run.results["test"]["ensemble"]["mse"]
    if row["G_chose"] != learned.chosen_:
        raise RuntimeError(f"{folder}: the library chose {learned.chosen_}, G {row['G_chose']}")
    row["p_stacked_vs_pooled"] = learned.held_out_test("stacked")["p"]  # two-sided, held out
    return row


def table(rows: list[dict]) -> str:
    """Markdown: test MSE per folder and rule, then the pre-registered comparison."""
    out = [
        "| run | H | seed | mean | P | U | G | held-out p, stacked vs pooled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = " | ".join(f"{r[k]:.4f} ({r[k + '_chose']})" for k in ("P", "U", "G"))
        out.append(
            f"| {Path(r['run']).name} | {r['H']} | {r['seed']} | {r['mean']:.4f} | {cells} | "
            f"{r['p_stacked_vs_pooled']:.3f} |"
        )
    out += ["", *summary(rows, tuple(RULES), "G", "P", keep="U")]
    return "\n".join(out)


def main() -> None:
    jsonl_main(
        __doc__.splitlines()[0],
        score,
        table,
        lambda row: f"P {row['P']:.4f}, U {row['U']:.4f}, G {row['G']:.4f}",
    )


if __name__ == "__main__":
    main()
