"""Patch lengths, strides and lookbacks chosen from the data's periods.

A patch that spans a whole cycle (or an exact fraction of one) puts the same phase at
the same position in every patch; a lookback that holds whole cycles ends where it
began. `patch_candidates` gives `tune` its patch choices; `lookback_candidates` is
offered to users who pick L by hand (the CLI does not call it).
"""

from __future__ import annotations

import numpy as np

DEFAULT_PATCH = (16, 8)  # the official Time-LLM patching, always offered as a baseline


def patch_candidates(
    periods: list[int],
    seq_len: int,
    min_patch: int = 8,
    max_patch: int = 64,
    per_period: int = 2,
) -> list[tuple[int, int]]:
    """(patch_len, stride) pairs from periods, strongest period first.

    For each period: its ``per_period`` largest divisors in [min_patch, max_patch] (the
    period itself first when it fits); a period under ``min_patch`` gives its smallest
    multiple that fits instead. Stride is half the patch. Patches longer than half the
    lookback are dropped (fewer than three patches is no sequence). The default (16, 8)
    comes last unless already listed. Periods under 2 (no cycle: 0, 1, negatives) are
    ignored, as ``lookback_candidates`` does.

    Args:
        periods: periods in steps, strongest first.
        seq_len: lookback L the patches cut.
        min_patch, max_patch: patch lengths allowed.
        per_period: patch lengths taken from each period.

    Returns:
        Distinct (patch_len, stride) pairs, in order of preference.
    """
    hi = min(max_patch, seq_len // 2)
    lengths: list[int] = []
    for p in (p for p in periods if p >= 2):
        if p < min_patch:
            m = p * int(np.ceil(min_patch / p))
            found = [m] if m <= hi else []
        else:
            found = [d for d in range(min(p, hi), min_patch - 1, -1) if p % d == 0][:per_period]
        lengths += [d for d in found if d not in lengths]
    pairs = [(d, max(1, d // 2)) for d in lengths]
    if DEFAULT_PATCH[0] <= seq_len // 2 and DEFAULT_PATCH not in pairs:
        pairs.append(DEFAULT_PATCH)
    return pairs


def lookback_candidates(
    periods: list[int], min_len: int, max_len: int, max_count: int = 8
) -> list[int]:
    """Lookbacks in [min_len, max_len] that are whole multiples of some period.

    When more than ``max_count`` qualify, those nearest to an even spread on a log scale
    are kept, so short and long lookbacks both stay on offer.

    Args:
        periods: periods in steps.
        min_len, max_len: lookbacks allowed.
        max_count: most lookbacks returned.

    Returns:
        Sorted lookbacks; empty when no period has a multiple in range.
    """
    values = sorted(
        {
            k * p
            for p in periods
            if p >= 2
            for k in range(max(1, -(-min_len // p)), max_len // p + 1)
        }
    )
    if len(values) <= max_count:
        return values
    grid = np.geomspace(values[0], values[-1], max_count)
    arr = np.array(values)
    keep = {int(arr[np.argmin(np.abs(np.log(arr) - np.log(g)))]) for g in grid}
    return sorted(keep)
