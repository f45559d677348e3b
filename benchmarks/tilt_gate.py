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

from cached_run import Refits, jsonl_main, summary

FEATURED = ("lgbm", "torch", "rules")
RULES = {"U": ("stacked", FEATURED), "T": ("stacked_tilted", FEATURED)}


def score(folder: Path) -> dict:
    tested = Refits(folder)
    learned, row = tested.gate(folder, "stacked_tilted", ("stacked",), RULES)
    row["stacked"] = tested("stacked")
    row["stacked_tilted"] = tested("stacked_tilted")
    row["tilt"] = tested.described["stacked_tilted"].split(";")[0]
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
    out += ["", *summary(rows, (*RULES, "stacked_tilted"), "T", "U")]
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
