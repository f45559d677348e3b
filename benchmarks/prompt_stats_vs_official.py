"""How far our prompt's statistics are from the official Time-LLM's on ETTh1's train windows.

The official model computes them per series of the RevIN-normalised window in float32:
``torch.median`` (the lower middle value), the trend as the sign of the summed first
differences, and the top-5 "lags" as ``topk`` of the circular autocorrelation averaged
over nothing (one series). Ours (``timellm.prompt.window_stats``) takes ``np.median``
(the mean of the two middle values) and the sign of last minus first. Every 37th train
window, all 7 channels; prints, per lookback, the largest median difference, the share
of medians whose 3-significant-digit text differs, the trend disagreements and the
share of windows whose official lags are {0, 1, 2, L-2, L-1}:

    python benchmarks/prompt_stats_vs_official.py   # needs $HYBRID_FORECAST_DATA
"""

from __future__ import annotations

import numpy as np
import torch

from ensemble.data import load_dataset
from timellm.prompt import window_stats


def official_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """[W, L, C] windows -> the official per-series statistics, each [W * C] (lags [W * C, 5])."""
    t = torch.from_numpy(x.astype(np.float32))
    mean = t.mean(1, keepdim=True)
    std = torch.sqrt(t.var(1, keepdim=True, unbiased=False) + 1e-5)
    z = ((t - mean) / std).permute(0, 2, 1).reshape(-1, x.shape[1])  # [W*C, L]
    spec = torch.fft.rfft(z, dim=-1)
    corr = torch.fft.irfft(spec * torch.conj(spec), dim=-1)
    return {
        "median": torch.median(z, dim=1).values.numpy(),
        "trend": (z.diff(dim=1).sum(dim=1) > 0).numpy(),
        "lags": torch.topk(corr, 5, dim=-1).indices.numpy(),
    }


def main() -> None:
    data = load_dataset("ETTh1")
    train = data.values[:8640]
    scaled = (data.values - train.mean(0)) / train.std(0)
    for L in (512, 96):
        starts = np.arange(0, 8640 - L - 96, 37)
        x = np.stack([scaled[s : s + L] for s in starts]).astype(np.float32)  # [W, L, C]
        ours = {k: v.reshape(-1) for k, v in window_stats(x, ("median", "trend")).items()}
        off = official_stats(x)
        pairs = zip(ours["median"], off["median"], strict=True)
        text = np.mean([f"{a:.3g}" != f"{b:.3g}" for a, b in pairs])
        edge = np.mean([set(lag) == {0, 1, 2, L - 2, L - 1} for lag in off["lags"].tolist()])
        print(
            f"L={L}: {len(off['median'])} series; median differs by up to "
            f"{np.abs(ours['median'] - off['median']).max():.3f}, its 3-digit text in "
            f"{text:.0%}; trend disagrees in {int((ours['trend'] != off['trend']).sum())}; "
            f"official lags {{0, 1, 2, L-2, L-1}} in {edge:.0%} of series"
        )


if __name__ == "__main__":
    main()
