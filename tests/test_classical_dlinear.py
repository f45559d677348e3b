"""DLinear / NLinear: accuracy against naive, determinism, save/load, decomposition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from classical.dlinear import DLinear, MovingAverage, NLinear, kernel_from_period
from classical.naive import NaiveLast
from experiments import registry

FAST = dict(epochs=4, patience=2, batch_size=32, lr=0.005, progress=False)


def _mse(member, split) -> float:
    return float(((member.predict(split.windows()) - split.targets()) ** 2).mean())


@pytest.fixture(scope="module")
def splits(small_synth_splits):
    return small_synth_splits(channels=3)


@pytest.mark.parametrize("cls", [DLinear, NLinear])
def test_beats_last_value_naive(splits, cls):
    model = cls(96, 24, seed=0, **FAST).fit(splits.train, splits.val)
    naive = NaiveLast().fit(splits.train, splits.val)
    assert _mse(model, splits.test) < 0.5 * _mse(naive, splits.test)
    # best-validation checkpoint: the kept weights score the recorded best val MSE
    best = min(h["val_mse"] for h in model.history)
    assert _mse(model, splits.val) == pytest.approx(best, rel=1e-4)


def test_same_seed_same_forecasts(splits):
    a = DLinear(96, 24, seed=3, **FAST).fit(splits.train, splits.val)
    b = DLinear(96, 24, seed=3, **FAST).fit(splits.train, splits.val)
    c = DLinear(96, 24, seed=4, **FAST).fit(splits.train, splits.val)
    w = splits.test.windows()
    np.testing.assert_array_equal(a.predict(w), b.predict(w))
    assert not np.array_equal(a.predict(w), c.predict(w))


@pytest.mark.parametrize("cls", [DLinear, NLinear])
def test_save_load_roundtrip(splits, tmp_path, cls):
    model = cls(96, 24, individual=True, seed=0, **{**FAST, "epochs": 1}).fit(
        splits.train, splits.val
    )
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "state_dict.pt").is_file()
    loaded = cls.load(tmp_path / "m")
    w = splits.test.windows()
    out = loaded.predict(w)
    assert out.shape == (splits.test.n_windows, 24, 3)
    np.testing.assert_array_equal(out, model.predict(w))


@pytest.mark.parametrize("kernel", [3, 25, 97])
def test_moving_average_matches_replicate_padded_avg_pool(kernel):
    x = torch.randn(4, 3, 120)
    pad = (kernel - 1) // 2
    ref = F.avg_pool1d(F.pad(x, (pad, pad), mode="replicate"), kernel, stride=1)
    torch.testing.assert_close(MovingAverage(kernel)(x), ref, atol=1e-5, rtol=0)


def test_kernel_from_period_is_odd_and_fits():
    assert kernel_from_period(24, 336) == 25
    assert kernel_from_period(25, 336) == 25
    assert kernel_from_period(168, 96) == 95


def test_registry_builds_with_params():
    ctx = registry.MemberContext(96, 24, 3, "h", [24, 168], 0, "synth")
    m = registry.build("dlinear@kernel=auto@individual=true", ctx)
    assert isinstance(m, DLinear) and m.kernel == 25 and m.individual
    assert m.name == "dlinear@kernel=auto@individual=true"
    ctx = registry.MemberContext(96, 24, 3, "h", [24], 0, "synth")
    assert isinstance(registry.build("nlinear", ctx), NLinear)


def test_the_best_validation_epoch_is_kept_when_later_epochs_are_worse(splits, monkeypatch):
    # Validation improves every epoch on this series, so report epochs 3+ as worse: the
    # weights kept must be epoch 2's, whose true val MSE was recorded in the history.
    from classical import _torch_train

    real, calls = _torch_train._val_mse, []

    def worse_after_two(model, va, batch_size):
        calls.append(real(model, va, batch_size))
        return calls[-1] if len(calls) <= 2 else 1e9

    monkeypatch.setattr(_torch_train, "_val_mse", worse_after_two)
    model = DLinear(96, 24, seed=0, **{**FAST, "patience": 3}).fit(splits.train, splits.val)
    assert len(model.history) == 4 and calls[3] < calls[1]  # the last epoch really was better
    assert _mse(model, splits.val) == pytest.approx(calls[1], rel=1e-5)


def test_patience_zero_never_stops_early(splits, monkeypatch):
    # 0 means "never stop early" here as in Time-LLM's trainer (it used to stop at the
    # first epoch without improvement, like patience 1)
    from classical import _torch_train

    vals = iter([1.0, 2.0, 3.0, 4.0])
    monkeypatch.setattr(_torch_train, "_val_mse", lambda model, va, batch_size: next(vals))
    model = DLinear(96, 24, seed=0, **{**FAST, "patience": 0}).fit(splits.train, splits.val)
    assert len(model.history) == 4


def test_a_fit_with_no_finite_validation_mse_is_an_error(splits):
    # Reloading the "best" state would hand back the untrained weights, whose finite
    # forecasts nothing downstream would notice
    with pytest.raises(ValueError, match="fit diverged"):
        DLinear(96, 24, seed=0, **{**FAST, "lr": 1e30}).fit(splits.train, splits.val)


@pytest.mark.parametrize("cls", [DLinear, NLinear])
def test_ms_fits_the_target_as_s_does(synth_csv, cls):
    # The Time-Series-Library's MS loss is the target's (f_dim = -1): a channel-independent
    # model trained under MS is the S model (it used to fit every channel's loss)
    from ensemble.data import load_dataset, make_splits

    path = synth_csv(n=1500, channels=3)
    ms, s = (make_splits(load_dataset(data_path=path, features=f), 96, 24) for f in ("MS", "S"))
    assert ms.train.loss_channels == (2,) and s.train.loss_channels is None
    fc_ms = cls(96, 24, seed=0, **FAST).fit(ms.train, ms.val).predict(ms.test.windows())
    fc_s = cls(96, 24, seed=0, **FAST).fit(s.train, s.val).predict(s.test.windows())
    np.testing.assert_allclose(fc_ms[..., 2], fc_s[..., 0], atol=1e-5)


def test_wide_windows_are_scored_and_forecast_in_smaller_batches(splits, monkeypatch):
    # batches counted in windows alone took 6 GB at 862 channels and L=512
    import classical._torch_train as tt

    assert tt.capped_batch(2048, 7, 512 + 96) == 2048  # the benchmarks' shapes: as set
    assert tt.capped_batch(4096, 21, 720 + 720) == 4096
    model = DLinear(96, 24, seed=0, **FAST).fit(splits.train, splits.val)
    w = splits.test.windows()
    whole = model.predict(w)
    sizes = []
    forward = model.net.forward
    monkeypatch.setattr(model.net, "forward", lambda x: sizes.append(len(x)) or forward(x))
    per_window = 3 * (96 + 24)  # values of one window, all channels
    monkeypatch.setattr(tt, "BATCH_VALUES", 100 * per_window)
    np.testing.assert_allclose(model.predict(w), whole, rtol=1e-5, atol=1e-6)
    assert max(sizes) == 100 and sum(sizes) == w.n
