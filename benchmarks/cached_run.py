"""A finished run folder's cached forecasts, for the scripts that refit combiners on them.

Nothing is retrained: the members' val and test forecasts come from ``forecasts.npz`` and
the validation targets from the run's own data split (``config.yaml``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.data import make_splits
from experiments.config import RunConfig


@dataclass
class CachedRun:
    """results: results.json; val, test: [M, W, H, C] forecasts; val_y, test_y: [W, H, C]."""

    results: dict
    val: np.ndarray
    val_y: np.ndarray
    test: np.ndarray
    test_y: np.ndarray


def load_cached(folder: Path) -> CachedRun:
    res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    with np.load(folder / "forecasts.npz") as f:
        val = np.stack([f[f"val/{m}"] for m in res["members"]]).astype(np.float64)
        test = np.stack([f[f"test/{m}"] for m in res["members"]]).astype(np.float64)
        test_y = f["test/true"].astype(np.float64)
    cfg = RunConfig.from_file(folder / "config.yaml")
    splits = make_splits(cfg.load_dataset(), cfg.seq_len, cfg.pred_len, percent=cfg.percent)
    val_y = splits.val.targets()[..., splits.eval_channels].astype(np.float64)
    return CachedRun(res, val, val_y, test, test_y)


class Refits:
    """A cached run's router features, and combiners refitted on its validation forecasts.

    ``refits(name)`` is the test MSE of combiner ``name`` (a ``router.learned`` candidate
    or registry name) fitted on validation with the run's features; each is fitted once.

    Attributes:
        run: the cached forecasts; feats_val, feats_test: [W, C, F] router features;
        context: the keyword arguments the run gives every combiner;
        described: name -> the fitted combiner's ``describe()``.
    """

    def __init__(self, folder: Path):
        self.run = load_cached(folder)
        with np.load(folder / "router_weights.npz") as z:
            names = [str(n) for n in z["feature_names"]]
            self.feats_val, self.feats_test = z["features_val"], z["features_test"]
        res = self.run.results
        self.context = {"seed": res["seed"], "member_names": res["members"], "feature_names": names}
        self.described: dict[str, str] = {}
        self._mse: dict[str, float] = {}

    def gate(
        self,
        folder: Path,
        incumbent: str,
        static_challengers: tuple[str, ...],
        rules: dict[str, tuple[str, tuple[str, ...]]],
    ):
        """One learned-router fit (``incumbent``, the feature-conditioned challengers and
        ``static_challengers``, all on the same folds) and the folder's row: its identity,
        the mean's and best member's test MSE, and for each rule ``{rule: (incumbent,
        challengers)}`` its choice (``router.learned.significance_choice``) and that
        choice's test MSE.

        Returns:
            (the fitted ``LearnedRouter``, the row).
        """
        from router.learned import LearnedRouter, significance_choice

        run, res = self.run, self.run.results
        learned = LearnedRouter(
            incumbent=incumbent, static_challengers=static_challengers, **self.context
        )
        learned.fit(run.val, run.val_y, self.feats_val)
        h = run.val.shape[2]
        row = {
            "run": str(folder),
            "dataset": res["dataset"],
            "H": h,
            "seed": res["seed"],
            "mean": self("mean"),
            "best_member": min(res["test"][m]["mse"] for m in res["members"]),
        }
        for rule, (inc, ch) in rules.items():
            losses = {n: learned.held_losses_[n] for n in (*ch, inc)}
            pick = significance_choice(losses, learned.fold_scores_, inc, h)
            row[rule], row[f"{rule}_chose"] = self(pick), pick
        return learned, row

    def __call__(self, name: str) -> float:
        from router import make_combiner
        from router.learned import registry_name

        if name not in self._mse:
            run = self.run
            model = make_combiner(registry_name(name), **self.context)
            model.fit(run.val, run.val_y, self.feats_val)
            pred = model.forecast(run.test, self.feats_test)
            self._mse[name] = float(np.mean((pred - run.test_y) ** 2))
            self.described[name] = model.describe()
        return self._mse[name]


def jsonl_main(
    description: str,
    score: Callable[[Path], dict],
    table: Callable[[list[dict]], str],
    brief: Callable[[dict], str],
) -> None:
    """The command line of the refit scripts: one JSON line per folder, resumable.

    ``score(folder)`` gives a folder's row (with its ``run``), appended to ``--out``
    unless that folder is there already; ``brief(row)`` is printed as it goes;
    ``--table`` prints ``table(rows)`` of every row in ``--out``.
    """
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("folders", nargs="*", type=Path, help="finished run folders")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines, appended (resumable)")
    ap.add_argument("--table", action="store_true", help="print the summary table of --out")
    args = ap.parse_args()
    lines = args.out.read_text(encoding="utf-8").splitlines() if args.out.exists() else []
    done = {json.loads(line)["run"] for line in lines}
    for folder in args.folders:
        if str(folder) in done or not (folder / "results.json").is_file():
            continue
        row = score(folder)
        with args.out.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"{folder}: {brief(row)}", flush=True)
    if args.table:
        print(
            table([json.loads(line) for line in args.out.read_text(encoding="utf-8").splitlines()])
        )


def verdict(rows: list[dict], new: str, old: str) -> tuple[int, int, bool]:
    """The pre-registrations' decision rule for replacing rule ``old`` by ``new``.

    Adopt ``new`` iff its mean relative test MSE against the mean (``row["mean"]``) is
    lower than ``old``'s and it is lower than ``old`` in more than half of the rows where
    the two differ (relative difference over 1e-6).

    Returns:
        (rows where they differ, rows among those where ``new`` is lower, adopt).
    """

    def rel(k: str) -> float:
        return float(np.mean([r[k] / r["mean"] - 1 for r in rows]))

    differ = [r for r in rows if abs(r[new] / r[old] - 1) > 1e-6]
    lower = sum(r[new] < r[old] for r in differ)
    return len(differ), lower, rel(new) < rel(old) and lower > len(differ) / 2


def summary(
    rows: list[dict], keys: tuple[str, ...], new: str, old: str, keep: str | None = None
) -> list[str]:
    """The closing lines of a pre-registration's table: each rule in ``keys`` against the
    mean and the best member over ``rows``, then ``verdict(rows, new, old)`` and the
    decision (adopt ``new``, or keep ``keep``, by default ``old``)."""
    rel = {k: np.mean([r[k] / r["mean"] - 1 for r in rows]) for k in keys}
    differ, lower, adopt = verdict(rows, new, old)
    out = [
        "mean test MSE vs the mean: " + ", ".join(f"{k} {100 * v:+.2f} %" for k, v in rel.items()),
        "below the mean: "
        + ", ".join(f"{k} {sum(r[k] < r['mean'] for r in rows)}/{len(rows)}" for k in keys),
    ]
    if all("best_member" in r for r in rows):
        out.append(
            "below the best member: "
            + ", ".join(
                f"{k} {sum(r[k] < r['best_member'] for r in rows)}/{len(rows)}" for k in keys
            )
        )
    out += [
        f"{new} differs from {old} in {differ} of {len(rows)} runs and is lower in {lower}",
        f"pre-registered decision: {'adopt ' + new if adopt else 'keep ' + (keep or old)}",
    ]
    return out
