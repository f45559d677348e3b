"""classical.naive: last value, seasonal naive and window mean, checked value by value."""

from __future__ import annotations

import numpy as np
import pytest

from classical.naive import NaiveLast, SeasonalNaive, WindowMean


def test_naive_numbers_are_not_hard_coded(synth_splits):
    sp = synth_splits(seq_len=96, pred_len=24, period=24)
    w = sp.test.windows()
    y = sp.test.targets()
    naive, snaive = NaiveLast().predict(w), SeasonalNaive(24).predict(w)
    np.testing.assert_array_equal(naive[:, 5], w.x[:, -1])
    np.testing.assert_array_equal(snaive[:, 0], w.x[:, -24])
    assert np.mean((snaive - y) ** 2) < np.mean((naive - y) ** 2)


def test_seasonal_naive_cycles_the_last_period_over_a_longer_horizon(synth_splits):
    sp = synth_splits(seq_len=96, pred_len=24, period=24)
    w = sp.test.windows()
    fc = SeasonalNaive(10).predict(w)  # H = 24 > period: steps 0-9, 10-19, 20-23
    for h in range(24):
        np.testing.assert_array_equal(fc[:, h], w.x[:, 96 - 10 + h % 10])


def test_window_mean_is_flat_at_the_input_mean(synth_splits):
    w = synth_splits(seq_len=96, pred_len=24).test.windows()
    fc = WindowMean().predict(w)
    assert fc.shape == (w.x.shape[0], 24, w.x.shape[2])
    np.testing.assert_allclose(fc, np.broadcast_to(w.x.mean(axis=1, keepdims=True), fc.shape))


def test_seasonal_period_longer_than_the_lookback_is_refused(synth_splits):
    sp = synth_splits(seq_len=96, pred_len=24)
    with pytest.raises(ValueError, match="exceeds the lookback 96"):
        SeasonalNaive(120).fit(sp.train, sp.val)
