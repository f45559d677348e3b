"""Backbone loading: embedded MiniLM, random configs, truncation, checks, 4-bit."""

from __future__ import annotations

import pytest
import torch

from ensemble.errors import UserError
from timellm.backbone import load_backbone, random_backbone

TINY_QWEN = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=2,
    num_key_value_heads=1,
)


def test_minilm_truncated_and_frozen() -> None:
    bb = load_backbone("minilm", llm_layers=2)
    assert (bb.hidden_size, bb.num_layers, bb.is_decoder) == (384, 2, False)
    assert len(bb.model.encoder.layer) == 2
    assert bb.input_embeddings().shape == (30522, 384)
    assert not any(p.requires_grad for p in bb.model.parameters())
    assert not bb.model.config.output_hidden_states
    assert not bb.model.config.output_attentions


@pytest.mark.parametrize("layers", [0, 7])
def test_llm_layers_out_of_range_is_an_error(layers: int) -> None:
    with pytest.raises(UserError, match="has 6 layers"):
        load_backbone("minilm", llm_layers=layers)


def test_llm_dim_mismatch_is_an_error() -> None:
    with pytest.raises(UserError, match="hidden size 384"):
        load_backbone("minilm", llm_dim=2048)
    assert load_backbone("minilm", llm_dim=384, llm_layers=1).hidden_size == 384


def test_random_backbones_and_errors(tmp_path) -> None:
    gpt2 = load_backbone("gpt2-random", llm_layers=2)
    assert (gpt2.hidden_size, gpt2.num_layers, gpt2.is_decoder) == (768, 2, True)
    with pytest.raises(UserError, match="has 12 layers"):
        load_backbone("gpt2-random", llm_layers=13)
    qwen = random_backbone("qwen2", **TINY_QWEN)
    assert qwen.is_decoder and qwen.num_layers == 3
    assert not any(p.requires_grad for p in qwen.model.parameters())
    with pytest.raises(UserError, match="unknown random backbone"):
        random_backbone("bloom")
    with pytest.raises(UserError, match="cannot read backbone"):
        load_backbone(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="not both"):
        load_backbone("minilm", load_in_4bit=True, load_in_8bit=True)


def test_local_path_truncates_saved_model(tmp_path) -> None:
    random_backbone("qwen2", **TINY_QWEN).model.save_pretrained(tmp_path)
    bb = load_backbone(str(tmp_path), llm_layers=2, llm_dim=32)
    assert bb.num_layers == 2 and len(bb.model.layers) == 2 and bb.is_decoder


def _load_4bit(spec: str, **kw):
    try:
        return load_backbone(spec, load_in_4bit=True, **kw)
    except (RuntimeError, ImportError, NotImplementedError) as exc:  # pragma: no cover
        pytest.skip(f"bitsandbytes 4-bit path unavailable on this machine: {exc}")


@pytest.mark.parametrize("which", ["qwen2", "minilm"])
def test_4bit_load_and_forward(which: str, tmp_path) -> None:
    import bitsandbytes as bnb

    if which == "qwen2":
        # bitsandbytes' CPU kernels want in/out features in multiples of its 64-wide blocks.
        shape = {**TINY_QWEN, "hidden_size": 64, "intermediate_size": 128, "num_key_value_heads": 2}
        random_backbone("qwen2", **shape).model.save_pretrained(tmp_path)
        bb = _load_4bit(str(tmp_path), llm_layers=2)
        width = 64
    else:
        bb = _load_4bit("minilm", llm_layers=1)
        width = 384
    assert bb.quantization == "4bit"
    linears = [m for m in bb.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linears and linears[0].weight.quant_state.quant_type == "nf4"
    assert not any(p.requires_grad for p in bb.model.parameters())
    with torch.no_grad():
        out = bb.model(inputs_embeds=torch.randn(2, 5, width, dtype=bb.dtype)).last_hidden_state
    assert out.shape == (2, 5, width) and torch.isfinite(out.float()).all()
