"""experiments.api.HybridForecaster: fit(df) / predict(h) on long and wide frames."""

from __future__ import annotations

import warnings

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
    assert hf.weights_.shape == (24, 2, 2)  # [h, C, M]


def test_user_errors():
    hf = small().fit(long_frame())
    with pytest.raises(UserError, match="h must be"):
        hf.predict(25)
    with pytest.raises(UserError, match="too few"):
        small().fit(long_frame(n=150))
    ragged = long_frame().iloc[:-3]  # s1 ends 3 hours early: named, with both spans
    with pytest.raises(UserError, match=r"'s1' has 897 rows from .* to .*, the frame 900 from"):
        small().fit(ragged)
    with pytest.raises(UserError, match="unknown member"):
        small(members=("nope",)).fit(long_frame())
    dated = pd.DataFrame({"when": ["2020-01-01", "2020-01-02"], "a": [1.0, 2.0]})
    with pytest.raises(UserError, match="DatetimeIndex.*time_col='when'"):
        small().fit(dated)


def test_integer_times_are_steps():
    from classical.naive import NaiveLast, SeasonalNaive

    def fit(df, **kw):
        members = [NaiveLast(), SeasonalNaive(period=PERIOD)]
        return HybridForecaster(members=members, router="mean", seq_len=96, pred_len=24).fit(
            df, **kw
        )

    dated = long_frame()
    steps = dated.assign(ds=lambda d: d.groupby("unique_id").cumcount())
    a, b = fit(dated).predict(5), fit(steps).predict(5)
    assert b["ds"].tolist() == list(range(N, N + 5)) * 2
    pd.testing.assert_frame_equal(a.drop(columns="ds"), b.drop(columns="ds"))
    # a wide frame's integer index, counted in tens: the forecast goes on in tens
    wide = wide_frame().drop(columns="ds").set_axis(100 + 10 * np.arange(N))
    fc = fit(wide).predict(3)
    assert fc["ds"].tolist() == [100 + 10 * N, 110 + 10 * N, 120 + 10 * N]
    np.testing.assert_allclose(
        fc[["s0", "s1"]], a.pivot(index="ds", columns="unique_id", values="hybrid")[:3]
    )
    with pytest.raises(UserError, match="integer times take a whole step"):
        fit(steps, freq="h")
    with pytest.raises(UserError, match="not steps of 2: 1 is off the grid"):
        fit(steps, freq=2)
    with pytest.raises(UserError, match="column 'ds' holds floats"):
        fit(steps.assign(ds=steps["ds"] * 0.5))
    with pytest.warns(UserWarning, match="1 gap.*first before 301"):
        fit(steps[steps["ds"] != 300])
    # integers of other dtypes are steps too, never nanoseconds since 1970
    for ds in (steps["ds"].astype(object), steps["ds"].astype(np.uint64)):
        assert fit(steps.assign(ds=ds)).predict(2)["ds"].tolist() == [N, N + 1] * 2
    wide_obj = wide.set_axis(pd.Index(list(range(N)), dtype=object))
    assert fit(wide_obj).predict(1)["ds"].tolist() == [N]
    holed = [*range(3), None, *range(4, 2 * N)]
    with pytest.raises(UserError, match="has a missing time at row 4;"):
        fit(steps.assign(ds=pd.array(holed, dtype="Int64")))
    with pytest.raises(UserError, match="has a missing time at row 4;"):  # the same as objects
        fit(steps.assign(ds=pd.Series(holed, dtype=object)))
    with pytest.raises(UserError, match="too large to continue"):
        fit(steps.assign(ds=steps["ds"] - (2**62 + 10)))
    # integers that are timestamps (epoch seconds, 20150101) are not taken for steps
    epoch = dated.assign(ds=(dated["ds"] - pd.Timestamp(0)) // pd.Timedelta("1s"))
    with pytest.raises(UserError, match=r"timestamps, not steps\? Epoch seconds convert"):
        fit(epoch)


def test_long_frame_input_that_pivoting_would_hide_is_refused():
    df = long_frame()
    with pytest.raises(UserError, match="has two rows at"):
        small().fit(pd.concat([df.iloc[[5]].assign(y=1000.0), df]))
    with pytest.raises(UserError, match="has NaN"):
        small().fit(df.assign(y=df["y"].where(df.index != 7)))
    with pytest.raises(UserError, match="not numeric"):
        small().fit(df.astype({"y": object}).assign(y=lambda d: d["y"].where(d.index != 3, "abc")))
    # a long frame whose target is named otherwise is not read as one wide series
    with pytest.raises(UserError, match="'y' missing"):
        small().fit(df.rename(columns={"y": "value"}))
    with pytest.raises(UserError, match="appears twice"):
        small().fit(df.drop(columns="unique_id"))
    with pytest.warns(UserWarning, match="'temp'"):
        small().fit(df.assign(temp=1.0))


def test_series_labels_keep_their_type():
    df = long_frame().assign(unique_id=lambda d: d["unique_id"].map({"s0": 1, "s1": 2}))
    fc = small().fit(df).predict(2)
    assert fc["unique_id"].tolist() == [1, 1, 2, 2]
    assert len(df.merge(fc, on=["unique_id", "ds"], how="inner")) == 0  # future rows
    wide = wide_frame().rename(columns={"s0": 0, "s1": 1})
    assert list(small().fit(wide).predict(2).columns) == ["ds", 0, 1]


def test_instances_are_copied_and_named_apart():
    from classical.naive import SeasonalNaive

    shared = [SeasonalNaive(period=PERIOD), SeasonalNaive(period=12)]
    hf = HybridForecaster(members=shared, router="mean", seq_len=96, pred_len=24)
    first = hf.fit(long_frame()).predict()
    assert hf.member_names_ == ["snaive", "snaive_2"]
    assert list(first.columns) == ["unique_id", "ds", "hybrid", "snaive", "snaive_2"]
    assert not np.allclose(first["snaive"], first["snaive_2"])
    assert [m.name for m in shared] == ["snaive", "snaive"]  # the caller's objects untouched
    # fitting another forecaster with the same instances leaves the first one's forecast
    HybridForecaster(members=shared, router="mean", seq_len=96, pred_len=24).fit(
        long_frame().assign(y=lambda d: 2 * d["y"])
    )
    pd.testing.assert_frame_equal(hf.predict(), first)
    with pytest.raises(UserError, match="listed twice"):
        small(members=("naive", "naive")).fit(long_frame())
    bad = SeasonalNaive(period=PERIOD)
    bad.name = "hybrid"
    with pytest.raises(UserError, match="output column"):
        HybridForecaster(members=[bad], router="mean", seq_len=96, pred_len=24).fit(long_frame())


def test_failed_refit_keeps_the_fitted_model():
    hf = small().fit(long_frame())
    before = hf.predict()
    with pytest.raises(UserError, match="too few"):
        hf.fit(wide_frame(n=150))
    pd.testing.assert_frame_equal(hf.predict(), before)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"seq_len": 0}, "seq_len must be"),
        ({"pred_len": 2.5}, "pred_len must be"),
        ({"val_size": 1.0}, "val_size"),
        ({"members": []}, "no members"),
        ({"seed": None}, "seed must be a whole number"),
        ({"seed": -1}, "seed must lie in"),
        ({"member_params": {"naiv": {"x": 1}}}, "settings for 'naiv', which is not among"),
        # a learned router has nothing to weigh with one member (was an einsum error)
        ({"router": "learned"}, "router learned weighs members against each other"),
        ({"router": "learned_lgbm"}, "at least two members"),
        ({"router": "Learned"}, "unknown router 'Learned'"),
        ({"router": "nope", "members": ["naive", "timellm"]}, "unknown router"),  # before a fit
    ],
)
def test_bad_settings(kwargs, needle):
    args = {"members": ["naive"], "router": "mean", "seq_len": 96, "pred_len": 24} | kwargs
    with pytest.raises(UserError, match=needle):
        HybridForecaster(**args).fit(long_frame())


def test_bad_calls():
    with pytest.raises(UserError, match="not fitted"):
        small().predict(2)
    with pytest.raises(UserError, match="DataFrame"):
        small().fit(wide_frame()[["s0", "s1"]].to_numpy())
    hf = small().fit(long_frame())
    with pytest.raises(UserError, match="whole number"):
        hf.predict(2.7)
    with pytest.raises(UserError, match="not a pandas offset"):
        small().fit(long_frame(), freq="fortnightly")
    from classical.naive import SeasonalNaive

    member = SeasonalNaive(period=PERIOD)
    member.seq_len, member.pred_len = 96, 12
    with pytest.raises(UserError, match="was built for"):
        HybridForecaster(members=[member], router="mean", seq_len=96, pred_len=24).fit(long_frame())


@pytest.mark.parametrize(
    ("freq", "start", "drop", "expect"),
    [
        ("B", "2021-01-01", ["2021-01-18", "2021-02-15", "2021-05-31"], "B"),
        ("MS", "1950-01-01", ["1960-03-01"], "MS"),
    ],
)
def test_future_dates_follow_the_calendar_despite_gaps(freq, start, drop, expect):
    df = wide_frame().assign(ds=pd.date_range(start, periods=N, freq=freq))
    df = df[~df["ds"].isin(pd.to_datetime(drop))]
    with pytest.warns(UserWarning, match="gap"):
        hf = small().fit(df)
    assert hf.freq_ == expect
    future = hf.predict(5)["ds"]
    expected = pd.date_range(df["ds"].iloc[-1], periods=6, freq=expect)[1:]
    assert list(future) == list(expected)


@pytest.mark.parametrize(("data_freq", "given"), [("W-MON", "W"), ("ME", "MS")])
def test_a_given_freq_the_dates_are_not_on_is_refused(data_freq, given):
    # date_range(last, ...)[1:] rolled an off-grid last date to the next grid point and
    # dropped it: Monday data with freq="W" forecast from the Sunday after next.
    df = wide_frame().assign(ds=pd.date_range("2015-01-05", periods=N, freq=data_freq))
    with pytest.raises(UserError, match=rf"freq '{given}': timestamp .* is not on its grid"):
        small().fit(df, freq=given)
    future = small().fit(df, freq=data_freq).predict(3)["ds"]
    assert list(future) == list(pd.date_range(df["ds"].iloc[-1], periods=4, freq=data_freq)[1:])


def test_wide_text_index_is_read_day_first_and_left_as_it_was():
    # read_csv(index_col=0) of a European CSV: "13/01/2010" can only be day-first, and the
    # whole column must then be read so, as a ds column is.
    df = wide_frame().assign(ds=pd.date_range("2010-01-01", periods=N, freq="MS"))
    text = df.assign(ds=df["ds"].dt.strftime("%d/%m/%Y")).set_index("ds")
    before = text.index.copy()
    hf = small().fit(text)
    assert hf.freq_ == "MS" and hf.dates_[-1] == df["ds"].iloc[-1]
    assert text.index.equals(before)  # the caller's frame is not changed
    np.testing.assert_array_equal(
        hf.predict(3).iloc[:, :3].to_numpy(), small().fit(df).predict(3).iloc[:, :3].to_numpy()
    )


def test_members_as_one_string_are_split_as_on_the_command_line():
    hf = HybridForecaster(members="naive, snaive", router="mean", seq_len=96, pred_len=24)
    assert hf.members == ["naive", "snaive"]
    with pytest.raises(UserError, match="has an empty item"):  # "naive,$M" with M unset
        HybridForecaster(members="naive, snaive,")
    assert list(hf.fit(long_frame()).predict(2).columns)[3:] == ["naive", "snaive"]


def test_refusals_say_where_and_how():
    df = wide_frame()
    with pytest.raises(UserError, match=r"series 's1' has nan at 2021-01-01 05:00:00 \(1 such"):
        small().fit(df.assign(s1=df["s1"].where(df.index != 5)))
    with pytest.raises(UserError, match=r"series 's0' has inf"):
        small().fit(df.assign(s0=np.where(df.index == 9, np.inf, df["s0"])))
    with pytest.raises(UserError, match=r"e\.g\. fit\(df, time_col='date'\)"):
        small().fit(df.rename(columns={"ds": "date"}).astype({"date": str}))
    with pytest.raises(UserError, match="column 's0' appears twice"):
        small().fit(df.set_axis(["ds", "s0", "s0"], axis=1))
    with pytest.raises(UserError, match="column 'y' appears twice"):  # long frames too
        small().fit(long_frame().assign(z=0.0).set_axis(["unique_id", "ds", "y", "y"], axis=1))
    if int(pd.__version__.split(".")[0]) >= 3:  # pandas 2.2 still takes them, with a warning
        with pytest.raises(UserError, match="spells 'H' as 'h'"):
            small().fit(df, freq="H")
        with pytest.raises(UserError, match="'ME' \\(month end\\)"):
            small().fit(df, freq="2M")
        with pytest.raises(UserError, match="'YE' or 'YS', with the same -MON anchor"):
            small().fit(df, freq="A-DEC")
    with pytest.raises(UserError, match="rename your id column"):
        small().fit(long_frame().rename(columns={"unique_id": "hybrid"}), id_col="hybrid")


class _SklearnLike:
    def get_params(self):
        return {}

    def fit(self, X, y):
        return self

    def predict(self, X):
        return X


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"members": [_SklearnLike(), "naive"]}, "got _SklearnLike: wrap other models"),
        ({"members": [object()]}, "got object: wrap"),
        ({"members": [3]}, "got int: wrap"),
        ({"members": None}, "no members given"),
        ({"member_params": {"naive": 5}}, "member_params maps a member to its settings"),
        ({"val_size": "0.2"}, "val_size is a share of the rows"),
    ],
)
def test_settings_of_the_wrong_type_are_refused_before_any_fit(kwargs, needle):
    args = {"members": ["naive", "snaive"], "router": "mean", "seq_len": 96, "pred_len": 24}
    with pytest.raises(UserError, match=needle):
        HybridForecaster(**(args | kwargs)).fit(wide_frame())


def test_calendars_pandas_cannot_name_are_refused_with_the_way_out():
    months = pd.DatetimeIndex([pd.Timestamp(2000 + i // 12, i % 12 + 1, 15) for i in range(400)])
    df = pd.DataFrame({"ds": months, "a": np.random.default_rng(0).random(400)})
    with pytest.raises(UserError, match="has no pandas alias"):
        small().fit(df, freq=pd.DateOffset(months=1))
    with pytest.raises(UserError, match="monthly on day 15.*freq='MS'"):
        small().fit(df)
    moved = df.assign(ds=df["ds"].dt.to_period("M").dt.to_timestamp())  # the advice works
    assert small().fit(moved, freq="MS").predict(2)["ds"].iloc[0] == pd.Timestamp("2033-05-01")


def test_panel_messages_name_the_columns_and_the_hole():
    df = long_frame().rename(columns={"unique_id": "item_id", "ds": "timestamp"})
    with pytest.raises(UserError, match=r"id_col='item_id', time_col='timestamp'"):
        small().fit(df.set_index(["item_id", "timestamp"]))
    holed = long_frame().drop(index=500)  # s0 at 2021-01-21 20:00
    with pytest.raises(UserError, match="'s0' lacks 2021-01-21 20:00:00 first"):
        small().fit(holed)


def test_ids_that_are_tuples_come_back_as_they_were():
    df = long_frame()
    df["unique_id"] = df["unique_id"].map(lambda s: (s, 1))
    fc = small().fit(df).predict(3)
    assert fc["unique_id"].tolist() == [("s0", 1)] * 3 + [("s1", 1)] * 3
    cv = small().cross_validation(df, h=3)
    assert cv["unique_id"].tolist() == [("s0", 1)] * 3 + [("s1", 1)] * 3


def test_frames_a_pivot_or_cast_would_mangle_are_refused_in_one_line():
    df = long_frame()
    with pytest.raises(UserError, match="no rows"):  # a filter that left nothing
        small().fit(df[df["ds"] > df["ds"].max()])
    with pytest.raises(UserError, match="no rows"):
        small().fit(pd.DataFrame({"a": pd.Series([], dtype=float)}))
    with pytest.raises(UserError, match=r"MultiIndex \(unique_id, ds\).*reset_index"):
        small().fit(df.set_index(["unique_id", "ds"]))
    with pytest.raises(UserError, match="columns are a MultiIndex"):
        small().fit(
            wide_frame()
            .set_index("ds")
            .set_axis(pd.MultiIndex.from_tuples([("a", 1), ("a", 2)]), axis=1)
        )
    # a series whose ids are all missing would be forecast under the label NaN
    with pytest.raises(UserError, match=r"'unique_id' has a missing id \(row 900"):
        small().fit(df.assign(unique_id=df["unique_id"].where(df["unique_id"] == "s0")))
    with pytest.raises(UserError, match=r"'ds' is the frame's index: call df.reset_index"):
        small().fit(df.set_index("ds"))
    with pytest.raises(UserError, match="complex"):
        small().fit(df.assign(y=df["y"] + 1j))
    wide = wide_frame().set_index("ds")
    with pytest.raises(UserError, match=r"missing timestamp \(NaT\) at row 6"):
        small().fit(wide.set_axis(wide.index.where(np.arange(N) != 6), axis=0))
    # each series jittered on its own: the union is no common span to cut to
    rng = np.random.default_rng(1)
    jitter = pd.to_timedelta(rng.integers(-5, 6, size=len(df)), "min")
    with pytest.raises(UserError, match=r"do not line up: .*resample them onto one regular grid"):
        small().fit(df.assign(ds=df["ds"] + jitter))
    # the shortest series that fits is named
    with pytest.raises(UserError, match="need at least 169;") as err:
        small().fit(long_frame(n=150))
    small(router="mean").fit(long_frame(n=169)).predict()
    with pytest.raises(UserError, match="168 rows are too few"):
        small(router="mean").fit(long_frame(n=168))
    assert "\n" not in str(err.value)


def test_weights_are_the_ones_each_step_of_the_forecast_used():
    # inverse_error weighs every step of the horizon on its own validation errors
    hf = small(router="inverse_error").fit(long_frame())
    fc = hf.predict(12)
    assert hf.weights_.shape == (12, 2, 2)  # [h, C, M]
    assert np.ptp(hf.weights_[:, 0, 0]) > 0.01  # the steps differ
    for c, sid in enumerate(hf.series_):
        got = fc[fc["unique_id"] == sid]
        parts = np.stack([got[m].to_numpy() for m in hf.member_names_], axis=-1)  # [h, M]
        np.testing.assert_allclose(got["hybrid"], (hf.weights_[:, c] * parts).sum(-1), rtol=1e-9)


def test_settings_changed_after_fit_are_refused_until_refitted():
    hf = small(router="mean").fit(long_frame())
    hf.pred_len = 12
    with pytest.raises(UserError, match=r"changed since fit \(96/24 -> 96/12\)"):
        hf.predict()
    hf.pred_len, hf.seq_len = 24, 48
    with pytest.raises(UserError, match="call fit again"):
        hf.predict()
    assert len(hf.fit(long_frame()).predict()) == 2 * 24


def test_daylight_saving_days_are_no_gaps():
    df = wide_frame(n=400).assign(ds=pd.date_range("2021-01-01", periods=400, tz="Europe/Berlin"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 23- or 25-hour day warned of a gap
        hf = small().fit(df)
    assert list(hf.predict(2)["ds"].dt.hour) == [0, 0]


def test_irregular_timestamps_are_refused_not_put_on_an_invented_grid():
    # random 1-120 minute steps: the commonest step (~1 h) is no frequency; forecasting on
    # its grid would give future dates the data never had
    rng = np.random.default_rng(0)
    minutes = np.concatenate([[0], np.cumsum(rng.integers(1, 121, size=N - 1))])
    df = wide_frame().assign(ds=pd.Timestamp("2021-01-01") + pd.to_timedelta(minutes, "min"))
    with pytest.raises(UserError, match=r"follow no regular step: \d+ of 900 .*df.resample\('h'"):
        small().fit(df)
    long = df.melt(id_vars="ds", var_name="unique_id", value_name="y")
    with pytest.raises(UserError, match=r"df.groupby\('unique_id'\).resample"):
        small().fit(long)


@pytest.mark.parametrize(
    ("freq", "tz", "drop"),
    [
        ("D", "Europe/Berlin", [40]),  # a missing local day across a daylight-saving change
        ("B", "America/New_York", [10, 200]),  # holidays
        ("W-MON", "Europe/Berlin", [30]),
        ("MS", "UTC", [12]),
        ("QS", None, [50]),
    ],
)
def test_calendars_with_gaps_are_accepted_in_any_time_zone(freq, tz, drop):
    ds = pd.date_range("2000-01-03", periods=400, freq=freq, tz=tz).delete(drop)
    df = wide_frame(n=len(ds)).assign(ds=ds)
    with pytest.warns(UserWarning, match=f"{len(drop)} gap"):
        hf = HybridForecaster(
            members=["naive", "snaive"], router="mean", seq_len=48, pred_len=12
        ).fit(df)
    future = hf.predict(3)["ds"]
    assert list(future) == list(pd.date_range(ds[-1], periods=4, freq=freq)[1:])


def test_a_daily_series_with_one_and_two_day_steps_is_daily():
    steps = np.resize([1, 2], N - 1)  # the commonest step is not the frequency
    ds = pd.Timestamp("2001-01-01") + pd.to_timedelta(np.concatenate([[0], np.cumsum(steps)]), "D")
    with pytest.warns(UserWarning, match="gap"):
        hf = small().fit(wide_frame().assign(ds=ds))
    assert hf.freq_ == "D"


def test_member_params_do_not_reach_instances_and_say_so():
    from classical.naive import SeasonalNaive

    hf = HybridForecaster(
        members=[SeasonalNaive(period=PERIOD), "naive"],
        router="mean",
        seq_len=96,
        pred_len=24,
        member_params={"snaive": {"period": 12}},
    )
    with pytest.raises(UserError, match=r"member_params\['snaive'\] would not reach"):
        hf.fit(long_frame())


def test_progress_bars_only_when_asked(capsys):
    small(progress=False).fit(wide_frame())
    assert "members" not in capsys.readouterr().err
    small(members=("naive", "dlinear@epochs=2"), progress=True).fit(wide_frame())
    err = capsys.readouterr().err
    assert "members: 100%" in err and "dlinear@epochs=2" in err  # the epochs' bar too


def test_arima_forecasts_from_as_many_rows_as_its_last_validation_window_had():
    # its filter's state depends on the rows before the window (MA innovations start at 0)
    from ensemble.data import Windows

    hf = small(members=("naive", "arima@fourier=24"), router="mean").fit(wide_frame())
    fc = hf.predict()
    rows = hf.val_context_
    assert rows > 96 + 5 * 24 - 1  # longer than the other members' context
    future = pd.date_range(hf.dates_[-1] + pd.Timedelta("1h"), periods=24, freq="h")
    w = Windows(hf.values_[-rows:], 96, 24, hf.dates_[-rows:].append(future), N - rows)
    arima = hf.members_[hf.member_names_.index("arima@fourier=24")]
    expected = hf.scaler_.inverse_transform(arima.predict(w)[-1])
    naive = hf.scaler_.inverse_transform(hf.values_[-1:]).repeat(24, 0)
    np.testing.assert_allclose(fc[["s0", "s1"]].to_numpy(), (expected + naive) / 2, rtol=1e-6)


def test_a_member_forecasting_nan_is_refused_in_one_line(monkeypatch):
    # the run refused it; the API passed the NaN into the router's fit and every forecast
    from classical.naive import NaiveLast

    def nan_predict(self, windows):
        pred = np.asarray(orig(self, windows), dtype=np.float64)
        pred[0, 0, 0] = np.nan
        return pred

    orig = NaiveLast.predict
    monkeypatch.setattr(NaiveLast, "predict", nan_predict)
    with pytest.raises(UserError, match="member naive forecast 1 non-finite value"):
        small(router="mean").fit(wide_frame())


def test_offsets_that_change_are_read_as_the_command_line_reads_them():
    # text dates with +01:00 / +02:00 (a CSV from pd.read_csv) were refused as following
    # "no regular step": in UTC the local midnights are 23:00 then 22:00
    days = pd.date_range("2021-01-01", periods=400, freq="D", tz="Europe/Berlin")  # to Feb 4
    df = wide_frame(n=400).assign(ds=days.astype(str))
    with pytest.warns(UserWarning, match=r"offsets change .* offset \(UTC\+01:00\)"):
        fc = small().fit(df).predict(3)
    expected = pd.date_range("2022-02-05", periods=3, freq="D", tz="Europe/Berlin")
    assert fc["ds"].astype(str).tolist() == expected.astype(str).tolist()
    long = df.melt(id_vars="ds", var_name="unique_id", value_name="y")
    with pytest.warns(UserWarning, match="offsets change"):
        got = small().fit(long).predict(3)
    assert got["ds"].astype(str).tolist()[:3] == fc["ds"].astype(str).tolist()
    # hours are steps of UTC: no warning, the dates in the last row's offset (summer)
    hours = pd.date_range("2021-03-20", periods=300, freq="h", tz="Europe/Berlin")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fc = small().fit(wide_frame(n=300).assign(ds=hours.astype(str))).predict(2)
    expected = pd.date_range(hours[-1], periods=3, freq="h")[1:]  # summer: +02:00
    assert fc["ds"].astype(str).tolist() == expected.astype(str).tolist()


def test_series_that_do_not_overlap_in_time_are_told_so():
    # regular series one after the other were told to "resample onto one regular grid"
    a, b = long_frame(n=300), long_frame(n=300)
    b = b.assign(ds=b["ds"] + pd.Timedelta("400D"))
    df = pd.concat([a[a["unique_id"] == "s0"], b[b["unique_id"] == "s1"]])
    with pytest.raises(UserError, match=r"do not overlap in time: 's0' ends at .* 's1' begins"):
        small().fit(df)


# ------------------------------------------------------------------ cross_validation


def test_cross_validation_refitting_at_a_cutoff_is_fit_then_predict():
    df = long_frame()
    cv = small().cross_validation(df, h=12, n_windows=3, step_size=12)
    assert list(cv.columns) == ["unique_id", "ds", "cutoff", "y", "hybrid", "naive", "snaive"]
    assert len(cv) == 2 * 3 * 12
    times = np.sort(df["ds"].unique())
    cutoffs = np.sort(cv["cutoff"].unique())
    np.testing.assert_array_equal(cutoffs, times[[-37, -25, -13]])
    for cutoff in cutoffs:
        # the forecast of a cutoff is fit(rows up to it).predict(12), beside what followed
        part = cv[cv["cutoff"] == cutoff]
        fc = small().fit(df[df["ds"] <= cutoff]).predict(12)
        for sid in ("s0", "s1"):
            got, want = part[part["unique_id"] == sid], fc[fc["unique_id"] == sid]
            np.testing.assert_array_equal(got["ds"], want["ds"])
            np.testing.assert_allclose(got["hybrid"], want["hybrid"], rtol=1e-12)
            truth = df[(df["unique_id"] == sid) & (df["ds"] > cutoff)].sort_values("ds")
            np.testing.assert_array_equal(got["y"], truth["y"][:12])


def test_cross_validation_without_refit_sees_nothing_after_each_cutoff():
    df = wide_frame(1500)
    hf = small(("naive", "snaive", "dlinear"), router="learned")
    cv = hf.cross_validation(df, h=24, n_windows=6, step_size=10, refit=False)
    cutoffs = np.sort(cv["cutoff"].unique())
    # change every value after the third cutoff: the first three forecasts stay as they were
    changed = df.copy()
    later = changed["ds"] > cutoffs[2]
    changed.loc[later, ["s0", "s1"]] += 5.0
    cv2 = hf.cross_validation(changed, h=24, n_windows=6, step_size=10, refit=False)
    early, late = cv["cutoff"] <= cutoffs[2], cv["cutoff"] > cutoffs[2]
    for col in ("hybrid", "naive", "snaive", "dlinear"):
        np.testing.assert_allclose(cv2.loc[early, col], cv.loc[early, col], rtol=1e-12)
        assert np.abs(cv2.loc[late, col] - cv.loc[late, col]).max() > 1.0  # they saw it
    np.testing.assert_allclose(cv2.loc[late, "naive"] - cv.loc[late, "naive"], 5.0)
    # one fit: the first cutoff's forecast is the refitting one's
    one = hf.cross_validation(df[df["ds"] <= cutoffs[0] + pd.Timedelta(hours=24)], h=24)
    np.testing.assert_allclose(
        one["hybrid"], cv.loc[cv["cutoff"] == cutoffs[0], "hybrid"], rtol=1e-12
    )
    assert not hasattr(hf, "router_")  # the forecaster itself was not fitted


def test_cross_validation_refits_every_kth_cutoff(monkeypatch):
    fits = []
    original = HybridForecaster._fit_arrays

    def counted(self, values, *args):
        fits.append(len(values))
        return original(self, values, *args)

    monkeypatch.setattr(HybridForecaster, "_fit_arrays", counted)
    small().cross_validation(wide_frame(), h=6, n_windows=5, step_size=3, refit=2)
    assert fits == [N - 6 - 12, N - 6 - 6, N - 6]  # before cutoffs 1, 3 and 5


def test_cross_validation_of_a_wide_frame_with_integer_times():
    df = wide_frame().drop(columns="ds")  # a RangeIndex: steps
    cv = small(router="mean").cross_validation(df, h=5, n_windows=2, step_size=5)
    assert list(cv.columns[:4]) == ["unique_id", "ds", "cutoff", "y"]
    assert set(cv["unique_id"]) == {"s0", "s1"}
    assert cv["cutoff"].unique().tolist() == [N - 11, N - 6]
    last = cv[(cv["unique_id"] == "s1") & (cv["cutoff"] == N - 6)]
    assert last["ds"].tolist() == list(range(N - 5, N))
    np.testing.assert_array_equal(last["y"], df["s1"].to_numpy()[-5:])
    np.testing.assert_allclose(last["hybrid"], (last["naive"] + last["snaive"]) / 2)
    # the last value before each cutoff, and the period before it
    for cutoff, part in cv[cv["unique_id"] == "s0"].groupby("cutoff"):
        np.testing.assert_allclose(part["naive"], df["s0"][cutoff], rtol=1e-6)
        season = df["s0"].to_numpy()[cutoff + 1 - PERIOD : cutoff + 1 - PERIOD + 5]
        np.testing.assert_allclose(part["snaive"], season, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"h": 25}, r"h must be in 1\.\.pred_len=24"),
        ({"n_windows": 0}, "n_windows must be a whole number"),
        ({"step_size": 1.5}, "step_size must be a whole number"),
        ({"refit": "yes"}, "refit is True, False or a whole number"),
        ({"n_windows": 200, "step_size": 10}, "lower n_windows or step_size"),
        (
            {"n_windows": 50, "step_size": 15},
            "the fit on the 141 rows up to cutoff .*lower n_windows/step_size",
        ),
    ],
)
def test_cross_validation_bad_settings(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        small().cross_validation(wide_frame(), **kwargs)


def test_refusals_are_value_errors_for_the_caller():
    from ensemble.errors import InputError

    with pytest.raises(ValueError, match="not fitted"):
        small().predict(2)
    with pytest.raises(ValueError, match="too few"):  # raised deep in the fit
        small().fit(wide_frame(100))
    with pytest.raises(InputError, match="h must be in"):
        small().cross_validation(wide_frame(), h=99)
    assert issubclass(InputError, UserError)  # the CLI's handler still takes them


@pytest.mark.parametrize(
    "cols, needle",
    [
        ({"target_col": "hybrid"}, "'hybrid' names two of the output's columns"),
        ({"time_col": "cutoff"}, "'cutoff' names two of the output's columns"),
    ],
)
def test_cross_validation_refuses_columns_it_would_overwrite(cols, needle):
    names = {"target_col": "y", "time_col": "ds"}
    df = long_frame().rename(columns={"y": cols.get("target_col", "y")})
    df = df.rename(columns={"ds": cols.get("time_col", "ds")})
    with pytest.raises(UserError, match=needle):
        small().cross_validation(df, h=3, **(names | cols))


def test_cross_validation_writes_times_in_the_offsets_the_frame_wrote():
    # daily data on local midnights across a daylight-saving change, read as UTC
    days = pd.date_range("2021-01-01", periods=310, freq="D", tz="Europe/Berlin")
    df = pd.DataFrame(
        {
            "ds": [d.isoformat() for d in days],  # the last 14 cross 31 October
            "a": np.sin(np.arange(310) * 2 * np.pi / 7) + 5,
        }
    )
    hf = HybridForecaster(members=["naive", "snaive"], router="mean", seq_len=28, pred_len=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cv = hf.cross_validation(df, h=7, n_windows=2, step_size=7)
    assert all(t.hour == 0 for t in cv["ds"]) and all(t.hour == 0 for t in cv["cutoff"])
    assert str(cv["cutoff"].iloc[0].tzinfo) == "UTC+02:00"  # summer time, as written
    assert str(cv["ds"].iloc[-1].tzinfo) == "UTC+01:00"  # winter time
    assert cv["ds"].iloc[-1] == days[-1] and cv["cutoff"].iloc[0] == days[-15]


def test_given_periods_replace_the_analysers():
    hf = small(("naive", "snaive"), periods=[12]).fit(wide_frame())
    assert hf.periods_ == [12]
    assert small().fit(wide_frame()).periods_ == [PERIOD]
    for bad in ([1], "24", [], [2.5]):
        with pytest.raises(UserError, match="periods"):
            small(periods=bad).fit(wide_frame())


class _FirstStepHour:
    """Forecasts the hour of each window's first forecast step: what a member that reads
    the horizon's calendar (LightGBM) sees."""

    name = "hour"
    seq_len, pred_len = 96, 24

    def fit(self, train, val):
        return self

    def predict(self, windows):
        first = np.asarray(windows.dates[windows.seq_len :][: windows.n].hour, dtype=float)
        shape = (windows.n, windows.pred_len, windows.context.shape[1])
        return np.broadcast_to(first[:, None, None], shape).copy()


def test_cross_validation_gives_members_no_timestamp_after_the_cutoff():
    # a missing hour right after the last cutoff: known only later, so the forecast from
    # the cutoff sees the next step on the grid, as fit(rows up to it).predict() does
    df = wide_frame()
    df = df.drop(index=N - 3).reset_index(drop=True)  # the row after the cutoff N - 5
    hf = HybridForecaster(members=[_FirstStepHour()], router="mean", seq_len=96, pred_len=24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the gap
        cv = hf.cross_validation(df, h=2, refit=False)
    cutoff = cv["cutoff"].iloc[0]
    assert cv["ds"].iloc[0] == cutoff + pd.Timedelta(hours=2)  # what happened: the gap
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        known = hf.fit(df[df["ds"] <= cutoff]).predict(2)  # in the data's units, as cv
    assert known["ds"].iloc[0] == cutoff + pd.Timedelta(hours=1)
    assert cv["hour"].iloc[0] == pytest.approx(known["s0"].iloc[0], rel=1e-12)


def _sine(n: int = 600) -> pd.DataFrame:
    t = np.arange(n)
    return pd.DataFrame(
        {
            "ds": pd.date_range("2020-01-01", periods=n, freq="h"),
            "a": 10 + np.sin(2 * np.pi * t / 24),
        }
    )


def test_a_gap_in_the_rows_the_forecast_reads_is_said_with_the_fill():
    # a missing hour in the last window: the members read the rows as consecutive, so
    # seasonal naive comes out one step shifted under the right dates. Said, not refused:
    # a business-day series' holidays are such gaps, and `run` + `forecast` read a run's
    # own rows the same way
    def hf(router: str = "mean") -> HybridForecaster:
        return HybridForecaster(members=["naive", "snaive"], router=router, seq_len=48, pred_len=12)

    df = _sine()
    with pytest.warns(UserWarning, match=r"row at 2020-01-25 15:00:00 follows 2020-01-25 13:00"):
        hf().fit(df.drop(index=590))
    with pytest.warns(
        UserWarning,
        match=r"reads its last 48 rows \(the lookback\) as consecutive steps of h \(3 gaps in "
        r"the frame in all\); if .*lost readings.*df.set_index\('ds'\).asfreq\('h'\).ffill\(\)",
    ):
        hf().fit(df.drop(index=[585, 586, 588, 589, 591]))
    long = df.drop(index=590).assign(unique_id="s").rename(columns={"a": "y"})
    with pytest.warns(UserWarning, match=r"groupby\('unique_id'\)\['y'\].resample\('h'\)"):
        hf().fit(long)
    steps = df.drop(index=590).assign(ds=lambda d: d.index)  # integer times
    with pytest.warns(
        UserWarning, match=r"steps of 1 \(integer times\).*reindex\(range\(0, 600, 1\)\)"
    ):
        hf().fit(steps)
    # the fix the message gives: the forecast of the frame without the gap
    filled = df.drop(index=590).set_index("ds").asfreq("h").ffill().reset_index()
    pd.testing.assert_frame_equal(hf().fit(filled).predict(), hf().fit(df).predict())
    # a router that reads skill features reads L + 5H - 1 rows: a gap 80 rows back is in
    # them, not in a lookback of 48, which the general warning covers
    with pytest.warns(UserWarning, match="its last 107 rows .*skill features"):
        hf("rules").fit(df.drop(index=520))
    with pytest.warns(UserWarning, match="1 gap") as said:
        fitted = hf().fit(df.drop(index=520))
    assert not any("reads its last" in str(w.message) for w in said)
    assert fitted.predict()["ds"].iloc[0] == df["ds"].iloc[-1] + pd.Timedelta(hours=1)


def test_cross_validation_says_a_gap_in_a_cutoffs_last_rows():
    # without refit, the later cutoffs are forecast from rows the fit did not look at
    df = _sine().drop(index=581).reset_index(drop=True)  # cutoffs at rows 562, 574, 586
    hf = HybridForecaster(members=["naive", "snaive"], router="mean", seq_len=48, pred_len=12)
    for refit in (False, True):
        with warnings.catch_warnings(record=True) as said:  # once, not again per fold
            warnings.simplefilter("always")
            hf.cross_validation(df, h=12, n_windows=3, step_size=12, refit=refit)
        texts = [
            str(w.message) for w in said if "gap" in str(w.message) or "follows" in str(w.message)
        ]
        # the lookback of cutoff 586 and the actuals of cutoff 574 hold the gap, each said once
        assert len(texts) == 2, texts
        assert "the forecast from cutoff 2020-01-25 11:00:00 reads" in texts[0]
        assert "the 12 rows after cutoff 2020-01-24 22:00:00 are its actuals" in texts[1]
    with warnings.catch_warnings(record=True) as said:  # before every cutoff's last rows
        warnings.simplefilter("always")
        cv = hf.cross_validation(_sine().drop(index=300), h=12, n_windows=3, step_size=12)
    texts = [str(w.message) for w in said if "gap" in str(w.message)]
    assert len(texts) == 1 and texts[0].startswith("1 gap(s) in the h timestamps"), texts
    assert cv["cutoff"].nunique() == 3


def test_cross_validation_says_a_gap_in_the_actuals_a_cutoff_is_scored_on():
    # the rows after a cutoff are its actuals, step by step: after a gap, the forecast's
    # 6th step (for 14:00) was set against the 17:00 row's value without a word
    df = _sine().drop(index=[590, 591, 592]).reset_index(drop=True)
    hf = HybridForecaster(members=["naive"], router="mean", seq_len=48, pred_len=12)
    with pytest.warns(
        UserWarning,
        match=r"row at 2020-01-25 17:00:00 follows 2020-01-25 13:00:00: .* 12 rows after cutoff "
        r"2020-01-25 08:00:00 are its actuals.*asfreq\('h'\)",
    ):
        hf.cross_validation(df, h=12, n_windows=1, step_size=12)
    with warnings.catch_warnings(record=True) as said:  # a gap before every horizon: no
        warnings.simplefilter("always")  # actual of any cutoff
        hf.cross_validation(_sine().drop(index=300), h=12, n_windows=2, step_size=12)
    assert not any("are its actuals" in str(w.message) for w in said)


def test_an_actual_off_the_grid_is_said_not_refused_by_cross_validation():
    # the gap check of the actuals put every row on the grid and raised for one off it,
    # where the backtest had run before
    df = _sine(800)
    df.loc[797, "ds"] += pd.Timedelta("30min")
    hf = HybridForecaster(members="naive,snaive", seq_len=48, pred_len=24, progress=False)
    with pytest.warns(UserWarning, match="actuals after the last cutoff are off the grid"):
        cv = hf.cross_validation(df, h=24, n_windows=3, step_size=24)
    assert len(cv) == 72


def test_numbers_as_text_are_refused_with_the_conversion():
    df = wide_frame(n=400)
    as_text = df.assign(s0=df["s0"].astype(str), s1=df["s1"].astype(str))
    with pytest.raises(
        ValueError, match=r"\['s0', 's1'\] hold numbers as text.*apply\(pd.to_numeric\)"
    ):
        small().fit(as_text)
    with pytest.raises(UserError, match=r"\['s0'\] hold numbers as text"):  # not left out
        small().fit(df.assign(s0=df["s0"].astype(str)))
    with pytest.raises(UserError, match=r"no numeric series to forecast: column\(s\) \['s0'\]"):
        small().fit(df[["ds"]].assign(s0="n/a"))
    # a note, or flags, beside the series: left out as before, with a warning
    with pytest.warns(UserWarning, match=r"non-numeric columns \['note', 'flag'\] are ignored"):
        hf = small().fit(df.assign(note="ok", flag=df["s0"] > 10))
    assert hf.series_ == ["s0", "s1"]
