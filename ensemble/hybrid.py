"""The hybrid combiner: members' forecasts weighted per window and channel."""

from __future__ import annotations

import numpy as np


def stack(forecasts: dict[str, np.ndarray]) -> np.ndarray:
    """{name: [W, H, C]} -> [M, W, H, C] in the dict's order."""
    return np.stack([np.asarray(f, dtype=np.float64) for f in forecasts.values()])


def combine(stacked: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted combination of members' forecasts.

    Args:
        stacked: [M, W, H, C] members' forecasts.
        weights: [W, C, M] (per window and channel), [W, M], [C, M] or [M]; each row
            sums to one.

    Returns:
        [W, H, C] combined forecast.
    """
    m, w, _, c = stacked.shape
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim == 2 and w == c and weights.shape == (w, m):
        raise ValueError(
            f"weights of shape {weights.shape} are ambiguous with {w} windows and {c} channels "
            f"(per window or per channel?): pass them as [W, C, M] = ({w}, {c}, {m})"
        )
    if weights.ndim == 1:
        weights = np.broadcast_to(weights, (w, c, m))
    elif weights.shape == (w, m):
        weights = np.broadcast_to(weights[:, None, :], (w, c, m))
    elif weights.shape == (c, m):
        weights = np.broadcast_to(weights[None], (w, c, m))
    if weights.shape != (w, c, m):
        raise ValueError(
            f"weights of shape {weights.shape} do not fit {m} members x {w} windows x {c} channels"
        )
    return np.einsum("mwhc,wcm->whc", stacked, weights)


def combined_forecast(
    combiner, stacked: np.ndarray, features: np.ndarray | None = None
) -> np.ndarray:
    """A fitted combiner's forecast: [M, W, H, C] (+ features [W, C, F]) -> [W, H, C].

    Combiners that weight each horizon step separately (median, inverse error) provide
    their own ``forecast``; the others are their weights applied with ``combine``.
    """
    if hasattr(combiner, "forecast"):
        return combiner.forecast(stacked, features)
    return combine(stacked, combiner.weights(stacked, features))


def by_window_blocks(fn, n_windows: int, block: int = 256, axis: int = 0) -> np.ndarray:
    """``fn(lo, hi)`` on consecutive blocks of windows, results concatenated along ``axis``.

    Whole-array reductions over [M, W, H, C] (sorts, squared differences) make temporaries
    of that size or several times it, 10+ GB on weather at H=720; blocks bound them.
    """
    return np.concatenate(
        [fn(lo, lo + block) for lo in range(0, max(n_windows, 1), block)], axis=axis
    )


def oracle_weights(stacked: np.ndarray, targets: np.ndarray, block: int = 256) -> np.ndarray:
    """One-hot weights on the best member per window and channel, judged on the targets.

    The best any router that picks one member per window and channel could do, reported
    next to the ensemble; it sees the targets, so it is never a forecast used for
    anything. It does not bound weighted combinations: per-step weights mixing several
    members can score below it, as they did on a smooth synthetic series.

    Args:
        stacked: [M, W, H, C] members' forecasts.
        targets: [W, H, C].
        block: windows per block of the error computation.

    Returns:
        [W, C, M] one-hot weights.
    """
    err = by_window_blocks(  # [M, W, C], block by block: no [M, W, H, C] temporary
        lambda lo, hi: np.mean(
            (np.asarray(stacked[:, lo:hi], np.float64) - targets[None, lo:hi]) ** 2, axis=2
        ),
        stacked.shape[1],
        block,
        axis=1,
    )
    return np.eye(stacked.shape[0])[np.argmin(err, axis=0)]
