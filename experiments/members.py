"""Built-in member factories. Heavy imports happen inside each factory."""

from __future__ import annotations

from experiments.registry import MemberContext, register


@register("naive", "last value repeated over the horizon")
def _naive(ctx: MemberContext):
    from classical.naive import NaiveLast

    return NaiveLast()


@register(
    "snaive", "seasonal naive with the analyser's top period (@period=N to set it)", ("period",)
)
def _snaive(ctx: MemberContext):
    from classical.naive import SeasonalNaive

    period = int(ctx.params.get("period") or next((p for p in ctx.periods if p <= ctx.seq_len), 1))
    if period > ctx.seq_len:  # found here, before any member is fitted
        raise ValueError(f"period {period} exceeds the lookback {ctx.seq_len}")
    return SeasonalNaive(period=period)


@register("window_mean", "mean of the input window, flat over the horizon")
def _window_mean(ctx: MemberContext):
    from classical.naive import WindowMean

    return WindowMean()


# ---------------------------------------------------------------------------- classical


def _progress(ctx: MemberContext) -> bool | None:
    """Progress bars: @progress=false turns them off; default tqdm's terminal rule."""
    p = ctx.params.get("progress")
    return ctx.progress if p is None else bool(p)


_LINEAR_CASTS = (
    ("lr", float),
    ("batch_size", int),
    ("epochs", int),
    ("patience", int),
    ("lr_decay", float),
)
_LINEAR_SETTINGS = ("individual", "seed", *(k for k, _ in _LINEAR_CASTS))


def _linear_kwargs(ctx: MemberContext) -> dict:
    p = ctx.params
    kwargs = dict(
        seq_len=ctx.seq_len,
        pred_len=ctx.pred_len,
        individual=bool(p.get("individual", False)),
        seed=int(p.get("seed", ctx.seed)),
        progress=_progress(ctx),
    )
    for key, cast in _LINEAR_CASTS:
        if key in p:
            kwargs[key] = cast(p[key])
    _positive(kwargs, ("lr", "batch_size", "epochs"))
    return kwargs


def _positive(kwargs: dict, keys: tuple[str, ...]) -> None:
    """ValueError (a user error, before any fitting) for a setting that must be > 0."""
    for key in keys:
        if key in kwargs and not kwargs[key] > 0:
            raise ValueError(f"{key} must be > 0 (got {kwargs[key]})")


@register(
    "dlinear",
    "DLinear: moving-average decomposition + linear maps (@kernel=25|auto, @individual=true)",
    ("kernel", *_LINEAR_SETTINGS),
)
def _dlinear(ctx: MemberContext):
    from classical.dlinear import DLinear, kernel_from_period

    kernel = ctx.params.get("kernel", 25)
    if kernel == "auto":  # one full period of the analyser's top period that fits in L
        period = next((p for p in ctx.periods if 2 < p < ctx.seq_len), 24)
        kernel = kernel_from_period(period, ctx.seq_len)
    if int(kernel) < 1 or int(kernel) % 2 == 0:
        raise ValueError(f"kernel must be odd and positive (got {kernel})")
    return DLinear(kernel=int(kernel), **_linear_kwargs(ctx))


@register(
    "nlinear", "NLinear: last-value normalisation + linear map (@individual=true)", _LINEAR_SETTINGS
)
def _nlinear(ctx: MemberContext):
    from classical.dlinear import NLinear

    return NLinear(**_linear_kwargs(ctx))


# ---------------------------------------------------------------------------- Time-LLM


@register(
    "timellm",
    "Time-LLM over a frozen LLM (@backbone=minilm|PATH, @llm_layers=N, @train_stride=N, @inject=ridge+dlinear)",
    None,  # checked against TimeLLMForecaster's signature below
)
def _timellm(ctx: MemberContext):
    import inspect

    from ensemble.errors import UserError
    from timellm.member import TimeLLMForecaster

    p = dict(ctx.params)
    valid = set(inspect.signature(TimeLLMForecaster).parameters)
    unknown = sorted(set(p) - valid)
    if unknown:
        raise UserError(
            f"unknown timellm setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    inject = p.pop("inject", None)
    if isinstance(inject, str):  # "dlinear+ridge" from @inject= or --set; "none"/"" is off
        inject = [n for n in inject.replace(",", "+").split("+") if n and n != "none"]
    p.pop("progress", None)
    return TimeLLMForecaster(
        dataset=ctx.dataset,
        seq_len=ctx.seq_len,
        pred_len=ctx.pred_len,
        periods=list(ctx.periods),
        seed=int(p.pop("seed", ctx.seed)),
        workdir=ctx.workdir,
        inject=inject or None,
        progress=_progress(ctx),
        **p,
    )


def _top_period(ctx: MemberContext, fallback: int = 24) -> int:
    """The analyser's best-ranked period that fits in the lookback (else ``fallback``)."""
    return next((int(p) for p in ctx.periods if 2 <= p < ctx.seq_len), fallback)


@register(
    "arima",
    "per-channel SARIMA(p,d,q)(0,1,0)_s, AIC order, fixed params, one Kalman pass "
    "(@seasonal=24|0, @d=1, @fourier=24+168, @fit_rows=N)",
    ("seasonal", "fourier", "fit_rows", "d", "harmonics", "maxiter"),
)
def _arima(ctx: MemberContext):
    from classical.arima import ARIMA

    p = ctx.params
    # no detected period within the lookback: no seasonal difference (a made-up 24-step
    # one doubled ARIMA's error on weekly illness data and beat naive on exchange rates)
    season = int(p.get("seasonal", _top_period(ctx, fallback=0)))
    fourier = p.get("fourier", "")
    periods = [int(v) for v in str(fourier).split("+") if v.strip()] if fourier != "" else []
    fit_rows = p.get("fit_rows", 2000)
    return ARIMA(
        seq_len=ctx.seq_len,
        pred_len=ctx.pred_len,
        season=season if season < ctx.seq_len else 0,
        d=int(p.get("d", 0)),
        fourier_periods=periods,
        harmonics=int(p.get("harmonics", 4)),
        fit_rows=None if fit_rows in (0, "all", None) else int(fit_rows),
        maxiter=int(p.get("maxiter", 50)),
        progress=_progress(ctx),
    )


# setting -> LightGBMForecaster argument, cast
_LIGHTGBM_CASTS = (
    ("components", "n_components", int),
    ("n_lags", "n_lags", int),
    ("max_train_rows", "max_train_rows", int),
    ("max_val_rows", "max_val_rows", int),
    ("rounds", "num_boost_round", int),
    ("lr", "learning_rate", float),
    ("num_leaves", "num_leaves", int),
    ("threads", "num_threads", int),
    ("level_feature", "level_feature", bool),
)
_LIGHTGBM_SETTINGS = ("seed", *(k for k, _, _ in _LIGHTGBM_CASTS))


@register(
    "lightgbm",
    "global LightGBM, direct forecasts of trajectory-basis coefficients "
    "(@components=16, @max_train_rows=N, @lr=0.05)",
    _LIGHTGBM_SETTINGS,
)
def _lightgbm(ctx: MemberContext):
    from classical.lightgbm_member import LightGBMForecaster

    p = ctx.params
    kwargs = {}
    for key, name, cast in _LIGHTGBM_CASTS:
        if key in p:
            kwargs[name] = cast(p[key])
    _positive(kwargs, ("n_components", "n_lags", "num_boost_round", "learning_rate", "num_leaves"))
    periods = ctx.periods or [_top_period(ctx)]
    return LightGBMForecaster(
        seq_len=ctx.seq_len,
        pred_len=ctx.pred_len,
        periods=periods,
        seed=int(p.get("seed", ctx.seed)),
        progress=_progress(ctx),
        **kwargs,
    )
