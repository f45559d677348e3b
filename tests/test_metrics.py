"""ensemble.metrics: over all elements at once."""

import sys
from pathlib import Path

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
    ins = 2 * np.arange(10.0)[:, None]  # naive scale: 2 per step, 4 per two steps
    assert np.isclose(metrics.mase(t + 0.5, t, ins), 0.25)
    assert np.isclose(metrics.mase(t + 0.5, t, ins, period=2), 0.125)


def test_window_mse_is_the_per_window_metric():
    rng = np.random.default_rng(1)
    p, t = rng.normal(size=(11, 5, 3)), rng.normal(size=(11, 5, 3))
    w = metrics.window_mse(p, t, block=4)  # blocks that do not divide W
    assert w.shape == (11,)
    assert np.allclose(w, ((p - t) ** 2).mean(axis=(1, 2)))
    assert np.isclose(w.mean(), metrics.mse(p, t))


def test_diebold_mariano_direction_symmetry_and_degenerate_cases():
    rng = np.random.default_rng(2)
    a = rng.random(3000)
    same = metrics.diebold_mariano(a, a, horizon=24)
    assert same["dm"] == 0.0 and same["p"] == 1.0
    better = metrics.diebold_mariano(0.9 * a, a, horizon=24)
    assert better["diff"] < 0 and better["dm"] < 0 and better["p"] < 1e-6
    back = metrics.diebold_mariano(a, 0.9 * a, horizon=24)
    assert np.isclose(back["dm"], -better["dm"]) and np.isclose(back["p"], better["p"])
    shifted = metrics.diebold_mariano(a + 1.0, a, horizon=24)
    assert shifted["dm"] is None and shifted["p"] == 0.0
    # one-sided: half the two-sided p in the direction of the alternative, else 1 - half
    near = 0.99 * a + 0.01 * rng.random(3000)
    less, two = metrics.diebold_mariano(near, a, 24, "less"), metrics.diebold_mariano(near, a, 24)
    assert np.isclose(less["p"], two["p"] / 2 if two["dm"] < 0 else 1 - two["p"] / 2)
    assert metrics.diebold_mariano(a, 0.9 * a, 24, "less")["p"] > 0.999999


def test_diebold_mariano_keeps_its_size_on_overlapping_windows():
    """Persistent errors and windows overlapping in H - 1 steps, as on every test set:
    a true null must be rejected about 5 % of the time, not the 70 % an iid variance
    gives; a real difference must still be found."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from dm_calibration import window_losses

    rng = np.random.default_rng(0)
    reps, windows, horizon, phi = 200, 2000, 24, 0.9
    a, b = (window_losses(rng, reps, windows, horizon, phi, 1.0) for _ in range(2))
    worse = window_losses(rng, reps, windows, horizon, phi, 1.25)

    def rejected(x: np.ndarray, y: np.ndarray, h: int) -> float:
        """Share of the reps whose two-sided p is below 0.05."""
        return np.mean(
            [metrics.diebold_mariano(u, v, h)["p"] < 0.05 for u, v in zip(x, y, strict=True)]
        )

    assert rejected(a, b, horizon) <= 0.10
    assert rejected(worse, b, horizon) >= 0.5
    # the same data with the autocorrelation ignored (as if the horizon were 1)
    assert rejected(a, b, 1) > 0.3
    # fewer than 4 H windows (long horizons, short series): one degree of freedom, not
    # two, which rejected a true null 10-12 % of the time at W = 1.5 H
    few = [window_losses(rng, 1000, 144, 96, phi, 1.0) for _ in range(2)]
    assert rejected(*few, 96) <= 0.09


def test_diebold_mariano_of_one_window_is_undefined():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning about an empty mean either
        one = metrics.diebold_mariano(np.array([0.3]), np.array([0.5]), horizon=96)
    assert one["dm"] is None and np.isnan(one["p"]) and one["dof"] == 0
