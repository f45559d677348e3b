"""Tests of the periodicity analyser: spectrum, strengths, window features, patches."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.signal import lfilter
from statsmodels.tsa.stattools import acf as sm_acf

from periodicity import (
    FEATURE_NAMES,
    SEASONAL_THRESHOLD,
    analyse,
    calendar_periods,
    lookback_candidates,
    patch_candidates,
    window_features,
)
from periodicity.spectrum import (
    autocorrelation,
    detrend,
    find_peaks,
    is_harmonic,
    nearest_acf_peak,
    snap_to_calendar,
)
from periodicity.strength import (
    measured_cycles,
    recent_rows,
    seasonal_threshold,
    stl_components,
    stl_strength,
    strengths,
)

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


def test_calendar_periods_month_millisecond_and_semi_month():
    # 'MS' is a month start, 'ms' a millisecond: case decides
    assert calendar_periods("MS") == calendar_periods("ME") == [12]
    assert calendar_periods("ms")[:3] == [43_200_000, 86_400_000, 604_800_000]
    assert calendar_periods("100ms")[:3] == [432_000, 864_000, 6_048_000]
    assert calendar_periods("SME-15") == calendar_periods("SMS") == calendar_periods("SM") == [24]
    assert calendar_periods("BQE-DEC") == calendar_periods("QS-JAN") == [4]
    assert calendar_periods("2SM") == [12]
    assert calendar_periods("30s")[:3] == [1440, 2880, 20160]
    assert calendar_periods("7min") == [1440, round(365.25 * 1440 / 7)]  # the week only
    assert calendar_periods("11min") == [round(365.25 * 1440 / 11)]  # the year only


def test_near_daily_hint_is_not_merged_into_a_two_day_cycle():
    # The daily cycle's spectral estimate rounds to 95 = 190 / 2; judged unsnapped it was
    # merged into the stronger 190-step cycle as a harmonic and the day was lost. (95.4:
    # 1.3 bins from the day, so snapped; 94.8, 2.5 bins off, is a cycle of its own.)
    t = np.arange(96 * 200)
    noise = 0.5 * np.random.default_rng(0).standard_normal(t.size)
    x = 2 * np.sin(2 * np.pi * t / 190) + np.sin(2 * np.pi * t / 95.4) + noise
    found = [p.period for p in find_peaks(x, calendar_periods("15min"))]
    assert 96 in found and 190 in found


def test_snap_and_harmonics():
    assert snap_to_calendar(166, [12, 24, 168]) == 168
    assert snap_to_calendar(100, [12, 24, 168]) == 100
    assert is_harmonic(12, 24) and is_harmonic(8, 24) and is_harmonic(34, 168)
    assert not is_harmonic(24, 168)  # 168 / 7: the day is not merged into the week
    assert not is_harmonic(30, 70)


# derandomize: the same 25 examples on every run, so CI does not draw a new case each
# time; the one failure a random draw found is kept below as a known fault.
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.filter_too_much],
)
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


@pytest.mark.xfail(
    strict=True,
    reason="known miss (thirteenth session, a random hypothesis draw): with this noise the "
    "71-step cycle is lost among 4 and 27 (found [27, 4, 17, 15]); other seeds find it",
)
def test_planted_period_lost_in_one_noise_draw():
    found = analyse(
        planted_series([4, 27, 71], [2.0, 2.0, 1.5], 0.0, 1625868), freq=None, max_candidates=5
    ).top_periods(5)
    assert any(abs(f - 71) <= 0.02 * 71 for f in found), found


@settings(max_examples=15, deadline=None, derandomize=True)  # a clean clone draws the same
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1000, 4000))
def test_white_noise_has_no_seasonality(seed, n):
    x = np.random.default_rng(seed).standard_normal((n, 2))
    report = analyse(x)
    assert not report.seasonal
    for cands in [report.overall, *report.channels.values()]:
        assert not any(c.seasonal for c in cands), cands


def test_harmonics_merge_into_their_fundamental():
    # A sawtooth-like daily cycle has strong 12 h and 8 h harmonics; one period, 24.
    t = np.arange(24 * 200)
    x = (t % 24) / 24.0 + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    report = analyse(x, freq="h")
    periods = [c.period for c in report.overall]
    assert periods[0] == 24
    assert 12 not in periods and 8 not in periods
    assert report.overall[0].strength > 0.9
    # merged where each channel is analysed, not only when channels are pooled
    found = [p.period for p in find_peaks(x, calendar_periods("h"))]
    assert found[0] == 24 and 12 not in found and 8 not in found


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
    assert isinstance(d["overall"][0]["cycles"], float) and d["overall"][0]["seasonal"] is True
    assert d["seasonal"] is True


@pytest.mark.parametrize("progress", [True, False])
def test_analyse_shows_progress_over_spectra_and_stl_fits(bars, progress):
    # minutes on hundreds of channels (ECL, 321): the user sees it move
    import periodicity.report

    made = bars(periodicity.report)
    x = (
        np.random.default_rng(0).standard_normal((600, 3))
        + np.sin(np.arange(600) / 24 * 6.28)[:, None]
    )
    quiet = analyse(x)  # default: no bar, as in the library
    made.clear()
    report = analyse(x, progress=progress)
    assert report == quiet
    spectra, stl = made
    assert spectra.total == spectra.n == 3
    assert stl.total == stl.n > 0
    assert {spectra.disable, stl.disable} == ({None} if progress else {True})


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


def test_window_features_on_threads_are_the_serial_ones_bit_for_bit(monkeypatch):
    import threading

    from threadpoolctl import threadpool_info, threadpool_limits

    import periodicity.features as pf

    data = np.random.default_rng(4).standard_normal((700, 3))
    x = np.lib.stride_tricks.sliding_window_view(data, 96, axis=0).transpose(0, 2, 1)
    small = 96 * 3 * 7  # 7 windows per chunk: 87 chunks
    serial, _ = window_features(x, [24, 48], max_elements=small, threads=1)
    ran_on, blas_threads, chunk = set(), set(), pf._chunk_features

    def spy(*a):
        ran_on.add(threading.current_thread().name)
        blas_threads.update(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
        return chunk(*a)

    monkeypatch.setattr(pf, "_chunk_features", spy)
    with threadpool_limits(2, user_api="blas"):  # as a run without OMP_NUM_THREADS has it
        threaded, _ = window_features(x, [24, 48], max_elements=small, threads=2)
        assert {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == {2}
    assert serial.tobytes() == threaded.tobytes()
    assert ran_on and all(n.startswith("features") for n in ran_on), ran_on
    # inside the pool each chunk's matrix products ran on one BLAS thread
    assert blas_threads and blas_threads <= {1}, blas_threads


def test_chunk_threads_follow_torch_then_omp_then_the_cores(monkeypatch):
    import sys
    import types

    import periodicity.features as pf

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(get_num_threads=lambda: 3))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert pf.chunk_threads() == 3  # a tune worker's share, as torch was told
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(get_num_threads=lambda: 64))
    assert pf.chunk_threads() == pf.MAX_THREADS  # each thread holds a chunk's copies
    monkeypatch.delitem(sys.modules, "torch")
    assert pf.chunk_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert pf.chunk_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(pf.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert pf.chunk_threads() == 3


def test_a_failed_chunk_drops_the_chunks_not_started():
    import time

    from periodicity.features import map_chunks

    ran = []

    def fn(start: int) -> int:
        if start == 0:
            raise ValueError("chunk 0 failed")
        time.sleep(0.01)
        ran.append(start)
        return start

    with pytest.raises(ValueError, match="chunk 0 failed"):
        map_chunks(fn, range(200), threads=2)
    assert len(ran) < 20, len(ran)  # ~2 s of chunks would run after the failure otherwise
    assert map_chunks(lambda s: s * s, range(5), threads=2) == [0, 1, 4, 9, 16]


def test_window_features_without_usable_period():
    x = np.random.default_rng(3).standard_normal((4, 64, 1))
    feats, names = window_features(x, [500])  # longer than the window: ignored
    assert np.isfinite(feats).all()
    assert (feats[:, :, names.index("period")] == 0).all()


def test_constant_and_straight_windows_are_not_seasonal():
    """0/0 strengths: a constant window (a dry rain gauge) or a noiseless line has no cycle."""
    length = 256
    t = np.arange(length, dtype=np.float64)
    rng = np.random.default_rng(4)
    x = np.stack(
        [
            np.full(length, -0.31),  # constant, as a scaled dry spell
            np.zeros(length),
            0.01 * t,  # a straight line: a trend, no season
            np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(length),
        ],
        axis=1,
    )[None]
    feats, names = window_features(x, [24, 12])
    f = {n: feats[0, :, i] for i, n in enumerate(names)}
    assert (f["seasonal_strength"][:3] == 0).all() and (f["period"][:3] == 0).all()
    assert (f["trend_strength"][:2] == 0).all() and f["trend_strength"][2] > 0.99
    assert np.isnan(f["spectral_entropy"][:2]).all() and np.isnan(f["fft_period"][:2]).all()
    assert np.isfinite(feats[0, 2:]).all() and f["period"][3] == 24
    assert f["seasonal_strength"][3] > 0.9
    # STL of a constant series leaves rounding noise in S and R: still no season
    s_noise, r_noise = 1e-16 * rng.standard_normal((2, 100))
    assert strengths(np.full(100, 2.0), s_noise, r_noise * 0.1) == (0.0, 0.0)


# ---------------------------------------------------------------------------- patches


def test_patch_candidates_ignore_periods_under_two():
    # 0 divided by zero, a negative period gave a (0, 1) patch; neither is a cycle
    assert patch_candidates([0], 96) == [(16, 8)]
    assert patch_candidates([-24, 1], 96) == [(16, 8)]
    assert patch_candidates([0, 24], 96)[0] == (24, 12)


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


# The seasonal periods every member of a run is built with (``run.detect_periods``): a
# change here changes the benchmark numbers, so it must be deliberate.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("rel", "train", "freq", "seasonal3"),
    [
        ("ETT-small/ETTh1.csv", 8640, "h", [24, 168]),
        ("ETT-small/ETTm1.csv", 34560, "15min", [96, 672]),
        # slow wander at 1500 / 2176 steps scored F_S 0.43 / 0.64 on 4-5 cycles
        ("ETT-small/ETTm2.csv", 34560, "15min", [96]),
        ("weather/weather.csv", None, "10min", [144, 1008]),
        ("illness/national_illness.csv", None, "W-TUE", [52]),
    ],
)
def test_real_data_periods(data_dir, rel, train, freq, seasonal3):
    if not (data_dir / rel).is_file():
        pytest.skip(f"{rel} not under {data_dir}")
    # as `run` analyses them: the channels' own periods are not measured
    report = analyse(_train_rows(data_dir, rel, train), freq=freq, channel_strengths=False)
    assert report.top_periods(3, seasonal_only=True) == seasonal3
    assert report.top_periods(1) == seasonal3[:1]


# ---------------------------------------------------------------- exact values (audit)
# Each pins a value to its definition; each failed under a mutation the suite missed.


def test_acf_matches_statsmodels():
    x = np.random.default_rng(0).standard_normal((300, 2)).cumsum(0)
    a = autocorrelation(x, 100)
    for c in range(2):
        np.testing.assert_allclose(a[:, c], sm_acf(x[:, c], nlags=100), atol=1e-10)


def test_detrend_removes_line():
    t = np.arange(200.0)
    np.testing.assert_allclose(detrend(np.stack([3 + 0.5 * t, -t], 1)), 0, atol=1e-9)


def test_strengths_are_per_channel_and_overall_is_channel_mean():
    rng = np.random.default_rng(0)
    t = np.arange(3000)
    x = np.stack(
        [
            np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(3000),
            0.05 * np.sin(2 * np.pi * t / 24) + rng.standard_normal(3000),
        ],
        1,
    )
    r = analyse(x)
    fs = [stl_strength(x[:, c], 24)[0] for c in range(2)]
    assert fs[0] > 0.9 and fs[1] < 0.4
    assert r.overall[0].period == 24
    assert r.overall[0].strength == pytest.approx(np.mean(fs), abs=1e-9)
    # `run` reads the overall list only: the same without the channels' own periods
    fast = analyse(x, channel_strengths=False)
    assert fast.overall == r.overall
    listed = {c.period for c in r.overall}
    only = [c for ch in fast.channels.values() for c in ch if c.period not in listed]
    assert only and all(np.isnan(c.strength) for c in only)


def test_strength_uses_last_rows():
    assert recent_rows(20000, 24) == slice(20000 - 4096, 20000)
    rng = np.random.default_rng(0)
    n = 20000
    t = np.arange(n)
    x = rng.standard_normal(n)
    x[-4096:] += 3 * np.sin(2 * np.pi * t[-4096:] / 24)
    assert stl_strength(x, 24)[0] > 0.8


def test_nearest_acf_peak():
    lags = np.arange(200)
    acf = np.cos(2 * np.pi * lags / 50)
    assert nearest_acf_peak(acf, 44.0, 40, 60) == 50  # hill top, estimate far off
    assert nearest_acf_peak(acf, 49.2, 40, 60) == 49  # estimate within noise of the top
    assert nearest_acf_peak(-np.abs(acf), 50.0, 40, 60) is None  # no hill with ACF > 0


def test_calendar_period_is_never_harmonic_of_wander():
    assert not is_harmonic(672, 2016, calendar_periods("15min"))


def test_calendar_ranks_first():
    rng = np.random.default_rng(0)
    t = np.arange(5000)
    x = 3 * np.sin(2 * np.pi * t / 100) + np.sin(2 * np.pi * t / 24) + rng.standard_normal(5000)
    assert analyse(x, freq="h").top_periods(2) == [24, 100]


def test_power_is_variance_share_and_channel_mean():
    t = np.arange(4096)
    s = np.sin(2 * np.pi * t / 32)
    assert analyse(s).overall[0].power > 0.95
    x = np.stack([s, np.random.default_rng(0).standard_normal(4096)], 1)
    assert analyse(x).overall[0].power == pytest.approx(0.5, abs=0.05)


def _feat(x, periods):
    f, n = window_features(x, periods)
    return {k: f[..., i] for i, k in enumerate(n)}


def test_window_feature_values_exact():
    rng = np.random.default_rng(0)
    L = 512
    t = np.arange(L)
    z = np.sin(2 * np.pi * t / 32) + 0.3 * rng.standard_normal(L) + 0.002 * t
    f = _feat(z[None, :, None], [32])
    d = detrend(z[:, None])[:, 0]
    assert f["fft_period"][0, 0] == 32.0
    np.testing.assert_allclose(
        f["acf_period"][0, 0], np.dot(d[:-32], d[32:]) / np.dot(d, d), rtol=1e-5
    )
    np.testing.assert_allclose(f["acf1"][0, 0], np.dot(d[:-1], d[1:]) / np.dot(d, d), rtol=1e-5)
    np.testing.assert_allclose(f["volatility"][0, 0], np.diff(z).std(), rtol=1e-5)
    slope = np.polyfit(t, z, 1)[0]
    np.testing.assert_allclose(f["trend_slope"][0, 0], slope * (L - 1) / z.std(), rtol=1e-4)
    ramp = _feat((0.01 * t + 0.01 * rng.standard_normal(L))[None, :, None], [32])
    assert ramp["fft_period"][0, 0] <= L / 2


def test_window_strength_formula():
    # sine (var 0.5) + noise var 0.25: F_S = 1 - 0.25/0.75 = 2/3
    rng = np.random.default_rng(1)
    L = 512
    t = np.arange(L)
    x = np.stack(
        [
            np.sin(2 * np.pi * t / 24 + ph) + 0.5 * rng.standard_normal(L)
            for ph in rng.uniform(0, 6, 40)
        ]
    )[..., None]
    f = _feat(x, [24])
    assert f["seasonal_strength"].mean() == pytest.approx(2 / 3, abs=0.03)
    # noise + random walk trend: F_T = 1 - var(R)/var(T+R)
    w = np.stack(
        [np.cumsum(0.2 * rng.standard_normal(L)) + 0.5 * rng.standard_normal(L) for _ in range(40)]
    )[..., None]
    g = _feat(w, [24])
    assert 0.5 < g["trend_strength"].mean() < 0.95


def test_white_noise_entropy_near_one():
    f = _feat(np.random.default_rng(0).standard_normal((20, 512, 1)), [24])
    assert f["spectral_entropy"].mean() > 0.9


def test_level_shift_finds_a_step():
    L = 512
    z = np.zeros(L)
    z[256:] = 1.0
    z = z + 0.01 * np.random.default_rng(0).standard_normal(L)
    f = _feat(z[None, :, None], [])
    # detrended step: the largest jump between adjacent eighths is at the step, ~ 1/std
    d = detrend(z[:, None])[:, 0]
    m = d.reshape(8, 64).mean(1)
    np.testing.assert_allclose(
        f["level_shift"][0, 0], np.abs(np.diff(m)).max() / z.std(), rtol=1e-4
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_red_noise_is_not_seasonal(seed):
    # Periods up to 3456 steps; measured on 4 cycles (the old 8192-row cap) AR(0.99)
    # noise scored F_S 0.5 and more at the long ones.
    rng = np.random.default_rng(seed)
    x = lfilter([1], [1, -0.99], rng.standard_normal((34560, 2)), axis=0)
    report = analyse(x)
    assert report.overall and not report.seasonal


def test_red_noise_on_fewer_cycles_needs_the_raised_threshold():
    # 12000 rows: periods over 750 steps are measured on under 16 cycles. This draw's
    # 1182 scores F_S 0.35 on 10 cycles: seasonal under a flat 0.3, not under 0.48.
    x = lfilter([1], [1, -0.99], np.random.default_rng(3).standard_normal((12000, 2)), axis=0)
    report = analyse(x)
    assert any(c.cycles < 16 and c.strength > SEASONAL_THRESHOLD for c in report.overall)
    assert not report.seasonal


@pytest.mark.xfail(
    strict=True,
    reason="known limit (fourteenth session): on 16+ cycles a single AR(0.99) channel can "
    "pass F_S 0.3 at the periods the spectrum picks (2 of 12 draws; this one 0.38 at 240)",
)
def test_single_red_noise_channel_is_not_seasonal():
    x = lfilter([1], [1, -0.99], np.random.default_rng(9).standard_normal(34560))
    assert not analyse(x).seasonal


def test_strength_is_measured_on_sixteen_cycles_where_the_series_holds_them():
    assert recent_rows(34560, 1500) == slice(34560 - 24000, 34560)
    assert recent_rows(34560, 3000) == slice(0, 34560)  # 11.5 cycles: all there are
    assert measured_cycles(34560, 1500) == 16 and measured_cycles(34560, 3000) == 11.52
    assert measured_cycles(34560, 24) == 4096 / 24  # short periods: 4096 rows at least


def test_seasonal_threshold_rises_with_fewer_cycles():
    assert seasonal_threshold(16) == seasonal_threshold(100) == SEASONAL_THRESHOLD
    assert seasonal_threshold(12) == pytest.approx(0.4)
    assert seasonal_threshold(10) == pytest.approx(0.48)
    assert seasonal_threshold(4) > 1  # F_S <= 1: nothing on 4 cycles counts


@pytest.mark.parametrize("cycles", [10, 13, 16])
def test_white_noise_stays_below_the_threshold_for_its_cycles(cycles):
    # The calibration of seasonal_threshold: white noise on `cycles` cycles of 100 steps.
    rng = np.random.default_rng(cycles)
    f_s = [strengths(*stl_components(rng.standard_normal(100 * cycles), 100))[0] for _ in range(5)]
    assert max(f_s) < seasonal_threshold(cycles)
    assert max(f_s) > SEASONAL_THRESHOLD - 0.15  # the threshold is not slack either


def test_candidate_seasonal_uses_its_cycles():
    t = np.arange(1200)
    x = np.sin(2 * np.pi * t / 100) + 0.3 * np.random.default_rng(0).standard_normal(t.size)
    c = analyse(x, min_cycles=10).overall[0]
    assert c.period == 100 and c.cycles == 12 and c.seasonal
    weak = type(c)(100, c.power, c.acf, 0.38, c.trend_strength, 12.0)
    assert not weak.seasonal  # 0.38 is above 0.3 but not above 12 cycles' 0.40
    assert type(c)(100, c.power, c.acf, 0.38, c.trend_strength, 16.0).seasonal


def test_a_multiple_of_a_stronger_period_is_not_a_period_of_its_own():
    """A 24-step cycle repeats at 240 too: STL there finds the daily cycle (ETTh1: F_S
    ~0.46 at every multiple of 24, ~0.18 between them), so 240 must not be listed."""
    from periodicity.spectrum import is_multiple

    assert is_multiple(240, 24, [12, 24, 168, 8766])
    assert is_multiple(859, 144, [72, 144, 1008])
    assert not is_multiple(168, 24, [12, 24, 168, 8766])  # the week stays
    assert not is_multiple(250, 24)


@pytest.mark.parametrize(("q", "p"), [(11, 5), (23, 2), (13, 3), (37, 3), (49, 24)])
def test_a_period_near_a_multiple_is_not_one(q, p):
    # is_harmonic's m / 2 tolerance (rounding q / m to a whole lag) took all of these
    from periodicity.spectrum import is_multiple

    assert not is_multiple(q, p)


@pytest.mark.parametrize(("q", "p"), [(10, 5), (36, 3), (48, 24), (244, 24), (1010, 144)])
def test_a_multiple_within_two_percent_is_one(q, p):
    from periodicity.spectrum import is_multiple

    assert is_multiple(q, p)
    assert not is_multiple(q, p, calendar=[q])  # a calendar multiple stays


def test_a_cycle_of_one_channel_is_not_merged_into_a_shorter_one_of_another():
    # channel 1's 11 is within is_harmonic's tolerance of 2 x 5: it was lost overall
    from periodicity import analyse

    t = np.arange(8000)
    rng = np.random.default_rng(0)
    x = np.stack(
        [
            2 * np.sin(2 * np.pi * t / 5) + rng.standard_normal(t.size),
            1.5 * np.sin(2 * np.pi * t / 11) + rng.standard_normal(t.size),
        ],
        1,
    )
    report = analyse(x, channel_strengths=False)
    overall = {c.period: c for c in report.overall}
    assert report.channels[1][0].period == 11
    assert 5 in overall and 11 in overall and overall[11].seasonal


@pytest.mark.parametrize(
    ("periods", "freq"),
    [((24, 5), "h"), ((7, 3), "D"), ((168, 34), "h")],
)
def test_a_cycle_of_its_own_beside_a_stronger_one_is_not_its_harmonic(periods, freq):
    # 5 ~ 24 / 4.8, 3 ~ 7 / 2.33, 34 ~ 168 / 4.9 in whole lags: each was swallowed as the
    # stronger cycle's harmonic, and its power credited to it
    t = np.arange(8000)
    rng = np.random.default_rng(0)
    long, short = periods
    x = np.sin(2 * np.pi * t / long) + 0.7 * np.sin(2 * np.pi * t / short)
    report = analyse(x + 0.2 * rng.standard_normal(t.size), freq=freq)
    found = {c.period: c for c in report.overall}
    assert short in found and found[short].seasonal
    share = 0.49 / (1 + 0.49 + 2 * 0.04)  # its share of the variance
    assert found[short].power == pytest.approx(share, rel=0.1)
    assert found[long].power == pytest.approx(share / 0.49, rel=0.1)


@pytest.mark.parametrize("seed", range(4))
def test_noise_peaks_that_round_to_one_short_lag_do_not_add_up(seed):
    # White noise's peaks between 0.4 and 0.5 cycles a step all round to lag 2 (and so
    # on for 3, 4...): summed, one short "period" held 3-5 % of the variance (1.3 % now)
    x = np.random.default_rng(seed).standard_normal(8640)
    for c in analyse(x, freq="h").overall:
        assert c.power < 0.02, c


def test_net_strength_tells_a_week_of_its_own_from_the_days_echo():
    # a series periodic at 24 is periodic at 168: F_S at 168 counts the day (0.6 on a
    # daily cycle and noise alone); with the day removed first, only a real week scores
    from periodicity.report import PeriodCandidate, PeriodReport, net_strengths

    t = np.arange(8640)
    rng = np.random.default_rng(0)
    day = np.sin(2 * np.pi * t / 24) + 0.7 * rng.standard_normal(t.size)
    week = day + 0.8 * (t % 168 >= 120)  # weekends higher
    cands = [PeriodCandidate(p, 0.1, 0.5, 0.9, 0.5, 20.0) for p in (24, 168)]
    report = PeriodReport(overall=cands)
    echo, real = net_strengths(day[:, None], report), net_strengths(week[:, None], report)
    assert stl_strength(day, 168)[0] > 0.5  # the raw strength cannot tell them apart
    assert echo[168][0] == 24 and echo[168][1] < 0.3
    assert real[168][1] > 0.35
    assert 24 not in echo


def test_a_period_beside_a_stronger_cycle_is_measured_without_it():
    # STL at 22 follows a strong 24-step cycle as a drifting phase (noise there scored
    # F_S 0.42, "seasonal"), and STL at 200 finds a 5-step one (200 = 40 x 5)
    t = np.arange(8640)
    day = np.sin(2 * np.pi * t / 24)
    noisy = analyse(day + np.random.default_rng(5).normal(0, 0.7, t.size), freq="h")
    assert noisy.top_periods(3, seasonal_only=True) == [24]
    five = day + 0.7 * np.sin(2 * np.pi * t / 5) + np.random.default_rng(0).normal(0, 0.2, t.size)
    assert analyse(five, freq="h").top_periods(3, seasonal_only=True) == [24, 5]
    # a cycle of its own keeps its strength
    forty = day + 0.8 * np.sin(2 * np.pi * t / 40) + np.random.default_rng(1).normal(0, 0.2, t.size)
    assert analyse(forty, freq="h").top_periods(3, seasonal_only=True) == [24, 40]
    # nor a day beside a stronger week: STL at 168 takes the whole day in
    week = np.sin(2 * np.pi * t / 168) + 0.5 * day + np.random.default_rng(0).normal(0, 0.3, t.size)
    assert analyse(week, freq="h").top_periods(3, seasonal_only=True) == [168, 24]
    t2 = np.arange(1500)
    both = np.sin(2 * np.pi * t2 / 84) + 0.9 * np.sin(2 * np.pi * t2 / 12)
    both += np.random.default_rng(0).normal(0, 0.3, t2.size)
    assert analyse(both).top_periods(3, seasonal_only=True) == [84, 12]


def test_a_harmonic_stronger_than_its_calendar_fundamental_is_not_a_period_of_its_own():
    # a one-hour spike a day: the 8-step harmonic outweighs the day in the spectrum and
    # was listed as seasonal beside 24 (F_S 0.35); with the day removed it is nothing
    t = np.arange(4000)
    report = analyse((t % 24 == 0).astype(float), freq="h")
    assert report.top_periods(3, seasonal_only=True) == [24]


# ------------------------------------------------------- audit of the detection (findings)


def test_a_cycle_on_a_curved_trend_or_a_random_walk_is_found():
    # Only a line was removed before the ACF check: under a curve or a random walk the
    # ACF fell steadily from 1 with no hill at 24, and the cycle (F_S 0.73) was dropped
    t = np.arange(5000)
    rng = np.random.default_rng(0)
    quad = 1e-5 * (t - 2500) ** 2 + np.sin(2 * np.pi * t / 24) + 0.5 * rng.standard_normal(t.size)
    assert analyse(quad, freq="h").top_periods(3, seasonal_only=True) == [24]
    t = np.arange(8000)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        walk = np.cumsum(rng.standard_normal(t.size)) + 2 * np.sin(2 * np.pi * t / 24)
        walk += 0.3 * rng.standard_normal(t.size)
        assert analyse(walk, freq="h").top_periods(3, seasonal_only=True) == [24], seed
        # ... and the walk alone has no period
        assert not analyse(np.cumsum(rng.standard_normal(t.size)), freq="h").seasonal


def test_high_pass_acf_removes_drift_below_half_the_frequency():
    from periodicity.spectrum import high_pass_acf

    t = np.arange(4000)
    x = 1e-5 * (t - 2000.0) ** 2 + 0.3 * np.sin(2 * np.pi * t / 40)
    plain = autocorrelation(detrend(x[:, None]), 60)[:, 0]
    assert plain[20] > 0.9  # the curve: no dip half a cycle on
    acf = high_pass_acf(np.fft.rfft(detrend(x[:, None])[:, 0]), 100.0, t.size, 60)
    assert acf[20] < -0.5 and acf[40] > 0.5


@pytest.mark.parametrize("freq", [None, "h"])
def test_a_spike_a_day_is_a_daily_cycle_not_its_harmonic(freq):
    # All harmonics of a spike train have the same power: 12 came first, took the ACF
    # check on its own sinusoid, and 24 was merged into it ([12]) or listed after ([12, 24])
    t = np.arange(5000)
    x = 5.0 * (t % 24 == 0) + 0.3 * np.random.default_rng(0).standard_normal(t.size)
    report = analyse(x, freq=freq)
    assert report.top_periods(3, seasonal_only=True) == [24]
    # the power of its harmonics up to the sixth (half of the variance) is the day's
    assert report.overall[0].power > 0.45
    found = [p.period for p in find_peaks(x, calendar_periods(freq))]
    assert found[0] == 24 and 12 not in found and 8 not in found


def test_merged_channels_take_a_harmonic_in_where_the_series_repeats_at_the_multiple():
    from periodicity.report import merge_channels
    from periodicity.spectrum import Peak

    n = 5000
    day, half = Peak(24, 0.3, 0.9, 1 / 24), Peak(12, 0.4, -0.04, 1 / 12)
    acf = np.zeros(100)
    acf[24], acf[12] = 0.9, -0.04
    # the stronger 12 came first; the series repeats at 24, not at 12: 12 is the day's
    assert merge_channels([[half], [day]], [], 5, n, acf=acf) == [(24, pytest.approx(0.35))]
    # a 12-step cycle repeats at 24 as much as at 12: 24 says nothing of its own
    acf[12] = 0.85
    assert merge_channels([[half], [day]], [], 5, n, acf=acf) == [(12, pytest.approx(0.35))]
    # without an ACF, as before
    acf[12] = -0.04
    assert merge_channels([[half], [day]], [], 5, n)[0][0] == 12


def test_merged_channels_join_periods_less_than_a_bin_apart():
    from periodicity.report import merge_channels
    from periodicity.spectrum import Peak

    # weather's channels: hills at 3218 and 3137 steps, 2.6 % apart (more than the 2 %
    # rule) but 0.3 periodogram bins apart in 36,887 rows: one unresolved peak, not two
    a, b = Peak(3218, 0.2, 0.1, 1 / 3218), Peak(3137, 0.1, 0.1, 1 / 3137)
    assert merge_channels([[a], [b]], [], 5, 36_887) == [(3218, pytest.approx(0.15))]
    # ten times the rows tell them apart
    assert [p for p, _ in merge_channels([[a], [b]], [], 5, 368_870)] == [3218, 3137]
    # short periods: a bin is far under 2 %, the 2 % rule decides
    c, d = Peak(100, 0.2, 0.5, 1 / 100), Peak(103, 0.1, 0.5, 1 / 103)
    assert len(merge_channels([[c], [d]], [], 5, 36_887)) == 2


def test_constant_channels_do_not_dilute_the_verdict():
    # a flat column (a stuck sensor) scored F_S 0 and power 0, and two of them pulled a
    # clear daily cycle under the threshold: `run` got no period at all
    t = np.arange(5000)
    s = np.sin(2 * np.pi * t / 24) + 0.5 * np.random.default_rng(0).standard_normal(t.size)
    alone = analyse(s, freq="h").overall[0]
    for k in (1, 2, 3):
        report = analyse(np.c_[s, np.full((t.size, k), 3.0)], freq="h", channel_strengths=False)
        assert report.top_periods(3, seasonal_only=True) == [24]
        c = report.overall[0]
        assert (c.power, c.acf, c.strength) == pytest.approx(
            (alone.power, alone.acf, alone.strength)
        )
    # flat only where strengths are measured (the last 4096 rows): not measurable there
    dry = s.copy()
    dry[-4096:] = 0.0
    assert np.isnan(stl_strength(dry, 24)).all()
    assert np.isnan(stl_strength(np.zeros(500), 24)).all()


def test_a_real_cycle_near_a_calendar_period_keeps_its_length():
    # snapped within 5 %, 23 and 25 of hourly data became the day, 160 and 176 the week,
    # though their spectral peaks lie 16 and 2.5 bins from the calendar's
    t = np.arange(8640)
    rng = np.random.default_rng(0)
    for p in (23, 25, 160, 176):
        x = np.sin(2 * np.pi * t / p) + 0.3 * rng.standard_normal(t.size)
        assert analyse(x, freq="h").top_periods(1, seasonal_only=True) == [p]
    # a calendar cycle still snaps: its peak is within a bin of it
    x = np.sin(2 * np.pi * t / 168) + 0.3 * rng.standard_normal(t.size)
    assert analyse(x, freq="h").top_periods(1, seasonal_only=True) == [168]
    assert snap_to_calendar(162, [24, 168], n=8640, nu=8640 / 162) == 162  # 1.9 bins off
    assert snap_to_calendar(166, [24, 168], n=8640, nu=8640 / 166) == 168  # 0.6 bins


def test_period_two_the_nyquist_bin_is_a_candidate():
    from periodicity.spectrum import periodogram, spectral_peaks

    # day and night of 12-hourly data, beside its week
    for n in (3000, 3001):
        t = np.arange(n)
        rng = np.random.default_rng(0)
        x = 2 * (-1.0) ** t + np.sin(2 * np.pi * t / 14) + 0.5 * rng.standard_normal(n)
        report = analyse(x, freq="12h")
        assert report.top_periods(2, seasonal_only=True) == [2, 14], n
        assert report.overall[0].power == pytest.approx(4 / 4.75, abs=0.02)  # variance share
        power = periodogram(x[:, None])[:, 0]
        assert spectral_peaks(power, 3)[0] == power.shape[0] - 1
    # the Nyquist term counts once, as the variance has it
    alt = (-1.0) ** np.arange(64) + np.sin(2 * np.pi * np.arange(64) / 8)
    share = periodogram(alt[:, None])[:, 0]
    assert share[-2:].sum() == pytest.approx(2 / 3, abs=0.01)


def test_strengths_of_unrelated_cycles_do_not_depend_on_their_rank():
    # measured net of those ranked before only, the first of two equal cycles kept the
    # other in its remainder: F_S 0.44 at 24 beside 0.8 at 7
    t = np.arange(5000)
    rng = np.random.default_rng(0)
    x = np.sin(2 * np.pi * t / 7) + np.sin(2 * np.pi * t / 24) + 0.5 * rng.standard_normal(t.size)
    found = {c.period: c.strength for c in analyse(x).overall}
    assert found[24] > 0.7 and found[7] > 0.7
    assert found[24] == pytest.approx(found[7], abs=0.1)
    # not net of a near multiple ranked after it: STL at 190 takes the 96-step cycle in
    # (ETTm1's LUFL channel: 96 fell from F_S 0.46 to 0.24, "not seasonal")
    from periodicity.report import _near_multiple

    assert _near_multiple(190, 96) and _near_multiple(96, 672) and not _near_multiple(7, 24)


def test_tune_gets_more_than_the_five_periods_run_lists(monkeypatch):
    # `tune` asked detect_periods for 10 ranked periods, but the analysis `run` makes lists
    # 5: --max-periods above that could never be met. Run's own stay first, in its order.
    from types import SimpleNamespace

    import periodicity
    from experiments import run, tune_study

    asked = {}

    def longer(x, freq=None, max_candidates=5, **kw):
        asked.update(max_candidates=max_candidates, freq=freq)
        ranked = [24, 12, 168, 48, 96, 7, 5, 36, 72, 30]
        return SimpleNamespace(top_periods=lambda k, seasonal_only: ranked[:k])

    monkeypatch.setattr(run, "detect_periods", lambda splits, k=3: [24, 168, 48, 96, 7][:k])
    monkeypatch.setattr(periodicity, "analyse", longer)
    x = np.zeros((100, 1))
    splits = SimpleNamespace(train=SimpleNamespace(data=x), dataset=SimpleNamespace(freq="h"))
    ranked = tune_study.ranked_periods(splits, k=10)
    assert ranked == [24, 168, 48, 96, 7, 12, 5, 36, 72, 30]
    assert asked == {"max_candidates": 10, "freq": "h"}
    asked.clear()
    assert tune_study.ranked_periods(splits, k=5) == [24, 168, 48, 96, 7] and not asked
