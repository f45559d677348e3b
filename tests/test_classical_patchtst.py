"""PatchTST: shapes, attention, normalisation and channel independence; fit, save/load,
registry and tuning."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from classical.naive import NaiveLast
from classical.patchtst import PatchTST, PatchTSTNet, ResidualScoreAttention, n_patches
from ensemble.errors import UserError
from experiments import registry

SMALL = dict(d_model=8, n_heads=2, n_layers=2, d_ff=16, dropout=0.0)
FAST = dict(**SMALL, epochs=4, patience=2, batch_size=32, lr=3e-3, progress=False)


def _mse(member, split) -> float:
    return float(((member.predict(split.windows()) - split.targets()) ** 2).mean())


@pytest.fixture(scope="module")
def splits(small_synth_splits):
    return small_synth_splits(channels=3)


@pytest.mark.parametrize(("seq_len", "patch", "stride"), [(512, 16, 8), (96, 24, 24), (96, 7, 3)])
def test_patch_count_and_output_shape(seq_len, patch, stride):
    net = PatchTSTNet(seq_len, 24, patch, stride, **SMALL).eval()
    x = torch.randn(5, 3, seq_len)
    # the padded series cut by unfold gives exactly n_patches patches
    padded = torch.cat([x, x[..., -1:].expand(5, 3, stride)], dim=-1)
    assert padded.unfold(-1, patch, stride).shape[2] == n_patches(seq_len, patch, stride)
    assert n_patches(512, 16, 8) == 64  # PatchTST/64
    assert net(x).shape == (5, 3, 24)


def test_attention_without_carried_scores_is_plain_softmax_attention():
    torch.manual_seed(0)
    attn = ResidualScoreAttention(8, 2, dropout=0.0).eval()
    x = torch.randn(4, 10, 8)
    out, scores = attn(x, None)
    q, k, v = attn.qkv(x).view(4, 10, 3, 2, 4).permute(2, 0, 3, 1, 4)
    want = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(4, 10, 8)
    torch.testing.assert_close(out, attn.out(want))
    torch.testing.assert_close(scores, q @ k.transpose(-1, -2) / 2.0)
    # carried scores shift the softmax: adding a large bias to key 0 makes it dominate
    prev = torch.zeros_like(scores)
    prev[..., 0] = 50.0
    out_prev, scores_prev = attn(x, prev)
    torch.testing.assert_close(scores_prev, scores + prev)
    torch.testing.assert_close(
        out_prev, attn.out(v[:, :, :1].expand_as(v).transpose(1, 2).reshape(4, 10, 8))
    )


def test_forecasts_follow_the_window_scale_and_level_channel_by_channel():
    torch.manual_seed(0)
    net = PatchTSTNet(96, 24, 16, 8, **SMALL).eval()
    x = torch.randn(6, 3, 96)
    y = net(x)
    # RevIN: a window scaled and shifted gives the forecast scaled and shifted
    torch.testing.assert_close(net(3.0 * x + 7.0), 3.0 * y + 7.0, rtol=1e-4, atol=1e-4)
    # channel independence: each channel's forecast depends on that channel alone
    other = x.clone()
    other[:, 1:] = torch.randn(6, 2, 96)
    torch.testing.assert_close(net(other)[:, 0], y[:, 0])


def test_beats_last_value_naive_and_is_deterministic(splits):
    model = PatchTST(96, 24, seed=0, **FAST).fit(splits.train, splits.val)
    naive = NaiveLast().fit(splits.train, splits.val)
    assert _mse(model, splits.test) < 0.5 * _mse(naive, splits.test)
    assert [h["epoch"] for h in model.history] == list(range(1, len(model.history) + 1))
    again = PatchTST(96, 24, seed=0, **FAST).fit(splits.train, splits.val)
    np.testing.assert_array_equal(
        model.predict(splits.test.windows()), again.predict(splits.test.windows())
    )


def test_save_load_roundtrip(splits, tmp_path):
    model = PatchTST(96, 24, seed=1, patch_len=24, stride=12, **{**FAST, "epochs": 1})
    model.fit(splits.train, splits.val)
    model.save(tmp_path / "m")
    back = PatchTST.load(tmp_path / "m")
    assert back.config() == model.config() and back.patch_len == 24
    np.testing.assert_array_equal(
        back.predict(splits.test.windows()), model.predict(splits.test.windows())
    )


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"patch_len": 200}, "patch_len must be in 1..seq_len"),
        ({"d_model": 10, "n_heads": 4}, "not a multiple"),
        ({"dropout": -0.1}, r"\[0, 1\)"),
        ({"n_layers": 0}, "must be > 0"),
        ({"device": "gpu"}, "cpu or cuda"),
        pytest.param(
            {"device": "cuda"},
            "no CUDA GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here"),
        ),
    ],
)
def test_bad_shapes_are_refused_when_built(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        PatchTST(96, 24, **kwargs)


def test_registry_builds_it_with_the_period_as_patch():
    ctx = registry.MemberContext(96, 24, 3, "h", [24, 12], 0, "synth")
    m = registry.build("patchtst@patch_len=period@stride=12@d_model=8@n_heads=2", ctx)
    assert isinstance(m, PatchTST) and (m.patch_len, m.stride, m.d_model) == (24, 12, 8)
    assert m.name == "patchtst@patch_len=period@stride=12@d_model=8@n_heads=2"
    assert registry.build("patchtst", ctx).patch_len == 16
    with pytest.raises(UserError, match="not a multiple"):
        registry.build("patchtst@d_model=10", ctx)
    with pytest.raises(UserError, match="true or false"):
        registry.build("patchtst@residual_attention=1", ctx)
    # thousands of threads would hang or crash libgomp: refused as lightgbm's are
    with pytest.raises(UserError, match="threads must be <= 1024"):
        registry.build("patchtst@threads=100000", ctx)
    # null in a config.yaml is the documented default, not a bad value
    nulls = replace(ctx, params={"threads": None, "device": None, "patch_len": None})
    m = registry.build("patchtst", nulls)
    assert m.threads is None and m.device is None


def test_the_period_patch_without_a_period_falls_back_to_16_and_says_so(caplog):
    ctx = registry.MemberContext(96, 24, 3, "h", [168], 0, "synth", workdir="/tmp/x")
    with caplog.at_level("WARNING"):
        m = registry.build("patchtst@patch_len=period", ctx)
    assert m.patch_len == 16
    assert (
        "patchtst falls back to patch_len 16: every period (168) is longer than the lookback 96"
        in caplog.text
    )


def test_tuning_draws_its_patch_from_the_periods_choices(synth_csv, tmp_path):
    from experiments.config import RunConfig
    from experiments.tune import TuneSpec, run_tune
    from experiments.tune_space import patch_choices

    spec = TuneSpec(
        dataset=None,
        data_path=str(synth_csv(n=1200)),
        pred_len=24,
        members=["patchtst"],
        member_params={"patchtst": {**SMALL, "epochs": 1, "batch_size": 64}},
        trials=2,
        out=str(tmp_path / "tune"),
        min_seq_len=48,
        max_seq_len=96,
    ).resolved()
    run_tune(spec, progress=False)
    cfg = RunConfig.from_file(tmp_path / "tune" / "best_config.yaml")
    p = cfg.member_params["patchtst"]  # tuned: patch, stride and lr; the rest as given
    assert f"{p['patch_len']}/{p['stride']}" in patch_choices(cfg.periods[0], 48)
    assert 3e-5 <= p["lr"] <= 3e-3 and p["d_model"] == 8 and p["epochs"] == 1


def test_each_layer_receives_the_previous_layers_scores():
    torch.manual_seed(0)
    net = PatchTSTNet(96, 24, 16, 8, **SMALL).eval()
    seen = []
    for layer in net.layers:
        layer.attn.register_forward_hook(lambda mod, args, out: seen.append((args[1], out[1])))
    net(torch.randn(2, 3, 96))
    assert seen[0][0] is None
    torch.testing.assert_close(seen[1][0], seen[0][1])  # layer 2 got layer 1's scores
    plain = PatchTSTNet(96, 24, 16, 8, **SMALL, residual_attention=False).eval()
    plain.load_state_dict(net.state_dict())
    seen.clear()
    for layer in plain.layers:
        layer.attn.register_forward_hook(lambda mod, args, out: seen.append(args[1]))
    plain(torch.randn(2, 3, 96))
    assert seen == [None, None]


def test_threads_default_to_the_process_setting():
    from classical._torch_train import torch_threads

    before = torch.get_num_threads()
    assert PatchTST(96, 24).threads is None  # OMP_NUM_THREADS / torch's own default
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
