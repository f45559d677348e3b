"""The search space of a `tune` study.

A trial draws a period among the study's candidates (`period_candidates`), a lookback
that is a multiple of it (`lookback_range`), and each member's own settings from its
space in `SPACES`: DLinear's moving-average kernel, a patched member's patch/stride
among the period's `patch_choices`, learning rates. Settings the user fixed (@key=value
or --set) are never drawn (`search_space` lists what is).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from experiments.tune import TuneSpec


def lookback_range(period: int, lo: int, hi: int) -> tuple[int, int] | None:
    """Smallest and largest multiple of ``period`` within ``[lo, hi]``, or None."""
    first = max(1, math.ceil(lo / period)) * period
    last = (hi // period) * period
    return (first, last) if first <= last else None


def period_candidates(periods: list[int], lo: int, hi: int, k: int) -> list[int]:
    """The first ``k`` periods (in the analyser's rank order) with a multiple in ``[lo, hi]``."""
    out: list[int] = []
    for p in periods:
        p = int(p)
        if p >= 2 and p not in out and lookback_range(p, lo, hi) is not None:
            out.append(p)
    return out[:k]


def patch_choices(period: int, seq_len_max: int) -> list[str]:
    """Patch-length/stride choices for one period, as 'patch/stride' strings.

    Uses ``periodicity.patch_candidates`` when the analyser offers it (half-overlapping
    patches), each also without overlap (patch = stride: about half the tokens, so
    about half the time of a Time-LLM step); otherwise the period's divisors between 4
    and 64 (a patch covers a whole fraction of a cycle), with the official 16/8
    included, each with half-overlap and without overlap; none longer than
    ``seq_len_max``.
    """
    try:
        from periodicity import patch_candidates

        got = patch_candidates([period], seq_len_max)
        pairs = [(int(c[0]), int(c[1])) for c in got]
        if pairs:
            with_flat = {f"{p}/{s}" for p, s in pairs} | {f"{p}/{p}" for p, _ in pairs}
            return sorted(with_flat, key=_patch_key)
    except (ImportError, TypeError, ValueError, IndexError, KeyError):
        pass
    lengths = {d for d in range(4, 65) if period % d == 0} | {16}
    if period <= 64:
        lengths.add(period)
    lengths = sorted(lengths)[-4:] if len(lengths) > 4 else sorted(lengths)
    lengths = sorted(set(lengths) | {16})
    # a patch longer than the lookback does not fit (Time-LLM pads only one stride)
    lengths = [n for n in lengths if n <= seq_len_max] or [max(1, min(period, seq_len_max))]
    out = {f"{p}/{max(1, p // 2)}" for p in lengths} | {f"{p}/{p}" for p in lengths}
    return sorted(out, key=_patch_key)


def _patch_key(s: str) -> tuple[int, int]:
    p, st = s.split("/")
    return int(p), int(st)


def _lr(trial, member: str, lr_range: tuple[float, float], fixed: set[str]) -> dict[str, float]:
    """The tuned learning rate, unless the user fixed it."""
    if "lr" in fixed:
        return {}
    return {"lr": trial.suggest_float(f"{member}.lr", *lr_range, log=True)}


def _space_dlinear(trial, period: int, seq_len: int, attrs: dict, fixed: set[str]) -> dict:
    from classical.dlinear import kernel_from_period

    out: dict[str, Any] = _lr(trial, "dlinear", (1e-4, 3e-2), fixed)
    if "kernel" in fixed:
        return out
    mode = trial.suggest_categorical("dlinear.kernel_mode", ["period", "free"])
    if mode == "period":  # one full cycle of the chosen period (24 -> 25)
        kernel = kernel_from_period(period, seq_len)
    else:
        kernel = trial.suggest_int("dlinear.kernel", 3, 75, step=2)
        kernel = min(kernel, seq_len - (1 - seq_len % 2))
    return {"kernel": int(kernel), **out}


def _space_nlinear(trial, period: int, seq_len: int, attrs: dict, fixed: set[str]) -> dict:
    return _lr(trial, "nlinear", (1e-4, 3e-2), fixed)


def _space_itransformer(trial, period: int, seq_len: int, attrs: dict, fixed: set[str]) -> dict:
    return _lr(trial, "itransformer", (1e-5, 1e-3), fixed)  # no period-derived setting


def _space_snaive(trial, period: int, seq_len: int, attrs: dict, fixed: set[str]) -> dict:
    return {} if "period" in fixed else {"period": int(period)}


def _patch_space(member: str, lr_range: tuple[float, float]) -> Callable[..., dict[str, Any]]:
    """A patched member's space: a patch/stride among the period's choices, and lr."""

    def space(trial, period: int, seq_len: int, attrs: dict, fixed: set[str]) -> dict:
        out: dict[str, Any] = _lr(trial, member, lr_range, fixed)
        if fixed & {"patch_len", "stride"}:  # the user's patch (or stride) stands
            return out
        choices = attrs["patch_choices"][str(period)]
        key = trial.suggest_categorical(f"{member}.patch_p{period}", choices)
        patch, stride = _patch_key(key)
        return {"patch_len": patch, "stride": stride, **out}

    return space


# member base name -> its tuned settings, given (trial, period, seq_len, study attrs, the
# settings the user fixed with @key=value or --set, which are never tuned over)
SPACES: dict[str, Callable[..., dict[str, Any]]] = {
    "dlinear": _space_dlinear,
    "nlinear": _space_nlinear,
    "snaive": _space_snaive,
    "timellm": _patch_space("timellm", (1e-4, 1e-2)),
    "patchtst": _patch_space("patchtst", (3e-5, 3e-3)),
    "itransformer": _space_itransformer,
}


# What each space tunes, in groups drawn together: a group is tuned only when the user
# fixed none of its keys (a fixed patch_len keeps its stride out of the search too).
TUNED_GROUPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "dlinear": (("kernel",), ("lr",)),
    "nlinear": (("lr",),),
    "snaive": (("period",),),
    "timellm": (("patch_len", "stride"), ("lr",)),
    "patchtst": (("patch_len", "stride"), ("lr",)),
    "itransformer": (("lr",),),
}


def search_space(spec: TuneSpec) -> dict[str, list[str]]:
    """The settings the study tunes per member (base name): part of its identity, so that
    a resume never mixes trials that tuned a setting with trials that kept it fixed."""
    from experiments.registry import parse_spec

    out = {}
    for m in spec.members:
        base, own = parse_spec(m)
        fixed = set(own) | set(spec.member_params.get(base, {}))
        keys = [k for g in TUNED_GROUPS.get(base, ()) if not fixed & set(g) for k in g]
        if keys:
            out[base] = sorted(keys)
    return out


def space_before_fixed_settings(spec: TuneSpec) -> dict[str, list[str]]:
    """What studies made before the setting above tuned: every key of a member named
    without @settings, whatever the user fixed."""
    return {
        m: sorted(k for g in TUNED_GROUPS[m] for k in g) for m in spec.members if m in TUNED_GROUPS
    }


def trial_periods(period: int, ranked: list[int], k: int = 3) -> list[int]:
    """The ranked periods a trial's members get, the chosen one first: ``run``'s own
    (the analyser's first ``k``) when it is the analyser's top period; exported as the
    best config's ``periods`` so that rerunning it builds the same members."""
    return ([int(period)] + [int(p) for p in ranked if int(p) != int(period)])[:k]


def suggest(trial, spec: TuneSpec, attrs: dict) -> tuple[int, int, dict[str, dict[str, Any]]]:
    """Draw one configuration: (period, seq_len, tuned member params by base name).

    The lookback parameter is named per period (``seq_len_p24``) because its allowed
    values, the multiples of that period, differ from period to period.
    """
    period = int(trial.suggest_categorical("period", attrs["periods"]))
    lo, hi = lookback_range(period, attrs["min_seq_len"], attrs["max_seq_len"])
    seq_len = trial.suggest_int(f"seq_len_p{period}", lo, hi, step=period)
    from experiments.registry import parse_spec

    tuned = {}
    for m in spec.members:
        base, own = parse_spec(m)
        if base in SPACES:
            fixed = set(own) | set(spec.member_params.get(base, {}))
            tuned[base] = SPACES[base](trial, period, seq_len, attrs, fixed)
    return period, seq_len, tuned
