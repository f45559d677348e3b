"""Scoring a run: scores computed with one temporary, the member stack's layout, the
router's saved per-step weights."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.cli import main


def test_stacked_router_saves_its_per_step_weights(synth_csv, tmp_path):
    out = tmp_path / "stacked"
    argv = ["run", "--data-path", str(synth_csv(n=1400)), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--members", "naive,snaive,window_mean", "--router", "stacked", "--out", str(out)]
    assert main(argv + ["--quiet"]) == 0
    with np.load(out / "router_weights.npz") as z:
        step, per_channel = z["step_weights"], z["step_channel_weights"]
    assert step.shape == (24, 3) and (step >= 0).all()
    np.testing.assert_allclose(step.sum(-1), 1.0, rtol=1e-6)
    # the weights as applied ([H, C, M]) rebuild the saved ensemble from the members
    with np.load(out / "forecasts.npz") as z:
        f = np.stack([z[f"test/{m}"] for m in ("naive", "snaive", "window_mean")])
        ens = z["test/ensemble"]
    assert per_channel.shape == (24, 3, 3)
    np.testing.assert_allclose(np.einsum("mwhc,hcm->whc", f, per_channel), ens, atol=1e-5)
    with np.load(out / "router_weights.npz") as z:
        assert bool(z["horizon_averaged"])  # test/val are the steps' average


def test_the_weights_file_says_which_routers_weigh_each_step_apart(tmp_path):
    # stacked_tilted applies per-step weights that vary by window: saved as their parts
    # (test_the_weights_file_rebuilds_the_tilted_ensemble), not as step_weights, and the
    # horizon-averaged weights must say what they are; a fixed rule's are exact
    from numpy.lib.stride_tricks import sliding_window_view

    from experiments.scoring import write_router_weights
    from router import make_combiner
    from router.features import window_features

    rng = np.random.default_rng(0)
    t = np.arange(400)
    series = np.stack([np.sin(2 * np.pi * t / 24), np.cos(2 * np.pi * t / 12)], -1)
    series = series + 0.3 * rng.standard_normal(series.shape)
    x = sliding_window_view(series[:-12], 48, axis=0).transpose(0, 2, 1)  # [W, 48, 2]
    y = sliding_window_view(series[48:], 12, axis=0).transpose(0, 2, 1)  # [W, 12, 2]
    f = np.stack([y + s * rng.standard_normal(y.shape) for s in (0.3, 0.6)])
    feats, names = window_features(x, f, [24], ["a", "b"])
    for name, averaged in (("mean", False), ("inverse_error", True), ("stacked_tilted", True)):
        comb = make_combiner(name, member_names=["a", "b"], feature_names=names)
        comb.fit(f, y, feats if comb.needs_features else None)
        w = comb.weights(f, feats)
        both = {"val": feats, "test": feats}
        write_router_weights(tmp_path, comb, ["a", "b"], w, w, both, names)
        with np.load(tmp_path / "router_weights.npz") as z:
            assert bool(z["horizon_averaged"]) is averaged, name
            assert ("step_weights" in z.files) is (name == "inverse_error"), name


def test_scores_with_one_temporary_are_the_metrics_scores():
    from ensemble import metrics
    from experiments.scoring import mse_mae

    rng = np.random.default_rng(0)
    true = rng.standard_normal((30, 8, 4))[..., [0, 1, 2, 3]]  # channel-major, as the run's
    for pred in (
        rng.standard_normal((30, 8, 4)),
        rng.standard_normal((30, 8, 4))[..., [0, 1, 2, 3]],
        np.einsum("mwhc,wcm->whc", rng.standard_normal((3, 30, 8, 4)), np.ones((30, 4, 3)) / 3),
        rng.standard_normal((30, 8, 4)).astype(np.float32),
    ):
        want = metrics.scores(pred, true)
        assert mse_mae(pred, true) == want
        assert mse_mae(pred.copy(order="K"), true, scratch=True) == want


def test_differences_written_into_a_spent_array_are_the_metrics_scores_without_a_temporary():
    import tracemalloc

    from ensemble import metrics
    from experiments.scoring import mse_mae

    rng = np.random.default_rng(0)
    true = rng.standard_normal((200, 50, 40))[..., list(range(40))]  # channel-major
    pred = rng.standard_normal((200, 50, 40)).astype(np.float32)[..., list(range(40))]
    want = metrics.scores(pred, true)
    for spent in (np.empty((200, 50, 40)), np.empty((200, 40, 50)).transpose(0, 2, 1)):
        tracemalloc.start()
        got = mse_mae(pred, true, out=spent)  # whatever the spent array's own layout
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert got == want and peak < true.nbytes / 4  # no [W, H, C] float64 temporary
    # float32 targets and forecasts are subtracted in float64 there too
    pred32, true32 = pred.astype(np.float32), true.astype(np.float32)
    assert mse_mae(pred32, true32, out=np.empty(true.shape)) == metrics.scores(pred32, true32)
    # nothing it cannot hold is written into: a strided view, a float32 array, ``true``
    for spent in (np.empty((200, 50, 80))[..., ::2], np.empty((200, 50, 40), np.float32)):
        before = spent.copy()
        assert mse_mae(pred, true, out=spent) == want
        np.testing.assert_array_equal(spent, before)


def test_members_and_ensemble_are_scored_in_order_and_the_ensemble_kept_as_float32():
    from ensemble import metrics
    from experiments.scoring import score_forecasts

    rng = np.random.default_rng(0)
    true = rng.standard_normal((30, 8, 4))[..., [0, 1, 2, 3]]
    stack = rng.standard_normal((2, 30, 8, 4))
    ens = stack.mean(axis=0)
    want = {"a": metrics.scores(stack[0], true), "b": metrics.scores(stack[1], true)}
    want["ensemble"] = metrics.scores(ens, true)
    losses = {}
    scores, kept = score_forecasts(["a", "b"], stack, true, ens.copy(), losses)
    assert scores == want and list(scores) == list(losses) == ["a", "b", "ensemble"]
    np.testing.assert_array_equal(kept, ens.astype(np.float32))
    np.testing.assert_array_equal(losses["ensemble"], metrics.window_mse(ens, true))
    # an ensemble that is a member's own forecasts (a view) leaves the members intact
    before = stack.copy()
    scores, _ = score_forecasts(["a", "b"], stack, true, stack[1])
    np.testing.assert_array_equal(stack, before)
    assert scores["ensemble"] == want["b"]


def test_member_stack_is_float32_laid_out_as_picked_channels():
    from ensemble import hybrid
    from experiments.scoring import router_features, stack_members

    rng = np.random.default_rng(0)
    results = {k: {"val": rng.standard_normal((40, 6, 3)).astype(np.float32)} for k in ("a", "b")}
    before = hybrid.stack({k: v["val"][..., [0, 1, 2]] for k, v in results.items()})
    s = stack_members(results, "val", [0, 1, 2])
    assert s.dtype == np.float32 and all("val" not in v for v in results.values())
    np.testing.assert_array_equal(s, before)
    assert hybrid.memory_order(s) == hybrid.memory_order(before)
    # the router features of the float32 stack are those of its float64 values
    x = np.lib.stride_tricks.sliding_window_view(rng.standard_normal((63, 3)), 24, axis=0)
    x = x.transpose(0, 2, 1)
    got = router_features(x, s, [12], ["a", "b"], [0, 1, 2])
    want = router_features(x, before, [12], ["a", "b"], [0, 1, 2])
    assert got[1] == want[1]
    np.testing.assert_array_equal(got[0], want[0])


def test_seasonal_baseline_is_the_best_naive_forecast_of_the_evaluated_channels():
    from classical.naive import NaiveLast, SeasonalNaive
    from ensemble import metrics
    from ensemble.data import Windows
    from experiments.scoring import seasonal_baseline

    rng = np.random.default_rng(0)
    t = np.arange(700)
    rows = np.stack([np.sin(2 * np.pi * t / 12), rng.standard_normal(700).cumsum()], axis=1)
    rows += 0.1 * rng.standard_normal(rows.shape)
    L, H = 48, 20
    win = Windows(rows[:-H], L, H, None)
    true = np.stack([rows[i + L : i + L + H] for i in range(win.n)])  # [W, H, C]
    for ch in ([0], [1], [0, 1]):
        # 12 fits, 60 does not fit L=48 and is skipped, 1 is no season
        name, got = seasonal_baseline(win.x, true[..., ch], [12, 60, 1], ch, chunk=7)
        expect = {
            "naive": metrics.mse(NaiveLast().predict(win)[..., ch], true[..., ch]),
            "snaive@period=12": metrics.mse(SeasonalNaive(12).predict(win)[..., ch], true[..., ch]),
        }
        assert name == min(expect, key=expect.get)
        assert got == pytest.approx(expect[name], rel=1e-12)
    assert seasonal_baseline(win.x, true[..., [0]], [12], [0])[0] == "snaive@period=12"
    assert seasonal_baseline(win.x, true[..., [1]], [12], [1])[0] == "naive"  # a random walk
    # a period as long as the lookback fits it once: the whole window repeated
    day = np.sin(2 * np.pi * t / 24)[:, None] + 0.1 * rng.standard_normal((700, 1))
    win = Windows(day[:-H], 24, H, None)
    true = np.stack([day[i + 24 : i + 24 + H] for i in range(win.n)])
    name, got = seasonal_baseline(win.x, true, [24], [0])
    assert name == "snaive@period=24"
    assert got == pytest.approx(metrics.mse(SeasonalNaive(24).predict(win), true), rel=1e-12)


def test_the_weights_file_rebuilds_the_tilted_ensemble(tmp_path):
    # only the stacked part's step weights decided, and none was saved: rebuilding from
    # ``test`` was off by up to 0.86
    from experiments.scoring import write_router_weights
    from router import make_combiner
    from router.features import window_features

    rng = np.random.default_rng(0)
    t = np.arange(400)
    series = np.stack([np.sin(2 * np.pi * t / 24), np.cos(2 * np.pi * t / 12)], -1)
    series = series + 0.3 * rng.standard_normal(series.shape)
    x = np.lib.stride_tricks.sliding_window_view(series[:-12], 48, axis=0).transpose(0, 2, 1)
    y = np.lib.stride_tricks.sliding_window_view(series[48:], 12, axis=0).transpose(0, 2, 1)
    f = np.stack([y + s * rng.standard_normal(y.shape) for s in (0.3, 0.6, 0.9)])
    feats, names = window_features(x, f, [24], ["a", "b", "c"])
    comb = make_combiner("stacked_tilted", feature_names=names, share=0.5, beta=2.0)
    comb.fit(f[:, :250], y[:250], feats[:250])
    assert comb.share_ == 0.5  # a tilt to rebuild
    val, test = (f[:, :250], feats[:250]), (f[:, 250:], feats[250:])
    w_val, w_test = comb.weights(*val), comb.weights(*test)
    both = {"val": val[1], "test": test[1]}
    write_router_weights(tmp_path, comb, ["a", "b", "c"], w_val, w_test, both, names)
    with np.load(tmp_path / "router_weights.npz") as z:
        assert bool(z["horizon_averaged"]) and "step_weights" not in z.files
        stacked = z["stacked_step_channel_weights"]  # [H, C, M]
        for part, (fc, ft) in (("val", val), ("test", test)):
            t, s = z[f"tilt_{part}"], z[f"tilt_share_{part}"][..., None]  # [W, C, M], [W, C, 1]
            steps = (1 - s[:, None]) * stacked[None] + s[:, None] * t[:, None]  # [W, H, C, M]
            rebuilt = np.einsum("mwhc,whcm->whc", fc, steps)
            np.testing.assert_allclose(rebuilt, comb.forecast(fc, ft), atol=1e-5)
            assert (s > 0).any()
