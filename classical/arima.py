"""ARIMA per channel: order by AIC on the train rows, then one Kalman pass per forecast split.

The model of one channel, with ``D(B) = (1 - B)^d (1 - B^s)`` the differencing operator
(the seasonal difference at period ``s`` is optional):

    z_t = D(B) y_t,    z_t = x_t' beta + e_t,    e_t ~ ARMA(p, q)

``x_t`` holds the regressors after the same differencing: a constant when nothing is
differenced, and optionally Fourier terms (sine/cosine of the absolute row index at each
seasonal period, so the phase is the same in every split). This is SARIMA
(p, d, q)(0, 1, 0)_s with regression, estimated with the differencing done up front
("simple differencing"). Why not statsmodels' integrated state space: there the
seasonal difference puts ``s`` extra states into the Kalman filter (24 hourly, 96 for
15-minute data), and the filter's cost grows with the cube of the state size; up front
it costs nothing and the ARMA state stays 1-3 wide. A seasonal ARMA part (P, Q) would
be slower still and is left out.

Under MS (``Split.loss_channels``: the target alone is scored) only the target is fitted;
the other channels, which nothing reads, get the last-value forecast.

Fitting (train rows only), per channel: ``beta`` by least squares on all train rows,
then ``(p, q)`` by AIC over a small grid, each fitted by maximum likelihood on the last
``fit_rows`` rows of the residual ``e`` (a few thousand rows pin 2-4 parameters down,
and the likelihood's cost is linear in the rows). The parameters are then fixed.

Forecasting: no refit per window. For a split's ``context`` (all rows that are inputs of
some window) one Kalman filter pass over ``e`` with the fixed parameters gives the
one-step predicted state ``a_{o+1|o}`` at every origin ``o``; with design ``Z`` and
transition ``T``

    e_hat_{o+h|o} = Z T^(h-1) a_{o+1|o},    z_hat = x' beta + e_hat,

one matrix product ``[W, k] @ [k, H]`` for every origin at once. The level forecasts
follow from inverting ``D(B)``: ``y_hat_{o+h} = z_hat_{o+h} - sum_j c_j y_{o+h-j}``
with forecasts in place of the unknown ``y``, a recursion over ``h`` vectorised over
the origins. This equals statsmodels' own forecast from the context cut at each origin
(tested), in seconds where a refit per window would take hours.
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

# (p, q) searched by AIC: small, cheap, enough for load and temperature series
DEFAULT_ARMA: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (1, 1), (2, 1), (3, 0))


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


def diff_poly(d: int, s: int) -> np.ndarray:
    """Coefficients ``c`` of ``(1 - B)^d (1 - B^s)`` (``c[0] = 1``; ``s = 0``: no seasonal)."""
    poly = np.array([1.0])
    for _ in range(d):
        poly = np.convolve(poly, [1.0, -1.0])
    if s:
        seasonal = np.zeros(s + 1)
        seasonal[[0, s]] = 1.0, -1.0
        poly = np.convolve(poly, seasonal)
    return poly


def apply_diff(y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """z_t = sum_j poly_j y_{t-j} for t >= len(poly) - 1: y [n, ...] -> [n - len(poly) + 1, ...]."""
    k = len(poly) - 1
    n = y.shape[0]
    return sum(c * y[k - j : n - j] for j, c in enumerate(poly) if c != 0)


def arma_model(e: np.ndarray, p: int, q: int):
    """Zero-mean ARMA(p, q) of ``e`` [n] as a statsmodels state-space model."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    return SARIMAX(
        e,
        order=(p, 0, q),
        trend="n",
        enforce_stationarity=True,
        enforce_invertibility=True,
        concentrate_scale=True,  # sigma^2 in closed form: one parameter fewer to search
    )


def rolling_arma_forecast(e: np.ndarray, p: int, q: int, params: np.ndarray, horizon: int):
    """H-step ARMA forecasts from every origin of one Kalman filter pass.

    Args:
        e: [n] the (differenced, de-meaned) series.
        p, q: ARMA order.
        params: fixed ARMA parameters (statsmodels order).
        horizon: H.

    Returns:
        [n, H]: row ``o`` forecasts ``e[o+1 .. o+H]`` from ``e[:o+1]``.
    """
    model = arma_model(e, p, q)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # a constant residual has zero variance: its likelihood, unused here, is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        res = model.filter(params)
    design = np.asarray(model.ssm["design"]).reshape(1, -1)
    trans = np.asarray(model.ssm["transition"])
    trans = trans[..., 0] if trans.ndim == 3 else trans
    m = np.empty((horizon, trans.shape[0]))  # rows Z T^(h-1), h = 1..H
    m[0] = design[0]
    for h in range(1, horizon):
        m[h] = m[h - 1] @ trans
    return res.predicted_state[:, 1:].T @ m.T  # [n, k] @ [k, H]


def undifference(y: np.ndarray, z_hat: np.ndarray, origins: np.ndarray, poly: np.ndarray):
    """Level forecasts from forecasts of ``z = D(B) y``.

    Args:
        y: [n] observed levels.
        z_hat: [W, H] forecasts of z at steps 1..H after each origin.
        origins: [W] index in ``y`` of each window's last observation (>= len(poly) - 2).
        poly: coefficients of D(B), ``poly[0] = 1``.

    Returns:
        [W, H] forecasts of y.
    """
    k = len(poly) - 1
    w, horizon = z_hat.shape
    # columns 0..k-1: the last k observations; then the forecasts, filled left to right
    hist = np.empty((w, k + horizon))
    hist[:, :k] = y[origins[:, None] + np.arange(-k + 1, 1)]
    taps = [(j, c) for j, c in enumerate(poly) if j and c != 0]
    for h in range(horizon):  # a loop over the horizon, vectorised over the windows
        col = k + h
        hist[:, col] = z_hat[:, h] - sum(c * hist[:, col - j] for j, c in taps)
    return hist[:, k:]


class ARIMA(BaseForecaster):
    """Per-channel (seasonal) ARIMA with fixed parameters and fast rolling forecasts.

    Args:
        seq_len: L; must exceed the differencing span ``d + season``.
        pred_len: H.
        season: seasonal difference period (0: none). 24 for hourly data.
        d: non-seasonal differences.
        fourier_periods: periods of Fourier regressors (empty: none).
        harmonics: sine/cosine pairs per Fourier period.
        arma_orders: the (p, q) grid searched by AIC.
        fit_rows: ARMA parameters by maximum likelihood on the last this-many train rows
            (None: all).
        maxiter: optimiser iterations per fit.
        progress: tqdm bar over the fits (None: only on a terminal).
    """

    name = "arima"
    # The filter runs over the whole context from its first row: a window's forecast
    # depends on how many rows precede it (the MA innovations start at zero there).
    scans_context = True

    def __init__(
        self,
        seq_len: int,
        pred_len: int,
        season: int = 24,
        d: int = 0,
        fourier_periods: tuple[int, ...] | list[int] = (),
        harmonics: int = 4,
        arma_orders: tuple[tuple[int, int], ...] | list = DEFAULT_ARMA,
        fit_rows: int | None = 2000,
        maxiter: int = 50,
        progress: bool | None = None,
    ):
        self.seq_len = int(seq_len)
        self.pred_len = int(pred_len)
        self.season = int(season) if season and int(season) >= 2 else 0
        self.d = int(d)
        if self.d + self.season >= self.seq_len:
            raise ValueError(
                f"arima: differencing span d + season = {self.d + self.season} must be below "
                f"the lookback {self.seq_len}"
            )
        self.fourier_periods = [int(p) for p in fourier_periods if int(p) >= 2]
        self.harmonics = int(harmonics)
        self.arma_orders = [(int(p), int(q)) for p, q in arma_orders]
        self.fit_rows = fit_rows
        self.maxiter = int(maxiter)
        self.progress = progress
        # the fitted channels (None: all), and per fitted channel: (p, q), beta, ARMA
        # parameters, AIC per (p, q)
        self.channels: list[int] | None = None
        self.channel_orders: list[tuple[int, int]] = []
        self.channel_beta: list[np.ndarray] = []
        self.channel_params: list[np.ndarray] = []
        self.aic: list[dict[str, float]] = []

    def derived_settings(self) -> dict[str, int]:
        """Settings a run derives from the detected periods; its forecast cache keys on
        them (the default season changed in the fifteenth session)."""
        return {"season": self.season}

    @property
    def poly(self) -> np.ndarray:
        return diff_poly(self.d, self.season)

    def regressors(self, t: np.ndarray) -> np.ndarray:
        """Differenced regressors for rows ``t`` [n] -> [n - span, k] (aligned with z)."""
        cols = [fourier_terms(t, self.fourier_periods, self.harmonics)]
        if len(self.poly) == 1:  # a mean survives only when nothing is differenced
            cols.insert(0, np.ones((len(t), 1)))
        return apply_diff(np.concatenate(cols, axis=1), self.poly)

    def fit(self, train: Split, val: Split) -> ARIMA:
        """Per channel: beta by least squares, (p, q) by AIC, parameters fixed afterwards."""
        from threadpoolctl import threadpool_limits

        y = np.asarray(train.data, dtype=np.float64)
        z = apply_diff(y, self.poly)  # [T - span, C]
        x = self.regressors(train.start + np.arange(y.shape[0]))
        tail = slice(-int(self.fit_rows), None) if self.fit_rows else slice(None)
        self.channel_orders, self.channel_beta, self.channel_params, self.aic = [], [], [], []
        # under MS the other channels are never scored: fitting them would only cost time
        self.channels = None if train.loss_channels is None else list(train.loss_channels)
        fitted = range(train.n_channels) if self.channels is None else self.channels
        if self.channels is not None:
            log.info(
                "%s: fitted to channel(s) %s only (the others are not scored; their "
                "forecast is the last value)",
                self.name,
                self.channels,
            )
        disable = None if self.progress is None else not self.progress
        bar = tqdm(
            total=len(fitted) * len(self.arma_orders),
            desc=self.name,
            disable=disable,
            leave=False,
        )
        # one BLAS thread: extra threads only slow the filter's tiny matrix products down
        with bar, threadpool_limits(1):
            for c in fitted:
                beta = np.linalg.lstsq(x, z[:, c], rcond=None)[0] if x.shape[1] else np.zeros(0)
                e = (z[:, c] - x @ beta)[tail]
                best, table = (np.inf, None, None), {}
                # a constant residual (a constant column, an exactly periodic covariate
                # under its seasonal difference) has nothing to fit and breaks the filter
                flat = np.ptp(e) <= 1e-12 * max(1.0, float(np.abs(e).max()))
                for p, q in [] if flat else self.arma_orders:
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")  # convergence chatter
                            res = arma_model(e, p, q).fit(disp=False, maxiter=self.maxiter)
                        aic = float(res.aic)
                    except (np.linalg.LinAlgError, ValueError):  # this order only
                        aic = float("nan")
                    table[f"({p},{self.d},{q})"] = aic
                    if np.isfinite(aic) and aic < best[0]:
                        best = (aic, (p, q), np.asarray(res.params))
                    bar.update(1)
                if best[1] is None:
                    # no ARMA part: the forecast is the (seasonally) differenced level
                    # plus the regression, e.g. the seasonal naive forecast
                    log.warning(
                        "%s channel %d: %s; forecast without an ARMA part",
                        self.name,
                        c,
                        "constant residual" if flat else "no ARMA order could be fitted",
                    )
                    best = (float("nan"), (1, 0), np.zeros(1))
                self.channel_orders.append(best[1])
                self.channel_beta.append(beta)
                self.channel_params.append(best[2])
                self.aic.append(table)
                log.info(
                    "%s channel %d: (p,d,q)=(%d,%d,%d) season %d, AIC %.1f",
                    self.name,
                    c,
                    best[1][0],
                    self.d,
                    best[1][1],
                    self.season,
                    best[0],
                )
        return self

    def predict(self, windows: Windows) -> np.ndarray:
        """windows.context: [W + L - 1, C] -> [W, H, C], one filter pass per channel."""
        from threadpoolctl import threadpool_limits

        if not self.channel_params:
            raise RuntimeError(f"{self.name}: call fit() (or load()) before predict()")
        ctx, h = np.asarray(windows.context, dtype=np.float64), windows.pred_len
        n, span = ctx.shape[0], len(self.poly) - 1
        z = apply_diff(ctx, self.poly)  # z[i] belongs to context row i + span
        x = self.regressors(windows.start + np.arange(n + h))  # reaches H rows past the context
        origins = np.arange(windows.seq_len - 1, n)  # context row of each window's last input
        fitted = range(ctx.shape[1]) if self.channels is None else self.channels
        if len(fitted) != len(self.channel_params) or max(fitted) >= ctx.shape[1]:
            raise ValueError(
                f"{self.name}: fitted to {len(self.channel_params)} channel(s), got {ctx.shape[1]}"
            )
        # channels not fitted (under MS): the last value of each window's input
        out = np.repeat(ctx[origins].astype(np.float32)[:, None, :], h, axis=1)
        with threadpool_limits(1):
            for i, c in enumerate(fitted):
                (p, q), beta = self.channel_orders[i], self.channel_beta[i]
                reg = x @ beta if x.shape[1] else np.zeros(len(x))
                e = z[:, c] - reg[: len(z)]
                e_hat = rolling_arma_forecast(e, p, q, self.channel_params[i], h)
                # z_hat at origin o, step j: row o - span of e_hat; regression of row o + j
                rows = origins - span
                z_hat = e_hat[rows] + reg[rows[:, None] + np.arange(1, h + 1)]
                out[..., c] = undifference(ctx[:, c], z_hat, origins, self.poly)
        return out

    def save(self, path: str | Path) -> None:
        """Write ``arima.npz``: settings, chosen orders and parameters (no pickled models)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(
            path / "arima.npz",
            name=np.array(self.name),
            seq_len=self.seq_len,
            pred_len=self.pred_len,
            season=self.season,
            d=self.d,
            fourier_periods=np.array(self.fourier_periods, dtype=np.int64),
            harmonics=self.harmonics,
            arma_orders=np.array(self.arma_orders, dtype=np.int64).reshape(-1, 2),
            fit_rows=-1 if self.fit_rows is None else int(self.fit_rows),
            maxiter=self.maxiter,
            channel_orders=np.array(self.channel_orders, dtype=np.int64).reshape(-1, 2),
            **({} if self.channels is None else {"channels": np.array(self.channels)}),
            **{f"beta_{c}": b for c, b in enumerate(self.channel_beta)},
            **{f"params_{c}": p for c, p in enumerate(self.channel_params)},
        )

    @classmethod
    def load(cls, path: str | Path) -> ARIMA:
        with np.load(Path(path) / "arima.npz") as z:
            obj = cls(
                seq_len=int(z["seq_len"]),
                pred_len=int(z["pred_len"]),
                season=int(z["season"]),
                d=int(z["d"]),
                fourier_periods=z["fourier_periods"].tolist(),
                harmonics=int(z["harmonics"]),
                arma_orders=[tuple(o) for o in z["arma_orders"].tolist()],
                fit_rows=None if int(z["fit_rows"]) < 0 else int(z["fit_rows"]),
                maxiter=int(z["maxiter"]),
            )
            obj.name = str(z["name"])
            obj.channels = z["channels"].tolist() if "channels" in z.files else None
            obj.channel_orders = [tuple(o) for o in z["channel_orders"].tolist()]
            n = len(obj.channel_orders)
            obj.channel_beta = [z[f"beta_{c}"] for c in range(n)]
            obj.channel_params = [z[f"params_{c}"] for c in range(n)]
        return obj
