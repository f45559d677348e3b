"""ensemble.metrics: over all elements at once."""

import numpy as np

from ensemble import metrics


def test_mse_mae_over_all_windows_not_batch_means():
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=(10, 4, 2)), rng.normal(size=(10, 4, 2))
    assert np.isclose(metrics.mse(p, t), ((p - t) ** 2).mean())
    assert np.isclose(metrics.mae(p, t), np.abs(p - t).mean())
    # uneven batches: the mean of batch means differs from the metric
    batch_means = np.mean([((p[:7] - t[:7]) ** 2).mean(), ((p[7:] - t[7:]) ** 2).mean()])
    assert not np.isclose(metrics.mse(p, t), batch_means)


def test_smape_and_mase():
    t = np.ones((2, 3, 1))
    assert metrics.smape(t, t) == 0.0
    assert np.isclose(metrics.smape(2 * t, t), 200 * (1 / 3))
    ins = np.arange(10.0)[:, None]  # naive scale = 1
    assert np.isclose(metrics.mase(t + 0.5, t, ins), 0.5)
