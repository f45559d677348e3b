"""TimeLLMForecaster on tiny random backbones and synthetic data; out-of-fold injection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import timellm.backbone as backbone_mod
from ensemble.errors import UserError
from timellm import inject as inj
from timellm.member import TimeLLMForecaster

L, H = 32, 8


@pytest.fixture(autouse=True)
def tiny_backbone(monkeypatch):
    """Every spec loads a 1-layer, width-32 random LLaMA (a decoder) or BERT-like MiniLM."""
    real = backbone_mod.load_backbone

    def fake(spec="minilm", **kw):
        if spec == "minilm":  # keep the real bidirectional path, one layer
            return real("minilm", llm_layers=1, device=kw.get("device"))
        return backbone_mod.random_backbone(
            "llama",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )

    monkeypatch.setattr(backbone_mod, "load_backbone", fake)


@pytest.fixture
def splits(synth_splits):
    return synth_splits(seq_len=L, pred_len=H, n=600, channels=2)


def member(**kw) -> TimeLLMForecaster:
    base = dict(
        dataset="ETTh1",
        backbone="llama-random",
        seq_len=L,
        pred_len=H,
        d_model=8,
        d_ff=16,
        n_heads=2,
        num_prototypes=16,
        epochs=2,
        patience=0,
        batch_size=16,
        lr=1e-2,
        train_stride=4,
        val_stride=3,
        periods=[24, 12],
        progress=False,
    )
    return TimeLLMForecaster(**{**base, **kw})


def test_fit_predict_every_window_and_frozen_backbone(splits):
    m = member()
    m.build()
    before = {k: v.clone() for k, v in m.model.llm.state_dict().items()}
    m.fit(splits.train, splits.val)
    # fit() rebuilds from the same seed: the backbone it trained with is bit-identical to
    # a fresh load, and to itself before training.
    for k, v in m.model.llm.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(not p.requires_grad for p in m.model.llm.parameters())
    for split in (splits.val, splits.test):
        out = m.predict(split.windows())
        assert out.shape == (split.n_windows, H, split.n_channels)
        assert out.dtype == np.float32 and np.isfinite(out).all()


def test_training_beats_the_untrained_model(splits):
    m = member(epochs=3, train_stride=2)
    m.build()
    untrained = m.predict(splits.val.windows())
    m.fit(splits.train, splits.val)
    trained = m.predict(splits.val.windows())
    truth = splits.val.targets()
    assert ((trained - truth) ** 2).mean() < ((untrained - truth) ** 2).mean()


def test_bidirectional_backbone_minilm(splits):
    m = member(backbone="minilm", d_ff=16, epochs=1)
    m.fit(splits.train, splits.val)
    assert m.predict(splits.test.windows()).shape == (splits.test.n_windows, H, 2)


def test_save_load_roundtrip_without_backbone_weights(splits, tmp_path):
    m = member(epochs=1).fit(splits.train, splits.val)
    m.save(tmp_path / "model")
    state = torch.load(tmp_path / "model" / "trainable.pt", weights_only=True)
    assert state and not any(k.startswith("llm.") for k in state)
    again = TimeLLMForecaster.load(tmp_path / "model")
    w = splits.test.windows()
    np.testing.assert_array_equal(again.predict(w), m.predict(w))


def test_resume_through_the_member(splits, tmp_path):
    first = member(workdir=str(tmp_path)).fit(splits.train, splits.val)
    assert (tmp_path / "checkpoint.pt").is_file()
    resumed = member(workdir=str(tmp_path), resume=True).fit(splits.train, splits.val)
    assert len(resumed.history) == 2  # both epochs come from the checkpoint, none rerun
    w = splits.val.windows()
    np.testing.assert_array_equal(resumed.predict(w), first.predict(w))
    with pytest.raises(UserError, match="different settings"):
        member(workdir=str(tmp_path), resume=True, lr=0.5).fit(splits.train, splits.val)


def test_prompts_per_window_and_channel(splits):
    m = member(inject=["ridge"])
    m.fit(splits.train, splits.val)
    x = splits.val.inputs()[:3]
    fc = {"ridge": m.injectors["ridge"].predict(x)}
    texts = inj.summaries(x, fc)
    assert len(texts) == 3 * 2 and texts[0].startswith("Classical forecasts: ridge level")
    assert texts[0] != texts[1]  # each channel gets its own summary
    ids, mask = m._prompts(x, texts)
    assert ids.shape[:2] == (3, 2) and mask.shape == ids.shape
    out = m.predict(splits.test.windows())
    assert out.shape == (splits.test.n_windows, H, 2)


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError):
        member(precision="fp16")
    with pytest.raises(UserError):
        member(inject=["arima"])
    with pytest.raises(UserError):
        member(train_stride=0)


def test_registry_factory(tmp_path):
    from experiments import registry

    ctx = registry.MemberContext(
        seq_len=L,
        pred_len=H,
        n_channels=2,
        freq="h",
        periods=[24],
        seed=3,
        dataset="ETTh1",
        params={"llm_layers": 1, "inject": "ridge+dlinear"},
        workdir=str(tmp_path),
    )
    m = registry.build("timellm@train_stride=8", ctx)
    assert m.name == "timellm@train_stride=8"
    assert (m.train_stride, m.llm_layers, m.seed, m.periods) == (8, 1, 3, [24])
    assert m.inject == ["ridge", "dlinear"] and m.workdir == str(tmp_path)
    ctx.params = {"no_such_key": 1}
    with pytest.raises(UserError, match="no_such_key"):
        registry.build("timellm", ctx)


# ----------------------------------------------------------------------------- out-of-fold


@pytest.mark.parametrize("n,folds", [(200, 5), (97, 3), (500, 7)])
def test_oof_plan_never_fits_on_a_window_touching_a_predicted_target(n, folds):
    span = L + H
    plan = inj.oof_plan(n, L, H, folds)
    assert np.array_equal(np.concatenate([b for b, _ in plan]), np.arange(n))
    for block, allowed in plan:
        assert len(allowed) > 0
        # the predicted windows' targets: rows [i + L, i + L + H)
        tgt_lo, tgt_hi = block[0] + L, block[-1] + span
        fit_lo, fit_hi = allowed, allowed + span  # each fitted window's rows
        assert not np.any((fit_lo < tgt_hi) & (fit_hi > tgt_lo))


class Spy:
    """An injector that records the rows it was fitted on."""

    name = "spy"
    log: list[tuple[np.ndarray, np.ndarray]] = []

    def fit(self, series, starts):
        rows = (np.asarray(starts)[:, None] + np.arange(L + H)).ravel()
        self.rows = np.unique(rows)
        return self

    def predict(self, x):
        Spy.log.append((self.rows, x.copy()))
        return np.zeros((x.shape[0], H, x.shape[2]), np.float32)


def test_out_of_fold_predictions_come_from_models_blind_to_the_targets():
    rng = np.random.default_rng(0)
    series = rng.standard_normal((400, 2))
    n = 400 - L - H + 1
    wanted = np.arange(0, n, 3)
    Spy.log = []
    out = inj.out_of_fold(Spy, series, n, wanted, L, H, n_folds=4)
    assert out.shape == (len(wanted), H, 2)
    seen = 0
    for rows, x in Spy.log:
        # identify each predicted window by its input values
        for xi in x:
            start = int(np.flatnonzero(np.all(np.isclose(series[: n, 0], xi[0, 0]), axis=-1))[0])
            assert np.allclose(series[start : start + L], xi)
            target_rows = np.arange(start + L, start + L + H)
            assert not np.isin(target_rows, rows).any()
            seen += 1
    assert seen == len(wanted)


def test_ridge_injector_learns_a_linear_series():
    t = np.arange(600, dtype=np.float64)
    series = np.stack([np.sin(2 * np.pi * t / 24), np.cos(2 * np.pi * t / 12)], axis=1)
    model = inj.RidgeLinear(L, H).fit(series, np.arange(0, 400))
    x = inj.gather(series, np.arange(450, 500), 0, L)
    y = inj.gather(series, np.arange(450, 500), L, H)
    assert np.abs(model.predict(x) - y).max() < 1e-2
