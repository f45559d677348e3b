"""iTransformer: shapes, channel tokens, normalisation; fit, save/load, registry and tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classical.dlinear import DLinear
from classical.itransformer import ChannelAttention, ITransformer, ITransformerNet
from classical.naive import NaiveLast
from ensemble.errors import UserError
from experiments import registry

SMALL = dict(d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.0)
FAST = dict(**SMALL, epochs=4, patience=2, batch_size=32, lr=3e-3, progress=False)


def _mse(member, split) -> float:
    return float(((member.predict(split.windows()) - split.targets()) ** 2).mean())


@pytest.fixture(scope="module")
def splits(small_synth_splits):
    return small_synth_splits(channels=3)


def test_any_number_of_channels_gives_the_horizon():
    net = ITransformerNet(96, 24, **SMALL).eval()
    for c in (1, 3, 21):  # channels are tokens: no weight depends on their number
        assert net(torch.randn(5, c, 96)).shape == (5, c, 24)


def test_attention_is_softmax_attention_over_the_channel_tokens():
    torch.manual_seed(0)
    attn = ChannelAttention(8, 2, dropout=0.0).eval()
    x = torch.randn(4, 7, 8)  # 7 channel tokens
    q, k, v = attn.qkv(x).view(4, 7, 3, 2, 4).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)  # [B, heads, C, C]
    want = (weights @ v).transpose(1, 2).reshape(4, 7, 8)
    torch.testing.assert_close(attn(x), attn.out(want))


def test_channels_mix_but_their_order_does_not_matter():
    torch.manual_seed(0)
    net = ITransformerNet(96, 24, **SMALL).eval()
    x = torch.randn(6, 3, 96)
    y = net(x)
    # a window scaled and shifted channel by channel gives the forecast scaled and shifted
    a, b = torch.tensor([3.0, 0.5, 2.0])[:, None], torch.tensor([7.0, -1.0, 0.0])[:, None]
    torch.testing.assert_close(net(a * x + b), a * y + b, rtol=1e-4, atol=1e-4)
    # no position for the channel tokens: permuting the channels permutes the forecasts
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(net(x[:, perm]), y[:, perm], rtol=1e-5, atol=1e-5)
    # unlike PatchTST and DLinear, channel 0's forecast reads the other channels
    other = x.clone()
    other[:, 1:] = torch.randn(6, 2, 96)
    assert not torch.allclose(net(other)[:, 0], y[:, 0])


def test_beats_last_value_naive_and_is_deterministic(splits):
    model = ITransformer(96, 24, seed=0, **FAST).fit(splits.train, splits.val)
    naive = NaiveLast().fit(splits.train, splits.val)
    assert _mse(model, splits.test) < 0.5 * _mse(naive, splits.test)
    assert [h["epoch"] for h in model.history] == list(range(1, len(model.history) + 1))
    again = ITransformer(96, 24, seed=0, **FAST).fit(splits.train, splits.val)
    np.testing.assert_array_equal(
        model.predict(splits.test.windows()), again.predict(splits.test.windows())
    )
    # within reach of DLinear on the same data (a broken model lands far above)
    dlinear = DLinear(96, 24, epochs=4, progress=False).fit(splits.train, splits.val)
    assert _mse(model, splits.test) < 2.0 * _mse(dlinear, splits.test)


def test_save_load_roundtrip(splits, tmp_path):
    model = ITransformer(96, 24, seed=1, **{**FAST, "epochs": 1})
    model.fit(splits.train, splits.val)
    model.save(tmp_path / "m")
    back = ITransformer.load(tmp_path / "m")
    assert back.config() == model.config() and back.d_model == 16
    np.testing.assert_array_equal(
        back.predict(splits.test.windows()), model.predict(splits.test.windows())
    )


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"d_model": 10, "n_heads": 4}, "not a multiple"),
        ({"dropout": 1.0}, r"\[0, 1\)"),
        ({"n_layers": 0}, "must be > 0"),
        ({"device": "gpu"}, "cpu or cuda"),
    ],
)
def test_bad_shapes_are_refused_when_built(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        ITransformer(96, 24, **kwargs)


def test_registry_builds_it_with_its_settings():
    ctx = registry.MemberContext(96, 24, 3, "h", [24], 0, "synth")
    m = registry.build("itransformer@d_model=32@n_heads=4@lr=0.001", ctx)
    assert isinstance(m, ITransformer) and (m.d_model, m.n_heads, m.lr) == (32, 4, 1e-3)
    assert registry.build("itransformer", ctx).d_model == 256  # the authors' ETTh1 default
    with pytest.raises(UserError, match="not a multiple"):
        registry.build("itransformer@d_model=10", ctx)
    with pytest.raises(UserError, match="unknown itransformer setting"):
        registry.build("itransformer@patch_len=16", ctx)
    with pytest.raises(UserError, match="threads must be <= 1024"):
        registry.build("itransformer@threads=100000", ctx)


def test_tuning_tunes_its_learning_rate(synth_csv, tmp_path):
    from experiments.config import RunConfig
    from experiments.tune import TuneSpec, run_tune

    spec = TuneSpec(
        dataset=None,
        data_path=str(synth_csv(n=1200)),
        pred_len=24,
        members=["itransformer"],
        member_params={"itransformer": {**SMALL, "epochs": 1, "batch_size": 64}},
        trials=2,
        out=str(tmp_path / "tune"),
        min_seq_len=48,
        max_seq_len=96,
    ).resolved()
    run_tune(spec, progress=False)
    p = RunConfig.from_file(tmp_path / "tune" / "best_config.yaml").member_params["itransformer"]
    assert 1e-5 <= p["lr"] <= 1e-3 and p["d_model"] == 16 and p["epochs"] == 1
