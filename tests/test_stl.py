"""periodicity.stl: the sparse-operator STL against statsmodels' STL, and its use in
periodicity.strength (one STL of all channels per period)."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.tsa.seasonal import STL

from periodicity import stl
from periodicity.strength import stl_settings, stl_strength, strength_table

TOL = 1e-9  # absolute, on every component


def _channels(n: int, period: int, seed: int = 0) -> np.ndarray:
    """[n, 4]: a cycle on a slow trend, a level near 1000 with a curved trend (rounding
    grows with the level), a constant, and a random walk."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.stack(
        [
            3 * np.sin(2 * np.pi * t / period) + 0.001 * t + rng.standard_normal(n),
            1000 + 5 * np.cos(2 * np.pi * t / period) + 1e-3 * (t / 10) ** 1.5,
            np.full(n, 7.5),
            10 * np.cumsum(rng.standard_normal(n)),
        ],
        axis=1,
    )


def _assert_matches(x: np.ndarray, period: int, settings: dict[str, int]) -> None:
    ours = stl.decompose(x, period, **settings)
    for c in range(x.shape[1]):
        ref = STL(x[:, c], period=period, **settings).fit()
        for got, want in zip(ours, (ref.trend, ref.seasonal, ref.resid), strict=True):
            np.testing.assert_allclose(got[:, c], want, rtol=0, atol=TOL)


# (period, rows): odd and even periods, from two cycles (windows wider than the
# subseries, the ends extrapolated) to many (jumped LOESS, the last point refitted)
CASES = [
    (p, n)
    for p in (2, 5, 7, 12, 24, 52, 96, 144, 168)
    for n in (2 * p, 2 * p + 1, 7 * p // 2 + 1, 16 * p + 3)
]
CASES += [(2, 4096), (24, 4096), (672, 1345), (1008, 3528), (3218, 7000)]


@pytest.mark.parametrize("period,n", CASES)
def test_matches_statsmodels_with_the_analysers_settings(period, n):
    _assert_matches(_channels(n, period), period, stl_settings(period))


@pytest.mark.parametrize("period,n", [(2, 9), (7, 60), (12, 100), (24, 299)])
def test_matches_statsmodels_unjumped_and_degree_0(period, n):
    x = _channels(n, period, seed=1)
    _assert_matches(x, period, {"seasonal": 7})  # STL's defaults: every point fitted
    settings = {"seasonal": 9, "seasonal_deg": 0, "trend_deg": 0, "low_pass_deg": 0}
    _assert_matches(x, period, settings | {"seasonal_jump": 3, "trend_jump": 2})
    # jumps over half a window: the last point is fitted with the last evaluated point's
    # neighbourhood, which then ends before it
    _assert_matches(x, period, {"seasonal": 7, "trend_jump": 20, "low_pass_jump": 40})


@pytest.mark.parametrize("period,n", [(2, 40000), (3218, 37000)])
def test_matches_statsmodels_on_a_long_series(period, n):
    # positions near 40,000 and values near 1000: the rounding of a window's centre
    _assert_matches(_channels(n, period)[:, 1:3], period, stl_settings(period))


def test_channels_at_once_equal_one_at_a_time():
    x = _channels(3000, 96, seed=2)
    block = stl.decompose(x, 96, **stl_settings(96))
    for c in range(x.shape[1]):
        one = stl.decompose(x[:, c], 96, **stl_settings(96))
        for a, b in zip(block, one, strict=True):
            assert b.shape == (3000,)
            np.testing.assert_allclose(a[:, c], b, rtol=0, atol=1e-12)


def test_components_add_up_and_a_constant_has_no_cycle():
    x = _channels(500, 24)
    trend, seasonal, resid = stl.decompose(x, 24, **stl_settings(24))
    np.testing.assert_allclose(trend + seasonal + resid, x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(trend[:, 2], 7.5, atol=1e-12)
    np.testing.assert_allclose(seasonal[:, 2], 0.0, atol=1e-12)


def test_smoothers_are_built_once_per_setting_and_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(stl, "_CACHE", type(stl._CACHE)())
    first = stl.operators(800, 24, **stl_settings(24))
    assert stl.operators(800, 24, **stl_settings(24)) is first
    assert stl.operators(801, 24, **stl_settings(24)) is not first
    monkeypatch.setattr(stl, "CACHE_BYTES", first.nbytes + 1)
    stl.operators(900, 24, **stl_settings(24))
    assert len(stl._CACHE) == 1  # the oldest went


@pytest.mark.parametrize(
    "period,n,kw",
    [(1, 10, {}), (5, 9, {}), (5, 20, {"seasonal": 6}), (5, 20, {"trend": 5})],
)
def test_refuses_what_stl_refuses(period, n, kw):
    with pytest.raises(ValueError):
        stl.decompose(np.zeros(n), period, **kw)


def test_strength_table_equals_stl_strength_per_channel():
    rng = np.random.default_rng(3)
    x = _channels(5000, 24, seed=3)
    x = np.column_stack([x, np.r_[rng.standard_normal(500), np.zeros(4500)]])  # flat stretch
    periods = [7, 24, 300]
    needed = {(c, p) for c in range(x.shape[1]) for p in periods} - {(0, 7), (3, 300)}
    steps = []
    f_s, f_t = strength_table(x, periods, needed, lambda: steps.append(1))
    assert len(steps) == len(needed)
    for i, p in enumerate(periods):
        for c in range(x.shape[1]):
            want = stl_strength(x[:, c], p) if (c, p) in needed else (np.nan, np.nan)
            np.testing.assert_allclose([f_s[i, c], f_t[i, c]], want, rtol=0, atol=1e-12)
    assert np.isnan(f_s[:, 2]).all()  # the constant channel: not measurable
    assert np.isnan(f_s[1, 4])  # constant over the last 4096 rows
