"""router: every combiner's contract, the learned router's behaviour, causal features."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ensemble import hybrid
from ensemble.data import sliding
from router import COMBINERS, make_combiner
from router.features import past_errors, window_features
from router.features import window_features as router_features
from router.learned import (
    CANDIDATES,
    COARSE_CUTS,
    INCUMBENTS,
    REFERENCES,
    one_se_choice,
    registry_name,
    rolling_folds,
    significance_choice,
)
from router.objective import combined_mse, inner_split, window_gram, window_rows
from router.stacked import project_simplex, simplex_qp_exact, simplex_qp_fista

L, H, C = 48, 12, 2


def problem(noise=(0.05, 1.0, 1.0), n=900, seed=0, identical=False):
    """Seasonal series, windows and members = targets + noise of the given scales.

    Returns:
        x [W, L, C], y [W, H, C], forecasts [M, W, H, C], feature array and names.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    series = np.stack(
        [np.sin(2 * np.pi * t / 12 + c) + 0.3 * rng.standard_normal(n) for c in range(C)], 1
    )
    x, y = sliding(series[:-H], L), sliding(series[L:], H)
    if identical:
        one = y + rng.standard_normal(y.shape)
        f = np.stack([one] * len(noise))
    else:
        f = np.stack([y + s * rng.standard_normal(y.shape) for s in noise])
    feats, names = window_features(x, f, [12], member_names=[f"m{i}" for i in range(len(noise))])
    return x, y, f, feats, names


def fitted(name, f, y, feats, names):
    half = f.shape[1] // 2
    cb = make_combiner(name, seed=0, feature_names=names, member_names=["m0", "m1", "m2"])
    return cb.fit(f[:, :half], y[:half], feats[:half]), half


@pytest.fixture(scope="module")
def clear_best():
    return problem()


@pytest.mark.parametrize("name", list(COMBINERS))
def test_weights_on_simplex_and_forecast_shape(name, clear_best):
    x, y, f, feats, names = clear_best
    cb, half = fitted(name, f, y, feats, names)
    w = cb.weights(f[:, half:], feats[half:])
    assert w.shape == (f.shape[1] - half, C, f.shape[0])
    assert (w >= -1e-12).all()
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-9)
    fc = cb.forecast(f[:, half:], feats[half:])
    assert fc.shape == y[half:].shape and np.isfinite(fc).all()
    assert isinstance(cb.describe(), str)
    # the weights each step is combined with rebuild the forecast (`forecast` writes
    # them per row of forecast.csv), and a window's do not depend on the other windows
    sw = cb.step_weights(f[:, half:], feats[half:])
    assert sw.shape == (f.shape[1] - half, H, C, f.shape[0]) and (sw >= -1e-12).all()
    np.testing.assert_allclose(sw.sum(-1), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.einsum("mwhc,whcm->whc", f[:, half:], sw), fc, atol=1e-9)
    # (to rounding: the torch router's float32 net sums a batch of one in another order)
    np.testing.assert_allclose(cb.step_weights(f[:, -1:], feats[-1:]), sw[-1:], atol=1e-8)


@pytest.mark.parametrize("name", [n for n in COMBINERS if n not in ("mean", "median")])
def test_clearly_best_member_gets_most_weight(name, clear_best):
    x, y, f, feats, names = clear_best
    cb, half = fitted(name, f, y, feats, names)
    w = cb.weights(f[:, half:], feats[half:])
    assert w[..., 0].mean() > 0.8, w.mean(axis=(0, 1))


@pytest.mark.parametrize("name", list(COMBINERS))
def test_identical_members_get_uniform_weights(name):
    x, y, f, feats, names = problem(identical=True, n=500)
    cb, half = fitted(name, f, y, feats, names)
    w = cb.weights(f[:, half:], feats[half:])
    np.testing.assert_allclose(w, 1.0 / 3, atol=1e-6)


def test_median_and_inverse_error_forecasts():
    _, y, f, feats, names = problem(noise=(0.3, 0.5, 1.0), n=400)
    med = make_combiner("median").fit(f, y)
    np.testing.assert_allclose(med.forecast(f), np.median(f, axis=0))
    # the per-step median weights reproduce the median exactly
    np.testing.assert_allclose(
        np.einsum("mwhc,mwhc->whc", f, med._step_weights(f)), np.median(f, axis=0)
    )
    # an even number of members: half each for the two middle ones, at every step
    rng = np.random.default_rng(5)
    for m in (2, 4):
        fe = y + rng.standard_normal((m, *y.shape))
        sw = med._step_weights(fe)
        np.testing.assert_allclose(sw.sum(axis=0), 1.0, rtol=0, atol=1e-15)
        np.testing.assert_allclose(
            np.einsum("mwhc,mwhc->whc", fe, sw), np.median(fe, axis=0), rtol=1e-12
        )
    inv = make_combiner("inverse_error").fit(f, y)
    err = np.mean((f - y) ** 2, axis=1)  # [M, H, C]
    expect = (1 / err) / (1 / err).sum(0)
    np.testing.assert_allclose(np.moveaxis(inv.step_weights_, -1, 0), expect)


def test_greedy_matches_brute_force_on_two_members():
    _, y, f, _, _ = problem(noise=(0.5, 0.7), n=400)
    g = make_combiner("greedy", n_iter=20, per_channel=False).fit(f, y)
    grid = np.linspace(0, 1, 21)
    mse = [np.mean((a * f[0] + (1 - a) * f[1] - y) ** 2) for a in grid]
    assert abs(g.channel_weights_[0, 0] - grid[int(np.argmin(mse))]) <= 0.05 + 1e-9


def test_quadratic_form_equals_direct_mse():
    _, y, f, _, _ = problem(noise=(0.3, 0.5, 1.0), n=300)
    w = np.random.default_rng(1).dirichlet(np.ones(3), size=(f.shape[1], C))
    gram, b, yy = window_gram(f, y)
    direct = np.mean((np.einsum("mwhc,wcm->whc", f, w) - y) ** 2, axis=1)
    np.testing.assert_allclose(combined_mse(w, gram, b, yy), direct, atol=1e-10)


def test_window_terms_of_a_fold_are_a_slice_of_the_whole():
    """The learned router computes the terms once and slices them per fold and candidate."""
    _, y, f, feats, names = problem(noise=(0.3, 0.5, 1.0), n=300)
    whole = window_gram(f, y)
    for part in (slice(0, 100), np.arange(120, 200)):
        sub = window_gram(f[:, part], y[part])
        for a, b in zip(whole[part], sub, strict=True):
            np.testing.assert_array_equal(a, b)
    # a combiner given the terms fits exactly what it fits when computing them itself
    for name in ("greedy", "rules", "learned_lgbm"):
        given = make_combiner(name, seed=0, feature_names=names).fit(f, y, feats, whole)
        own = make_combiner(name, seed=0, feature_names=names).fit(f, y, feats)
        np.testing.assert_array_equal(given.weights(f, feats), own.weights(f, feats))


def test_window_rows_are_all_rows_in_order_or_a_seeded_draw_past_the_cap():
    ws = np.arange(3, 10)
    assert window_rows(ws, 4).tolist() == list(range(12, 40))  # window-major: w * C + c
    drawn = window_rows(ws, 4, seed=1, cap=10)
    assert drawn.size == 10 and np.all(np.diff(drawn) > 0) and set(drawn) <= set(range(12, 40))
    assert np.array_equal(drawn, window_rows(ws, 4, seed=1, cap=10))
    assert not np.array_equal(drawn, window_rows(ws, 4, seed=2, cap=10))


@pytest.mark.parametrize(
    "name,module",
    [("learned_lgbm", "learned_lgbm"), ("learned_torch", "learned_torch"), ("rules", "rules")],
)
def test_feature_routers_train_on_a_draw_of_the_rows_past_the_cap(
    name, module, clear_best, monkeypatch
):
    # wide data (electricity's 321 channels: 814,000 validation rows) took minutes a fit
    import importlib

    import router.objective

    x, y, f, feats, names = clear_best
    sizes = []

    def spy(*args, **kw):
        rows = window_rows(*args, **kw)
        sizes.append(rows.size)
        return rows

    monkeypatch.setattr(importlib.import_module(f"router.{module}"), "window_rows", spy)
    monkeypatch.setattr(router.objective, "MAX_ROUTER_ROWS", 300)
    cb, half = fitted(name, f, y, feats, names)
    fit_w, _ = inner_split(half, H)
    assert fit_w.size * C > 300 and max(sizes) == 300  # the fitting rows were drawn
    w = cb.weights(f[:, half:], feats[half:])
    assert w.shape == (f.shape[1] - half, C, 3) and (w >= -1e-12).all()
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-9)
    assert w[..., 0].mean() > 0.8  # a draw of the rows still finds the clearly best member


def test_inner_split_is_time_ordered_with_gap():
    fit, held = inner_split(1000, 96)
    assert fit.max() + 96 < held.min() and held.max() == 999 and fit.size == 800
    # a fitting part that leaves just the gap: nothing to hold out, every window is fitted
    # (with the default frac < 1 the fitting part never reaches it; frac=1 does)
    for n, gap in ((20, 5), (97, 96), (7, 0)):
        fit, held = inner_split(n, gap, frac=1.0)
        np.testing.assert_array_equal(fit, np.arange(n))
        assert held.size == 0
    # one window more: that one is held out
    fit, held = inner_split(11, 1, frac=0.9)
    np.testing.assert_array_equal(fit, np.arange(9))
    assert held.tolist() == [10]


def test_rules_print_and_use_features():
    """Member 0 is good on channel 0 only, member 1 on channel 1: a one-split tree."""
    rng = np.random.default_rng(0)
    x, y, f, feats, names = problem(noise=(1.0, 1.0, 1.0), n=900)
    f = f.copy()
    f[0, ..., 0] = y[..., 0] + 0.05 * rng.standard_normal(y[..., 0].shape)
    f[1, ..., 1] = y[..., 1] + 0.05 * rng.standard_normal(y[..., 1].shape)
    cb = make_combiner(
        "rules", feature_names=names, member_names=["m0", "m1", "m2"], channel_names=["HUFL", "OT"]
    )
    cb.fit(f, y, feats)
    text = cb.rules()
    assert "if " in text and "use" in text
    # the split on the channel names the channels it sends left, not an index
    assert text.splitlines()[0] == "if channel in {HUFL}:", text
    w = cb.weights(f, feats)
    assert w[:, 0, 0].mean() > 0.8 and w[:, 1, 1].mean() > 0.8


@pytest.mark.parametrize("n,gap", [(300, 12), (2785, 96), (11425, 96), (400, 96)])
def test_folds_never_score_a_window_sharing_targets_with_a_fitted_one(n, gap):
    # Windows i < j share target steps when j - i < H; the gap must keep them apart, or
    # the fold scores reward whatever memorised the overlap.
    folds = rolling_folds(n, gap)
    folds = folds if len(folds) >= 2 else rolling_folds(n, gap, COARSE_CUTS)  # as the router
    assert len(folds) >= 2
    prev_end = 0
    for fit, held in folds:
        np.testing.assert_array_equal(fit, np.arange(fit.size))  # expanding, from the start
        assert held.min() - fit.max() >= gap
        np.testing.assert_array_equal(held, np.arange(held.min(), held.max() + 1))
        assert held.min() >= prev_end  # folds in time order, scored windows disjoint
        prev_end = held.max() + 1
    assert prev_end == n
    fit, held = inner_split(n, gap)
    assert held.min() - fit.max() >= gap and held.max() == n - 1


@pytest.mark.parametrize("name", ["learned", "learned_lgbm", "learned_torch", "rules", "stacked"])
def test_no_more_validation_windows_than_the_horizon(name, clear_best):
    # Nothing can be held out without sharing targets with the fitted windows, so
    # nothing feature-conditioned is trusted: equal weights, depth 0, the incumbent.
    x, y, f, feats, names = clear_best
    cb = make_combiner(name, seed=0, feature_names=names, member_names=["m0", "m1", "m2"])
    cb.fit(f[:, :H], y[:H], feats[:H])
    w = cb.weights(f[:, H:], feats[H:])
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-9)
    if name in ("learned_lgbm", "learned_torch"):
        np.testing.assert_allclose(w, 1.0 / 3, atol=1e-12)
    if name == "rules":
        assert cb.depth_ == 0
    if name == "learned":
        assert cb.chosen_ == "stacked" and cb.inner_scores_ == {}


def test_learned_router_shows_progress_over_its_fold_fits(clear_best, bars):
    # more than 12 minutes on ECL's 321 channels: the user sees it move
    import router.learned

    made = bars(router.learned)
    x, y, f, feats, names = clear_best
    w = 200  # five folds of every candidate still, in a fraction of the time
    for progress in (True, False):
        cb = make_combiner("learned", seed=0, feature_names=names, progress=progress)
        cb.fit(f[:, :w], y[:w], feats[:w])
        (bar,) = made[-1:]
        folds = len(next(iter(cb.fold_scores_.values())))
        assert folds == 5 and {*CANDIDATES, "stacked", *REFERENCES} == set(cb.fold_scores_)
        assert bar.total == bar.n == folds * len(cb.fold_scores_)
        assert bar.disable is (None if progress else True)


def test_fold_fits_falling_back_to_equal_weights_are_no_warning(clear_best, caplog):
    # 2H windows: the folds' fit parts are too short for the challengers' own inner split.
    # Their fallback is a throwaway fit scored on the fold, not the router the user gets.
    x, y, f, feats, names = clear_best
    w = 2 * H
    cb = make_combiner("learned", seed=0, feature_names=names, member_names=["m0", "m1", "m2"])
    with caplog.at_level("DEBUG", logger="router"):
        cb.fit(f[:, :w], y[:w], feats[:w])
    fallbacks = [r for r in caplog.records if "too few validation windows" in r.getMessage()]
    assert fallbacks and {r.levelname for r in fallbacks} == {"DEBUG"}
    caplog.clear()
    lgbm = make_combiner(
        "learned_lgbm", seed=0, feature_names=names, member_names=["m0", "m1", "m2"]
    )
    lgbm.fit(f[:, :H], y[:H], feats[:H])  # the router itself falls back: the user is told
    assert [r.levelname for r in caplog.records if "too few" in r.getMessage()] == ["WARNING"]


@pytest.mark.parametrize("name", ["learned", "learned_lgbm"])
@pytest.mark.parametrize("windows", [150, H + 2])
def test_short_one_channel_validation_fits(name, windows, clear_best):
    # 150 windows x 1 channel: fewer samples than two LightGBM leaves of min_data_in_leaf
    # (200); LightGBM used to drop every feature and stop with "num_features > 0". With
    # H + 2 the inner fit part is a window or two on which no feature can be split at all.
    x, y, f, feats, names = clear_best
    f, y, feats = f[:, :windows, :, :1], y[:windows, :, :1], feats[:windows, :1]
    cb = make_combiner(name, seed=0, feature_names=names, member_names=["m0", "m1", "m2"])
    w = cb.fit(f, y, feats).weights(f, feats)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-9)


def test_learned_router_keeps_what_validation_prefers(clear_best):
    x, y, f, feats, names = clear_best
    cb, half = fitted("learned", f, y, feats, names)
    assert set(cb.inner_scores_) == {*CANDIDATES, "stacked", *REFERENCES}
    selectable = {n: cb.held_losses_[n] for n in (*CANDIDATES, "stacked")}
    assert cb.chosen_ == significance_choice(selectable, cb.fold_scores_, "stacked", f.shape[2])
    assert cb.inner_scores_["mean"] > cb.inner_scores_[cb.chosen_]
    # the held-out per-window losses are the fold scores' windows, folds in time order
    for name, scores in cb.fold_scores_.items():
        losses = cb.held_losses_[name]
        sizes = [held.size for _, held in rolling_folds(half, f.shape[2])]
        assert losses.size == sum(sizes)
        parts = np.split(losses, np.cumsum(sizes)[:-1])
        np.testing.assert_allclose([q.mean() for q in parts], scores, rtol=1e-10)
    # one member clearly best: its router beats the mean on held-out windows, clearly
    test = cb.held_out_test("mean")
    assert test["diff"] > 0 and test["p"] < 0.05


def test_learned_router_reports_feature_routers_it_does_not_choose_from(clear_best):
    from router.learned import LearnedRouter

    x, y, f, feats, names = clear_best
    half = f.shape[1] // 2
    cb = LearnedRouter(candidates=(), references=(*CANDIDATES, *REFERENCES), feature_names=names)
    cb.fit(f[:, :half], y[:half], feats[:half])
    assert cb.chosen_ == "stacked"
    assert set(cb.inner_scores_) == {*CANDIDATES, "stacked", *REFERENCES}
    # without features the feature-conditioned references are left out, not failed
    cb.fit(f[:, :half], y[:half], None)
    assert set(cb.inner_scores_) == {"stacked", *REFERENCES}


def test_learned_router_admits_a_static_challenger_only_when_clearly_better():
    """Per-channel weights against the pooled incumbent: taken when channels clearly differ."""
    from router.learned import LearnedRouter

    rng = np.random.default_rng(1)
    _, y, f, _, _ = problem(noise=(1.0, 1.0, 1.0), n=900)
    gate = dict(candidates=(), incumbent="stacked_pooled", static_challengers=("stacked",))
    same = LearnedRouter(**gate).fit(f, y)  # exchangeable members: nothing to gain
    assert same.chosen_ == "stacked_pooled"
    f = f.copy()
    f[0, ..., 0] = y[..., 0] + 0.1 * rng.standard_normal(y[..., 0].shape)
    f[1, ..., 1:] = y[..., 1:] + 0.1 * rng.standard_normal(y[..., 1:].shape)
    cb = LearnedRouter(**gate).fit(f, y)
    assert cb.chosen_ == "stacked" and cb.held_out_test("stacked")["diff"] < 0
    with pytest.raises(ValueError, match="static challengers"):
        LearnedRouter(incumbent="stacked", static_challengers=("stacked",))


def test_one_se_rule_keeps_the_mean_unless_clearly_beaten():
    mean = [0.50, 0.40, 0.45, 0.42]
    lucky = [0.40, 0.43, 0.47, 0.44]  # lower on average, but only thanks to one fold
    steady = [0.49, 0.39, 0.44, 0.41]  # 0.01 lower in every fold
    assert one_se_choice({"mean": mean, "lucky": lucky}) == "mean"
    assert one_se_choice({"mean": mean, "lucky": lucky, "steady": steady}) == "steady"
    assert one_se_choice({"mean": mean, "worse": [v + 0.01 for v in mean]}) == "mean"
    assert one_se_choice({"mean": [0.5], "one_fold": [0.3]}) == "mean"  # no standard error


def test_significance_rule_keeps_the_incumbent_unless_clearly_beaten():
    """Held-out losses with persistent noise: a small edge is not enough, a clear one is."""
    rng = np.random.default_rng(3)
    n, h = 2000, 24
    base = 1.0 + np.convolve(rng.standard_normal(n + h - 1), np.ones(h) / h, "valid") ** 2
    noise = np.convolve(rng.standard_normal(n + h - 1), np.ones(h) / h, "valid")
    losses = {
        "stacked": base,
        "lucky": base - 0.002 + 0.2 * noise,  # lower on average, inside the noise
        "clear": base - 0.05 + 0.05 * noise,  # lower by far more than the noise
        "worse": base + 0.05,
    }
    folds = {k: [float(v[:1000].mean()), float(v[1000:].mean())] for k, v in losses.items()}
    pick = {k: losses[k] for k in ("stacked", "lucky", "worse")}
    assert significance_choice(pick, folds, "stacked", h) == "stacked"
    assert significance_choice(losses, folds, "stacked", h) == "clear"
    one_fold = {k: v[:1] for k, v in folds.items()}
    assert significance_choice(losses, one_fold, "stacked", h) == "stacked"


def least_squares_problems(k: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` simplex least-squares problems [k, m, m], [k, m] with two near-equal members."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, 50, m))
    a[:, :, 1] = a[:, :, 0] + 0.01 * rng.standard_normal((k, 50))  # ill-conditioned
    y = rng.standard_normal((k, 50))
    return np.einsum("kni,knj->kij", a, a) / 50, np.einsum("kni,kn->ki", a, y) / 50


@pytest.mark.parametrize("solve", [simplex_qp_exact, simplex_qp_fista])
def test_simplex_least_squares_matches_a_grid_search(solve):
    gram, b = least_squares_problems(4, 3)
    w = solve(gram, b)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-9)
    assert (w >= 0).all()
    g = np.linspace(0, 1, 201)
    grid = np.array([(p, q, 1 - p - q) for p in g for q in g if p + q <= 1 + 1e-12])
    for k in range(4):
        grid_loss = np.einsum("gi,ij,gj->g", grid, gram[k], grid) - 2 * grid @ b[k]
        assert w[k] @ gram[k] @ w[k] - 2 * b[k] @ w[k] <= grid_loss.min() + 1e-9
    np.testing.assert_allclose(
        project_simplex(np.array([[0.2, 0.3, 0.5], [2.0, 0.0, -1.0]])),
        [[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]],
    )


def test_exact_and_fista_simplex_solvers_agree():
    """Enumerating supports finds the optimum FISTA converges to, in batches of any size."""
    gram, b = least_squares_problems(40, 5, seed=1)
    exact = simplex_qp_exact(gram, b, chunk=7)  # 40 problems in 6 chunks
    fista = simplex_qp_fista(gram, b, n_iter=20000)
    np.testing.assert_allclose(exact, fista, atol=1e-6)
    assert ((exact == 0).sum(-1) > 0).any()  # some optima lie on the boundary
    np.testing.assert_allclose(simplex_qp_exact(np.ones((1, 4, 4)), np.ones((1, 4))), 0.25)


def test_a_member_with_huge_errors_does_not_bend_the_others_weights():
    """A diverged but finite member (1e5 times the others' scale) gets no weight, and the
    others' weights are their own optimum: the ridge must not scale with its errors."""
    gram, b = least_squares_problems(3, 3, seed=2)
    scale = np.array([1.0, 1.0, 1e5])
    gram, b = gram * np.outer(scale, scale), b * scale
    w = simplex_qp_exact(gram, b)
    g = np.linspace(0, 1, 20001)
    pair = np.stack([g, 1 - g, 0 * g], axis=1)  # the two sane members only
    for k in range(3):
        best = (np.einsum("gi,ij,gj->g", pair, gram[k], pair) - 2 * pair @ b[k]).min()
        found = w[k] @ gram[k] @ w[k] - 2 * b[k] @ w[k]
        assert w[k, 2] < 1e-4 and found <= best + 1e-6 * abs(best)


def test_tilted_stacked_follows_the_recently_better_member():
    """Members take turns being sharp in blocks of 120 windows: static weights cannot
    tell them apart, the tilt by recent error can, and windows with no observed past get
    the stacked forecast."""
    rng = np.random.default_rng(0)
    x, y, _, _, _ = problem(n=1500)
    good = (np.arange(y.shape[0]) // 120) % 2 == 0  # [W] member 0 sharp here
    scale = np.where(good, 0.1, 1.0)[:, None, None]
    f = np.stack([y + s * rng.standard_normal(y.shape) for s in (scale, 1.1 - scale)])
    feats, names = window_features(x, f, [12], member_names=["m0", "m1"])
    half = f.shape[1] // 2
    tilted = make_combiner("stacked_tilted", feature_names=names).fit(
        f[:, :half], y[:half], feats[:half]
    )
    stacked = make_combiner("stacked").fit(f[:, :half], y[:half])
    assert tilted.share_ > 0, tilted.describe()
    mse = {
        k: np.mean((c.forecast(f[:, half:], feats[half:]) - y[half:]) ** 2)
        for k, c in (("tilted", tilted), ("stacked", stacked))
    }
    assert mse["tilted"] < 0.7 * mse["stacked"], mse
    w = tilted.weights(f[:, half:], feats[half:])  # [W, C, M]
    settled = np.flatnonzero(good[half:] & np.roll(good[half:], 2 * H))  # 2H into a block
    assert w[settled, :, 0].mean() > 0.7
    unseen = np.isnan(feats[:H]).any(-1)  # the first H windows: no observed past
    assert unseen.all()
    np.testing.assert_allclose(
        tilted.forecast(f[:, :H], feats[:H]), stacked.forecast(f[:, :H]), atol=1e-3
    )
    sw = tilted.step_weights(f[:, half:], feats[half:])  # tilted per window, stacked per step
    np.testing.assert_allclose(
        np.einsum("mwhc,whcm->whc", f[:, half:], sw),
        tilted.forecast(f[:, half:], feats[half:]),
        atol=1e-9,
    )
    np.testing.assert_allclose(sw.mean(axis=1), w, atol=1e-12)  # `weights`: the steps' average


def test_stacked_weights_follow_each_members_best_steps():
    """Member 0 is sharp on the first half of the horizon, member 1 on the second."""
    rng = np.random.default_rng(0)
    _, y, f, _, _ = problem(noise=(1.0, 1.0, 1.0), n=900)
    f = f.copy()
    f[0, :, : H // 2] = y[:, : H // 2] + 0.1 * rng.standard_normal(y[:, : H // 2].shape)
    f[1, :, H // 2 :] = y[:, H // 2 :] + 0.1 * rng.standard_normal(y[:, H // 2 :].shape)
    cb = make_combiner("stacked").fit(f, y)
    assert cb.lam_ < 0.5
    assert (cb.step_weights_[0, :, 0] > 0.8).all() and (cb.step_weights_[-1, :, 1] > 0.8).all()
    assert np.mean((cb.forecast(f) - y) ** 2) < 0.5 * np.mean((f.mean(0) - y) ** 2)


def test_stacked_weights_follow_each_members_best_channels():
    """Member 0 is sharp on channel 0, member 1 on the others: per-channel weights win."""
    rng = np.random.default_rng(1)
    _, y, f, _, _ = problem(noise=(1.0, 1.0, 1.0), n=900)
    f = f.copy()
    f[0, ..., 0] = y[..., 0] + 0.1 * rng.standard_normal(y[..., 0].shape)
    f[1, ..., 1:] = y[..., 1:] + 0.1 * rng.standard_normal(y[..., 1:].shape)
    cb = make_combiner("stacked").fit(f, y)
    assert cb.pool_ < 0.5 and cb.lam_ < 0.5
    assert (cb.step_weights_[:, 0, 0] > 0.8).all() and (cb.step_weights_[:, 1:, 1] > 0.8).all()
    pooled = make_combiner("stacked", pool=1.0).fit(f, y)  # one vector per step for all
    np.testing.assert_allclose(pooled.step_weights_, pooled.step_weights_[:, :1].repeat(C, 1))
    assert np.mean((cb.forecast(f) - y) ** 2) < 0.5 * np.mean((pooled.forecast(f) - y) ** 2)


def test_stacked_shrinks_exchangeable_members_toward_the_mean():
    """Equally good members with independent errors: fitted weights only chase noise, so
    the held-out windows must choose strong shrinkage. At full shrinkage toward equal
    weights every pool gives the same forecast, and the tie goes to the simplest model."""
    _, y, f, _, _ = problem(noise=(1.0, 1.0, 1.0), n=400)
    cb = make_combiner("stacked").fit(f, y)
    assert cb.lam_ >= 0.5 and cb.pool_ > 0, (cb.lam_, cb.pool_)
    np.testing.assert_allclose(cb.step_weights_, 1 / 3, atol=0.1)
    tied = make_combiner("stacked", lam=1.0).fit(f, y)
    assert len(set(tied.inner_scores_.values())) == 1 and tied.pool_ == 1.0


def test_stacked_final_weights_use_the_latest_validation_windows():
    """The held-out windows choose the shrinkage, then the weights are refitted on all."""
    _, y, f, _, _ = problem(noise=(0.5, 1.0, 1.0))
    late, w = f.copy(), f.shape[1]
    late[1, -w // 10 :] = y[-w // 10 :]  # member 1 perfect on the last tenth (held out)
    before = make_combiner("stacked", lam=0.0, pool=0.0).fit(f, y).step_weights_
    after = make_combiner("stacked", lam=0.0, pool=0.0).fit(late, y).step_weights_
    assert after[..., 1].mean() > before[..., 1].mean() + 0.01


def test_lgbm_router_keeps_its_prior_when_features_are_noise(clear_best):
    # The greedy prior already routes to the clearly best member; trees grown on noise
    # features can only fit noise, so the held-out check must throw them away.
    x, y, f, feats, names = clear_best
    noise = np.random.default_rng(0).standard_normal(feats.shape)
    cb = make_combiner("learned_lgbm", seed=0, feature_names=names, member_names=["m0", "m1", "m2"])
    assert cb.fit(f, y, noise).rounds_ == 0


def test_lgbm_router_learns_the_prior_floor_away_from_a_member_worse_everywhere():
    # No feature singles out where member 0 is better (it is better everywhere), so no
    # tree grows: the floor's uniform share stayed (weight 0.9 on it, +82 % MSE over it
    # alone) until the floor was chosen on the inner split.
    _, y, f, feats, names = problem(noise=(0.1, 1.0))
    cb, half = fitted("learned_lgbm", f, y, feats, names)
    w = cb.weights(f[:, half:], feats[half:])
    assert w[..., 0].min() > 0.95 and cb.floor_ < 0.2, (w[..., 0].mean(), cb.describe())
    best_alone = np.mean((f[0, half:] - y[half:]) ** 2)
    assert np.mean((cb.forecast(f[:, half:], feats[half:]) - y[half:]) ** 2) < 1.02 * best_alone
    assert f"prior floor {cb.floor_:.2f}" in cb.describe()


def test_lgbm_router_gives_a_member_far_off_scale_no_weight():
    # a member forecasting 1e6 kept floor / M of the weight: a combined MSE of 1e10
    x, y, _, _, _ = problem(noise=(0.1, 1.0))
    rng = np.random.default_rng(1)
    f = np.stack([y + 0.1 * rng.standard_normal(y.shape), np.full_like(y, 1e6)])
    feats, names = window_features(x, f, [12], member_names=["m0", "m1"])
    cb, half = fitted("learned_lgbm", f, y, feats, names)
    w = cb.weights(f[:, half:], feats[half:])
    assert w[..., 1].max() < 1e-12 and cb.floor_ == 0.0
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=0, atol=1e-12)
    best_alone = np.mean((f[0, half:] - y[half:]) ** 2)
    assert np.mean((cb.forecast(f[:, half:], feats[half:]) - y[half:]) ** 2) < 1.02 * best_alone


def test_lgbm_router_prior_floor_choice_is_deterministic(clear_best):
    x, y, f, feats, names = clear_best
    a, half = fitted("learned_lgbm", f, y, feats, names)
    b, _ = fitted("learned_lgbm", f, y, feats, names)
    assert (a.floor_, a.rounds_, a.lam_) == (b.floor_, b.rounds_, b.lam_)
    np.testing.assert_array_equal(
        a.weights(f[:, half:], feats[half:]), b.weights(f[:, half:], feats[half:])
    )


def huge_member(value):
    """x, y, two members (targets + noise of 0.1, and a constant ``value``), features, names."""
    x, y, _, _, _ = problem(noise=(0.1, 1.0))
    rng = np.random.default_rng(1)
    f = np.stack([y + 0.1 * rng.standard_normal(y.shape), np.full_like(y, value)])
    feats, names = window_features(x, f, [12], member_names=["m0", "m1"])
    return x, y, f, feats, names


@pytest.mark.parametrize("value", [1e6, 1e30])
def test_torch_router_gives_a_member_far_off_scale_no_weight(value):
    # An Adam step moves a logit by about lr: from the 0.2 floor the net kept 0.005 of the
    # weight on a member forecasting 1e6 (combined MSE 3e7) until the floor was chosen on
    # the inner split; at 1e30 the float32 gram was inf and the weights the mean
    _, y, f, feats, names = huge_member(value)
    cb, half = fitted("learned_torch", f, y, feats, names)
    w = cb.weights(f[:, half:], feats[half:])
    assert w[..., 1].max() < 1e-6 and cb.floor_ == 0.0, (w[..., 1].max(), cb.describe())
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=0, atol=1e-12)
    best_alone = np.mean((f[0, half:] - y[half:]) ** 2)
    assert np.mean((cb.forecast(f[:, half:], feats[half:]) - y[half:]) ** 2) < 1.02 * best_alone
    assert f"prior floor {cb.floor_:.2f}" in cb.describe()


def test_torch_router_leans_on_a_member_clearly_best():
    _, y, f, feats, names = problem(noise=(0.1, 1.0))
    cb, half = fitted("learned_torch", f, y, feats, names)
    w = cb.weights(f[:, half:], feats[half:])
    assert w[..., 0].mean() > 0.95, (w[..., 0].mean(), cb.describe())
    best_alone = np.mean((f[0, half:] - y[half:]) ** 2)
    assert np.mean((cb.forecast(f[:, half:], feats[half:]) - y[half:]) ** 2) < 1.02 * best_alone


def test_torch_router_prior_floor_choice_is_deterministic_and_kept_for_the_refit(monkeypatch):
    from router import learned_torch as lt

    _, y, f, feats, names = huge_member(1e6)
    priors, real_train = [], lt.TorchRouter._train

    def train(self, part, epochs, m, prior, valid=None):
        priors.append(prior)
        return real_train(self, part, epochs, m, prior, valid=valid)

    monkeypatch.setattr(lt.TorchRouter, "_train", train)
    a, half = fitted("learned_torch", f, y, feats, names)
    b, _ = fitted("learned_torch", f, y, feats, names)
    assert (a.floor_, a.epochs_, a.lam_) == (b.floor_, b.epochs_, b.lam_)
    np.testing.assert_array_equal(
        a.weights(f[:, half:], feats[half:]), b.weights(f[:, half:], feats[half:])
    )
    # the gate trains from the first floor (0.2) on the inner split; the prior of floor 0
    # beats it there, and the refit on all windows is that prior alone (0 epochs)
    assert (a.floor_, a.epochs_) == (0.0, 0) and len(priors) == 4
    assert all(np.exp(p[:, 1]).min() > 0.05 for p in priors[0::2])
    assert all(np.exp(p[:, 1]).max() < 1e-300 for p in priors[1::2])
    with pytest.raises(ValueError, match="prior_floors"):
        lt.TorchRouter(prior_floors=(0.2, 1.5))


def test_torch_router_keeps_its_best_epoch_and_refits_for_that_many(monkeypatch):
    import torch

    from router import gate_net
    from router import learned_torch as lt

    x, y, f, feats, names = problem(noise=(1.0, 1.0, 1.0), n=400)  # nothing to learn
    scores, calls = [], []
    real_loss, real_train = gate_net.gate_loss, lt.TorchRouter._train

    def loss(*args):
        out = real_loss(*args)
        if not torch.is_grad_enabled():  # the held-out score of an epoch
            scores.append(float(out))
        return out

    def train(self, part, epochs, m, prior, valid=None):
        net, n = real_train(self, part, epochs, m, prior, valid=valid)
        calls.append((epochs, n, net, valid))
        return net, n

    monkeypatch.setattr(gate_net, "gate_loss", loss)
    monkeypatch.setattr(lt.TorchRouter, "_train", train)
    cb = make_combiner("learned_torch", seed=0, feature_names=names, member_names=["m0", "m1"])
    cb.fit(f[:2], y, feats)
    (_, best, net, valid), (refit_epochs, *_) = calls
    # scores[0] is the prior's (epoch 0), scores[k] epoch k's
    assert 0 < best < len(scores) - 1 and min(scores) < scores[-1]  # later epochs were worse
    assert scores[best] == min(scores) and refit_epochs == best == cb.epochs_
    with torch.no_grad():
        assert float(real_loss(net(valid[0], valid[1]), *valid[2:])) == min(scores)


def test_greedy_prior_keeps_every_member_reachable(clear_best):
    from router.combiners import GreedyCombiner, greedy_prior

    _, y, f, _, _ = clear_best
    terms = window_gram(f, y)
    greedy = GreedyCombiner().channel_weights(terms)
    assert (greedy[:, 1:] == 0).all()  # greedy alone drops the weak members
    p = np.exp(greedy_prior(terms, floor=0.3))
    np.testing.assert_allclose(p, 0.7 * greedy + 0.1, rtol=1e-12)
    # a floor of 0 drops them with a finite logit (LightGBM starts from it): no log(0)
    z = greedy_prior(terms, floor=0.0)
    assert np.isfinite(z).all() and (np.exp(z[:, 1:]) < 1e-300).all()


def test_past_errors_are_causal_and_correct(clear_best):
    x, y, f, _, _ = clear_best
    e = past_errors(x, f, smooth=1)
    assert np.isnan(e[:H]).all() and np.isfinite(e[H:]).all()
    t = H + 37  # window t - H's targets are window t's last H inputs
    np.testing.assert_allclose(e[t, :, 1], np.mean((f[1, t - H] - x[t, -H:]) ** 2, axis=0))
    np.testing.assert_allclose(e[t, :, 1], np.mean((f[1, t - H] - y[t - H]) ** 2, axis=0))


def test_features_never_look_past_the_window_input(clear_best):
    """Changing every row after window t's input leaves features of windows <= t unchanged."""
    x, y, f, feats, names = clear_best
    t = 300
    context = np.concatenate([x[0], x[1:, -1]], axis=0).copy()
    context[t + L :] = np.random.default_rng(5).standard_normal(context[t + L :].shape)
    x2 = sliding(context, L)
    feats2, names2 = window_features(x2, f, [12], member_names=["m0", "m1", "m2"])
    assert names2 == names
    np.testing.assert_array_equal(feats2[: t + 1], feats[: t + 1])
    assert not np.allclose(feats2[t + 1 :], feats[t + 1 :], equal_nan=True)


def test_unknown_router_is_a_user_error():
    from ensemble.errors import UserError

    with pytest.raises(UserError, match="unknown router"):
        make_combiner("nope")


def test_run_router_never_sees_test_targets(synth_csv, tmp_path):
    """Scrambling the test targets no window reads leaves weights and forecasts unchanged."""
    from experiments.cli import main

    def scramble(df):
        rng = np.random.default_rng(1)
        tail = df.iloc[-24:, 1:].to_numpy()
        df.iloc[-24:, 1:] = rng.permutation(tail.ravel()).reshape(tail.shape) * 3
        return df

    outs = []
    for tag, edit in (("plain", None), ("scrambled", scramble)):
        path = synth_csv(n=1400, edit=edit, name=f"{tag}.csv")
        out = tmp_path / tag
        argv = ["run", "--data-path", str(path), "--seq-len", "96", "--pred-len", "24"]
        argv += ["--members", "naive,snaive,window_mean", "--router", "learned"]
        assert main(argv + ["--out", str(out), "--quiet"]) == 0
        outs.append(out)
    res = [json.loads((o / "results.json").read_text(encoding="utf-8")) for o in outs]
    assert res[0]["test"]["ensemble"] != res[1]["test"]["ensemble"]  # the targets did change
    for key in ("mean", "median", "oracle"):
        assert key in res[0]["test"] and key in res[0]["val"]
    with np.load(outs[0] / "router_weights.npz") as a, np.load(outs[1] / "router_weights.npz") as b:
        np.testing.assert_array_equal(a["test"], b["test"])
        np.testing.assert_array_equal(a["val"], b["val"])
        np.testing.assert_array_equal(a["features_test"], b["features_test"])
        assert a["features_test"].shape[:2] == a["test"].shape[:2]
        assert len(a["feature_names"]) == a["features_test"].shape[-1]
    with np.load(outs[0] / "forecasts.npz") as a, np.load(outs[1] / "forecasts.npz") as b:
        np.testing.assert_array_equal(a["test/ensemble"], b["test/ensemble"])
        assert not np.array_equal(a["test/true"], b["test/true"])
    assert isinstance(pd.read_json(outs[0] / "results.json", typ="series")["router_info"], str)
    # every candidate is reported; the chosen one is the ensemble; none saw test targets
    every = [r["combiners"] for r in res]
    assert set(every[0]) == {registry_name(c) for c in (*CANDIDATES, *INCUMBENTS, *REFERENCES)}
    assert sum(v["chosen"] for v in every[0].values()) == 1
    chosen = next(v for v in every[0].values() if v["chosen"])
    assert chosen["test"] == res[0]["test"]["ensemble"]
    assert every[0]["mean"]["test_vs_mean"]["p"] == 1.0  # the mean against itself
    assert every[0]["stacked"]["val_cv_vs_incumbent"]["p"] == 1.0  # the incumbent, itself
    for name in every[0]:
        assert 0.0 <= every[0][name]["test_vs_mean"]["p"] <= 1.0
        assert every[0][name]["val_cv"] == every[1][name]["val_cv"]
        assert every[0][name]["val"] == every[1][name]["val"]
    assert "## Every combiner" in (outs[0] / "results.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------- exact values (audit)


def _prob(n=400, L=48, H=12, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((n, 2)).cumsum(0)
    x = sliding(s[:-H], L)
    y = sliding(s[L:], H)
    f = np.stack([y + k * rng.standard_normal(y.shape) for k in (0.3, 1.0)])
    return x, y, f, H


def test_past_errors_smoothing():
    x, y, f, H = _prob()
    e1 = past_errors(x, f, 1)
    for smooth in (5, 4 * H):
        e = past_errors(x, f, smooth)
        for t in (H, H + 2, H + 100):
            lo = max(H, t - smooth + 1)
            np.testing.assert_allclose(e[t], e1[lo : t + 1].mean(0), rtol=1e-10)


def test_router_long_feature_is_4H():
    x, y, f, H = _prob()
    feats, names = router_features(x, f, [12])
    e = np.log(past_errors(x, f, 4 * H) + 1e-8)
    np.testing.assert_allclose(feats[H:, :, names.index("long_log_mse")], e[H:].mean(-1), rtol=1e-5)


def test_router_features_of_a_constant_channel():
    """A dry spell: no season, and the members' spread relative to a zero std is undefined."""
    x, y, f, H = _prob()
    x = x.copy()
    x[..., 1] = -0.31  # channel 1 constant in every window
    feats, names = router_features(x, f, [12])
    col = names.index
    assert (feats[:, 1, col("season_strength_p12")] == 0).all()
    for name in ("log_spread", "dev_m0", "dev_m1"):
        assert np.isnan(feats[:, 1, col(name)]).all() and np.isfinite(feats[:, 0, col(name)]).all()
    assert feats[:, 0, col("season_strength_p12")].max() > 0


def test_router_features_of_short_windows_leave_out_only_the_periodicity_ones():
    # the periodicity package's features need 16 steps; a failure there must not be
    # swallowed on longer windows (it was turned into a warning)
    from periodicity.features import MIN_WINDOW

    x, y, f, H = _prob()
    _, names = router_features(x, f, [12])
    short, short_names = router_features(x[:, -(MIN_WINDOW - 1) :], f, [4])
    assert any(n.startswith("per_") for n in names)
    assert not any(n.startswith("per_") for n in short_names) and np.isfinite(short).any()


def test_a_failure_of_the_periodicity_features_is_not_hidden(monkeypatch):
    # it was logged as a warning, and the router silently trained without those features
    import periodicity.features

    def broken(x, periods):
        raise RuntimeError("a bug in window_features")

    monkeypatch.setattr(periodicity.features, "window_features", broken)
    x, y, f, H = _prob()
    with pytest.raises(RuntimeError, match="a bug in window_features"):
        router_features(x, f, [12])


def test_router_input_features_do_not_depend_on_chunking():
    # chunks are now bounded by values (W_chunk * L * C), not by a fixed 1024 windows
    from router.features import input_features

    x, y, f, H = _prob()
    by_values = input_features(x, H, [12])
    for chunk in (1, 7, 10_000):
        fixed = input_features(x, H, [12], chunk)
        for a, b in zip(by_values.blocks, fixed.blocks, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_router_input_features_on_threads_are_the_serial_ones(monkeypatch):
    import periodicity.features as pf
    from router.features import input_features

    x, y, f, H = _prob()
    monkeypatch.setattr(pf, "chunk_threads", lambda: 1)
    serial = input_features(x, H, [12], chunk=7)
    calls = []
    monkeypatch.setattr(pf, "chunk_threads", lambda: calls.append(1) or 2)
    threaded = input_features(x, H, [12], chunk=7)
    assert len(calls) == 2  # the series statistics and the periodicity features
    assert serial.names == threaded.names
    assert np.array_equal(serial.flat, threaded.flat)
    for a, b in zip(serial.blocks, threaded.blocks, strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_router_forecast_features_do_not_depend_on_chunking(monkeypatch):
    import router.features as rf

    x, y, f, H = _prob()
    whole, names = router_features(x, f, [12])
    monkeypatch.setattr(rf, "_chunk_windows", lambda h, c: 7)
    chunked, _ = router_features(x, f, [12])
    np.testing.assert_array_equal(whole, chunked)
    # the spread against its definition, on the whole array at once
    dev = np.sqrt(np.mean((f - f.mean(axis=0)) ** 2, axis=2))
    std = x.std(axis=1) + 1e-8
    np.testing.assert_allclose(whole[..., names.index("dev_m1")], dev[1] / std, rtol=1e-5)


def test_router_series_stats_use_the_window_end():
    L, p = 50, 12  # 4 whole cycles = the last 48 rows
    t = np.arange(L)
    z = np.sin(2 * np.pi * (t + 1) / p)
    z[:2] = 50.0  # junk in the 2 rows before the cycles
    feats, names = router_features(z[None, :, None], None, [p])
    xs = (z - z.mean()) / z.std()
    fd = dict(zip(names, feats[0, 0], strict=True))
    prof = xs[-48:].reshape(4, 12).mean(0)
    assert fd["season_now_p12"] == pytest.approx(prof[-1], rel=1e-5)
    assert fd["season_strength_p12"] == pytest.approx(1.0, abs=1e-4)
    rec = max(2, min(L // 4, L // 2))
    assert fd["recent_level"] == pytest.approx(xs[-rec:].mean(), rel=1e-5)
    assert fd["last_value"] == pytest.approx(xs[-1], rel=1e-5)
    assert fd["acf_p12"] == pytest.approx(np.mean(xs[12:] * xs[:-12]), rel=1e-5)

    # the trends and volatility against their formulas: least-squares slopes on t in
    # [-1, 1] of the whole window and of its last rec rows, differences' spreads, lag 1
    def slope(v):
        t = np.linspace(-1.0, 1.0, len(v))
        return v @ t / (t @ t)

    dx = np.diff(xs)
    want = {
        "trend": slope(xs),
        "recent_trend": slope(xs[-rec:]),
        "recent_vol_ratio": np.log(dx[-rec:].std() / dx.std()),
        "acf1": np.mean(xs[1:] * xs[:-1]),
        "log_roughness": np.log(dx.std()),
    }
    for name, value in want.items():
        assert fd[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


@pytest.mark.parametrize("name", list(COMBINERS))
def test_a_float32_stack_gives_the_numbers_of_its_float64_copy(name, clear_best):
    """The run keeps float32 members as a float32 stack (channel-major, as ``[..., ch]``
    lays them out); every combiner computes in float64 blocks of it, bit for bit."""
    _, y, f, feats, names = clear_best
    f32 = np.empty((f.shape[0], f.shape[3], f.shape[1], f.shape[2]), np.float32)
    f32 = f32.transpose(0, 2, 3, 1)
    f32[...] = f
    f64 = np.stack([np.asarray(m, np.float64) for m in f32])  # the float64 stack before
    assert hybrid.memory_order(f32) == hybrid.memory_order(f64) == [0, 3, 1, 2]
    y = y[..., list(range(C))]  # the run's targets: channels picked, channel-major
    a, _ = fitted(name, f32, y, feats, names)
    b, _ = fitted(name, f64, y, feats, names)
    np.testing.assert_array_equal(a.forecast(f32, feats), b.forecast(f64, feats))
    np.testing.assert_array_equal(a.weights(f32, feats), b.weights(f64, feats))
    assert a.describe() == b.describe()


def test_window_terms_in_blocks_of_a_float32_stack():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((3, 40, 5, 2)).astype(np.float32)
    y = rng.standard_normal((40, 5, 2))
    whole = window_gram(np.asarray(f, np.float64), y, block=40)
    for block in (1, 3, 40):
        for got, want in zip(window_gram(f, y, block=block), whole, strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_member_far_off_scale_does_not_merge_the_others_greedy_picks():
    # duplicates were judged on the largest member's scale: one member at 1e6 made every
    # other pair "identical" and split their picks evenly (0.92/0.08 became 0.5/0.5)
    from router.combiners import caruana_counts

    _, y, f, _, _ = problem(noise=(0.1, 0.6), n=400)
    f = f[:, :, :, :1].reshape(2, -1)
    yv = y[:, :, :1].reshape(-1)
    bad = np.full_like(f[0], 1e6)
    for members in (f, np.concatenate([f, bad[None]])):
        gram, b = members @ members.T / yv.size, members @ yv / yv.size
        counts = caruana_counts(gram, b, 25)
        assert counts[0] > 0.6 * 25 and counts[0] != counts[1], counts


def test_printed_rules_are_the_rules_applied():
    # thresholds printed to 3 digits (0.405 for 0.40524017) sent windows between the two
    # the other way: 6 of 19,999 ETTh1 rows got other weights than the printed rules
    import re

    rng = np.random.default_rng(3)
    w, h = 600, 4
    x = rng.uniform(0, 1, size=(w, 1, 1)) * np.pi  # one continuous feature, one channel
    y = rng.standard_normal((w, h, 1))
    good = x[:, 0, 0] > 1.2345678
    f = np.stack([y + 0.1 * rng.standard_normal(y.shape), y + 0.1 * rng.standard_normal(y.shape)])
    f[0, ~good] += 2.0  # member 0 good above the cut, member 1 below
    f[1, good] += 2.0
    cb = make_combiner("rules", feature_names=["x"], member_names=["a", "b"]).fit(f, y, x)

    def thresholds(node):
        return (
            []
            if "weights" in node
            else [node["threshold"], *thresholds(node["left"]), *thresholds(node["right"])]
        )

    applied = thresholds(cb.tree_)
    printed = [float(v) for v in re.findall(r"<= (\S+):", cb.rules())]
    assert applied and printed == applied
    assert all(len(repr(t).lstrip("0.").rstrip("0")) <= 6 for t in applied)  # short to read
    assert np.mean((cb.weights(f, x)[:, 0, 0] > 0.5) == good) > 0.9  # cut at a quantile


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("name", [n for n in COMBINERS if n not in ("mean", "median")])
def test_a_member_with_nan_or_inf_is_refused_by_name_not_weighed(name, bad, clear_best):
    # called directly (the run and HybridForecaster check first): NaN weights, a constant
    # pick of member 0 or a singular system (stacked's LinAlgError)
    _, y, f, feats, names = clear_best
    f = f.copy()
    f[1, 5, 2, 0] = bad
    cb = make_combiner(name, seed=0, feature_names=names, member_names=["m0", "m1", "m2"])
    with pytest.raises(ValueError, match=r"member\(s\) \[1\] .* hold NaN or inf"):
        cb.fit(f, y, feats)
    y = y.copy()
    y[3, 0, 0] = bad
    with pytest.raises(ValueError, match="validation targets hold NaN or inf"):
        cb.fit(clear_best[2], y, feats)


def test_shrinkage_ties_keep_the_simpler_mix():
    # uniform weights score alike at every lam: the mean (lam 1), as StackedCombiner does
    from router.objective import choose_shrinkage

    _, y, f, _, _ = problem(n=300)
    gram, b, yy = window_gram(f, y)
    w = np.full((gram.shape[0] * gram.shape[1], 3), 1 / 3)
    flat = [a.reshape(w.shape[0], *a.shape[2:]) for a in (gram, b, yy)]
    assert choose_shrinkage(w, *flat)[0] == 1.0
    one_hot = np.eye(3)[np.zeros(w.shape[0], dtype=int)]  # member 0, the best: no shrinkage
    assert choose_shrinkage(one_hot, *flat)[0] < 1.0


@pytest.mark.parametrize("share", [0.7, 0.3])
def test_printed_rules_say_where_a_missing_feature_goes(share):
    # a skill feature is missing on a split's first H windows; the router reads it as the
    # validation median, which the rule printed without saying so sent the other way
    rng = np.random.default_rng(0)
    w, h = 2000, 4
    u = rng.random(w)
    y = rng.normal(size=(w, h, 1))
    noise = np.where(u <= share, 0.1, 1.0)[:, None, None]
    f = np.stack([y + rng.normal(size=y.shape) * noise, y + rng.normal(size=y.shape) / noise / 10])
    x = u[:, None, None].copy()
    x[:h] = np.nan
    cb = make_combiner("rules", feature_names=["skill"], member_names=["a", "b"]).fit(f, y, x)
    text = cb.rules()
    got = cb.weights(f[:, :1], x[:1])[0, 0]
    leaf = cb.tree_["left" if "or skill is missing:" in text else "right"]["weights"]
    assert text.startswith("if skill <= ") and "weights" in cb.tree_["left"], text
    np.testing.assert_array_equal(got, leaf)
    full = make_combiner("rules", feature_names=["skill"], member_names=["a", "b"])
    x[:h] = 0.5
    assert "missing" not in full.fit(f, y, x).rules()  # never missing: nothing to say


@pytest.mark.parametrize("name", ["stacked", "stacked_tilted", "rules"])
def test_too_few_windows_to_hold_out_give_equal_weights_and_say_so(name, caplog):
    # as learned_lgbm and learned_torch: stacked went quietly to the mean, stacked_tilted
    # said "the inner split preferred it" with no inner split, rules fitted an unchecked mix
    import logging

    _, y, f, feats, names = problem(noise=(0.05, 1.0, 1.0), n=900)
    f, y, feats = f[:, :3], y[:3], feats[:3]  # 3 windows, H = 12: nothing to hold out
    cb = make_combiner(name, seed=0, feature_names=names, member_names=["m0", "m1", "m2"])
    with caplog.at_level(logging.WARNING):
        cb.fit(f, y, feats)
    np.testing.assert_allclose(cb.weights(f, feats), 1 / 3)
    assert "too few validation windows" in caplog.text
    assert caplog.text.count("too few validation windows") == 1  # said once
    assert "too few validation windows to hold any out" in cb.describe() or name == "stacked"


def test_learned_says_when_its_held_out_test_has_too_few_degrees_of_freedom():
    # at H >= 192 on ETT the held-out windows give the test 1 dof: a challenger 10 %
    # better passed 13-18 % of the time, and the description did not say so
    _, y, f, feats, names = problem(n=400)
    cb = make_combiner("learned", seed=0, feature_names=names, member_names=["m0", "m1", "m2"])
    cb.fit(f, y, feats)
    held = len(cb.held_losses_[cb.incumbent])
    assert held // (4 * H) <= 2
    assert f"with {held} held-out windows at H={H} the test has" in cb.describe()
    _, y, f, feats, names = problem(n=1500)  # enough windows: no such clause
    cb = make_combiner("learned", seed=0, feature_names=names, member_names=["m0", "m1", "m2"])
    assert "held-out windows at H=" not in cb.fit(f, y, feats).describe()


def test_a_split_on_the_channel_below_another_names_only_the_channels_that_reach_it():
    from router.rules import RuleRouter

    leaf = {"weights": np.array([1.0, 0.0]), "n": 1}
    r = RuleRouter(feature_names=["channel"], member_names=["a", "b"], channel_names=list("ABCD"))
    r.tree_ = {  # channel <= 0 (A) | else: channel <= 2 (B, C: A went left above)
        "feature": 0,
        "threshold": 0.5,
        "left": leaf,
        "right": {"feature": 0, "threshold": 2.5, "left": leaf, "right": leaf},
    }
    tests = [ln.strip() for ln in r.rules().splitlines() if ln.strip().startswith("if")]
    assert tests == ["if channel in {A}:", "if channel in {B, C}:"]


def test_stacked_tilted_says_why_it_stays_stacked_without_recent_skill_features(caplog):
    # one member has no *_rel_* columns (nor does a Python user's call without
    # feature_names): it said "too few validation windows" on 2857 windows
    import logging

    _, y, f, feats, names = problem(noise=(0.05, 1.0, 1.0), n=400)
    _, y1, f1, feats1, names1 = problem(noise=(0.05,), n=400)
    with caplog.at_level(logging.WARNING):
        one = make_combiner("stacked_tilted", feature_names=names1).fit(f1, y1, feats1)
    assert "no recent-skill" in one.describe() and "a single member" in one.describe()
    assert "too few validation windows" not in one.describe() + caplog.text
    with caplog.at_level(logging.WARNING):
        unnamed = make_combiner("stacked_tilted").fit(f, y, feats)
    assert "no feature_names were given" in unnamed.describe()
    assert "without feature_names" in caplog.text  # the user who forgot them is told
    short = make_combiner("stacked_tilted", feature_names=names).fit(f[:, :3], y[:3], feats[:3])
    assert "too few validation windows to hold any out" in short.describe()


@pytest.mark.parametrize("name", ["learned_lgbm", "learned_torch", "learned"])
def test_learned_routers_give_a_single_member_weight_one(name, clear_best):
    # called directly (the CLI refuses it first): einsum failed on the [C, 1] prior
    x, y, f, feats, names = clear_best
    cb = make_combiner(name, seed=0, feature_names=names, member_names=["m0"])
    cb.fit(f[:1], y, feats)
    np.testing.assert_array_equal(cb.weights(f[:1], feats), 1.0)
    np.testing.assert_allclose(cb.forecast(f[:1], feats), f[0])
    assert "a single member" in cb.describe()


def test_rules_draw_the_rows_of_wide_data_with_the_runs_seed(clear_best, monkeypatch):
    # every --seed drew the same rows: make_combiner dropped the seed
    import router.objective

    x, y, f, feats, names = clear_best
    monkeypatch.setattr(router.objective, "MAX_ROUTER_ROWS", 300)
    scores = [
        make_combiner("rules", seed=s, feature_names=names).fit(f, y, feats).inner_scores_
        for s in (0, 0, 1)
    ]
    assert scores[0] == scores[1] and scores[0] != scores[2]


@pytest.mark.parametrize("name", ["learned_lgbm", "learned_torch"])
def test_learned_routers_say_their_inner_val_mse_is_optimistic(name, clear_best):
    # the held-out windows chose the stopping point and shrinkage (and the lgbm router's
    # prior floor): the best of those choices
    x, y, f, feats, names = clear_best
    cb, _ = fitted(name, f, y, feats, names)
    assert "the stopping point and shrinkage: optimistic" in cb.describe()


@pytest.mark.parametrize("name", ["greedy", "best", "inverse_error"])
def test_unshrunk_rules_warn_on_too_few_validation_windows_and_keep_their_weights(name, caplog):
    # stacked, rules and the learned routers said so and fell back; these fitted 2 windows
    import logging

    _, y, f, feats, _ = problem(noise=(0.05, 1.0, 1.0), n=400)
    with caplog.at_level(logging.WARNING):
        few = make_combiner(name).fit(f[:, :2], y[:2])
    assert caplog.text.count(f"{name} router: too few validation windows (2)") == 1
    assert few.weights(f[:, :2])[..., 0].min() > 0.5  # still the fitted weights
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make_combiner(name).fit(f, y)  # enough windows: nothing said
    assert "too few" not in caplog.text


def greedy_reference(f, y, n_iter):
    """Caruana's loop written out: add the member whose running average has the lowest MSE."""
    counts = np.zeros(len(f), dtype=int)
    total = np.zeros_like(y)
    for it in range(n_iter):
        loss = [np.mean(((total + fk) / (it + 1) - y) ** 2) for fk in f]
        k = int(np.argmin(loss))  # the first of equal losses, as the code's argmin
        counts[k] += 1
        total = total + f[k]
    return counts


def test_greedy_counts_are_the_plain_selection_loop():
    from router.combiners import caruana_counts

    # members biased to both sides of y and noisy: the best mixture needs several of them
    rng = np.random.default_rng(4)
    y = rng.standard_normal(200)
    f = np.stack(
        [
            y + 0.8 + 0.3 * rng.standard_normal(200),
            y - 0.5 + 0.4 * rng.standard_normal(200),
            y + 0.9 * rng.standard_normal(200),
            0.5 * y,
        ]
    )
    want = greedy_reference(f, y, 20)
    assert (want > 0).sum() >= 3, want  # a mixture, not one member picked throughout
    got = caruana_counts(f @ f.T / y.size, f @ y / y.size, 20)
    np.testing.assert_array_equal(got, want)
    # the combiner's weights are those counts (one channel, windows of 4 steps)
    fw, yw = f.reshape(4, 50, 4, 1), y.reshape(50, 4, 1)
    g = make_combiner("greedy", n_iter=20).fit(fw, yw)
    np.testing.assert_array_equal(g.channel_weights_[0], want / 20)
