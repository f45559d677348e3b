"""The hybrid combiner: members' forecasts weighted per window and channel."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ensemble.errors import UserError


def memory_order(like: np.ndarray) -> list[int]:
    """``like``'s axes in memory order, outermost first."""
    return sorted(range(like.ndim), key=lambda a: -abs(like.strides[a]))


def empty_like_layout(shape: tuple[int, ...], like: np.ndarray, dtype=None) -> np.ndarray:
    """An uninitialised array of ``shape`` whose axes lie in memory in ``like``'s order.

    Whole-array numpy operations lay their results out like their inputs (a member's
    forecasts with its channels picked by ``[..., ch]`` lie channel-major), and a
    reduction's result depends on that layout (the order it adds in). Arrays filled
    block by block are allocated with this, so that they are laid out, and later summed,
    as the whole-array result was.
    """
    order = memory_order(like)
    base = np.empty([shape[a] for a in order], dtype=like.dtype if dtype is None else dtype)
    return base.transpose(np.argsort(order))


def empty_stack(n_members: int, like: np.ndarray, dtype=None) -> np.ndarray:
    """An uninitialised [M, *like.shape] stack, members outermost, each laid out like
    ``like`` (as ``np.stack`` lays out members that share a layout)."""
    member = empty_like_layout(like.shape, like, dtype)
    order = memory_order(member)
    base = np.empty([n_members, *(like.shape[a] for a in order)], dtype=member.dtype)
    return base.transpose(0, *(1 + np.argsort(order)))


def stack(forecasts: dict[str, np.ndarray], dtype: npt.DTypeLike = np.float64) -> np.ndarray:
    """{name: [W, H, C]} -> [M, W, H, C] in the dict's order, of ``dtype`` (None: the
    members' common dtype).

    Filled member by member (each laid out as the members are, like ``np.stack``): no
    float64 copy of every member next to the stack. The run keeps float32 members as a
    float32 stack (``scoring.stack_members``): every combiner, metric and the oracle cast
    blocks of it to float64 where they compute, so the numbers are those of a float64
    stack, at half its memory.
    """
    members = [np.asarray(f) for f in forecasts.values()]
    if not members:
        raise ValueError("no forecasts to stack")
    shape = members[0].shape
    if any(f.shape != shape for f in members):
        raise ValueError(
            f"members' forecasts differ in shape: {[f.shape for f in members]}, expected one"
        )
    out = empty_stack(
        len(members), members[0], np.result_type(*members) if dtype is None else dtype
    )
    for i, f in enumerate(members):
        out[i] = f
    return out


def windows_per_block(shape: tuple[int, ...], max_elements: int = 1 << 22) -> int:
    """Windows per block of an [M, W, H, C] stack so that a block holds about
    ``max_elements`` values (32 MB in float64), and at least two windows."""
    m, _, h, c = shape
    return max(2, max_elements // max(1, m * h * c))


def weighted_sum(
    stacked: np.ndarray, weights: np.ndarray, per_step: bool = False, block: int | None = None
) -> np.ndarray:
    """``sum_m weights * forecasts`` in float64, block by block of windows.

    Args:
        stacked: [M, W, H, C] members' forecasts, float32 or float64 (each block is cast
            to float64 before it is weighted: the result is that of the float64 stack).
        weights: [W, C, M] per window and channel, or [H, C, M] per step and channel
            with ``per_step``.
        block: windows per block (default: ``windows_per_block``).

    Returns:
        [W, H, C] float64, element for element and in layout the whole-array
        ``np.einsum`` (the sum over members runs within each window, so blocks of
        windows do not change it).
    """
    if per_step:

        def part(lo: int, hi: int) -> np.ndarray:
            return np.einsum("mwhc,hcm->whc", np.asarray(stacked[:, lo:hi], np.float64), weights)
    else:

        def part(lo: int, hi: int) -> np.ndarray:
            f = np.asarray(stacked[:, lo:hi], np.float64)
            return np.einsum("mwhc,wcm->whc", f, weights[lo:hi])

    return by_window_blocks(part, stacked.shape[1], block or windows_per_block(stacked.shape))


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
    return weighted_sum(stacked, weights)


def combined_forecast(
    combiner, stacked: np.ndarray, features: np.ndarray | None = None
) -> np.ndarray:
    """A fitted combiner's forecast: [M, W, H, C] (+ features [W, C, F]) -> [W, H, C].

    Every `router.combiners.Combiner` forecasts itself (those that weight each horizon
    step apart, median and inverse error, in their own way); an object with only
    ``weights`` (a user's own rule) has them applied with ``combine``.
    """
    if hasattr(combiner, "forecast"):
        return combiner.forecast(stacked, features)
    return combine(stacked, combiner.weights(stacked, features))


def by_window_blocks(fn, n_windows: int, block: int, axis: int = 0) -> np.ndarray:
    """``fn(lo, hi)`` on consecutive blocks of windows, results concatenated along ``axis``.

    Whole-array reductions over [M, W, H, C] (sorts, squared differences) make temporaries
    of that size or several times it, 10+ GB on weather at H=720; blocks bound them (size
    them with ``windows_per_block``: a block counted in windows alone grows with H x C). The
    result is filled block by block, laid out and typed as the first block (as
    ``np.concatenate`` lays out blocks that share a layout), not concatenated from a list
    of them: no second copy of it.
    """
    first = fn(0, block)
    if n_windows <= block:
        return first
    shape = list(first.shape)
    shape[axis] = n_windows
    out = empty_like_layout(tuple(shape), first)
    where = [slice(None)] * out.ndim
    part, lo = first, 0
    while True:
        where[axis] = slice(lo, lo + part.shape[axis])
        out[tuple(where)] = part
        lo += block
        if lo >= n_windows:
            return out
        part = fn(lo, lo + block)


def oracle_weights(
    stacked: np.ndarray, targets: np.ndarray, block: int | None = None
) -> np.ndarray:
    """One-hot weights on the best member per window and channel, judged on the targets.

    The best any router that picks one member per window and channel could do, reported
    next to the ensemble; it sees the targets, so it is never a forecast used for
    anything. It does not bound weighted combinations: per-step weights mixing several
    members can score below it, as they did on a smooth synthetic series.

    Args:
        stacked: [M, W, H, C] members' forecasts.
        targets: [W, H, C].
        block: windows per block of the error computation (default: ``windows_per_block``:
            a fixed 256 windows of 862 channels at H=720 held 3 GB at once).

    Returns:
        [W, C, M] one-hot weights.
    """
    err = by_window_blocks(  # [M, W, C], block by block: no [M, W, H, C] temporary
        lambda lo, hi: np.mean(
            (np.asarray(stacked[:, lo:hi], np.float64) - targets[None, lo:hi]) ** 2, axis=2
        ),
        stacked.shape[1],
        block or windows_per_block(stacked.shape),
        axis=1,
    )
    return np.eye(stacked.shape[0])[np.argmin(err, axis=0)]


def refuse_non_finite(name: str, pred: np.ndarray, part: str) -> None:
    """A diverged fit's forecasts (NaN, inf, or beyond float32) are refused: scored or
    combined, they would spread NaN into every result.

    Raises:
        UserError: naming the member, the count and what to lower.
    """
    bad = int(np.size(pred) - np.count_nonzero(np.isfinite(pred)))
    if bad:
        raise UserError(
            f"member {name} forecast {bad} non-finite value(s) on {part}: its fit diverged; "
            "lower its learning rate (@lr=...) or check the data for extreme values"
        )
