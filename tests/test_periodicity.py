"""Tests of the periodicity analyser: spectrum, strengths, window features, patches."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from periodicity import (
    FEATURE_NAMES,
    SEASONAL_THRESHOLD,
    analyse,
    calendar_periods,
    lookback_candidates,
    patch_candidates,
    window_features,
)
from periodicity.spectrum import is_harmonic, snap_to_calendar

N_SYNTH = 5000  # rows of the synthetic series: 12 cycles of the longest planted period


# ---------------------------------------------------------------------------- helpers


def resolvable(periods: list[int]) -> bool:
    """Whether planted periods can be told apart at all in N_SYNTH rows.

    Two cycles closer than 3 frequency bins merge into one spectral peak (the Rayleigh
    limit), and a period that is q/2..q/6 of another is, in the data, part of that
    cycle's shape (the analyser merges harmonics by design).
    """
    for i, p in enumerate(periods):
        for q in periods[:i]:
            a, b = min(p, q), max(p, q)
            if abs(1 / a - 1 / b) < 3 / N_SYNTH:
                return False
            m = round(b / a)
            if 2 <= m <= 6 and abs(b - m * a) <= max(0.03 * b, m):
                return False
    return True


def planted_series(periods: list[int], amps: list[float], slope: float, seed: int) -> np.ndarray:
    """Sinusoids (each amplitude in noise stds) + unit white noise + a linear trend: [T]."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_SYNTH)
    x = rng.standard_normal(N_SYNTH) + slope * t / N_SYNTH
    for p, a in zip(periods, amps, strict=True):
        x += a * np.sin(2 * np.pi * t / p + rng.uniform(0, 2 * np.pi))
    return x


# ---------------------------------------------------------------------------- spectrum


def test_calendar_periods_of_common_frequencies():
    assert {12, 24, 168} <= set(calendar_periods("h"))
    assert {96, 672} <= set(calendar_periods("15min"))
    assert {144, 1008} <= set(calendar_periods("10min"))
    assert calendar_periods("W-TUE") == [52]
    assert 7 in calendar_periods("D")
    assert 5 in calendar_periods("B")
    assert calendar_periods(None) == []
    assert calendar_periods("nonsense-freq") == []


def test_snap_and_harmonics():
    assert snap_to_calendar(166, [12, 24, 168]) == 168
    assert snap_to_calendar(100, [12, 24, 168]) == 100
    assert is_harmonic(12, 24) and is_harmonic(8, 24) and is_harmonic(34, 168)
    assert not is_harmonic(24, 168)  # 168 / 7: the day is not merged into the week
    assert not is_harmonic(30, 70)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    periods=st.lists(st.integers(4, 400), min_size=1, max_size=3, unique=True).filter(resolvable),
    data=st.data(),
)
def test_planted_periods_are_found(periods, data):
    # Each sinusoid's SNR (its variance over the noise's) is amp^2 / 2 >= 1.
    amps = [data.draw(st.floats(np.sqrt(2), 3.0)) for _ in periods]
    slope = data.draw(st.floats(-20, 20))
    seed = data.draw(st.integers(0, 2**31 - 1))
    report = analyse(planted_series(periods, amps, slope, seed), freq=None, max_candidates=5)
    found = report.top_periods(5)
    for p in periods:
        assert any(abs(f - p) <= 0.02 * p for f in found), (p, found)
    assert report.seasonal


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1000, 4000))
def test_white_noise_has_no_seasonality(seed, n):
    x = np.random.default_rng(seed).standard_normal((n, 2))
    report = analyse(x)
    assert not report.seasonal
    for cands in [report.overall, *report.channels.values()]:
        assert all(c.strength <= SEASONAL_THRESHOLD for c in cands), cands


def test_harmonics_merge_into_their_fundamental():
    # A sawtooth-like daily cycle has strong 12 h and 8 h harmonics; one period, 24.
    t = np.arange(24 * 200)
    x = (t % 24) / 24.0 + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    report = analyse(x, freq="h")
    periods = [c.period for c in report.overall]
    assert periods[0] == 24
    assert 12 not in periods and 8 not in periods
    assert report.overall[0].strength > 0.9


def test_report_shapes_and_json():
    rng = np.random.default_rng(1)
    t = np.arange(3000)
    x = np.stack([np.sin(2 * np.pi * t / 24), np.sin(2 * np.pi * t / 50)], axis=1)
    x = x + 0.3 * rng.standard_normal(x.shape)
    report = analyse(x, freq=None, columns=["a", "b"])
    assert set(report.channels) == {"a", "b"}
    assert report.channels["a"][0].period == 24 and report.channels["b"][0].period == 50
    assert set(report.top_periods(2)) == {24, 50}
    d = json.loads(json.dumps(report.to_dict()))
    assert d["overall"][0].keys() >= {"period", "power", "acf", "strength", "trend_strength"}
    assert d["seasonal"] is True


def test_analyse_rejects_bad_input():
    with pytest.raises(ValueError, match=r"finite \[T, C\] array"):
        analyse(np.full((100, 2), np.nan))
    with pytest.raises(ValueError, match="T >= 16"):
        analyse(np.zeros((5, 1)))


def test_constant_series_has_no_period():
    report = analyse(np.ones((500, 2)))
    assert report.overall == [] and not report.seasonal


# ---------------------------------------------------------------------------- window features


def test_window_features_on_known_windows():
    rng = np.random.default_rng(0)
    length = 512
    t = np.arange(length)
    sine = np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(length)
    noise = rng.standard_normal(length)
    ramp = 0.01 * t + 0.1 * rng.standard_normal(length)
    x = np.stack([sine, noise, ramp], axis=1)[None]  # [1, L, 3]
    feats, names = window_features(x, [24, 168])
    assert names == FEATURE_NAMES and feats.shape == (1, 3, len(names))
    f = {n: feats[0, :, i] for i, n in enumerate(names)}
    assert f["period"][0] == 24 and f["seasonal_strength"][0] > 0.9 and f["acf_period"][0] > 0.8
    assert f["seasonal_strength"][1] < SEASONAL_THRESHOLD
    assert f["spectral_entropy"][0] < 0.3 < f["spectral_entropy"][1]
    assert f["fft_period"][0] == pytest.approx(24, rel=0.05)
    assert f["trend_slope"][2] > 1.5 and f["trend_strength"][2] > 0.9


def test_window_features_strided_and_chunked():
    rng = np.random.default_rng(2)
    data = rng.standard_normal((700, 2)) + np.sin(2 * np.pi * np.arange(700) / 24)[:, None]
    x = np.lib.stride_tricks.sliding_window_view(data, 96, axis=0).transpose(
        0, 2, 1
    )  # [605, 96, 2]
    whole, _ = window_features(x, [24])
    chunked, _ = window_features(x, [24], max_elements=96 * 2 * 7)  # 7 windows per chunk
    assert whole.shape == (605, 2, len(FEATURE_NAMES)) and np.isfinite(whole).all()
    np.testing.assert_allclose(whole, chunked, rtol=1e-5, atol=1e-6)


def test_window_features_without_usable_period():
    x = np.random.default_rng(3).standard_normal((4, 64, 1))
    feats, names = window_features(x, [500])  # longer than the window: ignored
    assert np.isfinite(feats).all()
    assert (feats[:, :, names.index("period")] == 0).all()


# ---------------------------------------------------------------------------- patches


def test_patch_candidates():
    pairs = patch_candidates([24, 168], seq_len=512)
    assert pairs[0] == (24, 12)
    assert (56, 28) in pairs and (16, 8) in pairs
    assert all(8 <= p <= 64 and s == p // 2 for p, s in pairs)
    assert patch_candidates([5], 96)[0] == (10, 5)  # short period: smallest multiple >= 8
    assert all(p <= 16 for p, _ in patch_candidates([24, 52], seq_len=32))  # fit L / 2


def test_lookback_candidates():
    assert lookback_candidates([24], 96, 200) == [96, 120, 144, 168, 192]
    many = lookback_candidates([24, 168], 96, 720, max_count=5)
    assert len(many) <= 5 and all(v % 24 == 0 for v in many)
    assert many[0] == 96 and many[-1] == 720
    assert lookback_candidates([1000], 96, 720) == []


# ---------------------------------------------------------------------------- real data


def _train_rows(data_dir, rel: str, train_rows: int | None = None) -> np.ndarray:
    import pandas as pd

    df = pd.read_csv(data_dir / rel, encoding_errors="replace")
    values = df.drop(columns=["date"]).to_numpy(dtype=np.float64)
    return values[: train_rows or int(len(values) * 0.7)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rel", "train", "freq", "top", "also"),
    [
        ("ETT-small/ETTh1.csv", 8640, "h", 24, 168),
        ("ETT-small/ETTm1.csv", 34560, "15min", 96, None),
        ("weather/weather.csv", None, "10min", 144, None),
        ("illness/national_illness.csv", None, "W-TUE", 52, None),
    ],
)
def test_real_data_periods(data_dir, rel, train, freq, top, also):
    if not (data_dir / rel).is_file():
        pytest.skip(f"{rel} not under {data_dir}")
    report = analyse(_train_rows(data_dir, rel, train), freq=freq)
    assert report.top_periods(1) == [top]
    if also is not None:
        assert also in report.top_periods(3)
    assert report.seasonal
