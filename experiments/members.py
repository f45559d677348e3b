"""Built-in member factories. Heavy imports happen inside each factory."""

from __future__ import annotations

from experiments.registry import MemberContext, register


@register("naive", "last value repeated over the horizon")
def _naive(ctx: MemberContext):
    from classical.naive import NaiveLast

    return NaiveLast()


@register("snaive", "seasonal naive with the analyser's top period (@period=N to set it)")
def _snaive(ctx: MemberContext):
    from classical.naive import SeasonalNaive

    period = int(ctx.params.get("period") or next((p for p in ctx.periods if p <= ctx.seq_len), 1))
    return SeasonalNaive(period=period)


@register("window_mean", "mean of the input window, flat over the horizon")
def _window_mean(ctx: MemberContext):
    from classical.naive import WindowMean

    return WindowMean()
