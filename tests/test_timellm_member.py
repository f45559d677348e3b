"""TimeLLMForecaster on tiny random backbones and synthetic data; out-of-fold injection."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from conftest import TINY_LLAMA, patch_tiny_backbone, tiny_timellm

import timellm.member
from ensemble.errors import UserError
from timellm import inject as inj
from timellm.backbone import load_backbone, random_backbone
from timellm.member import TimeLLMForecaster

L, H = 32, 8

pytestmark = pytest.mark.usefixtures("tiny_backbone")


def member(**kw) -> TimeLLMForecaster:
    return tiny_timellm(**{"seq_len": L, "pred_len": H, **kw})


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    from conftest import synthetic_frame

    from ensemble.data import load_dataset, make_splits

    path = tmp_path_factory.mktemp("data") / "synth.csv"
    synthetic_frame(n=400, channels=2).to_csv(path, index=False)
    return make_splits(load_dataset(data_path=path), L, H)


@pytest.fixture(scope="module")
def fitted(splits, tmp_path_factory):
    """One member fitted once (3 epochs, checkpoints in a workdir) for several tests."""
    workdir = tmp_path_factory.mktemp("work")
    with pytest.MonkeyPatch.context() as mp:
        patch_tiny_backbone(mp)
        m = member(workdir=str(workdir), epochs=3).fit(splits.train, splits.val)
    return m, workdir


def test_predict_covers_every_window(fitted, splits):
    m, _ = fitted
    for split in (splits.val, splits.test):
        out = m.predict(split.windows())
        assert out.shape == (split.n_windows, H, split.n_channels)
        assert out.dtype == np.float32 and np.isfinite(out).all()


def test_a_kept_partial_forecast_is_only_resumed_by_the_same_model_and_windows(fitted, splits):
    m, workdir = fitted
    test, val = m.prompt_set(splits.test.windows()), m.prompt_set(splits.val.windows())
    key = m._predict_key(test)
    assert m._predict_key(test) == key and m._predict_key(val) != key
    weight = m.model.trainable_parameters()[0]
    kept = weight.detach().clone()
    with torch.no_grad():
        weight[(0,) * weight.ndim] += 1.0  # retrained: another model
        try:
            assert m._predict_key(test) != key
        finally:
            weight.copy_(kept)  # exactly: the module's other tests use this model
    m.predict(splits.test.windows())
    assert not list(workdir.glob("predict.*.partial.npz"))  # no partial after a finish


def test_a_val_forecast_leaves_an_interrupted_test_forecast_to_resume(fitted, splits, monkeypatch):
    import timellm.trainer as trainer_mod

    m, workdir = fitted
    monkeypatch.setattr(m, "eval_batch_size", 8)  # several batches of test windows
    full = m.predict(splits.test.windows())
    m._drop_finished()  # the finished forecast would be read back: none is interrupted
    beat = trainer_mod.Trainer._heartbeat

    def killed_in_the_second_batch(self, what, total, first):  # each batch is kept
        def at(i):
            if i > first + 1 and stop:
                raise KeyboardInterrupt  # the job's time limit, say
            return True

        return at

    stop = True
    monkeypatch.setattr(trainer_mod.Trainer, "_heartbeat", killed_in_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        m.predict(splits.test.windows())
    stop = False
    other = workdir / "predict.0123456789ab.partial.npz"  # of weights fitted before
    np.savez(other, done=np.zeros((8, H, 2)), key=np.array("feedfacefeedface-0123456789ab"))
    (workdir / "predict.partial.npz").write_bytes(b"an earlier version's")
    m.predict(splits.val.windows())  # the rerun's val forecast, to the end
    assert not other.exists() and not (workdir / "predict.partial.npz").exists()
    assert len(list(workdir.glob("predict.*.partial.npz"))) == 1  # the test forecast's
    done = []
    monkeypatch.setattr(
        trainer_mod.Trainer, "_heartbeat", lambda self, *a: done.append(a[2]) or beat(self, *a)
    )
    np.testing.assert_array_equal(m.predict(splits.test.windows()), full)
    assert done == [1]  # the test forecast went on after the batch it kept
    assert not list(workdir.glob("predict.*.partial.npz"))
    assert not list(workdir.glob("predict.*.done.npz"))  # none kept: `_drop_finished`


def test_a_finished_val_forecast_is_not_made_again_until_the_member_is_saved(
    fitted, splits, monkeypatch, caplog, tmp_path
):
    import shutil

    m, fitted_in = fitted
    workdir = shutil.copytree(fitted_in, tmp_path / "work")  # the module's folder stays
    for path in workdir.glob("predict.*.npz"):
        path.unlink()
    val = splits.val.windows()

    def rerun(**kw) -> TimeLLMForecaster:  # a job resumed from its checkpoint: same weights
        return member(workdir=str(workdir), epochs=3, **kw).fit(splits.train, splits.val)

    expect = rerun().predict(val)  # finished, then killed before or during the test one
    batches = []
    model_type = type(m.model)
    forward = model_type.forward
    monkeypatch.setattr(model_type, "forward", lambda *a: batches.append(1) or forward(*a))
    caplog.set_level(logging.INFO, logger="timellm")
    again = rerun()
    batches.clear()
    np.testing.assert_array_equal(again.predict(val), expect)
    assert not batches  # read back, not forecast again
    assert "resuming: validation forecast already done" in caplog.text
    # never one of other weights (a member fitted again), nor of another batch size
    weight = again.model.trainable_parameters()[0]
    with torch.no_grad():
        weight[(0,) * weight.ndim] += 1.0
    assert not np.allclose(again.predict(val), expect) and batches
    batches.clear()
    np.testing.assert_array_equal(rerun().predict(val), expect)  # not the other weights'
    assert batches
    batches.clear()
    smaller = rerun(eval_batch_size=7)
    np.testing.assert_allclose(smaller.predict(val), expect, rtol=1e-5, atol=1e-6)
    assert batches
    # removed once the member is saved (the run writes its forecasts next)
    smaller.save(tmp_path / "model")
    assert not list(workdir.glob("predict.*.npz"))
    batches.clear()
    smaller.predict(val)
    assert batches and not list(workdir.glob("predict.*.npz"))  # nor kept after


def test_the_best_epochs_val_forecast_is_kept_as_a_finished_one(
    splits, monkeypatch, caplog, tmp_path
):
    # val_stride=1 (the default): the val forecast comes from the best epoch, and was not
    # kept, so a job killed in the test forecast forecast every val window again
    workdir, val = tmp_path / "w", splits.val.windows()
    first = member(workdir=str(workdir), epochs=2, val_stride=1).fit(splits.train, splits.val)
    assert first._val_forecast is not None  # from the best epoch
    expect = first.predict(val)
    assert list(workdir.glob("predict.*.done.npz"))
    again = member(workdir=str(workdir), epochs=2, val_stride=1).fit(splits.train, splits.val)
    assert again._val_forecast is None  # resumed from the checkpoint: no epoch run
    batches = []
    forward = type(again.model).forward
    monkeypatch.setattr(type(again.model), "forward", lambda *a: batches.append(1) or forward(*a))
    caplog.set_level(logging.INFO, logger="timellm")
    np.testing.assert_array_equal(again.predict(val), expect)
    assert not batches and "resuming: validation forecast already done" in caplog.text


def test_val_forecasts_of_the_best_epoch_are_not_predicted_again(fitted, splits, monkeypatch):
    val, test = splits.val.windows(), splits.test.windows()
    strided, _ = fitted  # its epochs scored every 2nd val window only: it must predict
    m = member(epochs=2, val_stride=1).fit(splits.train, splits.val)
    again = m.predict_set(m.prompt_set(val))
    calls = []
    for f in (m, strided):
        monkeypatch.setattr(f, "predict_set", lambda data, **_: calls.append(len(data)) or again)
    np.testing.assert_array_equal(m.predict(val), again)  # bit-identical to predicting
    assert calls == []
    m.predict(test)  # other rows are predicted
    m.predict(val)  # handed over once: not kept alive beside the member
    strided.predict(val)
    assert calls == [test.n, val.n, val.n]
    m.fit(splits.train, splits.val)
    m.build()  # a new, untrained model: the fitted one's forecasts are not its own
    m.predict(val)
    assert calls[-1] == val.n and len(calls) == 4


def test_predict_at_forecasts_those_windows_alone_and_hands_over_the_early_stopping_ones(
    splits, monkeypatch
):
    # `tune --val-stride`: a strided member's best epoch already forecast the val windows
    # it early-stopped on; any other selection is forecast, and only its windows
    m = member(epochs=2, val_stride=3).fit(splits.train, splits.val)
    val = splits.val.windows()
    _, starts = m._selected_starts(splits.train, splits.val)
    kept = m._val_forecast[2].copy()
    calls, predict_set = [], m.predict_set
    monkeypatch.setattr(
        m, "predict_set", lambda d, **kw: calls.append(len(d)) or predict_set(d, **kw)
    )
    np.testing.assert_array_equal(m.predict_at(val, starts), kept)
    assert calls == []
    every = m.predict(val)
    assert calls == [val.n]
    np.testing.assert_allclose(every[starts], kept, rtol=0, atol=1e-6)  # the same windows
    other = np.setdiff1d(np.arange(val.n), starts)[::3]  # windows it did not score
    np.testing.assert_allclose(m.predict_at(val, other), every[other], rtol=0, atol=1e-6)
    assert calls[-1] == len(other)


def test_training_leaves_the_backbone_bit_identical(fitted):
    m, _ = fitted
    fresh = random_backbone("llama", **TINY_LLAMA).model.state_dict()
    after = m.model.llm.state_dict()
    assert fresh.keys() == after.keys()
    for k, v in after.items():
        assert torch.equal(v, fresh[k]), k
    assert all(not p.requires_grad for p in m.model.llm.parameters())


def test_training_beats_the_untrained_model(fitted, splits):
    m, _ = fitted
    untrained = member(epochs=3)
    untrained.build()
    w, truth = splits.val.windows(), splits.val.targets()
    mse = lambda f: float(((f.predict(w) - truth) ** 2).mean())  # noqa: E731
    assert mse(m) < mse(untrained)
    assert m.best_epoch == int(np.argmin([h["val_mse"] for h in m.history]))


def test_save_load_roundtrip_without_backbone_weights(fitted, splits, tmp_path):
    m, _ = fitted
    m.save(tmp_path / "model")
    state = torch.load(tmp_path / "model" / "trainable.pt", weights_only=True)
    assert state and not any(k.startswith("llm.") for k in state)
    again = TimeLLMForecaster.load(tmp_path / "model")
    w = splits.test.windows()
    np.testing.assert_array_equal(again.predict(w), m.predict(w))


def test_a_model_saved_with_an_older_device_value_loads(fitted, tmp_path):
    m, _ = fitted
    m.save(tmp_path / "model")
    meta_file = tmp_path / "model" / "config.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta["kwargs"]["device"] = "cuda:0"  # once read as "best available"
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    assert TimeLLMForecaster.load(tmp_path / "model").device is None
    assert TimeLLMForecaster.load(tmp_path / "model", device="cpu").device == "cpu"


def test_saved_prototype_basis_is_loaded_not_recomputed(fitted, splits, tmp_path, monkeypatch):
    m, _ = fitted
    assert m.prototype_map == "lowrank"
    m.save(tmp_path / "model")
    w = splits.test.windows()
    expected = m.predict(w)
    eigh = torch.linalg.eigh

    def other_signs(a):  # another machine's eigensolver may return -v for v
        vals, vecs = eigh(a)
        return vals, -vecs

    with monkeypatch.context() as mp:
        mp.setattr(torch.linalg, "eigh", other_signs)
        again = TimeLLMForecaster.load(tmp_path / "model")
        assert torch.equal(again.model.prototypes.basis, m.model.prototypes.basis)
        np.testing.assert_array_equal(again.predict(w), expected)

        # A state dict written before the basis was saved still loads, with the basis
        # recomputed on this "machine": here the flipped one, so other forecasts.
        state = torch.load(tmp_path / "model" / "trainable.pt", weights_only=True)
        del state["prototypes.basis"]
        torch.save(state, tmp_path / "model" / "trainable.pt")
        old = TimeLLMForecaster.load(tmp_path / "model")
        assert torch.equal(old.model.prototypes.basis, -m.model.prototypes.basis)
        assert not np.allclose(old.predict(w), expected)
    same_machine = TimeLLMForecaster.load(tmp_path / "model")
    np.testing.assert_array_equal(same_machine.predict(w), expected)


def test_resume_through_the_member(fitted, splits):
    m, workdir = fitted
    assert (workdir / "checkpoint.pt").is_file()
    resumed = member(workdir=str(workdir), epochs=3, resume=True).fit(splits.train, splits.val)
    assert len(resumed.history) == 3  # every epoch comes from the checkpoint, none rerun
    # its fit time is this process's part only: the run marks it in results.md, bench.csv
    # (m itself may have resumed a forecast in an earlier test of this module)
    assert resumed.resumed and not member().resumed
    assert resumed.history == m.history
    w = splits.val.windows()
    np.testing.assert_array_equal(resumed.predict(w), m.predict(w))
    with pytest.raises(UserError, match="different settings"):
        member(workdir=str(workdir), epochs=3, resume=True, lr=0.5).fit(splits.train, splits.val)


def test_a_rerun_continues_by_default_and_never_returns_a_model_of_other_data(
    fitted, splits, tmp_path
):
    import dataclasses
    import shutil

    m, workdir = fitted
    w = splits.val.windows()
    rerun = member(workdir=str(workdir), epochs=3).fit(splits.train, splits.val)
    assert rerun.history == m.history  # no epoch rerun: all came from the checkpoint
    np.testing.assert_array_equal(rerun.predict(w), m.predict(w))
    # other data (here --percent 50) in a copy of the folder: a fresh fit, not the old model
    copy = shutil.copytree(workdir, tmp_path / "work")
    half = dataclasses.replace(splits.train, data=splits.train.data[: len(splits.train.data) // 2])
    other = member(workdir=str(copy), epochs=3).fit(half, splits.val)
    expect = member(epochs=3).fit(half, splits.val)
    np.testing.assert_array_equal(other.predict(w), expect.predict(w))
    with pytest.raises(UserError, match="resume must be true, false or auto"):
        member(resume="yes")


def test_both_quantisations_are_refused_before_any_fit():
    with pytest.raises(UserError, match="choose one of load_in_4bit and load_in_8bit"):
        member(load_in_4bit=True, load_in_8bit=True)


def test_resume_refuses_a_checkpoint_trained_on_other_backbone_weights(
    fitted, splits, tmp_path, monkeypatch
):
    # Other weights copied over the backbone folder mid-training: same path, other files
    import shutil

    import timellm.member as member_module

    copy = shutil.copytree(fitted[1], tmp_path / "work")
    monkeypatch.setattr(member_module, "backbone_identity", lambda path: "base weights")
    member(workdir=str(copy), epochs=3, resume=False).fit(splits.train, splits.val)
    monkeypatch.setattr(member_module, "backbone_identity", lambda path: "instruct weights")
    with pytest.raises(UserError, match=r"different settings \(backbone files\)"):
        member(workdir=str(copy), epochs=3, resume=True).fit(splits.train, splits.val)


def test_resume_refuses_a_checkpoint_trained_on_other_data(fitted, splits):
    # --percent, --features / --target and another data file change what the member
    # trains on, not its constructor arguments: resuming must not return the old model.
    import dataclasses

    _, workdir = fitted
    train, val = splits.train, splits.val
    other_data = {
        "percent": (dataclasses.replace(train, data=train.data[: len(train.data) // 2]), val),
        "values": (dataclasses.replace(train, data=train.data * 1.01), val),
        "channels": tuple(
            dataclasses.replace(s, data=s.data[:, :1], columns=s.columns[:1]) for s in (train, val)
        ),
    }
    for what, (tr, va) in other_data.items():
        with pytest.raises(UserError, match=r"different settings \(data\)"):
            member(workdir=str(workdir), epochs=3, resume=True).fit(tr, va)
            pytest.fail(f"resumed a checkpoint trained on other {what}")


def test_prompt_beyond_the_position_table_is_refused_before_training(splits, monkeypatch):
    from timellm.trainer import Trainer

    short = random_backbone("gpt2", n_embd=32, n_layer=1, n_head=2, n_positions=40)
    monkeypatch.setattr("timellm.backbone.load_backbone", lambda *a, **k: short)
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("training started"))
    # L=32, patch 16, stride 8: 4 patches fit in 40 positions, a ~70-token prompt does not.
    with pytest.raises(UserError, match=r"4 patches \(seq_len 32, patch_len 16, stride 8\)"):
        member(backbone="gpt2-random", train_stride=8, val_stride=8).fit(splits.train, splits.val)


def test_a_tokenizer_of_another_model_is_refused_before_training(splits, monkeypatch):
    # MiniLM's tokenizer (30522 ids) beside weights embedding 1000 ids: e.g. a LLaMA-3
    # tokenizer copied next to LLaMA-2 weights. Without the check: IndexError mid-batch.
    import dataclasses

    from transformers import GPT2Config, GPT2Model

    from timellm.trainer import Trainer

    bb = random_backbone("gpt2", n_embd=32, n_layer=1, n_head=2)
    small = GPT2Model(GPT2Config(vocab_size=1000, n_embd=32, n_layer=1, n_head=2)).eval()
    bb = dataclasses.replace(bb, model=small)
    monkeypatch.setattr("timellm.backbone.load_backbone", lambda *a, **k: bb)
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(UserError, match=r"token id \d+ but backbone .* embeds only 1000 ids"):
        member(backbone="gpt2-random", train_stride=8, val_stride=8).fit(splits.train, splits.val)


def test_bidirectional_backbone_minilm(splits):
    m = member(backbone="minilm", epochs=1, train_stride=8, val_stride=8)
    m.fit(splits.train, splits.val)
    assert m.predict(splits.test.windows()).shape == (splits.test.n_windows, H, 2)


@pytest.mark.parametrize("name", inj.INJECTORS)
def test_every_injector_fits_and_beats_the_last_value(name, splits):
    train, test = splits.train, splits.test
    starts = np.arange(train.n_windows)
    model = inj.make_injector(name, L, H).fit(train.data, starts)
    x, y = test.inputs(), test.targets()
    pred = model.predict(x)
    assert pred.shape == y.shape and pred.dtype == np.float32
    naive = np.repeat(x[:, -1:], H, axis=1)
    assert ((pred - y) ** 2).mean() < ((naive - y) ** 2).mean()


def test_injection_prompts_per_window_and_channel(splits):
    m = member(inject=["ridge"], epochs=1, train_stride=8, val_stride=8, inject_folds=2)
    m.fit(splits.train, splits.val)
    x = splits.val.inputs()[:3]
    texts = inj.summaries(x, {"ridge": m.injectors["ridge"].predict(x)})
    assert len(texts) == 3 * 2 and texts[0].startswith("Classical forecasts: ridge level")
    assert texts[0] != texts[1]  # each channel gets its own summary
    ids, mask = m._prompts(
        splits.val.data, np.arange(3), {"ridge": m.injectors["ridge"].predict(x)}
    )
    assert ids.shape[:2] == (3, 2) and mask.shape == ids.shape
    decoded = m.builder.tokenizer.decode(ids[0, 1][mask[0, 1]].tolist())
    assert "classical forecasts : ridge level" in decoded.lower().replace("  ", " ")
    assert m.predict(splits.test.windows()).shape == (splits.test.n_windows, H, 2)


def test_without_llm_ablation_trains_only_patching_and_head(splits, tmp_path):
    m = member(backbone="none", epochs=2, lr=1e-2, workdir=str(tmp_path))
    m.preflight()  # no backbone to look for
    untrained = m.build()
    with torch.no_grad():
        x = torch.tensor(splits.val.inputs(), dtype=torch.float32)
        before = float(((untrained(x) - torch.tensor(splits.val.targets())) ** 2).mean())
    m.fit(splits.train, splits.val)
    names = {n.split(".")[0] for n, p in m.model.named_parameters() if p.requires_grad}
    assert names == {"patch_embedding", "head"}
    pred = m.predict(splits.val.windows())  # in a run's member folder: resumable
    assert pred.shape == (splits.val.n_windows, H, 2)
    assert float(((pred - splits.val.targets()) ** 2).mean()) < before


def test_official_prompt_wording_is_longer(splits):
    concise, official = member(), member(prompt="official")
    for m in (concise, official):
        m.build()
    x = splits.val.inputs()[:2]
    assert len(official.builder.build_texts(x)[0]) > len(concise.builder.build_texts(x)[0])
    assert "Dataset description" in official.builder.build_texts(x)[0]


def test_a_description_of_ones_own_starts_every_prompt(splits):
    ours, theirs = member(), member(description="变压器油温 transformer oil temperature")
    for m in (ours, theirs):
        m.build()
    x = splits.val.inputs()[:2]
    assert theirs.builder.build_texts(x)[0].startswith("变压器油温 transformer oil temperature")
    assert "变压器油温" not in ours.builder.build_texts(x)[0]
    assert "description" not in ours.fingerprint()  # older checkpoints still resume
    assert theirs.fingerprint()["description"].startswith("变压器油温")
    with pytest.raises(UserError, match="description must be a non-empty text"):
        member(description="  ")


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"patch_len": 100, "seq_len": 36}, "patch_len 100 is longer than the lookback 36"),
        ({"prompt_max_length": 0}, "prompt_max_length must be a whole number >= 1"),
        # a float size failed in the model's build, after the other members had fitted
        ({"d_ff": 32.5}, "d_ff must be a whole number >= 1 \\(got 32.5\\)"),
        ({"patch_len": 16.0}, "patch_len must be a whole number"),
        ({"llm_layers": "abc"}, "llm_layers must be a whole number >= 1 \\(got 'abc'\\)"),
        ({"llm_layers": True}, "llm_layers must be a whole number"),
        ({"lr": -1.0}, "lr must be a number above 0"),
        ({"lr": "abc"}, "lr must be a number above 0 \\(got .abc.\\)"),
        ({"patience": -1}, "patience must be >= 0"),
        ({"inject": ["ridge"], "inject_folds": 0}, "inject_folds must be >= 2"),
        ({"device": "tpu"}, "device must be cpu or cuda"),
        ({"seq_len": 12, "prompt_stats": "min+acf1"}, "need a lookback of at least 16 steps"),
    ],
)
def test_settings_that_would_fail_inside_the_fit_are_refused_when_built(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        member(**kwargs)


def test_cuda_without_a_gpu_is_refused_before_loading(monkeypatch, splits):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    m = member(device="cuda")
    with pytest.raises(UserError, match="no CUDA GPU is visible here"):
        m.fit(splits.train, splits.val)


def test_a_gpu_out_of_memory_is_one_line_with_the_fallbacks(splits, monkeypatch):
    from timellm.trainer import Trainer

    def no_memory(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    m = member(batch_size=8)
    monkeypatch.setattr(Trainer, "fit", no_memory)
    # training scores validation at the evaluation batch: the message names both
    with pytest.raises(
        UserError,
        match=r"while training; lower batch_size \(now 8\), or eval_batch_size .* scoring val",
    ):
        m.fit(splits.train, splits.val)
    monkeypatch.setattr(Trainer, "predict", no_memory)
    m.model = m.build()
    with pytest.raises(UserError, match=r"while predicting; lower eval_batch_size") as err:
        m.predict(splits.val.windows())
    assert "load the backbone in 4-bit" in str(err.value)
    # only what can still be lowered or switched: not 4-bit when it is on, nor one layer
    m.load_in_4bit, m.llm_layers, m.prototype_map = True, 1, "full"
    with pytest.raises(UserError) as err:
        m.predict(splits.val.windows())
    text = str(err.value)
    assert "4-bit" not in text and "llm_layers" not in text and "prototype_map=lowrank" in text
    m.llm_layers = None  # every layer: a TypeError replaced the hint
    with pytest.raises(UserError, match=r"llm_layers \(now None\)"):
        m.predict(splits.val.windows())


def test_the_checkpoint_interval_is_checked_and_not_part_of_the_fingerprint():
    # a rerun with another interval resumes the same fit
    assert member(checkpoint_minutes=3).fingerprint() == member().fingerprint()
    for bad in (-1, float("nan"), "often", True):
        with pytest.raises(UserError, match="checkpoint_minutes must be a number >= 0"):
            member(checkpoint_minutes=bad)


def test_prompt_statistics_are_chosen_checked_and_part_of_the_fingerprint(splits):
    ours, richer = member(), member(prompt_stats="min+max+mean+seasonal_strength+periods")
    for m in (ours, richer):
        m.build()
    x = splits.val.inputs()[:2]
    text = richer.builder.build_texts(x)[0]
    assert ", mean " in text and "seasonal strength" in text and "median" not in text
    assert "prompt_stats" not in ours.fingerprint()  # older checkpoints still resume
    assert "prompt_stats" not in member(prompt_stats="min,max,median,trend,periods").fingerprint()
    assert richer.fingerprint()["prompt_stats"] == [
        "min",
        "max",
        "mean",
        "seasonal_strength",
        "periods",
    ]
    with pytest.raises(UserError, match="unknown prompt statistic"):
        member(prompt_stats="min,skew")
    with pytest.raises(UserError, match="needs prompt=concise"):
        member(prompt_stats="mean", prompt="official")


@pytest.mark.parametrize("backbone", ["llama-random", "minilm"])
def test_no_prompt_sends_only_the_patches_through_the_llm(splits, backbone):
    m = member(backbone=backbone, prompt="none", epochs=1, train_stride=8, val_stride=8)
    m.fit(splits.train, splits.val)
    assert m.builder is None
    ids, mask = m._prompts(splits.val.data, np.arange(3), None)
    assert ids.shape == (3, 2, 1) and not mask.any()
    x = torch.tensor(splits.val.inputs()[:3, :, :1], dtype=torch.float32)
    ids, mask = ids[:, 0], mask[:, 0]
    with torch.no_grad():
        out = m.model(x, ids, mask)
        other_ids = m.model(x, torch.full_like(ids, 7), mask)  # masked-out ids change nothing
        empty = m.model(x, ids[:, :0], mask[:, :0])  # a zero-length prompt
    assert torch.equal(out, other_ids) and torch.allclose(out, empty, atol=1e-6)
    assert m.predict(splits.test.windows()).shape == (splits.test.n_windows, H, 2)


@pytest.mark.parametrize("backbone_dropout", [False, True])
def test_backbone_mode_while_training(splits, monkeypatch, backbone_dropout):
    from timellm.trainer import Trainer

    modes = []
    original = Trainer._train_epoch

    def spy(self, *args, **kwargs):
        hook = self.model.llm.register_forward_pre_hook(
            lambda llm, _: modes.append((self.model.training, llm.training))
        )
        try:
            return original(self, *args, **kwargs)
        finally:
            hook.remove()

    monkeypatch.setattr(Trainer, "_train_epoch", spy)
    m = member(epochs=1, train_stride=8, val_stride=8, backbone_dropout=backbone_dropout)
    m.fit(splits.train, splits.val)
    # The trainable parts train; the frozen backbone in eval mode unless asked otherwise.
    assert modes and set(modes) == {(True, backbone_dropout)}


def test_strided_windows_cover_every_hour_of_the_day_and_key_the_cache(splits):
    # synthetic period 24: a fixed stride of 8 would start every window at hours 0, 8, 16
    m = member(train_stride=8, val_stride=8)
    tr, va = m._selected_starts(splits.train, splits.val)
    assert len(np.unique(tr % 24)) > 3 and len(np.unique(va % 24)) > 3
    assert not np.array_equal(tr, np.arange(0, splits.train.n_windows, 8)[: len(tr)])
    # forecasts a run saved with the fixed stride are refitted, those of stride 1 kept
    assert m.derived_settings() and not member(train_stride=1, val_stride=1).derived_settings()


@pytest.mark.parametrize("sample", ["windows", "series"])
def test_epoch_size_is_the_optimiser_steps_fit_takes(splits, monkeypatch, sample):
    m = member(epochs=1, sample=sample, batch_size=8)
    steps = []
    step = torch.optim.Adam.step
    monkeypatch.setattr(
        torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1) or step(self, *a, **k)
    )
    m.fit(splits.train, splits.val)
    expected_steps, val_series = m.epoch_size(splits.train, splits.val)
    assert len(steps) == expected_steps
    assert val_series == len(m._selected_starts(splits.train, splits.val)[1]) * 2


@pytest.mark.parametrize("cuda_build", [None, "12.4"])
def test_a_quantised_backbone_on_the_cpu_is_said(caplog, monkeypatch, cuda_build):
    monkeypatch.setattr(torch.version, "cuda", cuda_build)
    cpu = torch.device("cpu")
    with caplog.at_level(logging.INFO, logger="timellm.member"):
        member(load_in_4bit=True)._log_placement(cpu, torch.bfloat16, torch.bfloat16)
    info, warning = (r for r in caplog.records if r.name == "timellm.member")
    assert "weights 4-bit NF4, compute bfloat16, on the CPU" in info.getMessage()
    assert warning.levelno == logging.WARNING and "runs on the CPU" in warning.getMessage()
    # the likely cause named only where it is the cause
    assert ("CPU-only build" in warning.getMessage()) == (cuda_build is None)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="timellm.member"):
        member(load_in_4bit=True, device="cpu")._log_placement(cpu, torch.bfloat16, None)
        member()._log_placement(cpu, torch.float32, None)  # full precision: CPU is fine
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.INFO]


def test_precision_per_device(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    bf16, fp16, fp32 = torch.bfloat16, torch.float16, torch.float32
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    # before Ampere bf16 is emulated: a 4-bit backbone computes in float16, as in the seeds
    assert member(load_in_4bit=True)._dtypes(cuda) == (fp16, fp16)
    assert member()._dtypes(cuda) == (fp32, None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert member(load_in_4bit=True)._dtypes(cuda) == member()._dtypes(cuda) == (bf16, bf16)
    assert member()._dtypes(cpu) == (fp32, None)
    monkeypatch.setattr(timellm.member, "cpu_has_native_bf16", lambda: True)
    assert member(load_in_4bit=True)._dtypes(cpu) == (None, None)  # bf16, the 4-bit default
    monkeypatch.setattr(timellm.member, "cpu_has_native_bf16", lambda: False)  # AVX2: emulated
    assert member(load_in_4bit=True)._dtypes(cpu) == (fp32, None)
    assert member(load_in_8bit=True)._dtypes(cpu) == (None, None)  # LLM.int8: float16 casts
    assert member(precision="fp16")._dtypes(cpu) == (fp16, fp16)
    assert member(precision="fp32")._dtypes(cuda) == (fp32, None)


def test_fp16_trains_with_loss_scaling(splits, tmp_path):
    m = member(precision="fp16", epochs=2, workdir=str(tmp_path)).fit(splits.train, splits.val)
    assert m.model.compute_dtype == torch.float16
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["scaler"]["scale"] > 0
    w, truth = splits.val.windows(), splits.val.targets()
    untrained = member(precision="fp16")
    untrained.build()
    mse = lambda f: float(((f.predict(w) - truth) ** 2).mean())  # noqa: E731
    assert np.isfinite(m.predict(w)).all() and mse(m) < mse(untrained)


def fit_on_the_real_backbone_loader(splits, monkeypatch, **kw) -> TimeLLMForecaster:
    """A 1-layer llama-random member built by the real `load_backbone` (the module's fake
    drops load_in_4bit / load_in_8bit / dtype), fitted one epoch; its test forecast must
    be float32 [W, H, C] and finite whatever the backbone computes in."""
    import timellm.backbone as backbone_mod

    monkeypatch.setattr(backbone_mod, "load_backbone", load_backbone)
    m = member(llm_layers=1, epochs=1, train_stride=16, val_stride=16, device="cpu", **kw)
    m.fit(splits.train, splits.val)
    out = m.predict(splits.test.windows())
    assert out.shape == (splits.test.n_windows, H, 2) and out.dtype == np.float32
    assert np.isfinite(out).all() and len(m.history) == 1
    return m


@pytest.mark.parametrize("native_bf16", [True, False])
def test_a_4bit_member_fits_and_predicts(splits, monkeypatch, native_bf16):
    # the seeds' setting (Qwen2.5-3B in NF4): the quantised layers must really be there.
    # On a CPU with native bf16 they compute in bf16; on one that emulates it, in float32
    import bitsandbytes as bnb

    monkeypatch.setattr(timellm.member, "cpu_has_native_bf16", lambda: native_bf16)
    m = fit_on_the_real_backbone_loader(splits, monkeypatch, load_in_4bit=True)
    linears = [x for x in m.model.llm.modules() if isinstance(x, torch.nn.Linear)]
    assert linears and all(isinstance(x, bnb.nn.Linear4bit) for x in linears)
    assert linears[0].weight.quant_state.quant_type == "nf4"
    dtype = torch.bfloat16 if native_bf16 else torch.float32
    assert {x.compute_dtype for x in linears} == {dtype}
    assert m.backbone_obj.quantization == "4bit"
    assert m.model.compute_dtype == (torch.bfloat16 if native_bf16 else None)
    embeddings = m.model.llm.get_input_embeddings().weight
    assert embeddings.dtype == dtype  # the unquantised weights: float32 beside float32 compute


def test_an_8bit_member_fits_and_predicts(splits, monkeypatch, caplog):
    import logging

    import bitsandbytes as bnb

    with caplog.at_level(logging.INFO, logger="bitsandbytes"):
        m = fit_on_the_real_backbone_loader(splits, monkeypatch, load_in_8bit=True)
    linears = [x for x in m.model.llm.modules() if isinstance(x, torch.nn.Linear)]
    assert linears and all(isinstance(x, bnb.nn.Linear8bitLt) for x in linears)
    assert m.backbone_obj.quantization == "8bit" and m.model.compute_dtype == torch.bfloat16
    # LLM.int8 says it casts to float16 on every matmul (42 times in this tiny fit and
    # forecast): once per backbone loaded, so in each run's run.log, and as INFO, so that
    # the console of a tune trying many settings in one process does not repeat it
    casts = [r for r in caplog.records if "will be cast" in r.getMessage()]
    assert len(casts) == 1 and casts[0].levelno == logging.INFO
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bitsandbytes"):
        fit_on_the_real_backbone_loader(splits, monkeypatch, load_in_8bit=True)  # a 2nd run
    assert len([r for r in caplog.records if "will be cast" in r.getMessage()]) == 1


def test_a_bf16_member_fits_and_predicts_on_the_cpu(splits, monkeypatch):
    # precision=bf16 is asked for, not the CPU's float32 default: bf16 weights and autocast
    m = fit_on_the_real_backbone_loader(splits, monkeypatch, precision="bf16")
    assert {p.dtype for p in m.model.llm.parameters()} == {torch.bfloat16}
    assert m.backbone_obj.quantization is None and m.model.compute_dtype == torch.bfloat16


def test_a_member_with_injected_forecasts_predicts_the_same_after_save_and_load(splits, tmp_path):
    # the prompts summarise the injectors' forecasts: a reload without the fitted
    # injectors would forecast from other prompts
    m = member(inject=["ridge", "dlinear"], inject_folds=2, epochs=1, train_stride=8, val_stride=8)
    m.fit(splits.train, splits.val)
    m.save(tmp_path / "model")
    assert (tmp_path / "model" / "injectors.pkl").is_file()
    again = TimeLLMForecaster.load(tmp_path / "model")
    assert list(again.injectors) == ["ridge", "dlinear"]
    w = splits.test.windows()
    np.testing.assert_array_equal(again.predict(w), m.predict(w))


def test_pct_start_reaches_the_trainer_and_new_defaults_keep_fingerprints():
    assert member(schedule="onecycle", pct_start=0.4).train_config().pct_start == 0.4
    # Checkpoints written before these settings existed still resume at their defaults.
    assert not {"pct_start", "backbone_dropout"} & set(member().fingerprint())
    assert member(pct_start=0.4).fingerprint()["pct_start"] == 0.4
    assert member(backbone_dropout=True).fingerprint()["backbone_dropout"] is True


def test_weight_decay_and_clip_grad_reach_the_trainer_and_keep_old_fingerprints():
    tc = member(weight_decay=1e-4, clip_grad=1).train_config()
    assert (tc.weight_decay, tc.clip_grad) == (1e-4, 1.0)
    assert (member().train_config().weight_decay, member().train_config().clip_grad) == (0.0, None)
    assert not {"weight_decay", "clip_grad"} & set(member().fingerprint())
    assert member(clip_grad=0.5).fingerprint()["clip_grad"] == 0.5


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="precision must be one of"):
        member(precision="fp8")
    with pytest.raises(UserError, match="unknown injected member"):
        member(inject=["arima"])
    with pytest.raises(UserError, match="train_stride and val_stride must be >= 1"):
        member(train_stride=0)
    with pytest.raises(UserError, match="prompt must be one of"):
        member(prompt="verbose")
    with pytest.raises(UserError, match="backbone=none has no prompt"):
        member(backbone="none", inject=["ridge"])
    with pytest.raises(UserError, match="backbone=none has no prompt to state statistics in"):
        member(backbone="none", prompt_stats="mean")
    assert member(backbone="none", prompt_stats="min,max,median,trend,periods").prompt_stats is None
    with pytest.raises(UserError, match="prompt=none"):
        member(prompt="none", inject=["ridge"])
    with pytest.raises(UserError, match="schedule"):
        member(schedule="warm")
    with pytest.raises(UserError, match="pct_start"):
        member(pct_start=1.5)
    for bad in (-1e-4, "0.1", True, float("inf")):
        with pytest.raises(UserError, match="weight_decay must be a number >= 0"):
            member(weight_decay=bad)
    for bad in (0, -1.0, "1", True, float("inf"), "null"):
        with pytest.raises(UserError, match="clip_grad must be a number above 0; leave it out"):
            member(clip_grad=bad)
    with pytest.raises(UserError, match="d_model must be a whole number >= 1"):
        member(d_model=0)  # a zero-size layer used to fail only at the first step
    with pytest.raises(UserError, match="dropout must be in"):
        member(dropout=1.0)


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


@pytest.mark.parametrize("n,folds", [(200, 5), (197, 3), (500, 7)])
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
            start = int(np.flatnonzero(series[:, 0] == xi[0, 0])[0])
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


def test_a_model_loads_only_on_the_weights_it_was_trained_on(fitted, tmp_path):
    # Only the backbone's path was kept: another checkpoint copied to the same folder (the
    # instruct model over the base one) was loaded under the trained layers in silence
    from ensemble.errors import UserError
    from timellm.backbone import backbone_identity

    m, _ = fitted
    folder = tmp_path / "qwen"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"base weights" * 1000)
    m.save(tmp_path / "model")
    meta_file = tmp_path / "model" / "config.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    assert meta["backbone_identity"] is None  # llama-random: no folder to identify
    meta["kwargs"]["backbone"] = str(folder)
    meta["backbone_identity"] = backbone_identity(str(folder))
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    TimeLLMForecaster.load(tmp_path / "model")  # the same files: fine
    (folder / "README.md").write_text("notes", encoding="utf-8")
    TimeLLMForecaster.load(tmp_path / "model")  # files that are not the model: fine
    (folder / "model.safetensors").write_bytes(b"instruct weights" * 1000)
    with pytest.raises(UserError, match="trained on other weights or another tokenizer"):
        TimeLLMForecaster.load(tmp_path / "model")


def test_the_step_hook_reaches_the_trainer(splits):
    # `tune` checks for a swallowed Ctrl-C after every step of a Time-LLM fit
    m = member(epochs=1, train_stride=8, val_stride=8)
    steps = []
    m.on_step = lambda: steps.append(1)
    m.fit(splits.train, splits.val)
    assert len(steps) > 1


def test_a_checkpoint_of_other_settings_is_refused_before_the_run_clears_its_folder(
    fitted, splits, monkeypatch
):
    # found at the fit, the refusal came after the run had deleted the previous results
    import timellm.member as member_module

    _, workdir = fitted
    checked = []
    monkeypatch.setattr(member_module, "check_backbone", lambda *a: checked.append(a))
    member(workdir=str(workdir), epochs=3, resume=True).preflight()  # same settings: fine
    with pytest.raises(UserError, match=r"different settings \(lr\).*nothing in the folder"):
        member(workdir=str(workdir), epochs=3, resume=True, lr=0.5).preflight()
    member(workdir=str(workdir), epochs=3, resume="auto", lr=0.5).preflight()  # starts afresh
    assert len(checked) == 3
