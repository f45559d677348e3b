"""Does a trained Time-LLM read its prompt? Counterfactual prompts at prediction time.

The fitted model stays fixed; only the prompt each (window, channel) series is given
changes:

* ``own``: the prompt built from the series' own window, as in training and `predict`;
* ``shuffled``: the prompt of another window of the same channel (a random permutation of
  the windows). The text is still in the training distribution, but its statistics
  (min / max / median / trend, injected forecasts) describe a different window;
* ``none``: no prompt (every token masked out), which a model trained with prompts never
  saw, so it measures dependence on the prefix being there at all rather than on its
  content;
* ``shuffled:<statistic>`` (one per window statistic the prompt states, e.g.
  ``shuffled:min``): the own prompt with only that statistic taken from the window
  ``shuffled`` takes the whole prompt from (the same permutation), so each statistic's
  share of the whole prompt's effect can be read off.

If ``shuffled`` barely moves the forecasts, the model does not use what its prompt says
about the window: the prefix then acts as a fixed context, whatever its wording. The
seeds' question "does the prompt really act as a hint, or does it interfere?" is answered
with numbers, per run, without another training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ensemble import metrics
from ensemble.data import Windows

if TYPE_CHECKING:
    from timellm.member import TimeLLMForecaster

VARIANTS = ("own", "shuffled", "none")


def stat_variants(member: TimeLLMForecaster) -> list[str]:
    """``shuffled:<statistic>`` for each statistic the member's prompt states that
    differs between windows (not the run's periods, the same in every prompt)."""
    builder = getattr(member, "builder", None)
    if builder is None:
        return []
    return [f"shuffled:{name}" for name in builder.stats if name != "periods"]


def prompt_probe(
    member: TimeLLMForecaster,
    windows: Windows,
    targets: np.ndarray,
    channels: Sequence[int] | None = None,
    seed: int = 0,
    per_statistic: bool = True,
) -> dict[str, dict[str, float]]:
    """Score the member's forecasts under each prompt variant.

    Args:
        member: a fitted (or loaded) Time-LLM member that uses prompts.
        windows: the windows to forecast (e.g. ``splits.test.windows()``).
        targets: [W, H, C'] their targets, in the same (scaled) space.
        channels: the C' forecast channels that ``targets`` holds (None: all C).
        seed: seed of the window permutation for ``shuffled``.
        per_statistic: also the ``shuffled:<statistic>`` variants (one more forecast of
            every window each).

    Returns:
        variant -> {"mse", "mae", "change", "change_rel", "p"}: errors against the
        targets, the mean absolute difference from the ``own`` forecasts (0 for ``own``),
        that difference relative to the mean absolute ``own`` forecast, and the two-sided
        Diebold-Mariano p of the variant's per-window MSE against ``own``'s (1 for ``own``).
    """
    forecasts = member.injected_forecasts(windows)  # once, not once per variant
    own_set = member.prompt_set(windows, forecasts=forecasts)
    perm = np.random.default_rng(seed).permutation(len(own_set))
    # A derangement is not needed: with thousands of windows few keep their own prompt.
    sets = {
        "own": own_set,
        "shuffled": dataclasses.replace(own_set, ids=own_set.ids[perm], mask=own_set.mask[perm]),
        "none": dataclasses.replace(
            own_set,
            ids=torch.zeros_like(own_set.ids[..., :1]),
            mask=torch.zeros_like(own_set.mask[..., :1]),
        ),
    }
    names = list(VARIANTS) + (stat_variants(member) if per_statistic else [])
    out: dict[str, dict[str, float]] = {}
    own = own_loss = None
    for name in names:
        data = sets.get(name)
        if data is None:  # one statistic from the shuffled window, the rest its own
            swap = ([name.split(":", 1)[1]], perm)
            data = member.prompt_set(windows, swap=swap, forecasts=forecasts)
        pred = member.predict_set(data).astype(np.float64)
        if channels is not None:
            pred = pred[..., list(channels)]
        err = pred - targets
        loss = np.mean(err**2, axis=(1, 2))  # [W]
        if own is None:
            own, own_loss = pred, loss
        change = float(np.mean(np.abs(pred - own)))
        out[name] = {
            "mse": float(np.mean(err**2)),
            "mae": float(np.mean(np.abs(err))),
            "change": change,
            "change_rel": change / max(float(np.mean(np.abs(own))), 1e-12),
            "p": float(metrics.diebold_mariano(loss, own_loss, targets.shape[1])["p"]),
        }
    return out
