"""timellm.layers through the model: RevIN scaling, channel independence, patching.

The model tests compare paths through the same code; these pin properties the official
model has by construction, so a wrong permute or a lost std fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from timellm.backbone import Backbone, load_backbone, random_backbone
from timellm.layers import PatchEmbedding, RevIN, fast_dropout_attention
from timellm.model import TimeLLM
from timellm.prompt import PromptBuilder

L, H, N = 48, 8, 3


@pytest.fixture(scope="module", params=["minilm", "llama"])
def backbone(request) -> Backbone:
    if request.param == "minilm":
        return load_backbone("minilm", llm_layers=1)
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    return random_backbone("llama", **tiny, num_key_value_heads=2)


def _model_and_batch(bb: Backbone):
    torch.manual_seed(0)
    model = TimeLLM(bb, seq_len=L, pred_len=H, d_model=8, d_ff=16, n_heads=2, num_prototypes=20)
    model.eval()  # no dropout: the properties hold for one deterministic forward
    x = np.random.default_rng(1).standard_normal((4, L, N)).cumsum(axis=1).astype(np.float32)
    ids, mask = PromptBuilder(bb.tokenizer, "Test series.", H, [12, 6])(x)
    return model, torch.from_numpy(x), ids, mask


def test_revin_round_trip_and_unit_statistics() -> None:
    x = torch.randn(5, L, N) * 7 + 3
    z, mean, std = RevIN().normalise(x)
    torch.testing.assert_close(z.mean(dim=1), torch.zeros(5, N), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=1, unbiased=False), torch.ones(5, N), atol=1e-4, rtol=0)
    torch.testing.assert_close(RevIN.denormalise(z, mean, std), x, atol=1e-4, rtol=1e-5)


def test_forecast_follows_an_affine_change_of_units(backbone: Backbone) -> None:
    # RevIN: a series in other units (a * x + b) gets the same forecast in those units.
    # The prompt is held fixed (its statistics would change with the units).
    model, x, ids, mask = _model_and_batch(backbone)
    with torch.no_grad():
        y = model(x, ids, mask)
        y_scaled = model(10 * x + 5, ids, mask)
    torch.testing.assert_close(y_scaled, 10 * y + 5, rtol=1e-3, atol=1e-3)


def test_channels_do_not_see_each_other(backbone: Backbone) -> None:
    # Channel independence: each channel is its own series through patching, the LLM
    # and the head, so changing channel 1 leaves channels 0 and 2 exactly as they were.
    model, x, ids, mask = _model_and_batch(backbone)
    other = x.clone()
    other[:, :, 1] += torch.randn(other.shape[0], L) * 5
    with torch.no_grad():
        y, y_other = model(x, ids, mask), model(other, ids, mask)
    assert not torch.allclose(y[..., 1], y_other[..., 1], atol=1e-3)
    torch.testing.assert_close(y_other[..., [0, 2]], y[..., [0, 2]], atol=1e-5, rtol=1e-5)


def test_windows_do_not_see_each_other(backbone: Backbone) -> None:
    model, x, ids, mask = _model_and_batch(backbone)
    with torch.no_grad():
        whole = model(x, ids, mask)
        first = model(x[:1], ids[:N], mask[:N])
    torch.testing.assert_close(first, whole[:1], atol=1e-5, rtol=1e-5)


def test_patches_are_the_padded_series_cut_every_stride() -> None:
    pe = PatchEmbedding(d_model=4, patch_len=16, stride=8, dropout=0.0)
    x = torch.arange(2 * L, dtype=torch.float32).reshape(2, L)
    padded = torch.cat([x, x[:, -1:].repeat(1, 8)], dim=1)  # the end padding of the official code
    want = torch.stack([padded[:, s : s + 16] for s in range(0, L + 8 - 16 + 1, 8)], dim=1)
    seen: dict[str, torch.Tensor] = {}

    def keep_input(module, inputs, output) -> None:  # the embedding is conv(patches)
        seen["p"] = inputs[0]

    hook = pe.conv.register_forward_hook(keep_input)
    out = pe(x)
    hook.remove()
    assert out.shape == (2, PatchEmbedding.num_patches(L, 16, 8), 4)
    torch.testing.assert_close(seen["p"].transpose(1, 2), want)


@pytest.mark.parametrize("training", [False, True])
def test_reprogramming_is_scaled_dot_product_attention_to_the_prototypes(training) -> None:
    """Every series' patches attend to the same prototypes: softmax(q k^T / sqrt(d)) v per
    head, written out plainly, in the fused eval path and the explicit training path."""
    from timellm.layers import ReprogrammingLayer

    torch.manual_seed(0)
    # dropout 1e-12 keeps the explicit training path, dropping nothing in practice
    dropout = 1e-12 if training else 0.1
    layer = ReprogrammingLayer(d_model=8, n_heads=2, d_keys=4, d_llm=12, attention_dropout=dropout)
    layer.train(training)
    patches, prototypes = torch.randn(3, 5, 8), torch.randn(7, 12)
    keys, values = layer.project_prototypes(prototypes)  # [P, h, e]
    out = layer(patches, keys, values)
    q = layer.query(patches).view(3, 5, 2, 4)
    expected = torch.empty(3, 5, 2, 4)
    for h in range(2):
        attn = torch.softmax(q[:, :, h] @ keys[:, h].T / 2.0, dim=-1)  # sqrt(d_keys) = 2
        expected[:, :, h] = attn @ values[:, h]
    torch.testing.assert_close(out, layer.out(expected.reshape(3, 5, 8)), atol=1e-6, rtol=1e-5)


def test_the_head_reads_the_first_d_ff_hidden_features(backbone: Backbone, monkeypatch) -> None:
    # The official model keeps dec_out[:, :, :d_ff] of the LLM's output: noise in the
    # features after d_ff must not move the forecast, noise in the first d_ff must.
    model, x, ids, mask = _model_and_batch(backbone)
    run = model._run_backbone

    def noisy(cols):
        def backbone_then_noise(*args):
            hidden = run(*args).clone()
            hidden[..., cols] += torch.randn_like(hidden[..., cols]) * 10
            return hidden

        return backbone_then_noise

    with torch.no_grad():
        y = model(x, ids, mask)
        monkeypatch.setattr(model, "_run_backbone", noisy(slice(model.d_ff, None)))
        torch.testing.assert_close(model(x, ids, mask), y)
        monkeypatch.setattr(model, "_run_backbone", noisy(slice(0, model.d_ff)))
        assert not torch.allclose(model(x, ids, mask), y, atol=1e-3)


class _Attention(torch.nn.Module):
    """What `fast_dropout_attention` reads from a Hugging Face attention module."""

    def __init__(self, is_causal: bool) -> None:
        super().__init__()
        self.is_causal = is_causal


@pytest.mark.parametrize("mask", ["additive", "causal"])
def test_cpu_dropout_attention_is_scaled_dot_product_attention(mask) -> None:
    """CPU training with attention dropout (a decoder backbone in train mode) computes
    attention itself: with an additive float mask, and with causal masking when the
    backbone passes no mask; both must be SDPA's attention, here with grouped KV heads."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    # dropout=1e-9 takes the CPU path but drops nothing (p rounds to 0 on 2^-15)
    if mask == "additive":  # a bias per query and key, some keys hidden (as HF's float masks)
        bias = torch.randn(2, 1, 6, 6)
        bias[0, ..., :2] = torch.finfo(torch.float32).min
        ours, _ = fast_dropout_attention(_Attention(False), q, k, v, bias, dropout=1e-9)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    else:
        ours, _ = fast_dropout_attention(_Attention(True), q, k, v, None, dropout=1e-9)
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        # the last 2 queries over all 6 keys (a cached prefix): the last rows of the above
        tail, _ = fast_dropout_attention(_Attention(True), q[:, :, 4:], k, v, None, dropout=1e-9)
        torch.testing.assert_close(tail, ref[:, :, 4:].transpose(1, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours, ref.transpose(1, 2), atol=1e-6, rtol=0)
