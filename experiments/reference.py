"""Published numbers to print beside ours, each with its source and protocol notes.

The table ``experiments/reference/published.csv`` is built from the facts collected in
``shared/reference/published_results.csv`` (``build_reference``): the same rows, with the
ditto note "same" replaced by the note it repeats, so every row stands on its own, and
a ``member`` column naming the forecast of ours the row is comparable with
(Time-LLM -> ``timellm``, DLinear -> ``dlinear``; empty for models we do not run).

Columns: ``model, member, dataset, seq_len, pred_len, mse, mae, source, protocol_note,
checked``. ``seq_len`` is the lookback the source used (a number, or a word such as
"searched"); ``checked`` says how the number was obtained ("read in repo", "recalled",
...), which the bench report repeats so a reader knows how far to trust it.

Run ``python -m experiments.reference SRC.csv`` to rebuild the table from the facts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ensemble.errors import UserError

PUBLISHED_CSV = Path(__file__).resolve().parent / "reference" / "published.csv"

COLUMNS = [
    "model",
    "member",
    "dataset",
    "seq_len",
    "pred_len",
    "mse",
    "mae",
    "source",
    "protocol_note",
    "checked",
]

# Published model name (prefix) -> our member it is comparable with.
MEMBER_OF_MODEL = {
    "Time-LLM": "timellm",
    "DLinear": "dlinear",
    "NLinear": "nlinear",
    "PatchTST": "patchtst",
}


def _member_for(model: str) -> str:
    for prefix, member in MEMBER_OF_MODEL.items():
        if model.startswith(prefix):
            return member
    return ""


def build_reference(src: str | Path) -> pd.DataFrame:
    """Turn the collected facts into the reference table.

    Args:
        src: a CSV with columns ``source, model, dataset, lookback, pred_len, mse, mae,
            protocol_note, checked`` (``protocol_note`` may be "same": the previous
            row's note).

    Returns:
        The table with ``COLUMNS``, in the order of ``src``.
    """
    facts = pd.read_csv(src, dtype=str, keep_default_na=False)
    need = {"source", "model", "dataset", "lookback", "pred_len", "mse", "mae", "protocol_note"}
    missing = need - set(facts.columns)
    if missing:
        raise UserError(f"{src}: missing column(s) {', '.join(sorted(missing))}")
    rows, last_note = [], ""
    for r in facts.to_dict("records"):
        note = r["protocol_note"].strip()
        if note.lower() == "same":
            note = last_note
        last_note = note
        rows.append(
            {
                "model": r["model"].strip(),
                "member": _member_for(r["model"].strip()),
                "dataset": r["dataset"].strip(),
                "seq_len": r["lookback"].strip(),
                "pred_len": int(r["pred_len"]),
                "mse": float(r["mse"]) if r["mse"].strip() else None,
                "mae": float(r["mae"]) if r["mae"].strip() else None,
                "source": r["source"].strip(),
                "protocol_note": note,
                "checked": r.get("checked", "").strip(),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def load_reference(path: str | Path | None = None) -> pd.DataFrame:
    """The reference table (default: the one shipped with the package)."""
    path = Path(path) if path else PUBLISHED_CSV
    if not path.is_file():
        raise UserError(f"reference table not found: {path}")
    df = pd.read_csv(path, dtype={"seq_len": str, "member": str}, keep_default_na=False)
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    for col in ("mse", "mae"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["pred_len"] = df["pred_len"].astype(int)
    return df[COLUMNS]


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.reference SRC.csv [DST.csv]``: rebuild the table."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m experiments.reference SRC.csv [DST.csv]", file=sys.stderr)
        return 2
    dst = Path(argv[1]) if len(argv) > 1 else PUBLISHED_CSV
    from ensemble.io import write_text

    write_text(dst, build_reference(argv[0]).to_csv(index=False, float_format="%.3f"))
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
