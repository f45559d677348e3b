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
    # a constant gap, one-sided: certain that a is better when it is, never when it is worse
    assert metrics.diebold_mariano(a + 1.0, a, 24, "less")["p"] == 1.0
    assert metrics.diebold_mariano(a, a + 1.0, 24, "less")["p"] == 0.0
    # only float32 rounding (1e-6 of the losses' size) is "the same": 1e-4 is a difference
    wiggle = 1 + 1e-4 * np.random.default_rng(3).random(3000)
    close = metrics.diebold_mariano(a * wiggle, a, 24)
    assert close["dm"] is not None and close["dm"] > 0 and close["p"] < 1e-6
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


def test_holm_matches_statsmodels_and_leaves_missing_p_out():
    import pytest

    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    p = [0.01, 0.04, 0.03, 0.005, 0.2]
    np.testing.assert_allclose(metrics.holm(p), multipletests(p, method="holm")[1])
    got = metrics.holm([0.01, None, float("nan"), 0.04])
    assert got[1] is None and got[2] != got[2]  # not in the family, returned as they are
    np.testing.assert_allclose([got[0], got[3]], multipletests([0.01, 0.04], method="holm")[1])


def test_diebold_mariano_refuses_what_it_cannot_test():
    import pytest

    rng = np.random.default_rng(0)
    a, b = rng.random(400), rng.random(400)
    bad = a.copy()
    bad[3] = np.nan  # p 0 ("a certain difference") before
    r = metrics.diebold_mariano(bad, b, 4)
    assert r["dm"] is None and r["p"] != r["p"]
    inf = a.copy()
    inf[3] = np.inf
    assert metrics.diebold_mariano(inf, inf, 4)["p"] != 0.0  # p 1 ("the same") before
    with pytest.raises(ValueError, match=r"two \[W\] arrays"):  # transformed along channels
        metrics.diebold_mariano(np.stack([a, b], 1), np.stack([b, a], 1), 4)
    with pytest.raises(ValueError, match="alternative"):  # equal inputs returned p 1 first
        metrics.diebold_mariano(a, a, 4, alternative="greater")


def test_a_test_with_too_few_degrees_of_freedom_says_so():
    # ETTh1 H=336: naive 1.33 against snaive 0.65 test MSE, p 0.13 with 1 dof
    rng = np.random.default_rng(1)
    few = metrics.diebold_mariano(rng.standard_normal(300) + 0.5, np.zeros(300), 96)
    assert few["dof"] == 1 and few["p"] >= 0.05
    assert metrics.caveat(few).startswith("dof 1: a large p says nothing here")
    assert metrics.caveat({**few, "p": 0.01}) == ""  # a small p still counts
    many = metrics.diebold_mariano(rng.standard_normal(4000) + 0.1, np.zeros(4000), 12)
    assert many["dof"] == 83 and metrics.caveat(many) == ""
    # dof WEAK_DOF = 2 still cannot resolve a large p; 3 gets no caveat
    assert metrics.WEAK_DOF == 2
    at, above = (
        metrics.diebold_mariano(rng.standard_normal(n) + 0.05, np.zeros(n), 24) for n in (250, 300)
    )
    assert (at["dof"], above["dof"]) == (2, 3) and min(at["p"], above["p"]) >= 0.05
    assert metrics.caveat(at).startswith("dof 2: a large p says nothing here")
    assert metrics.caveat(above) == ""
