"""Pooled against per-channel stacked weights on four-member runs with Time-LLM (pre-registration 8).

Each folder gets one learned-router fit with every candidate on the same rolling-origin
folds (``cached_run.Refits.gate``, choices by one-sided DM p < 0.05), and the
pre-registered decision compares

* U, today's rule: incumbent per-channel ``stacked``, challengers lgbm, torch, rules;
* P: incumbent ``stacked_pooled``, the same challengers.

Each row also holds every member's val and test MSE relative to DLinear (question 1:
does validation rate Time-LLM worse, relative to DLinear, than test does?). U must
equal the ensemble the folder's ``results.json`` reports, since the folders were run
with today's code. One JSON line per folder is appended to ``--out`` (resumable);
``--table`` prints both tables and the decision.

    python benchmarks/timellm_pooled.py --out pooled4.jsonl runs/h2_tlm_s* runs/ex_tlm_s0
    python benchmarks/timellm_pooled.py --out pooled4.jsonl --table
"""

from __future__ import annotations

from pathlib import Path

from cached_run import Refits, jsonl_main, summary
from channel_gate import FEATURED

RULES = {"U": ("stacked", FEATURED), "P": ("stacked_pooled", FEATURED)}
CONTROL = "dlinear"


def score(folder: Path) -> dict:
    tested = Refits(folder)
    _, row = tested.gate(folder, "stacked_pooled", ("stacked",), RULES)
    res = tested.run.results
    if abs(row["U"] / res["test"]["ensemble"]["mse"] - 1) > 1e-6:
        raise RuntimeError(f"{folder}: U {row['U']} is not the reported ensemble")
    row["stacked_pooled"] = tested("stacked_pooled")
    for split in ("val", "test"):
        base = res[split][CONTROL]["mse"]
        row[f"{split}_ratio"] = {m: res[split][m]["mse"] / base for m in res["members"]}
    return row


def table(rows: list[dict]) -> str:
    """Markdown: member ratios (question 1), rules' test MSE, then the decision (P against U)."""
    members = [m for m in rows[0]["val_ratio"] if m != CONTROL]
    out = [
        "| run | " + " | ".join(f"{m} val / test" for m in members) + " |",
        "|---|" + "---|" * len(members),
    ]
    for r in rows:
        cells = " | ".join(f"{r['val_ratio'][m]:.3f} / {r['test_ratio'][m]:.3f}" for m in members)
        out.append(f"| {Path(r['run']).name} | {cells} |")
    out += [
        "",
        f"(member MSE divided by {CONTROL}'s, on validation and on test)",
        "",
        "| run | seed | best member | mean | U | P | stacked_pooled alone |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = " | ".join(f"{r[k]:.4f} ({r[k + '_chose']})" for k in ("U", "P"))
        out.append(
            f"| {Path(r['run']).name} | {r['seed']} | {r['best_member']:.4f} | {r['mean']:.4f} | "
            f"{cells} | {r['stacked_pooled']:.4f} |"
        )
    out += ["", *summary(rows, ("U", "P", "stacked_pooled"), "P", "U")]
    return "\n".join(out)


def main() -> None:
    jsonl_main(
        __doc__.splitlines()[0],
        score,
        table,
        lambda row: f"U {row['U']:.4f}, P {row['P']:.4f}, mean {row['mean']:.4f}",
    )


if __name__ == "__main__":
    main()
