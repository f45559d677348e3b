"""ARIMA per channel: order by AIC on the train rows, then one Kalman pass per forecast split.

The model of one channel is a regression with ARIMA errors (statsmodels ``SARIMAX``):

    y_t = mu + sum_k [a_k sin(2 pi k t / s) + b_k cos(2 pi k t / s)] + u_t,  u_t ~ ARIMA(p, d, q)

The Fourier terms carry the seasonality for each seasonal period ``s`` (the analyser's
periods, or the data frequency's calendar ones). They are the cheap way to seasonality:
a full SARIMA(...)(P, D, Q)_24 on hourly data has a 24+-dimensional state and takes
minutes per fit, while Fourier exog adds a few regression coefficients and nothing to
the state. ``t`` is the absolute row index of the dataset, so the phase is the same in
every split. ``mu`` is only present for ``d = 0`` (it differences away otherwise).

Fitting (train rows only): for each channel and each ``(p, d, q)`` of a small grid, a
maximum-likelihood fit on the last ``fit_rows`` rows of the train split (for speed: the
likelihood of a few thousand rows pins these few parameters down), keeping the lowest
AIC. The parameters are then fixed.

Forecasting: no refit per window. For a split's ``context`` (all rows that are inputs
of some window) one Kalman filter pass with the fixed parameters gives the one-step
predicted state ``a_{o+1|o}`` at every origin ``o``; the ``h``-step forecast is

    y_hat_{o+h|o} = Z T^(h-1) a_{o+1|o} + d_{o+h}

with design ``Z``, transition ``T`` and the known regression part ``d_t = x_t' beta``.
``Z T^(h-1)`` for ``h = 1..H`` is one ``[H, k]`` matrix, so every origin's forecast is a
single matrix product ``[W, k] @ [k, H]``: seconds for 7 channels x 2785 origins, where
a refit per window would take hours. Because the filter is causal, this equals
statsmodels' own ``forecast`` from the context cut at each origin (tested).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ensemble.data import Split, Windows
from ensemble.forecaster import BaseForecaster

log = logging.getLogger(__name__)

# (p, d, q): small and cheap, enough for hourly/minute load and temperature series
DEFAULT_ORDERS: tuple[tuple[int, int, int], ...] = (
    (1, 0, 0),
    (2, 0, 0),
    (2, 0, 1),
    (1, 1, 0),
    (2, 1, 0),
    (1, 1, 1),
    (2, 1, 1),
)


def fourier_terms(t: np.ndarray, periods: list[int], harmonics: int) -> np.ndarray:
    """Sine/cosine regressors of the absolute row index.

    Args:
        t: [n] absolute row indices.
        periods: seasonal periods in rows.
        harmonics: harmonics per period (capped at ``period // 2``).

    Returns:
        [n, 2 * sum(min(harmonics, p // 2))] float64.
    """
    cols = []
    for p in periods:
        k = np.arange(1, min(harmonics, p // 2) + 1)
        angle = 2 * np.pi * np.outer(t, k) / p
        cols += [np.sin(angle), np.cos(angle)]
    return np.concatenate(cols, axis=1) if cols else np.zeros((len(t), 0))


def _build_model(
    y: np.ndarray,
    exog: np.ndarray | None,
    order: tuple[int, int, int],
    seasonal_diff: int = 0,
):
    """SARIMAX for ``y`` with regression on ``exog``; ``seasonal_diff`` = s adds (0, 1, 0)_s."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    return SARIMAX(
        y,
        exog=exog if exog is not None and exog.shape[1] else None,
        order=order,
        seasonal_order=(0, 1, 0, seasonal_diff) if seasonal_diff else (0, 0, 0, 0),
        trend="n",
        enforce_stationarity=True,
        enforce_invertibility=True,
        concentrate_scale=True,  # sigma^2 in closed form: one parameter fewer to search
    )


def rolling_forecast(model, params: np.ndarray, future_exog_part: np.ndarray, horizon: int):
    """H-step forecasts from every origin of one filter pass.

    Args:
        model: a statsmodels SARIMAX built on the context ``[n]`` (with its exog).
        params: [n_params] fixed parameters.
        future_exog_part: [n + H] the regression part ``d_t = x_t' beta`` for the context
            rows and the ``H`` rows after them (zeros without exog).
        horizon: H.

    Returns:
        [n, H] where row ``o`` is the forecast of rows ``o+1 .. o+H`` made at origin ``o``.
    """
    res = model.filter(params)
    design = np.asarray(model.ssm["design"])
    trans = np.asarray(model.ssm["transition"])
    if design.ndim == 3:
        assert design.shape[2] == 1 and trans.shape[2] == 1, "time-varying system matrices"
        design, trans = design[..., 0], trans[..., 0]
    # rows Z T^(h-1), h = 1..H
    m = np.empty((horizon, trans.shape[0]))
    m[0] = design[0]
    for h in range(1, horizon):
        m[h] = m[h - 1] @ trans
    a = res.predicted_state[:, 1:].T  # [n, k]: a_{o+1|o} for every origin o
    n = a.shape[0]
    # d_{o+h} for o in 0..n-1, h in 1..H: a strided view over the regression part
    d = np.lib.stride_tricks.sliding_window_view(future_exog_part[1:], horizon)[:n]
    return a @ m.T + d


class ARIMA(BaseForecaster):
    """Per-channel ARIMA with fixed seasonality, fixed parameters, fast rolling forecasts.

    Args:
        seq_len: L (the context before the first origin is only used to warm the filter).
        pred_len: H.
        periods: seasonal periods (rows); empty for none.
        seasonal: how seasonality enters: "fourier" (sine/cosine regressors for every
            period, coefficients by least squares on all train rows) or "diff" (a seasonal
            difference at the first period, i.e. SARIMA (p, d, q)(0, 1, 0)_s, which adds no
            parameter).
        harmonics: sine/cosine pairs per period for "fourier".
        orders: the (p, d, q) grid searched by AIC.
        fit_rows: the ARMA part is fitted by maximum likelihood on the last this-many train
            rows (all when None): a few thousand rows pin down 2-4 parameters, and the
            likelihood's cost is linear in the rows.
        maxiter: optimiser iterations per fit.
        progress: tqdm bar over the fits (None: only on a terminal).
    """

    name = "arima"

    def __init__(
        self,
        seq_len: int,
        pred_len: int,
        periods: tuple[int, ...] | list[int] = (24,),
        seasonal: str = "fourier",
        harmonics: int = 4,
        orders: tuple[tuple[int, int, int], ...] | list = DEFAULT_ORDERS,
        fit_rows: int | None = 2000,
        maxiter: int = 50,
        progress: bool | None = None,
    ):
        if seasonal not in ("fourier", "diff"):
            raise ValueError(f"seasonal must be 'fourier' or 'diff' (got {seasonal!r})")
        self.seq_len = int(seq_len)
        self.pred_len = int(pred_len)
        self.periods = [int(p) for p in periods if int(p) >= 2]
        self.seasonal = seasonal
        self.harmonics = int(harmonics)
        self.orders = [tuple(int(v) for v in o) for o in orders]
        self.fit_rows = fit_rows
        self.maxiter = int(maxiter)
        self.progress = progress
        # per channel, after fit: chosen order, its parameters [beta..., arma...], AIC table
        self.channel_orders: list[tuple[int, int, int]] = []
        self.channel_params: list[np.ndarray] = []
        self.aic: list[dict[str, float]] = []

    @property
    def seasonal_diff(self) -> int:
        """The seasonal differencing period (0 for none)."""
        return self.periods[0] if self.seasonal == "diff" and self.periods else 0

    def _exog(self, t: np.ndarray, d: int) -> np.ndarray:
        """[n, k_exog] regressors of rows ``t``: a constant when nothing differences it
        away, and the Fourier terms in "fourier" mode."""
        cols = []
        if d == 0 and not self.seasonal_diff:
            cols.append(np.ones((len(t), 1)))
        if self.seasonal == "fourier":
            cols.append(fourier_terms(t, self.periods, self.harmonics))
        return np.concatenate(cols, axis=1) if cols else np.zeros((len(t), 0))

    def _regression(self, y: np.ndarray, x: np.ndarray, d: int) -> np.ndarray:
        """Least-squares beta of ``y`` on ``x`` after d-th (and seasonal) differencing."""
        if x.shape[1] == 0:
            return np.zeros(0)
        for _ in range(d):
            y, x = np.diff(y, axis=0), np.diff(x, axis=0)
        if self.seasonal_diff:
            s = self.seasonal_diff
            y, x = y[s:] - y[:-s], x[s:] - x[:-s]
        return np.linalg.lstsq(x, y, rcond=None)[0]

    def fit(self, train: Split, val: Split) -> ARIMA:
        """Choose (p, d, q) by AIC per channel on the train rows; keep the fitted parameters.

        Two steps per channel and d: the seasonal regression by least squares on all
        train rows, then the ARMA parameters by maximum likelihood on the regression's
        residuals over the last ``fit_rows`` rows, for every (p, q) with that d.
        """
        from threadpoolctl import threadpool_limits

        y = np.asarray(train.data, dtype=np.float64)
        t = train.start + np.arange(y.shape[0])
        tail = slice(-int(self.fit_rows), None) if self.fit_rows else slice(None)
        self.channel_orders, self.channel_params, self.aic = [], [], []
        disable = None if self.progress is None else not self.progress
        bar = tqdm(total=train.n_channels * len(self.orders), desc=self.name, disable=disable,
                   leave=False)
        # BLAS threads only slow the filter's tiny matrix products down
        with bar, threadpool_limits(1):
            for c in range(train.n_channels):
                best = (np.inf, None, None)
                table = {}
                for d in sorted({o[1] for o in self.orders}):
                    x = self._exog(t, d)
                    beta = self._regression(y[:, c], x, d)
                    resid = (y[:, c] - x @ beta)[tail]
                    for order in (o for o in self.orders if o[1] == d):
                        model = _build_model(resid, None, order, self.seasonal_diff)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")  # convergence chatter
                            res = model.fit(disp=False, maxiter=self.maxiter)
                        table[str(order)] = float(res.aic)
                        if np.isfinite(res.aic) and res.aic < best[0]:
                            best = (res.aic, order, np.concatenate([beta, res.params]))
                        bar.update(1)
                if best[1] is None:
                    raise RuntimeError(f"{self.name}: no order could be fitted on channel {c}")
                self.channel_orders.append(best[1])
                self.channel_params.append(best[2])
                self.aic.append(table)
                log.info("%s channel %d: order %s (AIC %.1f)", self.name, c, best[1], best[0])
        return self

    def predict(self, windows: Windows) -> np.ndarray:
        """windows.context: [W + L - 1, C] -> [W, H, C], one filter pass per channel."""
        from threadpoolctl import threadpool_limits

        if not self.channel_params:
            raise RuntimeError(f"{self.name}: call fit() (or load()) before predict()")
        ctx, h = windows.context, windows.pred_len
        n = ctx.shape[0]
        t = windows.start + np.arange(n + h)
        out = np.empty((windows.n, h, ctx.shape[1]), dtype=np.float32)
        with threadpool_limits(1):
            for c, (order, params) in enumerate(
                zip(self.channel_orders, self.channel_params, strict=True)
            ):
                model, exog = self.state_space(ctx[:, c], t[:n], order)
                x_future = self._exog(t, order[1])
                beta = params[: x_future.shape[1]]  # SARIMAX orders its parameters exog first
                fc = rolling_forecast(model, params, x_future @ beta, h)
                out[..., c] = fc[windows.seq_len - 1 :]
        return out

    def state_space(self, y: np.ndarray, t: np.ndarray, order: tuple[int, int, int]):
        """The statsmodels model of one channel over rows ``t`` (for forecasts and checks).

        Returns:
            (SARIMAX model on ``y`` [n], its exog [n, k_exog]).
        """
        exog = self._exog(t, order[1])
        return _build_model(np.asarray(y, dtype=np.float64), exog, order, self.seasonal_diff), exog

    def save(self, path: str | Path) -> None:
        """Write ``arima.npz``: settings, chosen orders and parameters (no pickled models)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(
            path / "arima.npz",
            seq_len=self.seq_len,
            pred_len=self.pred_len,
            periods=np.array(self.periods, dtype=np.int64),
            harmonics=self.harmonics,
            seasonal=np.array(self.seasonal),
            orders=np.array(self.orders, dtype=np.int64).reshape(-1, 3),
            fit_rows=-1 if self.fit_rows is None else int(self.fit_rows),
            maxiter=self.maxiter,
            channel_orders=np.array(self.channel_orders, dtype=np.int64).reshape(-1, 3),
            **{f"params_{c}": p for c, p in enumerate(self.channel_params)},
            name=np.array(self.name),
        )

    @classmethod
    def load(cls, path: str | Path) -> ARIMA:
        with np.load(Path(path) / "arima.npz") as z:
            obj = cls(
                seq_len=int(z["seq_len"]),
                pred_len=int(z["pred_len"]),
                periods=z["periods"].tolist(),
                harmonics=int(z["harmonics"]),
                seasonal=str(z["seasonal"]),
                orders=[tuple(o) for o in z["orders"].tolist()],
                fit_rows=None if int(z["fit_rows"]) < 0 else int(z["fit_rows"]),
                maxiter=int(z["maxiter"]),
            )
            obj.name = str(z["name"])
            obj.channel_orders = [tuple(o) for o in z["channel_orders"].tolist()]
            obj.channel_params = [z[f"params_{c}"] for c in range(len(obj.channel_orders))]
        return obj
