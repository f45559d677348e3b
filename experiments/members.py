"""Built-in member factories. Heavy imports happen inside each factory.

Settings arrive typed by ``registry._coerce`` (``@key=value``, ``--set``) or by YAML, so
they are cast strictly here: ``int()`` and ``bool()`` would turn ``24.9`` into 24 and
``"abc"`` into True without a word. A ValueError from a factory becomes a one-line
UserError in ``registry.build``, before any member is fitted.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

import numpy as np

from experiments.registry import MemberContext, register

log = logging.getLogger(__name__)

SEED_MAX = 2**32 - 1  # numpy's and torch's seed range, as for --seed


def _as_int(key: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """A whole number: 25, 25.0 or "25"; not True, 24.9 or "abc"."""
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            try:
                value = float(value)  # "25.0" is 25; "24.9" is refused below
            except ValueError:
                raise ValueError(f"{key} must be a whole number (got {value!r})") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{key} must be a whole number (got {value!r})")
    if not isinstance(value, numbers.Integral):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise ValueError(f"{key} must be a whole number (got {value!r})")
    n = int(value)
    if minimum is not None and n < minimum:
        bound = "> 0" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{key} must be {bound} (got {n})")
    if maximum is not None and n > maximum:
        raise ValueError(f"{key} must be <= {maximum} (got {n})")
    return n


def _as_float(
    key: str, value: Any, *, positive: bool = False, maximum: float | None = None
) -> float:
    """A finite number (YAML reads 1e-3 as a string, so numeric strings count)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{key} must be a number (got {value!r})") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{key} must be a number (got {value!r})")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{key} must be a finite number (got {value!r})")
    if positive and not x > 0:
        raise ValueError(f"{key} must be > 0 (got {value!r})")
    if maximum is not None and x > maximum:
        raise ValueError(f"{key} must be <= {maximum} (got {value!r})")
    return x


def _as_bool(key: str, value: Any) -> bool:
    """true or false (any case) or a real bool; not 1, "yes" or "abc"."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{key} must be true or false (got {value!r})")


def _seed(ctx: MemberContext) -> int:
    return _as_int("seed", ctx.params.get("seed", ctx.seed), minimum=0, maximum=SEED_MAX)


@register("naive", "last value repeated over the horizon")
def _naive(ctx: MemberContext):
    from classical.naive import NaiveLast

    return NaiveLast()


@register(
    "snaive", "seasonal naive with the analyser's top period (@period=N to set it)", ("period",)
)
def _snaive(ctx: MemberContext):
    from classical.naive import SeasonalNaive

    period = ctx.params.get("period")
    if period is None:
        period = next((int(p) for p in ctx.periods if p <= ctx.seq_len), 1)
        if period == 1:
            _warn_no_period(ctx, "snaive", "period 1 (the naive forecast)", "snaive@period=N")
    period = _as_int("period", period, minimum=1)
    if period > ctx.seq_len:  # found here, before any member is fitted
        raise ValueError(f"period {period} exceeds the lookback {ctx.seq_len}")
    return SeasonalNaive(period=period)


# Situations already warned about: a run builds each member twice (its settings checked
# before anything is fitted, then for the fit), into the same folder.
_WARNED: set[tuple] = set()


def _warn_no_period(ctx: MemberContext, member: str, instead: str, setting: str | None) -> None:
    """Say why a member that asked for the period uses ``instead``: no period, or none that
    fits in the lookback. ``setting``: the member's own way to give one (None: only
    ``--periods``)."""
    seen = (member, ctx.workdir, ctx.seq_len, tuple(ctx.periods))
    if seen in _WARNED:
        return
    _WARNED.add(seen)
    from periodicity.report import MIN_CYCLES

    if ctx.periods:
        why = (
            f"every period ({', '.join(map(str, ctx.periods))}) is longer than the lookback "
            f"{ctx.seq_len}"
        )
        fix = f"set {setting} or a longer --seq-len" if setting else "use a longer --seq-len"
    else:  # a longer lookback would not help: the analyser looks at the train rows
        why = (
            "no seasonal period was found in the train rows (a period must repeat "
            f"{MIN_CYCLES} times there to be tested)"
        )
        fix = f"set {setting} or " if setting else "set "
        # the Python API's members have no folder; its periods are HybridForecaster's
        fix += "--periods N" if ctx.workdir is not None else "HybridForecaster(periods=[N])"
        fix += " when you know the period"
    log.warning("%s falls back to %s: %s; %s", member, instead, why, fix)


@register("window_mean", "mean of the input window, flat over the horizon")
def _window_mean(ctx: MemberContext):
    from classical.naive import WindowMean

    return WindowMean()


# ---------------------------------------------------------------------------- classical


def _progress(ctx: MemberContext) -> bool | None:
    """Progress bars: @progress=false turns them off; default tqdm's terminal rule."""
    p = ctx.params.get("progress")
    return ctx.progress if p is None else _as_bool("progress", p)


def _positive_int(key: str, value: Any) -> int:
    return _as_int(key, value, minimum=1)


def _positive_float(key: str, value: Any) -> float:
    return _as_float(key, value, positive=True)


_LINEAR_CASTS = (
    ("lr", _positive_float),
    ("batch_size", _positive_int),
    ("epochs", _positive_int),
    ("patience", lambda k, v: _as_int(k, v, minimum=0)),
    # a factor on the learning rate after each epoch: above 1 it grows until the fit diverges
    ("lr_decay", lambda k, v: _as_float(k, v, positive=True, maximum=1.0)),
)
_LINEAR_SETTINGS = ("individual", "seed", *(k for k, _ in _LINEAR_CASTS))


def _linear_kwargs(ctx: MemberContext) -> dict:
    p = ctx.params
    kwargs = dict(
        seq_len=ctx.seq_len,
        pred_len=ctx.pred_len,
        individual=_as_bool("individual", p.get("individual", False)),
        seed=_seed(ctx),
        progress=_progress(ctx),
    )
    for key, cast in _LINEAR_CASTS:
        if key in p:
            kwargs[key] = cast(key, p[key])
    return kwargs


@register(
    "dlinear",
    "DLinear: moving-average decomposition + linear maps (@kernel=25|auto, @individual=true)",
    ("kernel", *_LINEAR_SETTINGS),
)
def _dlinear(ctx: MemberContext):
    from classical.dlinear import DLinear, kernel_from_period

    kernel = given = ctx.params.get("kernel", 25)
    if kernel == "auto":  # one full period of the analyser's top period that fits in L
        period = next((p for p in ctx.periods if 2 < p < ctx.seq_len), 24)
        kernel = kernel_from_period(period, ctx.seq_len)
    try:
        kernel = _as_int("kernel", kernel, minimum=1)
    except ValueError:
        kernel = 0  # one message for every wrong kernel
    if kernel % 2 == 0:
        raise ValueError(f"kernel must be odd and positive (got {given!r}), or auto")
    if "kernel" in ctx.params and kernel > ctx.seq_len:  # the default 25 runs at any L
        # longer, every average is mostly copies of the edge values (and 1e8 fills memory)
        raise ValueError(
            f"kernel {kernel} is longer than the lookback L={ctx.seq_len}: give an odd kernel "
            f"up to {ctx.seq_len}, or auto"
        )
    return DLinear(kernel=kernel, **_linear_kwargs(ctx))


@register(
    "nlinear", "NLinear: last-value normalisation + linear map (@individual=true)", _LINEAR_SETTINGS
)
def _nlinear(ctx: MemberContext):
    from classical.dlinear import NLinear

    return NLinear(**_linear_kwargs(ctx))


_PATCHTST_CASTS = (
    *((k, _positive_int) for k in ("stride", "d_model", "n_heads", "n_layers", "d_ff")),
    ("threads", lambda k, v: _as_int(k, v, minimum=1, maximum=1024)),
    *(
        (k, lambda k, v: _as_float(k, v, maximum=0.999))
        for k in ("dropout", "head_dropout")  # below 0 is refused by the model
    ),
    ("residual_attention", _as_bool),
    ("device", lambda k, v: str(v)),  # cpu or cuda, checked by the model
    *((k, c) for k, c in _LINEAR_CASTS),
)


@register(
    "patchtst",
    "PatchTST: patches + Transformer encoder, channel-independent (@patch_len=16|period, "
    "@d_model=16, @n_layers=3)",
    ("patch_len", "seed", *(k for k, _ in _PATCHTST_CASTS)),
)
def _patchtst(ctx: MemberContext):
    from classical.patchtst import PatchTST

    p = ctx.params
    kwargs: dict[str, Any] = {}
    if p.get("patch_len") is not None:  # null in a config.yaml: the default
        patch = p["patch_len"]
        if patch == "period":  # one cycle of the analyser's top period that fits in L
            patch = next((int(q) for q in ctx.periods if 2 <= q <= ctx.seq_len), None)
            if patch is None:
                _warn_no_period(ctx, "patchtst", "patch_len 16", "patchtst@patch_len=N")
                patch = 16
        kwargs["patch_len"] = _as_int("patch_len", patch, minimum=1)
    for key, cast in _PATCHTST_CASTS:
        if p.get(key) is not None:  # null in a config.yaml: the default (threads, device)
            kwargs[key] = cast(key, p[key])
    return PatchTST(ctx.seq_len, ctx.pred_len, seed=_seed(ctx), progress=_progress(ctx), **kwargs)


_ITRANSFORMER_CASTS = (
    *((k, _positive_int) for k in ("d_model", "n_heads", "n_layers", "d_ff")),
    *((k, c) for k, c in _PATCHTST_CASTS if k in ("threads", "dropout", "device")),
    *((k, c) for k, c in _LINEAR_CASTS),
)


@register(
    "itransformer",
    "iTransformer: a token per channel, attention across channels (@d_model=256, @n_layers=2)",
    ("seed", *(k for k, _ in _ITRANSFORMER_CASTS)),
)
def _itransformer(ctx: MemberContext):
    from classical.itransformer import ITransformer

    p = ctx.params
    kwargs = {k: cast(k, p[k]) for k, cast in _ITRANSFORMER_CASTS if p.get(k) is not None}
    return ITransformer(
        ctx.seq_len, ctx.pred_len, seed=_seed(ctx), progress=_progress(ctx), **kwargs
    )


# ---------------------------------------------------------------------------- Time-LLM


# TimeLLMForecaster arguments the run sets itself (seed comes from --seed or @seed=).
_TIMELLM_FROM_RUN = ("dataset", "seq_len", "pred_len", "periods", "workdir", "progress")


def timellm_settings() -> tuple[str, ...]:
    """The keys ``timellm@key=value`` / ``--set timellm.key=value`` take: the arguments of
    ``TimeLLMForecaster`` that the run does not set."""
    import inspect

    from timellm.member import TimeLLMForecaster

    params = inspect.signature(TimeLLMForecaster).parameters
    return tuple(sorted(set(params) - set(_TIMELLM_FROM_RUN)))


@register(
    "timellm",
    "Time-LLM over a frozen LLM (@backbone=minilm|PATH, @llm_layers=N, @train_stride=N, @inject=ridge+dlinear)",
    None,  # checked against timellm_settings() below
)
def _timellm(ctx: MemberContext):
    from ensemble.errors import UserError
    from timellm.member import TimeLLMForecaster

    p = dict(ctx.params)
    valid = timellm_settings()
    unknown = sorted(set(p) - set(valid) - {"progress"})  # progress: every member's
    if unknown:
        raise UserError(
            f"unknown timellm setting(s) {', '.join(unknown)}; valid: {', '.join(valid)} "
            "(the lookback, horizon, data and periods come from the run's own flags)"
        )
    inject = p.pop("inject", None)
    if isinstance(inject, str):  # "dlinear+ridge" from @inject= or --set; "none"/"" is off
        inject = [n for n in inject.replace(",", "+").split("+") if n and n != "none"]
    p.pop("seed", None)
    p.pop("progress", None)
    return TimeLLMForecaster(
        dataset=ctx.dataset,
        seq_len=ctx.seq_len,
        pred_len=ctx.pred_len,
        periods=list(ctx.periods),
        seed=_seed(ctx),
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
    "(@seasonal=N|0, default the top period within L; @d=0, @fourier=24+168, @fit_rows=2000)",
    ("seasonal", "fourier", "fit_rows", "d", "harmonics", "maxiter"),
)
def _arima(ctx: MemberContext):
    from classical.arima import ARIMA

    p = ctx.params
    # no detected period within the lookback: no seasonal difference (a made-up 24-step
    # one doubled ARIMA's error on weekly illness data and beat naive on exchange rates)
    season = _as_int("seasonal", p.get("seasonal", _top_period(ctx, fallback=0)), minimum=0)
    if "seasonal" in p and season == 1:  # was silently 0; a given season is kept or refused
        raise ValueError("seasonal must be 0 (no seasonal difference) or a period >= 2 (got 1)")
    fit_rows = p.get("fit_rows", 2000)
    if isinstance(fit_rows, str) and fit_rows.strip().lower() == "all":
        fit_rows = None
    elif fit_rows is not None:  # 0 means all rows too
        fit_rows = _as_int("fit_rows", fit_rows, minimum=0) or None
        if fit_rows is not None and fit_rows < MIN_ARIMA_FIT_ROWS:
            raise ValueError(
                f"fit_rows must be 0 (all rows) or >= {MIN_ARIMA_FIT_ROWS} (got {fit_rows}): "
                "a few rows cannot pin down the ARMA parameters"
            )
    return ARIMA(
        seq_len=ctx.seq_len,
        pred_len=ctx.pred_len,
        season=season,  # the derived one fits the lookback; a given one too, or refused
        # d = 3 multiplied rounding errors into a test MSE of 7e13 on ETTh1 (d = 10)
        d=_as_int("d", p.get("d", 0), minimum=0, maximum=2),
        fourier_periods=_fourier_periods(p.get("fourier", "")),
        harmonics=_as_int("harmonics", p.get("harmonics", 4), minimum=0),
        fit_rows=fit_rows,
        maxiter=_as_int("maxiter", p.get("maxiter", 50), minimum=1),
        progress=_progress(ctx),
    )


# ARIMA's largest order (3 AR + 1 MA + mean) needs some tens of rows per parameter:
# fit_rows=3 forecast 2.01 against 0.50 with the default 2000 (ETTh1, L=H=96)
MIN_ARIMA_FIT_ROWS = 100


def _fourier_periods(value: Any) -> list[int]:
    """Fourier periods from "24+168" (or a YAML list); "", "none" and 0 are none."""
    if value is None or value == 0 or str(value).strip().lower() in ("", "none"):
        return []
    parts = value if isinstance(value, list | tuple) else str(value).split("+")
    # a period beyond ten million steps is no data's and overflows the saved model's ints
    return [_as_int("fourier", v, minimum=2, maximum=10**7) for v in parts if str(v).strip()]


# setting -> LightGBMForecaster argument, cast
def _lightgbm_int(key: str, value: Any) -> int:
    """LightGBM's counts are C ints: a larger one failed inside its fit, after the
    members before it had fitted."""
    return _as_int(key, value, minimum=1, maximum=2**31 - 1)


_LIGHTGBM_CASTS = (
    ("components", "n_components", _lightgbm_int),
    ("n_lags", "n_lags", _lightgbm_int),
    ("max_train_rows", "max_train_rows", _lightgbm_int),
    ("max_val_rows", "max_val_rows", _lightgbm_int),
    ("rounds", "num_boost_round", _lightgbm_int),
    ("lr", "learning_rate", _positive_float),
    ("num_leaves", "num_leaves", lambda k, v: _as_int(k, v, minimum=2)),  # LightGBM's minimum
    # OpenMP allocates per thread: a huge count is an abort, not an error message
    ("threads", "num_threads", lambda k, v: _as_int(k, v, minimum=1, maximum=1024)),
    ("level_feature", "level_feature", _as_bool),
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
            kwargs[name] = cast(key, p[key])
    periods = ctx.periods or [_top_period(ctx)]
    if not any(2 <= q <= ctx.seq_len for q in ctx.periods):  # its level and profile features
        instead = f"{min(24, ctx.seq_len)}-step level and profile features"
        _warn_no_period(ctx, "lightgbm", instead, None)
    return LightGBMForecaster(
        seq_len=ctx.seq_len,
        pred_len=ctx.pred_len,
        periods=periods,
        seed=_seed(ctx),
        progress=_progress(ctx),
        **kwargs,
    )
