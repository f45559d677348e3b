"""experiments.api.HybridForecaster: fit(df) / predict(h) on long and wide frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ensemble.errors import UserError
from experiments.api import HybridForecaster

N, PERIOD = 900, 24


def wide_frame(n: int = N, series: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    t = np.arange(n)
    cols = {
        f"s{i}": 10 + np.sin(2 * np.pi * (t + 5 * i) / PERIOD) + 0.1 * rng.standard_normal(n)
        for i in range(series)
    }
    return pd.DataFrame({"ds": pd.date_range("2021-01-01", periods=n, freq="h"), **cols})


def long_frame(n: int = N) -> pd.DataFrame:
    return wide_frame(n).melt(id_vars="ds", var_name="unique_id", value_name="y")[
        ["unique_id", "ds", "y"]
    ]


def small(members=("naive", "snaive"), router="greedy", **kw) -> HybridForecaster:
    return HybridForecaster(members=list(members), router=router, seq_len=96, pred_len=24, **kw)


def test_long_frame_fit_predict():
    df = long_frame()
    hf = small().fit(df)
    fc = hf.predict(12)
    assert list(fc.columns) == ["unique_id", "ds", "hybrid", "naive", "snaive"]
    assert len(fc) == 2 * 12 and set(fc["unique_id"]) == {"s0", "s1"}
    first = fc[fc["unique_id"] == "s0"]["ds"]
    assert first.iloc[0] == df["ds"].max() + pd.Timedelta(hours=1)
    assert (first.diff().dropna() == pd.Timedelta(hours=1)).all()
    # the seasonal member is the right one on a clean seasonal series
    assert hf.router_.channel_weights_[:, 1].min() > 0.8
    np.testing.assert_allclose(hf.weights_.sum(-1), 1.0)
    # forecasts come back in the data's units: the seasonal and the last-value forecasts
    # repeat the raw series exactly
    for sid in ("s0", "s1"):
        raw = df[df["unique_id"] == sid].sort_values("ds")["y"].to_numpy()
        got = fc[fc["unique_id"] == sid]
        np.testing.assert_allclose(got["snaive"], raw[-PERIOD:][:12], rtol=1e-6)
        np.testing.assert_allclose(got["naive"], np.full(12, raw[-1]), rtol=1e-6)


def test_wide_frame_and_datetime_index_give_the_same_forecast():
    df = wide_frame()
    a = small(router="mean").fit(df).predict()
    b = small(router="mean").fit(df.set_index("ds")).predict()
    assert list(a.columns) == ["ds", "s0", "s1"] and len(a) == 24
    pd.testing.assert_frame_equal(a, b)


def test_mean_router_is_the_average_of_members():
    fc = small(router="mean").fit(long_frame()).predict()
    np.testing.assert_allclose(fc["hybrid"], (fc["naive"] + fc["snaive"]) / 2)


def test_learned_router_and_forecaster_instances():
    from classical.naive import NaiveLast, SeasonalNaive

    hf = HybridForecaster(
        members=[NaiveLast(), SeasonalNaive(period=PERIOD)],
        router="learned",
        seq_len=96,
        pred_len=24,
    ).fit(long_frame())
    fc = hf.predict()
    assert np.isfinite(fc["hybrid"]).all() and hf.router_.chosen_ in hf.router_.inner_scores_
    assert hf.weights_.shape == (2, 2)


def test_user_errors():
    hf = small().fit(long_frame())
    with pytest.raises(UserError, match="h must be"):
        hf.predict(25)
    with pytest.raises(UserError, match="too few"):
        small().fit(long_frame(n=150))
    ragged = long_frame().iloc[:-3]
    with pytest.raises(UserError, match="do not share"):
        small().fit(ragged)
    with pytest.raises(UserError, match="unknown member"):
        small(members=("nope",)).fit(long_frame())
    with pytest.raises(UserError, match="DatetimeIndex"):
        small().fit(pd.DataFrame({"a": [1.0, 2.0]}))
    steps = long_frame().assign(ds=lambda d: d.groupby("unique_id").cumcount())
    with pytest.raises(UserError, match="column 'ds' holds numbers"):
        small().fit(steps)
