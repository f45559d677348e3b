"""LightGBM member: accuracy against naive, shapes, trajectory basis, save/load, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from classical.lightgbm_member import LightGBMForecaster, trajectory_basis
from classical.naive import NaiveLast
from experiments import registry

SMALL = dict(
    n_components=4, num_boost_round=60, early_stopping=10, min_data_in_leaf=20, progress=False
)


@pytest.fixture(scope="module")
def splits(small_synth_splits):
    return small_synth_splits(channels=3)


@pytest.fixture(scope="module")
def model(splits):
    return LightGBMForecaster(96, 24, periods=[24, 48], **SMALL).fit(splits.train, splits.val)


def _mse(member, split) -> float:
    return float(((member.predict(split.windows()) - split.targets()) ** 2).mean())


def test_beats_last_value_naive(splits, model):
    assert _mse(model, splits.test) < 0.5 * _mse(NaiveLast(), splits.test)


def test_shapes_and_basis(splits, model):
    out = model.predict(splits.test.windows())
    assert out.shape == (splits.test.n_windows, 24, 3) and out.dtype == np.float32
    np.testing.assert_allclose(model.basis.T @ model.basis, np.eye(4), atol=1e-8)


def test_basis_is_leading_right_singular_vectors(splits, model):
    """The Gram-matrix basis equals the SVD's leading right singular vectors up to sign
    (the synthetic series' sine/cosine pairs have singular values 0.1 % apart: a wrong
    order or an ascending pick would not pass), with the largest-|.| entry positive."""
    _, r = model._rows(splits.train, model.max_train_rows, np.random.default_rng(model.seed))
    _, s, vt = np.linalg.svd(r, full_matrices=False)
    k, basis = model.n_components, model.basis
    signs = np.sign((basis * vt[:k].T).sum(axis=0))
    np.testing.assert_allclose(basis, vt[:k].T * signs, atol=1e-8)
    np.testing.assert_allclose(basis.T @ basis, np.eye(k), atol=1e-10)
    assert (basis[np.abs(basis).argmax(axis=0), np.arange(k)] > 0).all()
    _, explained = trajectory_basis(r, k)
    assert explained == pytest.approx((s[:k] ** 2).sum() / (s**2).sum(), rel=1e-10)


def test_features_built_a_block_at_a_time_are_the_whole_series_features(splits, model, monkeypatch):
    """Rows drawn from features built in blocks of a few windows and forecasts made a
    block at a time, equal those of one block: every drawn row is the right (window,
    channel) pair, under M and under MS (the target's rows only), with and without a
    subsample."""
    import classical.lightgbm_member as member

    def fit_predict(**kw):
        m = LightGBMForecaster(96, 24, periods=[24, 48], **SMALL, **kw)
        rows = m._rows(splits.train, m.max_train_rows, np.random.default_rng(0), (2, 0))
        return rows, m.fit(splits.train, splits.val).predict(splits.test.windows())

    whole = [fit_predict(), fit_predict(max_train_rows=500)]
    assert model._block(3) >= splits.train.n_windows  # the fixture's is one block
    monkeypatch.setattr(member, "BLOCK_VALUES", 5000)  # a few windows a block
    assert 2 <= model._block(3) <= 30 < splits.test.n_windows
    blocked = [fit_predict(), fit_predict(max_train_rows=500)]
    for ((x0, r0), p0), ((x1, r1), p1) in zip(whole, blocked, strict=True):
        np.testing.assert_array_equal(x1, x0)
        np.testing.assert_array_equal(r1, r0)
        np.testing.assert_array_equal(p1, p0)
    (x, _), _ = whole[1]
    assert len(x) == 500 and set(np.unique(x[:, -1])) == {0, 2}  # the channel-id feature


def test_features_match_direct_computation(splits, model):
    """Running-sum features equal the same statistics computed window by window."""
    w = splits.test.windows()
    feats = model._features(model._sums(w.context, w.dates, w.n), 0, w.n).reshape(3, w.n, -1)
    names = model.feature_names
    x = w.x  # [W, L, C]
    level = x[:, -24:, :].mean(axis=1)
    for j, name in [(names.index("lag1"), 0), (names.index("lag5"), 4)]:
        np.testing.assert_allclose(feats[1, :, j], x[:, -1 - name, 1] - level[:, 1], atol=1e-5)
    k = names.index("win_std")
    np.testing.assert_allclose(feats[2, :, k], x[:, :, 2].std(axis=1), atol=1e-4)
    k = names.index("p24_slope")
    t = np.arange(24)
    slope = np.polyfit(t, x[:, -24:, 0].T, 1)[0]
    np.testing.assert_allclose(feats[0, :, k], slope, atol=1e-5)
    # the calendar of each window's first forecast step, read off the dataset's own dates
    first = splits.dataset.dates[w.start + w.origins + 1]
    tod = (first.hour * 60 + first.minute).to_numpy() / 1440.0
    np.testing.assert_allclose(feats[1, :, names.index("time_of_day")], tod, atol=1e-6)
    np.testing.assert_array_equal(feats[2, :, names.index("day_of_week")], first.day_of_week)


def test_save_load_roundtrip_and_seed(splits, model, tmp_path, monkeypatch):
    import lightgbm as lgb

    # LightGBM's own file I/O opens C:\\Users\\张三\\... in the ANSI code page on Windows
    def refused(*args, **kwargs):
        raise AssertionError("LightGBM's C++ file I/O used")

    monkeypatch.setattr(lgb.Booster, "save_model", refused)
    folder = tmp_path / "张三" / "m"
    model.save(folder)
    booster = lgb.Booster

    def from_text_only(*args, **kwargs):
        if kwargs.get("model_file") is not None:
            raise AssertionError("LightGBM's C++ file I/O used")
        return booster(*args, **kwargs)

    monkeypatch.setattr(lgb, "Booster", from_text_only)
    loaded = LightGBMForecaster.load(folder)
    w = splits.val.windows()
    np.testing.assert_allclose(loaded.predict(w), model.predict(w), atol=1e-6)
    again = LightGBMForecaster(96, 24, periods=[24, 48], **SMALL).fit(splits.train, splits.val)
    np.testing.assert_array_equal(again.predict(w), model.predict(w))


def test_registry_builds_with_params():
    ctx = registry.MemberContext(96, 24, 3, "h", [24, 168], 0, "synth")
    m = registry.build("lightgbm@components=8@lr=0.1", ctx)
    assert (m.n_components, m.learning_rate, m.periods) == (8, 0.1, [24])


def test_too_few_rows_is_one_line(splits):
    # One train window of one channel: one row, on which LightGBM fails deep inside.
    import dataclasses

    from ensemble.errors import UserError

    L, H = splits.train.seq_len, splits.train.pred_len
    one = [
        dataclasses.replace(s, data=s.data[:, :1], columns=s.columns[:1])
        for s in (splits.train, splits.val)
    ]
    train = dataclasses.replace(one[0], data=one[0].data[: L + H])
    assert train.n_windows == 1
    with pytest.raises(UserError, match="1 train rows .* are too few"):
        LightGBMForecaster(L, H, **SMALL).fit(train, one[1])


def test_early_stopping_watches_the_validation_rows(splits, model):
    # Same train rows, validation rows shuffled (nothing left to learn there): the boosters
    # must stop early, where on the real validation rows they use every round.
    import dataclasses

    shuffled = np.random.default_rng(1).permutation(splits.val.data)
    other = LightGBMForecaster(96, 24, periods=[24, 48], **SMALL).fit(
        splits.train, dataclasses.replace(splits.val, data=shuffled)
    )
    assert all(b.best_iteration == SMALL["num_boost_round"] for b in model.boosters)
    assert all(b.best_iteration < SMALL["num_boost_round"] for b in other.boosters)


def test_ms_fits_the_target_as_s_does(synth_csv, monkeypatch):
    # Under MS only the target's rows train and early-stop the model, as the other members'
    # MS loss is the target's (it used to learn from, and stop on, every channel)
    from ensemble.data import load_dataset, make_splits

    path = synth_csv(n=1500, channels=3)
    ms, s = (make_splits(load_dataset(data_path=path, features=f), 96, 24) for f in ("MS", "S"))
    kw = dict(periods=[24], **SMALL)
    rows, seen = LightGBMForecaster._rows, []

    def spy(self, split, limit, rng, channels=None):
        x, r = rows(self, split, limit, rng, channels)
        seen.append((split.name, len(x)))
        return x, r

    monkeypatch.setattr(LightGBMForecaster, "_rows", spy)
    fc_ms = LightGBMForecaster(96, 24, **kw).fit(ms.train, ms.val).predict(ms.test.windows())
    assert seen == [("train", ms.train.n_windows), ("val", ms.val.n_windows)]
    fc_s = LightGBMForecaster(96, 24, **kw).fit(s.train, s.val).predict(s.test.windows())
    np.testing.assert_allclose(fc_ms[..., 2], fc_s[..., 0], atol=1e-5)


def test_ms_forecasts_only_the_target_with_the_boosters(synth_csv, tmp_path, monkeypatch):
    # every channel went through every booster though only the target is scored (minutes
    # per booster on 321 channels); the others get each window's last input, as ARIMA's
    from ensemble.data import load_dataset, make_splits

    path = synth_csv(n=1500, channels=3)
    ms = make_splits(load_dataset(data_path=path, features="MS"), 96, 24)
    model = LightGBMForecaster(96, 24, periods=[24], **SMALL).fit(ms.train, ms.val)
    features, built = LightGBMForecaster._features, []

    def spy(self, sums, lo, hi):
        built.append(sums.x.shape[1])
        return features(self, sums, lo, hi)

    monkeypatch.setattr(LightGBMForecaster, "_features", spy)
    windows = ms.test.windows()
    fc = model.predict(windows)
    assert set(built) == {1}  # the target's features alone
    last = windows.context[95 : 95 + windows.n, :2].astype(np.float32)
    np.testing.assert_array_equal(fc[:, :, :2], np.repeat(last[:, None], 24, axis=1))
    model.save(tmp_path / "m")
    np.testing.assert_array_equal(LightGBMForecaster.load(tmp_path / "m").predict(windows), fc)


def test_features_of_a_made_up_period_are_said(caplog):
    from experiments import registry

    ctx = registry.MemberContext(96, 24, 3, "D", [], 0, "synth", workdir="/tmp/lgbm_none")
    with caplog.at_level("WARNING"):
        m = registry.build("lightgbm", ctx)
    assert m.periods == [24]
    assert "lightgbm falls back to 24-step level and profile features: no seasonal" in caplog.text
    assert "set --periods N when you know the period" in caplog.text
    caplog.clear()
    short = registry.MemberContext(12, 4, 3, "h", [168], 0, "synth", workdir="/tmp/lgbm_long")
    with caplog.at_level("WARNING"):
        assert registry.build("lightgbm", short).periods == [12]
    assert "12-step level and profile features: every period (168) is longer" in caplog.text
    assert "use a longer --seq-len" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # a period that fits: nothing to say
        registry.build("lightgbm", registry.MemberContext(96, 24, 3, "h", [24], 0, "synth"))
    assert "falls back" not in caplog.text


def test_the_python_apis_members_are_told_its_own_way_to_give_periods(caplog):
    from experiments import registry

    ctx = registry.MemberContext(96, 24, 3, "D", [], 0, "custom")  # no folder: the API
    with caplog.at_level("WARNING"):
        registry.build("lightgbm", ctx)
    assert "set HybridForecaster(periods=[N]) when you know the period" in caplog.text
