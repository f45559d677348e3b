"""A finished run folder's cached forecasts, for the scripts that refit combiners on them.

Nothing is retrained: the members' val and test forecasts come from ``forecasts.npz`` and
the validation targets from the run's own data split (``config.yaml``).
"""

from __future__ import annotations

import json
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
    res = json.loads((folder / "results.json").read_text())
    with np.load(folder / "forecasts.npz") as f:
        val = np.stack([f[f"val/{m}"] for m in res["members"]]).astype(np.float64)
        test = np.stack([f[f"test/{m}"] for m in res["members"]]).astype(np.float64)
        test_y = f["test/true"].astype(np.float64)
    cfg = RunConfig.from_file(folder / "config.yaml")
    splits = make_splits(cfg.load_dataset(), cfg.seq_len, cfg.pred_len, percent=cfg.percent)
    val_y = splits.val.targets()[..., splits.eval_channels].astype(np.float64)
    return CachedRun(res, val, val_y, test, test_y)
