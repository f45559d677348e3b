"""ensemble.hybrid: stacking, weighted combination, combiner forecasts, the oracle."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble import hybrid
from router import make_combiner


@pytest.fixture
def members():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((40, 8, 3))
    f = {f"m{i}": y + s * rng.standard_normal(y.shape) for i, s in enumerate((0.2, 0.5, 1.0))}
    return f, y


def test_stack_keeps_member_order(members):
    f, _ = members
    s = hybrid.stack(f)
    assert s.shape == (3, 40, 8, 3) and s.dtype == np.float64
    np.testing.assert_array_equal(s[1], f["m1"])


@pytest.mark.parametrize("shape", [(3,), (40, 3), (3, 3), (40, 3, 3)])
def test_combine_accepts_every_weight_layout(members, shape):
    f, _ = members
    s = hybrid.stack(f)
    w = np.random.default_rng(1).dirichlet(np.ones(3), size=shape[:-1] or None)
    full = np.broadcast_to(
        w
        if len(shape) == 3
        else (w[None, None] if len(shape) == 1 else w[:, None] if shape[0] == 40 else w[None]),
        (40, 3, 3),
    )
    expect = np.einsum("mwhc,wcm->whc", s, full)
    np.testing.assert_allclose(hybrid.combine(s, w), expect)


def test_combine_rejects_wrong_shapes(members):
    s = hybrid.stack(members[0])
    with pytest.raises(ValueError, match="do not fit"):
        hybrid.combine(s, np.ones((5, 3)) / 3)


def test_combine_refuses_2d_weights_when_windows_equal_channels():
    s = np.random.default_rng(0).random((3, 4, 2, 4))  # M=3, W=4, H=2, C=4
    with pytest.raises(ValueError, match="ambiguous"):
        hybrid.combine(s, np.full((4, 3), 1 / 3))
    w = np.random.default_rng(1).dirichlet(np.ones(3), size=(4, 4))
    np.testing.assert_allclose(hybrid.combine(s, w), np.einsum("mwhc,wcm->whc", s, w))


def test_one_hot_weights_select_a_member(members):
    s = hybrid.stack(members[0])
    np.testing.assert_allclose(hybrid.combine(s, np.array([0.0, 1.0, 0.0])), s[1])


def test_combined_forecast_uses_the_combiners_own_forecast(members):
    f, y = members
    s = hybrid.stack(f)
    med = make_combiner("median").fit(s, y)
    np.testing.assert_allclose(hybrid.combined_forecast(med, s), np.median(s, axis=0))
    mean = make_combiner("mean").fit(s, y)
    np.testing.assert_allclose(hybrid.combined_forecast(mean, s), s.mean(axis=0))

    class WeightsOnly:  # a combiner without ``forecast`` is applied through its weights
        def weights(self, forecasts, features=None):
            return np.full((forecasts.shape[1], forecasts.shape[3], forecasts.shape[0]), 1 / 3)

    np.testing.assert_allclose(hybrid.combined_forecast(WeightsOnly(), s), s.mean(axis=0))


def test_oracle_is_a_lower_bound_per_window(members):
    f, y = members
    s = hybrid.stack(f)
    w = hybrid.oracle_weights(s, y)
    assert w.shape == (40, 3, 3) and set(np.unique(w)) == {0.0, 1.0}
    np.testing.assert_allclose(w.sum(-1), 1.0)
    per_window = np.mean((hybrid.combine(s, w) - y) ** 2, axis=1)  # [W, C]
    each = np.mean((s - y[None]) ** 2, axis=2)  # [M, W, C]
    np.testing.assert_allclose(per_window, each.min(axis=0))


def test_block_wise_reductions_match_whole_array_ones():
    rng = np.random.default_rng(0)
    f, y = rng.standard_normal((3, 600, 4, 2)), rng.standard_normal((600, 4, 2))
    err = np.mean((f - y[None]) ** 2, axis=2)
    np.testing.assert_array_equal(
        hybrid.oracle_weights(f, y, block=7), np.eye(3)[np.argmin(err, axis=0)]
    )
    med = make_combiner("median").fit(f, y)  # 600 windows: three blocks of 256
    np.testing.assert_array_equal(med.forecast(f), np.median(f, axis=0))
    w = med.weights(f)
    assert w.shape == (600, 2, 3)
    np.testing.assert_allclose(w.sum(-1), 1.0)
    np.testing.assert_allclose(w, np.moveaxis(med._step_weights(f).mean(axis=2), 0, -1))


def _channel_major(a: np.ndarray) -> np.ndarray:
    """A copy of [..., W, H, C] laid out channel-major, as ``[..., ch]`` picks channels."""
    out = np.empty(a.shape[:-3] + (a.shape[-1],) + a.shape[-3:-1], a.dtype)
    out = np.moveaxis(out, -3, -1)
    out[...] = a
    return out


@pytest.mark.parametrize("layout", ["c", "channel_major"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_float64_sums_are_the_whole_array_einsum(layout, dtype):
    rng = np.random.default_rng(0)
    f = rng.standard_normal((4, 50, 6, 3)).astype(dtype)
    if layout == "channel_major":
        f = _channel_major(f)
    f64 = np.asarray(f, np.float64)
    w = rng.dirichlet(np.ones(4), size=(50, 3))
    step = rng.dirichlet(np.ones(4), size=(6, 3))
    for block in (None, 1, 7, 50):
        got = hybrid.weighted_sum(f, w, block=block)
        want = np.einsum("mwhc,wcm->whc", f64, w)
        assert got.dtype == np.float64 and np.array_equal(got, want)
        got = hybrid.weighted_sum(f, step, per_step=True, block=block)
        np.testing.assert_array_equal(got, np.einsum("mwhc,hcm->whc", f64, step))
    np.testing.assert_array_equal(hybrid.combine(f, w), np.einsum("mwhc,wcm->whc", f64, w))


def test_window_blocks_are_laid_out_as_their_concatenation():
    x = _channel_major(np.random.default_rng(0).standard_normal((30, 4, 3)))

    def fn(lo, hi):
        return x[lo:hi] * 2.0

    got = hybrid.by_window_blocks(fn, 30, block=7)
    want = np.concatenate([fn(lo, lo + 7) for lo in range(0, 30, 7)])
    np.testing.assert_array_equal(got, want)
    assert hybrid.memory_order(got) == hybrid.memory_order(want) == [2, 0, 1]
    np.testing.assert_array_equal(hybrid.by_window_blocks(lambda lo, hi: x[:5][lo:hi], 5, 7), x[:5])


def test_stack_keeps_dtype_and_layout_on_request(members):
    f, _ = members
    picked = {k: v.astype(np.float32)[..., [0, 1, 2]] for k, v in f.items()}  # channel-major
    s = hybrid.stack(picked, dtype=None)
    assert s.dtype == np.float32
    np.testing.assert_array_equal(s, np.stack(list(picked.values())))
    assert hybrid.memory_order(s) == hybrid.memory_order(np.stack(list(picked.values())))
    with pytest.raises(ValueError, match="differ in shape"):
        hybrid.stack({"a": f["m0"], "b": f["m1"][:-1]})


def test_median_and_oracle_blocks_are_sized_by_horizon_and_channels(monkeypatch):
    # 256 windows whatever H x C: 862 channels at H=720 held 3 GB per block
    import router.combiners as combiners

    stack = np.random.default_rng(0).standard_normal((3, 40, 24, 200)).astype(np.float32)
    target = stack.mean(axis=0)
    blocks = []
    for mod in (hybrid, combiners):
        real = mod.by_window_blocks
        monkeypatch.setattr(
            mod,
            "by_window_blocks",
            lambda fn, n, block, axis=0, real=real: blocks.append(block) or real(fn, n, 7, axis),
        )
    med = make_combiner("median").fit(stack, target)
    np.testing.assert_array_equal(med.forecast(stack), np.median(stack.astype(np.float64), 0))
    hybrid.oracle_weights(stack, target)
    assert blocks == [hybrid.windows_per_block(stack.shape)] * 2
