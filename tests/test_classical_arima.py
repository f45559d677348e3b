"""ARIMA: accuracy against naive, the fast rolling forecast against statsmodels, save/load."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from classical.arima import ARIMA, apply_diff, diff_poly
from classical.naive import NaiveLast
from experiments import registry


@pytest.fixture(scope="module")
def splits(small_synth_splits):
    return small_synth_splits(channels=2)


def _mse(member, split) -> float:
    return float(((member.predict(split.windows()) - split.targets()) ** 2).mean())


ORDERS = ((1, 0), (1, 1))


@pytest.fixture(scope="module")
def seasonal(splits):
    return ARIMA(96, 24, season=24, arma_orders=ORDERS, progress=False).fit(
        splits.train, splits.val
    )


@pytest.fixture(scope="module")
def fourier(splits):
    return ARIMA(
        96, 24, season=0, fourier_periods=[24], harmonics=2, arma_orders=ORDERS, progress=False
    ).fit(splits.train, splits.val)


def test_beats_last_value_naive(splits, seasonal, fourier):
    naive = _mse(NaiveLast(), splits.test)
    assert _mse(seasonal, splits.test) < 0.5 * naive
    assert _mse(fourier, splits.test) < 0.5 * naive


def _undifference_loop(y: np.ndarray, z_hat: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Plain reference: y_{n+h} = z_{n+h} - sum_j poly_j y_{n+h-j}, one step at a time."""
    hist = list(y)
    for zh in z_hat:
        hist.append(zh - sum(poly[j] * hist[-j] for j in range(1, len(poly))))
    return np.array(hist[len(y) :])


@pytest.mark.parametrize("split", ["val", "test"])
@pytest.mark.parametrize("which", ["seasonal", "fourier"])
def test_rolling_forecast_equals_statsmodels_forecast(splits, which, split, request):
    """At sampled origins, statsmodels' forecast from the context cut there, same params.
    The val split starts off the 24-step cycle (row 954), so a Fourier phase counted from
    the split instead of the series shows there."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    model: ARIMA = request.getfixturevalue(which)
    w = getattr(splits, split).windows()
    assert split == "test" or w.start % 24 != 0
    fast = model.predict(w).astype(np.float64)
    y = np.asarray(w.context, dtype=np.float64)
    rows = w.start + np.arange(len(y) + 24)
    x_all = model.regressors(rows)  # differenced regressors, aligned with z
    for c in range(y.shape[1]):
        (p, q), beta, params = (
            model.channel_orders[c],
            model.channel_beta[c],
            model.channel_params[c],
        )
        for o in (95, 200, len(y) - 1):  # first, middle and last origin
            z = apply_diff(y[: o + 1, c], model.poly)
            exog = x_all[: len(z)] if x_all.shape[1] else None
            future = x_all[len(z) : len(z) + 24] if x_all.shape[1] else None
            sm = SARIMAX(z, exog=exog, order=(p, 0, q), trend="n", concentrate_scale=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                z_hat = sm.filter(np.concatenate([beta, params])).forecast(24, exog=future)
            ref = _undifference_loop(y[: o + 1, c], np.asarray(z_hat), model.poly)
            np.testing.assert_allclose(fast[o - 95, :, c], ref, atol=1e-5, rtol=0)


def test_rolling_forecast_matches_statsmodels_to_1e6_in_float64(splits, seasonal):
    """The same check without the float32 output cast: agreement to 1e-6."""
    from classical.arima import rolling_arma_forecast, undifference

    y = np.asarray(splits.test.windows().context[:, 0], dtype=np.float64)
    z = apply_diff(y, seasonal.poly)
    (p, q), params = seasonal.channel_orders[0], seasonal.channel_params[0]
    e_hat = rolling_arma_forecast(z, p, q, params, 24)
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    for o in (120, 250, len(y) - 1):
        sm = SARIMAX(z[: o - 24 + 1], order=(p, 0, q), trend="n", concentrate_scale=True)
        ref_z = np.asarray(sm.filter(params).forecast(24))
        np.testing.assert_allclose(e_hat[o - 24], ref_z, atol=1e-6, rtol=0)
        lvl = undifference(y, e_hat[[o - 24]], np.array([o]), seasonal.poly)[0]
        np.testing.assert_allclose(
            lvl, _undifference_loop(y[: o + 1], ref_z, seasonal.poly), atol=1e-6, rtol=0
        )


def test_diff_poly():
    np.testing.assert_array_equal(diff_poly(1, 0), [1, -1])
    np.testing.assert_array_equal(diff_poly(1, 3), [1, -1, 0, -1, 1])


def test_save_load_roundtrip(splits, seasonal, tmp_path):
    seasonal.save(tmp_path / "a")
    loaded = ARIMA.load(tmp_path / "a")
    w = splits.val.windows()
    np.testing.assert_array_equal(loaded.predict(w), seasonal.predict(w))


def test_registry_builds_with_params():
    ctx = registry.MemberContext(96, 24, 2, "h", [24, 168], 0, "synth")
    m = registry.build("arima@seasonal=12@d=1@fourier=24+168", ctx)
    assert (m.season, m.d, m.fourier_periods) == (12, 1, [24, 168])
    ctx = registry.MemberContext(96, 24, 2, "h", [24, 168], 0, "synth")
    assert registry.build("arima", ctx).season == 24


def test_no_period_within_the_lookback_means_no_seasonal_difference():
    # a made-up 24-step difference doubled ARIMA's error on weekly illness data (L=36)
    for periods in ([], [52]):
        ctx = registry.MemberContext(36, 24, 2, "W-TUE", periods, 0, "synth")
        assert registry.build("arima", ctx).season == 0


def test_constant_and_exactly_periodic_channels_do_not_stop_the_member(tmp_path):
    # nothing to fit in a constant residual: the filter used to fail ("no order could be
    # fitted", or a LinAlgError) and take the whole member down
    from conftest import synthetic_frame

    from ensemble.data import load_dataset, make_splits

    df = synthetic_frame(n=1500, channels=2)
    df.insert(1, "const", 5.0)
    df.insert(1, "hour", np.arange(len(df)) % 24 * 1.0)  # periodic: 0 after differencing
    path = tmp_path / "flat.csv"
    df.to_csv(path, index=False)
    splits = make_splits(load_dataset(data_path=path), 96, 24)
    names = splits.dataset.columns
    model = ARIMA(96, 24, season=24, arma_orders=ORDERS, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no NaN chatter either
        pred = model.fit(splits.train, splits.val).predict(splits.test.windows())
    true = splits.test.targets()
    for name in ("const", "hour"):
        c = names.index(name)
        np.testing.assert_allclose(pred[..., c], true[..., c], atol=1e-5)
    assert np.isfinite(pred).all()


def test_under_ms_only_the_target_is_fitted_and_forecast_the_same(splits, seasonal, tmp_path):
    # MS scores the target alone: the other channels are not fitted (the last value)
    target = dataclasses.replace(splits.train, loss_channels=(1,))
    ms = ARIMA(96, 24, season=24, arma_orders=ORDERS, progress=False).fit(target, splits.val)
    assert ms.channels == [1] and len(ms.channel_params) == 1
    w = splits.test.windows()
    full, only = seasonal.predict(w), ms.predict(w)
    np.testing.assert_array_equal(only[..., 1], full[..., 1])
    last = splits.test.inputs()[:, -1, 0].astype(np.float32)
    np.testing.assert_array_equal(only[..., 0], np.repeat(last[:, None], 24, axis=1))
    ms.save(tmp_path / "ms")
    loaded = ARIMA.load(tmp_path / "ms")
    assert loaded.channels == [1]
    np.testing.assert_array_equal(loaded.predict(w), only)
