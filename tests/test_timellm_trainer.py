"""The Time-LLM training loop on a toy model: early stopping, best reload, resume, coverage."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from ensemble.errors import UserError
from timellm.trainer import (
    CHECKPOINT,
    SCHEDULES,
    TrainConfig,
    Trainer,
    WindowSet,
    make_scheduler,
    select_starts,
    trainable_state,
)

L, H, C, P = 24, 6, 2, 5


class Toy(nn.Module):
    """forward(x [B, L, C], ids, mask) -> [B, H, C]; a frozen `llm` like the real model."""

    def __init__(self) -> None:
        super().__init__()
        self.llm = nn.Linear(4, 4)
        for p in self.llm.parameters():
            p.requires_grad_(False)
        self.head = nn.Linear(L, H)
        self.drop = nn.Dropout(0.1)
        self.calls: list[int] = []

    def forward(self, x, ids, mask):
        assert ids.shape == mask.shape == (x.shape[0] * x.shape[2], P)
        self.calls.append(x.shape[0])
        return self.head(self.drop(x.transpose(1, 2))).transpose(1, 2)


def window_set(n_rows: int = 200, seed: int = 0, starts=None) -> WindowSet:
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows)[:, None]
    series = np.sin(2 * np.pi * t / 12 + np.arange(C)) + 0.1 * rng.standard_normal((n_rows, C))
    n = n_rows - L - H + 1
    starts = np.arange(n) if starts is None else np.asarray(starts)
    return WindowSet(
        series=torch.tensor(series, dtype=torch.float32),
        starts=torch.as_tensor(starts, dtype=torch.long),
        ids=torch.zeros(len(starts), C, P, dtype=torch.int32),
        mask=torch.ones(len(starts), C, P, dtype=torch.bool),
        seq_len=L,
        pred_len=H,
    )


def cfg(**kw) -> TrainConfig:
    base = dict(lr=1e-2, epochs=4, patience=2, batch_size=16, eval_batch_size=7, seed=0)
    return TrainConfig(**{**base, **kw})


def fresh() -> Toy:
    torch.manual_seed(0)
    return Toy()


def test_window_set_batch_shapes_and_values():
    ws = window_set()
    x, y, ids, mask = ws.batch(torch.tensor([0, 5]))
    assert x.shape == (2, L, C) and y.shape == (2, H, C)
    assert ids.shape == mask.shape == (2 * C, P) and ids.dtype == torch.long
    assert torch.equal(x[1], ws.series[5 : 5 + L])
    assert torch.equal(y[1], ws.series[5 + L : 5 + L + H])


def test_predict_covers_every_window_no_drop_last():
    ws = window_set()  # 171 windows, eval batches of 7: the last batch is partial
    model = fresh()
    out = Trainer(model, cfg()).predict(ws)
    assert out.shape == (len(ws), H, C)
    assert sum(model.calls) == len(ws)
    model.eval()
    with torch.no_grad():
        x, _, ids, mask = ws.batch(torch.arange(len(ws)))
        assert torch.allclose(out, model(x, ids, mask), atol=1e-6)


def test_long_forecasts_and_validations_log_their_progress(monkeypatch, caplog):
    import logging

    from timellm import trainer as tr

    ws = window_set()  # 171 windows in 25 eval batches
    caplog.set_level(logging.INFO, logger=tr.log.name)
    Trainer(fresh(), cfg()).predict(ws)
    Trainer(fresh(), cfg()).evaluate(ws)
    assert not [r for r in caplog.records if "batches" in r.getMessage()]  # quick: silent
    monkeypatch.setattr(tr, "HEARTBEAT_S", 0.0)
    Trainer(fresh(), cfg()).predict(ws)
    Trainer(fresh(), cfg()).evaluate(ws)
    said = [r.getMessage() for r in caplog.records if "batches" in r.getMessage()]
    assert said[0].startswith("predict: 1/25 batches") and "s left" in said[0]
    assert any(m.startswith("validation: 24/25 batches") for m in said)
    assert not any("25/25" in m for m in said)  # the last batch is the end, not progress


def test_an_interrupted_forecast_resumes_from_what_it_kept(tmp_path, monkeypatch):
    from timellm import trainer as tr

    ws = window_set()  # 171 windows in 25 batches of 7
    model = fresh()
    full = Trainer(model, cfg()).predict(ws)
    monkeypatch.setattr(tr, "HEARTBEAT_S", 0.0)  # keep the forecasts after every batch
    partial = tmp_path / "predict.partial.npz"
    forward = Toy.forward

    def stop_at_batch_11(self, *a):
        if len(self.calls) == 10:
            raise KeyboardInterrupt
        return forward(self, *a)

    monkeypatch.setattr(Toy, "forward", stop_at_batch_11)
    model.calls.clear()
    with pytest.raises(KeyboardInterrupt):
        Trainer(model, cfg()).predict(ws, partial=partial, key="k")
    assert partial.is_file()
    monkeypatch.setattr(Toy, "forward", forward)
    model.calls.clear()
    again = Trainer(model, cfg()).predict(ws, partial=partial, key="k")
    assert len(model.calls) == 25 - 10  # only the batches it had not done
    assert torch.allclose(again, full) and not partial.exists()
    # another model or other windows (another key), or another batch size: from scratch
    for key, batch in (("other", 7), ("k", 5)):
        monkeypatch.setattr(Toy, "forward", stop_at_batch_11)
        model.calls.clear()
        with pytest.raises(KeyboardInterrupt):
            Trainer(model, cfg()).predict(ws, partial=partial, key="k")
        monkeypatch.setattr(Toy, "forward", forward)
        model.calls.clear()
        Trainer(model, cfg(eval_batch_size=batch)).predict(ws, partial=partial, key=key)
        assert sum(model.calls) == len(ws)
    partial.write_bytes(b"damaged")
    assert torch.allclose(Trainer(model, cfg()).predict(ws, partial=partial, key="k"), full)


def test_a_finished_forecast_is_kept_and_read_back_for_the_same_key_only(tmp_path, caplog):
    import logging

    ws = window_set()  # 171 windows in 25 batches of 7
    model = fresh()
    partial, done = tmp_path / "predict.w.partial.npz", tmp_path / "predict.w.done.npz"
    full = Trainer(model, cfg()).predict(ws, partial=partial, key="k", done=done)
    assert done.is_file() and not partial.exists()
    model.calls.clear()
    caplog.set_level(logging.INFO, logger="timellm")
    trainer = Trainer(model, cfg())
    kept = trainer.predict(ws, partial=partial, key="k", done=done, what="validation forecast")
    assert torch.equal(kept, full) and not model.calls and trainer.resumed_predict
    assert "resuming: validation forecast already done" in caplog.text
    # another model or windows (another key), another batch size, a cut-short file or
    # other windows of the same key: forecast again (and kept for that key from then on)
    for key, batch, n in (("other", 7, 171), ("k", 5, 171), ("k", 7, 170)):
        model.calls.clear()
        data = window_set(starts=np.arange(n))
        Trainer(model, cfg(eval_batch_size=batch)).predict(data, key=key, done=done)
        assert sum(model.calls) == n
    done.write_bytes(b"damaged")
    model.calls.clear()
    assert torch.allclose(Trainer(model, cfg()).predict(ws, key="k", done=done), full)
    assert sum(model.calls) == len(ws)
    # without `done` nothing is read or kept
    done.unlink()
    Trainer(model, cfg()).predict(ws, partial=partial, key="k")
    assert not done.exists() and not partial.exists()


def test_evaluate_is_mse_over_all_values():
    ws = window_set()
    model = fresh()
    mse = Trainer(model, cfg()).evaluate(ws)
    model.eval()
    with torch.no_grad():
        x, y, ids, mask = ws.batch(torch.arange(len(ws)))
        expect = float(((model(x, ids, mask) - y) ** 2).mean())
    assert mse == pytest.approx(expect, rel=1e-6)


def test_training_lowers_the_loss_and_keeps_the_backbone():
    model = fresh()
    frozen = {k: v.clone() for k, v in model.llm.state_dict().items()}
    ws = window_set()
    before = Trainer(model, cfg()).evaluate(ws)
    res = Trainer(model, cfg(epochs=3, patience=0)).fit(ws, window_set(seed=1))
    assert len(res.history) == 3
    assert Trainer(model, cfg()).evaluate(ws) < before
    for k, v in model.llm.state_dict().items():
        assert torch.equal(v, frozen[k])


def test_on_epoch_sees_every_validation_score_and_can_stop_the_fit(monkeypatch):
    # how `tune` prunes a Time-LLM trial mid-training
    scripted = itertools.cycle([0.5, 0.3, 0.4])
    monkeypatch.setattr(Trainer, "_score", lambda self, data, model, keep: (next(scripted), None))
    seen = []
    res = Trainer(fresh(), cfg(epochs=3, patience=0), on_epoch=lambda e, v: seen.append((e, v)))
    res = res.fit(window_set(), window_set(seed=1))
    assert seen == [(1, 0.5), (2, 0.3), (3, 0.4)] and len(res.history) == 3

    class Pruned(Exception):
        pass

    def prune(epoch: int, val: float) -> None:
        raise Pruned

    with pytest.raises(Pruned):
        Trainer(fresh(), cfg(epochs=3, patience=0), on_epoch=prune).fit(
            window_set(), window_set(seed=1)
        )


def script_val_scores(monkeypatch, scores: list[float]) -> list[dict]:
    """Make the per-epoch validation return ``scores`` in turn, with a forecast tensor
    holding the epoch's number; returns the list that collects the trainable state after
    each epoch."""
    scripted = iter(scores)
    states: list[dict] = []
    original = Trainer._train_epoch

    def spy_epoch(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        states.append(trainable_state(self.model))
        return out

    def scripted_score(self, data, model, keep):
        return next(scripted), torch.full((1,), float(len(states) - 1))

    monkeypatch.setattr(Trainer, "_train_epoch", spy_epoch)
    monkeypatch.setattr(Trainer, "_score", scripted_score)
    return states


def test_early_stopping_reloads_the_best_epoch(monkeypatch):
    states = script_val_scores(monkeypatch, [0.5, 0.3, 0.4, 0.6, 0.1, 0.1])
    model = fresh()
    res = Trainer(model, cfg(epochs=6, patience=2)).fit(window_set(), window_set(seed=1))
    assert [h["val_mse"] for h in res.history] == [0.5, 0.3, 0.4, 0.6]  # stopped after 2 bad
    assert res.best_epoch == 1 and res.best_val == 0.3
    assert res.val_forecast.item() == 1  # the best epoch's val forecasts, not the last's
    final = trainable_state(model)
    assert all(torch.equal(final[k], states[1][k]) for k in final)
    assert not all(torch.equal(final[k], states[3][k]) for k in final)


def test_the_kept_val_forecasts_are_what_predicting_again_returns(tmp_path):
    train, val = window_set(), window_set(seed=1)
    model = fresh()
    trainer = Trainer(model, cfg(epochs=3, patience=0), workdir=tmp_path)
    res = trainer.fit(train, val)
    assert res.val_forecast.shape == (len(val), H, C)
    assert torch.equal(res.val_forecast, trainer.predict(val))
    # a fit resumed after its best epoch has none (they are not checkpointed): `run`
    # predicts the val windows then
    again = Trainer(fresh(), cfg(epochs=3, patience=0), workdir=tmp_path, resume=True)
    assert again.fit(train, val).val_forecast is None
    assert "best_forecast" not in torch.load(tmp_path / CHECKPOINT, weights_only=False)


@pytest.mark.parametrize("scores", [[float("nan")] * 3, [float("inf"), float("nan"), float("inf")]])
def test_no_finite_validation_score_is_a_diverged_fit(scores, monkeypatch):
    # Reloading the "best" state would hand back the untrained weights, whose forecasts
    # are finite: nothing downstream would notice.
    scripted = iter(scores)
    monkeypatch.setattr(Trainer, "_score", lambda self, data, model, keep: (next(scripted), None))
    with pytest.raises(ValueError, match="diverged.*lower the learning rate"):
        Trainer(fresh(), cfg(epochs=3, patience=0)).fit(window_set(), window_set(seed=1))


def test_a_huge_learning_rate_diverges_loudly():
    with pytest.raises(ValueError, match=r"not finite in any of 2 epoch.*now 1e\+30"):
        Trainer(fresh(), cfg(lr=1e30, epochs=2, patience=0, schedule="constant")).fit(
            window_set(), window_set(seed=1)
        )


def test_a_nan_epoch_after_good_ones_is_no_improvement(monkeypatch):
    states = script_val_scores(monkeypatch, [0.5, 0.3, float("nan"), float("nan"), 0.1])
    model = fresh()
    res = Trainer(model, cfg(epochs=5, patience=2)).fit(window_set(), window_set(seed=1))
    assert len(res.history) == 4  # two NaN epochs in a row: early stop
    assert res.best_epoch == 1 and res.best_val == 0.3
    final = trainable_state(model)
    assert all(torch.equal(final[k], states[1][k]) for k in final)


def test_checkpoint_every_epoch_without_backbone(tmp_path):
    model = fresh()
    Trainer(model, cfg(epochs=2, patience=0), workdir=tmp_path).fit(
        window_set(), window_set(seed=1)
    )
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 2
    assert ckpt["model"] and not any(k.startswith("llm.") for k in ckpt["model"])
    assert {"optimizer", "scheduler", "generator", "best_state"} <= set(ckpt)
    assert ckpt["scaler"] == {}  # no loss scaling outside float16


def test_a_skipped_fp16_step_leaves_the_schedule_and_a_resume_switches_precision(
    tmp_path, monkeypatch
):
    import timellm.trainer as tr

    schedulers, adam_steps, calls = [], [], []
    make = tr.make_scheduler
    monkeypatch.setattr(
        tr, "make_scheduler", lambda *a, **k: schedulers.append(make(*a, **k)) or schedulers[-1]
    )
    adam_step = torch.optim.Adam.step
    monkeypatch.setattr(
        torch.optim.Adam,
        "step",
        lambda self, *a, **k: adam_steps.append(1) or adam_step(self, *a, **k),
    )
    forward = Toy.forward

    def inf_at_first(self, x, ids, mask):  # float16's first training batch overflows
        out = forward(self, x, ids, mask)
        if self.training and getattr(self, "compute_dtype", None) == torch.float16:
            calls.append(1)
            if len(calls) == 1:
                out = out * float("inf")
        return out

    monkeypatch.setattr(Toy, "forward", inf_at_first)
    train, val = window_set(), window_set(seed=1)
    fp32 = fresh()  # a checkpoint of a float32 epoch, resumed under float16 (another GPU)
    Trainer(fp32, cfg(epochs=1, patience=0), workdir=tmp_path).fit(train, val)
    model = fresh()
    model.compute_dtype = torch.float16
    adam_steps.clear()
    res = Trainer(model, cfg(epochs=2, patience=0), workdir=tmp_path, resume=True).fit(train, val)
    batches = -(-len(train) // cfg().batch_size)
    assert res.resumed_from == 1 and len(calls) == batches  # the checkpoint had no scaler
    assert len(adam_steps) == batches - 1  # the overflowing step was skipped...
    assert schedulers[-1].last_epoch == batches + len(adam_steps)  # ...and not scheduled


def test_float16_compute_scales_the_loss_and_checkpoints_the_scale(tmp_path, monkeypatch):
    model = fresh()
    model.compute_dtype = torch.float16
    scaled = []
    original = torch.amp.GradScaler.scale
    monkeypatch.setattr(
        torch.amp.GradScaler, "scale", lambda self, x: scaled.append(1) or original(self, x)
    )
    Trainer(model, cfg(epochs=2, patience=0), workdir=tmp_path).fit(
        window_set(), window_set(seed=1)
    )
    steps = 2 * -(-len(window_set()) // cfg().batch_size)
    assert len(scaled) == steps
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["scaler"]["scale"] > 0


def test_resume_continues_from_the_last_epoch(tmp_path, monkeypatch):
    train, val = window_set(), window_set(seed=1)
    full = fresh()
    Trainer(full, cfg(epochs=3, patience=0), fingerprint={"a": 1}).fit(train, val)

    original = Trainer._train_epoch

    def crash_at_2(self, model, opt, sched, data, gen, epoch, **kw):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, model, opt, sched, data, gen, epoch, **kw)

    monkeypatch.setattr(Trainer, "_train_epoch", crash_at_2)
    with pytest.raises(KeyboardInterrupt):
        Trainer(fresh(), cfg(epochs=3, patience=0), workdir=tmp_path, fingerprint={"a": 1}).fit(
            train, val
        )
    monkeypatch.setattr(Trainer, "_train_epoch", original)

    epochs_run = []
    monkeypatch.setattr(
        Trainer,
        "_train_epoch",
        lambda self, *a, **kw: epochs_run.append(a[-1]) or original(self, *a, **kw),
    )
    resumed = fresh()
    res = Trainer(
        resumed, cfg(epochs=3, patience=0), workdir=tmp_path, resume=True, fingerprint={"a": 1}
    ).fit(train, val)
    assert res.resumed_from == 2 and epochs_run == [2] and len(res.history) == 3
    a, b = trainable_state(full), trainable_state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical to the uninterrupted run


@pytest.mark.parametrize("stop_at", [(1, 3), (2, 1), (2, 7)])  # (epoch, steps done in it)
def test_a_checkpoint_inside_an_epoch_resumes_where_it_stopped(stop_at, tmp_path):
    # an epoch of a 3B backbone on a 6 GB GPU takes hours: a kill lost all of it
    train, val = window_set(), window_set(seed=1)
    full = fresh()
    whole = Trainer(full, cfg(epochs=3, patience=0)).fit(train, val)
    steps = -(-len(train) // cfg().batch_size)
    assert stop_at[1] < steps
    seen = []

    def stop() -> None:  # on_step runs after the step's checkpoint
        seen.append(1)
        if len(seen) == stop_at[0] * steps + stop_at[1]:
            raise KeyboardInterrupt

    def trainer(model, **kw) -> Trainer:
        return Trainer(model, cfg(epochs=3, patience=0), workdir=tmp_path, **kw)

    with pytest.raises(KeyboardInterrupt):
        trainer(fresh(), on_step=stop, checkpoint_every_s=0.0).fit(train, val)
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert saved["epoch"] == stop_at[0] - 1 and saved["within"]["step"] == stop_at[1]
    resumed = fresh()
    ran = []
    res = trainer(resumed, resume=True, on_step=lambda: ran.append(1)).fit(train, val)
    assert res.resumed_from == stop_at[0]
    assert len(ran) == (3 - stop_at[0]) * steps - stop_at[1]  # none run twice
    a, b = trainable_state(full), trainable_state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical to the uninterrupted fit
    for row, again in zip(whole.history, res.history, strict=True):
        assert {k: v for k, v in row.items() if k != "seconds"} == {
            k: v for k, v in again.items() if k != "seconds"
        }


def test_a_checkpoint_inside_an_epoch_of_another_process_count_is_not_continued(tmp_path):
    # its steps are one process's share of the batches: 2 GPUs' step 5 is not 1 GPU's
    train, val = window_set(), window_set(seed=1)

    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(fresh(), cfg(), workdir=tmp_path, on_step=stop, checkpoint_every_s=0.0).fit(
            train, val
        )
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert saved["within"]["world"] == 1
    saved["within"]["world"] = 2
    torch.save(saved, tmp_path / CHECKPOINT)
    with pytest.raises(UserError, match=r"inside an epoch by 2 process\(es\), not 1"):
        Trainer(fresh(), cfg(), workdir=tmp_path, resume=True).fit(train, val)
    res = Trainer(fresh(), cfg(epochs=1), workdir=tmp_path, resume="auto").fit(train, val)
    assert res.resumed_from is None  # started afresh, as for other settings


def test_checkpoints_inside_an_epoch_wait_their_interval(tmp_path, monkeypatch):
    saves = []
    original = Trainer._save_checkpoint
    monkeypatch.setattr(
        Trainer,
        "_save_checkpoint",
        lambda self, **state: saves.append("within" in state) or original(self, **state),
    )
    train, val = window_set(), window_set(seed=1)
    Trainer(fresh(), cfg(epochs=2, patience=0), workdir=tmp_path, checkpoint_every_s=3600.0).fit(
        train, val
    )
    assert saves == [False, False]  # epoch ends only: no hour passed
    saves.clear()
    Trainer(fresh(), cfg(epochs=2, patience=0), workdir=tmp_path / "b", checkpoint_every_s=0.0).fit(
        train, val
    )
    assert saves.count(True) == 2 * -(-len(train) // cfg().batch_size)  # every step
    saves.clear()  # no folder to write to: no state built for nothing
    Trainer(fresh(), cfg(epochs=2, patience=0), checkpoint_every_s=0.0).fit(train, val)
    assert True not in saves  # (the epoch ends still call it; it writes nothing)


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    Trainer(fresh(), cfg(epochs=1), workdir=tmp_path, fingerprint={"lr": 1}).fit(
        window_set(), window_set(seed=1)
    )
    with pytest.raises(UserError, match="different settings"):
        Trainer(fresh(), cfg(epochs=2), workdir=tmp_path, resume=True, fingerprint={"lr": 2}).fit(
            window_set(), window_set(seed=1)
        )


def test_resume_refuses_a_checkpoint_of_other_backbone_files(tmp_path):
    """The same backbone path with other weights in it: the stamps differ. A checkpoint
    written before stamps existed (none recorded) still resumes."""
    train, val = window_set(), window_set(seed=1)
    Trainer(fresh(), cfg(epochs=1), workdir=tmp_path, stamps={"backbone": "a"}).fit(train, val)
    with pytest.raises(UserError, match=r"different settings \(backbone files\)"):
        Trainer(
            fresh(), cfg(epochs=2), workdir=tmp_path, resume=True, stamps={"backbone": "b"}
        ).fit(train, val)
    res = Trainer(
        fresh(), cfg(epochs=1), workdir=tmp_path, resume=True, stamps={"backbone": "a"}
    ).fit(train, val)
    assert res.resumed_from == 1
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    del ckpt["stamps"]
    torch.save(ckpt, tmp_path / CHECKPOINT)
    res = Trainer(
        fresh(), cfg(epochs=1), workdir=tmp_path, resume=True, stamps={"backbone": "b"}
    ).fit(train, val)
    assert res.resumed_from == 1


@pytest.mark.parametrize("damage", ["truncate", "padded", "text"])
def test_resume_refuses_a_damaged_checkpoint_in_one_line(tmp_path, damage):
    Trainer(fresh(), cfg(epochs=1), workdir=tmp_path).fit(window_set(), window_set(seed=1))
    ckpt = next(tmp_path.glob("*.pt"))
    data = ckpt.read_bytes()
    # "padded": cut, but past 64 KiB, where torch's reason runs over 120 characters
    damaged = {"truncate": data[:5000], "padded": data[:5000] + bytes(1 << 17)}
    ckpt.write_bytes(damaged.get(damage, b"garbage"))
    with pytest.raises(UserError, match="is damaged ") as err:
        Trainer(fresh(), cfg(epochs=2), workdir=tmp_path, resume=True).fit(
            window_set(), window_set(seed=1)
        )
    # the way out under both commands (`run` has no --resume option)
    assert str(err.value).endswith(
        "delete it, or let the rerun start afresh (`timellm`: leave out --resume; `run`: "
        "--set timellm.resume=auto)"
    )
    # torch's reason, cut at a word boundary
    with pytest.raises(Exception) as raw:  # whatever torch raises for it
        torch.load(ckpt, weights_only=False)
    words = str(raw.value).split()
    reason = str(err.value).split(f"{raw.type.__name__}: ", 1)[1].split("); ", 1)[0]
    shown = reason.removesuffix(" ...").split(" ")
    assert shown == words[: len(shown)] and len(reason) <= 124


def test_clip_cuts_at_a_word_boundary():
    from ensemble.errors import clip as _clip

    assert _clip("short\n text", 120) == "short text"
    assert _clip("alpha beta gamma", 10) == "alpha beta ..."
    assert _clip("alpha beta gamma", 11) == "alpha beta ..."
    assert _clip("alpha betagamma", 9) == "alpha ..."
    assert _clip("alphabetagamma", 5) == "alpha ..."


def test_resuming_a_fit_that_stopped_early_trains_no_further(tmp_path, monkeypatch):
    # a run killed after its member had early-stopped (while predicting, say) must not
    # train past the stop when rerun: same history, the best epoch's weights
    states = script_val_scores(monkeypatch, [0.5, 0.3, 0.4, 0.6, 0.1, 0.1])
    train, val = window_set(), window_set(seed=1)
    first = Trainer(fresh(), cfg(epochs=6, patience=2), workdir=tmp_path).fit(train, val)
    assert len(first.history) == 4 and len(states) == 4
    model = fresh()
    res = Trainer(model, cfg(epochs=6, patience=2), workdir=tmp_path, resume=True).fit(train, val)
    assert res.resumed_from == 4 and len(states) == 4  # no epoch trained
    assert res.history == first.history and (res.best_epoch, res.best_val) == (1, 0.3)
    final = trainable_state(model)
    assert all(torch.equal(final[k], states[1][k]) for k in final)


def test_resume_refuses_a_file_that_is_not_a_checkpoint_in_one_line(tmp_path, caplog):
    # a loadable torch file of another kind under the checkpoint's name (weights saved
    # there by hand): refused, not a KeyError from deep inside the resume
    train, val = window_set(), window_set(seed=1)
    torch.save(trainable_state(fresh()), tmp_path / CHECKPOINT)
    with pytest.raises(UserError) as err:
        Trainer(fresh(), cfg(epochs=1), workdir=tmp_path, resume=True).fit(train, val)
    assert "is damaged (ValueError: not a checkpoint this trainer wrote)" in str(err.value)
    assert "\n" not in str(err.value)
    with caplog.at_level("WARNING", logger="timellm.trainer"):
        res = Trainer(fresh(), cfg(epochs=1), workdir=tmp_path, resume="auto").fit(train, val)
    assert res.resumed_from is None and "not a checkpoint this trainer wrote" in caplog.text


def test_resume_true_without_a_checkpoint_trains_from_scratch(tmp_path, caplog):
    # the first run of a job script that always passes --resume
    train, val = window_set(), window_set(seed=1)
    alone = fresh()
    expect = Trainer(alone, cfg(epochs=2, patience=0)).fit(train, val)
    model = fresh()
    with caplog.at_level("INFO", logger="timellm.trainer"):
        res = Trainer(model, cfg(epochs=2, patience=0), workdir=tmp_path, resume=True).fit(
            train, val
        )
    assert "no checkpoint to resume from" in caplog.text and "starting afresh" in caplog.text
    assert res.resumed_from is None and res.history[0]["val_mse"] == expect.history[0]["val_mse"]
    a, b = trainable_state(alone), trainable_state(model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["epoch"] == 1


def test_auto_resume_continues_a_matching_checkpoint_and_else_starts_afresh(tmp_path, caplog):
    train, val = window_set(), window_set(seed=1)
    first = Trainer(fresh(), cfg(epochs=2, patience=0), workdir=tmp_path, fingerprint={"lr": 1})
    first.fit(train, val)
    same = Trainer(
        fresh(), cfg(epochs=2, patience=0), workdir=tmp_path, resume="auto", fingerprint={"lr": 1}
    ).fit(train, val)
    assert same.resumed_from == 2  # both epochs came from the checkpoint

    alone = fresh()  # what a fit of the other settings gives without any checkpoint
    expect = Trainer(alone, cfg(epochs=2, patience=0), fingerprint={"lr": 2}).fit(train, val)
    other = fresh()
    with caplog.at_level("INFO", logger="timellm.trainer"):
        res = Trainer(
            other, cfg(epochs=2, patience=0), workdir=tmp_path, resume="auto", fingerprint={"lr": 2}
        ).fit(train, val)
    assert res.resumed_from is None and res.history[0]["val_mse"] == expect.history[0]["val_mse"]
    assert "different settings (lr); starting afresh" in caplog.text
    a, b = trainable_state(alone), trainable_state(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the checkpoint is now the new fit's: the same settings continue it
    again = Trainer(
        fresh(), cfg(epochs=2, patience=0), workdir=tmp_path, resume="auto", fingerprint={"lr": 2}
    ).fit(train, val)
    assert again.resumed_from == 2


def test_auto_resume_starts_afresh_over_a_damaged_checkpoint(tmp_path, caplog):
    Trainer(fresh(), cfg(epochs=1), workdir=tmp_path).fit(window_set(), window_set(seed=1))
    ckpt = next(tmp_path.glob("*.pt"))
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    with caplog.at_level("WARNING", logger="timellm.trainer"):
        res = Trainer(fresh(), cfg(epochs=1), workdir=tmp_path, resume="auto").fit(
            window_set(), window_set(seed=1)
        )
    assert res.resumed_from is None and "is damaged" in caplog.text
    assert torch.load(ckpt, weights_only=False)["epoch"] == 0  # rewritten whole


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedules_run(schedule):
    res = Trainer(fresh(), cfg(epochs=2, patience=0, schedule=schedule)).fit(
        window_set(), window_set(seed=1)
    )
    assert len(res.history) == 2 and np.isfinite(res.best_val)


# Per-epoch rates of official run_main.py at --learning_rate 0.01, worked out by hand:
# type1 and constant start from OneCycleLR's lr / 25 = 4e-4 (type1 halves from epoch 2);
# COS is 1e-8 + (0.01 - 1e-8) * (1 + cos(pi * epoch / 20)) / 2.
OFFICIAL_LR = {
    "official_type1": [4e-4, 4e-4, 2e-4, 1e-4, 5e-5],
    "official_constant": [4e-4] * 5,
    "official_cos": [0.01, 0.009938442, 0.009755285, 0.009455036, 0.009045086],
}


@pytest.mark.parametrize("schedule", sorted(OFFICIAL_LR))
def test_official_schedules_hold_the_official_rate_each_epoch(schedule, monkeypatch):
    step_lrs: list[tuple[float, float]] = []
    step = torch.optim.Adam.step

    def spy(self, *a, **kw):
        step_lrs.append((self.param_groups[0]["lr"], self.param_groups[0]["betas"][0]))
        return step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    res = Trainer(fresh(), cfg(lr=0.01, epochs=5, patience=0, schedule=schedule)).fit(
        window_set(), window_set(seed=1)
    )
    expected = OFFICIAL_LR[schedule]
    assert [h["lr"] for h in res.history] == pytest.approx(expected, rel=1e-6)
    per_epoch = len(step_lrs) // 5  # 171 windows in batches of 16: 11 steps
    assert per_epoch == 11 and len(step_lrs) == 55
    for e, lr in enumerate(expected):
        assert [x for x, _ in step_lrs[e * 11 : (e + 1) * 11]] == pytest.approx([lr] * 11)
    # The official OneCycleLR, built and never stepped, leaves Adam's beta1 at 0.95.
    beta1 = 0.9 if schedule == "official_cos" else 0.95
    assert {b for _, b in step_lrs} == {beta1}


@pytest.mark.parametrize("pct_start", [0.2, 0.5])
def test_onecycle_peaks_after_pct_start(pct_start):
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = make_scheduler(
        opt, cfg(lr=0.01, epochs=10, schedule="onecycle", pct_start=pct_start), 10
    )
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert int(np.argmax(lrs)) == round(100 * pct_start) - 1 and max(lrs) == pytest.approx(0.01)


def test_select_starts():
    assert select_starts(10, 1).tolist() == list(range(10))
    assert select_starts(10, 4).tolist() == [0, 4, 8, 9]  # the last window always kept
    assert select_starts(100, 10, percent=50).tolist() == [0, 10, 20, 30, 40, 49]
    with pytest.raises(ValueError):
        select_starts(10, 0)


def test_seeded_strided_starts_cover_every_phase_of_the_period():
    # every 8th window of hourly data starts at hours 0, 8, 16 only: 3 of the 24
    fixed = select_starts(8033, 8)
    assert len(np.unique(fixed[:-1] % 24)) == 3
    drawn = select_starts(8033, 8, seed=0)
    assert np.all(np.diff(drawn) > 0)  # in order, none twice
    for n in (1, 7, 10, 100, 8033):  # one per block, plus the last window when not drawn
        for seed in range(5):
            got, blocks = select_starts(n, 8, seed=seed), -(-n // 8)
            assert blocks <= len(got) <= blocks + 1 and got[-1] == n - 1
    assert len(np.unique(drawn % 24)) == 24
    assert np.all(drawn[:-1] // 8 == np.arange(len(drawn) - 1))  # one from each block
    assert drawn[-1] == 8032  # the most recent window still kept
    np.testing.assert_array_equal(drawn, select_starts(8033, 8, seed=0))  # seeded
    assert not np.array_equal(drawn, select_starts(8033, 8, seed=1))
    assert select_starts(10, 1, seed=3).tolist() == list(range(10))
    tail = select_starts(11, 4, seed=5)  # a short last block draws inside it
    assert tail[-1] == 10 and np.all(tail < 11) and np.all(np.diff(tail) > 0)


def test_series_sampling_gathers_window_channel_pairs():
    ws = window_set()
    x, y, ids, mask = ws.batch_series(torch.tensor([0, 3, 11]))  # (0,0), (1,1), (5,1)
    assert x.shape == (3, L, 1) and y.shape == (3, H, 1) and ids.shape == (3, P)
    assert torch.equal(x[1, :, 0], ws.series[1 : 1 + L, 1])
    assert torch.equal(y[2, :, 0], ws.series[5 + L : 5 + L + H, 1])
    model = fresh()
    res = Trainer(model, cfg(epochs=2, patience=0, sample="series")).fit(ws, window_set(seed=1))
    assert len(res.history) == 2 and max(model.calls[:3]) <= 16  # batches of series


def test_a_checkpoint_is_on_disk_before_it_replaces_the_last_one(tmp_path, monkeypatch):
    # renamed before its bytes reach the disk, a power cut could leave an empty
    # checkpoint, and hours of epochs would restart from nothing
    import os

    import timellm.trainer as trainer_mod

    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, trainer_mod.replace
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    monkeypatch.setattr(
        trainer_mod, "replace", lambda a, b: renamed.append(len(synced)) or real_replace(a, b)
    )
    trainer_mod.atomic_save({"epoch": 3}, tmp_path / "checkpoint.pt")
    assert renamed == [1] and torch.load(tmp_path / "checkpoint.pt")["epoch"] == 3


def test_on_step_runs_after_every_training_step_and_its_exception_ends_the_fit():
    # `tune` raises there a Ctrl-C that Python swallowed mid-step: a Time-LLM epoch takes
    # minutes, so waiting for its end kept the trial running
    train, val = window_set(), window_set(seed=1)
    steps = []
    Trainer(fresh(), cfg(epochs=1), on_step=lambda: steps.append(1)).fit(train, val)
    per_epoch = -(-len(train) // 16)  # batches of 16 windows
    assert len(steps) == per_epoch > 1

    def interrupted() -> None:
        steps.append(1)
        if len(steps) == 2:
            raise KeyboardInterrupt

    steps.clear()
    with pytest.raises(KeyboardInterrupt):
        Trainer(fresh(), cfg(epochs=3), on_step=interrupted).fit(train, val)
    assert len(steps) == 2  # stopped at once, not at the epoch's end


def test_clip_grad_bounds_each_steps_gradient_norm_and_weight_decay_reaches_adam(monkeypatch):
    norms: list[float] = []
    real_step = torch.optim.Adam.step

    def step(self, *a, **kw):  # the gradient norm Adam steps with
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        assert all(g["weight_decay"] == decay for g in self.param_groups)
        return real_step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    train, val = window_set(), window_set(seed=1)
    decay = 0.0
    Trainer(fresh(), cfg(epochs=1, lr=1.0)).fit(train, val)
    assert max(norms) > 1e-3  # unclipped, the toy's gradients exceed the bound below
    norms.clear()
    decay = 1e-3
    Trainer(fresh(), cfg(epochs=1, lr=1.0, clip_grad=1e-3, weight_decay=decay)).fit(train, val)
    assert norms and max(norms) <= 1e-3 * (1 + 1e-4)
