"""Time-LLM model: shapes, frozen backbone, trainable set, exact speed-ups, explain."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from timellm.backbone import Backbone, load_backbone, random_backbone
from timellm.layers import LowRankPrototypes, fast_dropout, fast_dropout_attention
from timellm.model import TimeLLM
from timellm.prompt import PromptBuilder

L, H = 48, 8
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
DECODERS = {
    "gpt2": dict(n_embd=32, n_layer=2, n_head=2),
    "qwen2": {**TINY, "num_key_value_heads": 1},
    "llama": {**TINY, "num_key_value_heads": 2},
}


@pytest.fixture(scope="module")
def minilm() -> Backbone:
    return load_backbone("minilm", llm_layers=2)


def _model(bb: Backbone, **kw) -> TimeLLM:
    torch.manual_seed(0)
    args = dict(seq_len=L, pred_len=H, d_model=8, d_ff=16, n_heads=2, num_prototypes=20)
    return TimeLLM(bb, **{**args, **kw})


def _batch(bb: Backbone, b: int = 3, n: int = 2, seed: int = 0):
    x = np.random.default_rng(seed).standard_normal((b, L, n)).cumsum(axis=1).astype(np.float32)
    ids, mask = PromptBuilder(bb.tokenizer, "Test series.", H, [12, 6])(x)
    return torch.from_numpy(x), ids, mask


def test_output_shape_and_backbone_frozen_after_training(minilm: Backbone) -> None:
    model = _model(minilm)
    x, ids, mask = _batch(minilm)
    before = {k: v.clone() for k, v in model.llm.state_dict().items()}
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        "patch_embedding.conv.weight",
        "prototypes.mapping.weight",
        "prototypes.mapping.bias",
        *(
            f"reprogramming.{m}.{t}"
            for m in ("query", "key", "value", "out")
            for t in ("weight", "bias")
        ),
        "head.linear.weight",
        "head.linear.bias",
    }
    assert {id(p) for p in model.trainable_parameters()} == {
        id(p) for k, p in model.named_parameters() if k in trainable
    }
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    model.train()
    head_before = model.head.linear.weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        out = model(x, ids, mask)
        assert out.shape == (3, H, 2)
        torch.nn.functional.mse_loss(out, torch.zeros_like(out)).backward()
        opt.step()
    after = model.llm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(head_before, model.head.linear.weight)


@pytest.mark.parametrize("arch", sorted(DECODERS))
def test_prefix_cache_equals_plain_path(arch: str) -> None:
    bb = random_backbone(arch, **DECODERS[arch])
    model = _model(bb).eval()
    x, ids, mask = _batch(bb)
    assert mask.sum(1).min() < mask.shape[1]  # rows of different lengths: real padding
    out = model(x, ids, mask)
    out.sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    model.prefix_cache = False
    plain = model(x, ids, mask)
    plain.sum().backward()
    assert torch.allclose(out, plain, atol=1e-5, rtol=1e-5)
    for k, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(grads[k], p.grad, atol=1e-5, rtol=1e-4), k


@pytest.mark.parametrize("arch", ["minilm", "gpt2"])
def test_padding_is_irrelevant(arch: str, minilm: Backbone) -> None:
    bb = minilm if arch == "minilm" else random_backbone("gpt2", **DECODERS["gpt2"])
    model = _model(bb).eval()
    x, ids, mask = _batch(bb, b=3, n=1)
    extra = ["", "a longer extra text to make the second prompt longer than the others", ""]
    pb = PromptBuilder(bb.tokenizer, "Test series.", H, [12, 6])
    ids, mask = pb(x.numpy(), extra)
    solo_ids, solo_mask = pb(x[:1].numpy(), extra[:1])
    assert ids.shape[1] > solo_ids.shape[1]  # row 0 is left-padded in the batch
    with torch.no_grad():
        batched = model(x, ids, mask)[0]
        alone = model(x[:1], solo_ids, solo_mask)[0]
        # Extra all-padding columns (and int32 / bool inputs) change nothing either.
        pad = torch.full((3, 5), 7)
        wider = model(
            x,
            torch.cat([pad, ids], 1).int(),
            torch.cat([torch.zeros_like(pad), mask], 1).bool(),
        )[0]
    assert torch.allclose(batched, alone, atol=1e-5)
    assert torch.allclose(batched, wider, atol=1e-5)


@pytest.mark.parametrize("arch", ["minilm", "roberta", "electra", "minilm-1"])
def test_an_encoders_last_layer_computes_the_patch_rows_alone_exactly(arch, minilm) -> None:
    # its prompt rows' queries are skipped: the forecasts and every gradient must be the
    # full layer's, with left-padded prompts of several lengths
    from transformers import AutoConfig, AutoModel

    from timellm.model import _bert_shaped

    if arch.startswith("minilm"):
        bb = minilm if arch == "minilm" else load_backbone("minilm", llm_layers=1)
    else:
        torch.manual_seed(0)
        llm = AutoModel.from_config(AutoConfig.for_model(arch, **TINY, vocab_size=30522)).eval()
        bb = Backbone(llm, minilm.tokenizer, arch, 32, 2, is_decoder=False)
    model = _model(bb)
    assert model._patch_rows_last and _bert_shaped(bb.model)
    model.train()
    model.llm.eval()  # as the trainer keeps it (the shortcut's condition)
    x, _, _ = _batch(bb, b=3, n=2)
    extra = ["", "a longer text", "and the longest text of all of them"]
    pb = PromptBuilder(bb.tokenizer, "Test series.", H, [12, 6])
    ids, mask = pb(x.numpy(), extra)
    assert mask.sum(1).min() < mask.shape[1]

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout draws outside the backbone
        out = model(x, ids, mask)
        out.square().sum().backward()
        return out.detach(), {
            k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None
        }

    import timellm.model as model_mod

    calls, rows = [], model_mod._last_layer_rows
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_mod, "_last_layer_rows", lambda *a: calls.append(1) or rows(*a))
        fast, fast_grads = run()
    assert calls  # the shortcut ran
    model._patch_rows_last = False
    full, full_grads = run()
    assert torch.allclose(fast, full, atol=1e-5, rtol=1e-5)
    assert fast_grads.keys() == full_grads.keys() and len(full_grads) > 5
    # float32 rounding of other sums: relative to the norm (reprogramming.key.bias's
    # gradient is zero in exact arithmetic, ~5e-7 in both: absolute)
    for k, g in full_grads.items():
        assert (fast_grads[k] - g).norm() <= 1e-5 * g.norm() + 1e-5, k
    assert len(model.llm.encoder.layer) == (bb.num_layers if arch.startswith("minilm") else 2)


def test_only_bert_shaped_encoders_take_the_last_layer_shortcut(minilm) -> None:
    from transformers import AutoConfig, AutoModel

    from timellm.model import _bert_shaped

    assert _bert_shaped(minilm.model)
    # BERT's shape but not its layer: pre-LayerNorm (megatron-bert, esm), rotary (roformer)
    others = [(a, TINY) for a in ("albert", "megatron-bert", "esm", "roformer")]
    for arch, kw in [("gpt2", DECODERS["gpt2"]), ("distilbert", {}), *others]:
        if arch == "gpt2":
            assert not _bert_shaped(random_backbone("gpt2", **kw).model)
            continue
        config = AutoConfig.for_model(arch, vocab_size=100, **kw)
        assert not _bert_shaped(AutoModel.from_config(config)), arch


def test_the_shortcut_would_change_a_pre_layernorm_encoders_forecasts() -> None:
    # why megatron-bert is left out: its layer normalises before attending, so the
    # shortcut's post-LayerNorm layer gives other forecasts (the test fails if that
    # ever stops being true, and the allowlist could take it)
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    config = AutoConfig.for_model("megatron-bert", **TINY, vocab_size=30522)
    bb = Backbone(AutoModel.from_config(config).eval(), None, "m", 32, 2, is_decoder=False)
    model = _model(bb).eval()
    assert not model._patch_rows_last
    tokens = torch.randn(2, model.num_patches, 32)
    ids, mask = torch.randint(1000, 2000, (2, 5)), torch.ones(2, 5, dtype=torch.long)
    with torch.no_grad():
        full = model._run_backbone(tokens, ids, mask)
        model._patch_rows_last = True
        forced = model._run_backbone(tokens, ids, mask)
    assert not torch.allclose(full, forced, atol=1e-4)


def test_lowrank_prototypes_span_the_same_space() -> None:
    e = torch.randn(500, 16) * torch.linspace(0.1, 2.0, 16)
    low = LowRankPrototypes(e, 10)
    gram = e.double().t() @ e.double()
    assert torch.allclose(low.basis.double().t() @ low.basis.double(), gram, rtol=1e-4, atol=1e-3)
    # Any full-map prototypes W @ E are reachable: A = W @ E @ pinv(B).
    target = torch.randn(10, 500) @ e / 500
    with torch.no_grad():
        low.weight.copy_(target @ torch.linalg.pinv(low.basis))
        low.bias.zero_()
    assert torch.allclose(low(e), target, atol=1e-5)
    model = _model(random_backbone("gpt2", **DECODERS["gpt2"]), prototype_map="lowrank")
    assert sum(p.numel() for p in model.prototypes.parameters()) == 20 * 32 + 20


def test_prototype_keys_cached_only_without_gradient(minilm: Backbone) -> None:
    model = _model(minilm).eval()
    with torch.no_grad():
        k1, _ = model.prototype_kv()
        k2, _ = model.prototype_kv()
    assert k1 is k2
    with torch.no_grad():
        model.prototypes.mapping.bias.add_(1.0)  # any in-place update invalidates
        k3, _ = model.prototype_kv()
    assert k3 is not k1
    k4, _ = model.prototype_kv()  # gradient enabled: fresh, with a graph
    assert k4.requires_grad and k4 is not k3


def test_prototype_cache_follows_a_dtype_cast() -> None:
    # Its own backbone: the cast below converts the model's backbone too.
    bb = random_backbone("gpt2", **DECODERS["gpt2"])
    model = _model(bb).eval()
    x, ids, mask = _batch(bb)
    with torch.no_grad():
        model(x, ids, mask)  # fills the cache with float32 keys / values
        model.double()  # keeps every parameter's id and version
        keys, values = model.prototype_kv()
        fresh_keys, fresh_values = model._compute_kv()
    assert keys.dtype == values.dtype == torch.float64
    assert torch.equal(keys, fresh_keys) and torch.equal(values, fresh_values)


def test_roberta_positions_start_after_its_padding_row() -> None:
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model("roberta", **TINY, vocab_size=30522)
    torch.manual_seed(0)
    llm = AutoModel.from_config(config).eval()
    bb = Backbone(llm, None, "roberta", 32, 2, is_decoder=False)  # no prompts built here
    model = _model(bb).eval()
    tokens = torch.randn(2, model.num_patches, 32)
    ids = torch.randint(1000, 2000, (2, 5))
    with torch.no_grad():
        ours = model._run_backbone(tokens, ids, torch.ones_like(ids))
        # Unpadded rows: RoBERTa's own default positions are the right ones.
        embeds = torch.cat([llm.get_input_embeddings()(ids), tokens], dim=1)
        own = llm(inputs_embeds=embeds).last_hidden_state[:, -model.num_patches :]
    assert torch.allclose(ours, own, atol=1e-5)
    assert model.position_offset == config.pad_token_id + 1
    assert model.max_positions == config.max_position_embeddings - config.pad_token_id - 1


@pytest.mark.parametrize("arch", ["albert", "electra"])
@pytest.mark.parametrize("prototype_map", ["lowrank", "full"])
def test_factorised_embeddings_narrower_than_the_hidden_size(arch: str, prototype_map: str) -> None:
    # ALBERT and ELECTRA take inputs of width embedding_size E and project them up to the
    # hidden size D inside: prototypes, prompt and reprogrammed patches must all be E wide.
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from timellm.backbone import _freeze, _minilm_dir
    from timellm.explain import explain

    config = AutoConfig.for_model(arch, **TINY, embedding_size=16, vocab_size=30522)
    torch.manual_seed(0)
    llm = AutoModel.from_config(config).eval()
    _freeze(llm)
    bb = Backbone(llm, AutoTokenizer.from_pretrained(_minilm_dir()), arch, 32, 2, False)
    assert bb.input_embeddings().shape == (30522, 16)
    model = _model(bb, prototype_map=prototype_map, d_ff=24)  # d_ff may exceed E, not D
    x, ids, mask = _batch(bb)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    model.train()
    out = model(x, ids, mask)
    assert out.shape == (3, H, 2)
    assert model.reprogramming.out.out_features == model.embedding_size == 16
    torch.nn.functional.mse_loss(out, torch.zeros_like(out)).backward()
    grads = [p.grad for p in model.trainable_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    head_before = model.head.linear.weight.detach().clone()
    opt.step()
    assert not torch.equal(head_before, model.head.linear.weight)
    with torch.no_grad():
        forecast = model.eval()(x, ids, mask)
    assert forecast.shape == (3, H, 2) and torch.isfinite(forecast).all()
    stages = {s["stage"]: s["shape"] for s in explain(model, 2, L, 1)["stages"]}
    assert stages["reprogramming"][-1] == stages["prompt prefix"][-1] == 16
    assert stages["backbone"][-1] == 32


def test_prompt_and_patches_beyond_the_position_table_are_refused(minilm: Backbone) -> None:
    # BERT has 512 positions: past them the backbone failed with an IndexError deep inside.
    from ensemble.errors import UserError

    with pytest.raises(UserError, match=r"718 patches \(seq_len 720, patch_len 4, stride 1\)"):
        _model(minilm, seq_len=720, patch_len=4, stride=1)  # the patches alone: at once
    model = _model(minilm, seq_len=512, patch_len=16, stride=1).eval()  # 498 patches
    assert model.max_positions == 512
    x = torch.randn(1, 512, 1)
    ids, mask = PromptBuilder(minilm.tokenizer, "Test series.", H, [12], seq_len=512)(x.numpy())
    with pytest.raises(UserError, match=r"tokens \+ 498 patches .* has 512; .*prompt=none"):
        model(x, ids, mask)
    with torch.no_grad():  # without a prompt they fit
        assert model(x, ids[:, :0], mask[:, :0]).shape == (1, H, 1)


def test_position_limits_by_backbone() -> None:
    from ensemble.errors import UserError

    gpt2 = random_backbone("gpt2", **{**DECODERS["gpt2"], "n_positions": 12})
    model = _model(gpt2)  # 6 patches
    x, ids, mask = _batch(gpt2, b=1, n=1)
    assert int(mask.sum()) > 6
    with pytest.raises(UserError, match="has 12"):
        model(x, ids, mask)
    assert model.max_positions == 12 and model.position_offset == 0
    # Rotary positions have no table to run past.
    llama_bb = random_backbone("llama", **DECODERS["llama"], max_position_embeddings=8)
    llama = _model(llama_bb).eval()
    assert llama.max_positions is None
    with torch.no_grad():
        assert llama(*_batch(llama_bb, b=1, n=1)).shape == (1, H, 1)


def test_fast_dropout_statistics_and_attention() -> None:
    torch.manual_seed(0)
    y = fast_dropout(torch.ones(400, 500), 0.1)
    assert abs((y == 0).float().mean().item() - 0.1) < 0.005
    assert torch.unique(y).tolist() == [0.0, pytest.approx(1 / 0.9)]
    # transformers before the attention interface (4.48): `use_fast_dropout` leaves the
    # backbone's own attention in place, so there is nothing to compare with
    sdpa = pytest.importorskip("transformers.integrations.sdpa_attention")
    sdpa_attention_forward = sdpa.sdpa_attention_forward

    class Attn(torch.nn.Module):
        is_causal = True
        num_key_value_groups = 2

    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool).tril()
    mask[0, ..., :2] = False
    # dropout=1e-9 takes the math path but drops nothing (p rounds to 0 on 2^-15).
    ours, _ = fast_dropout_attention(Attn(), q, k, v, mask, dropout=1e-9)
    ref, _ = sdpa_attention_forward(Attn(), q, k, v, mask, dropout=0.0)
    rows = mask[:, 0].any(-1)  # rows with no visible key are padding: undefined in SDPA
    assert torch.allclose(ours[rows], ref[rows], atol=1e-5)


def test_llm_errors_and_bad_inputs(minilm: Backbone) -> None:
    with pytest.raises(ValueError, match="d_ff"):
        _model(minilm, d_ff=1000)
    with pytest.raises(ValueError, match="prototype_map"):
        _model(minilm, prototype_map="tiny")
    model = _model(minilm)
    x, ids, mask = _batch(minilm)
    with pytest.raises(ValueError, match="one prompt per series"):
        model(x, ids[:2], mask[:2])


def test_explain_reports_shapes_and_parameters(minilm: Backbone, monkeypatch) -> None:
    from timellm.explain import explain, render

    model = _model(minilm)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    steps = []
    step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a: steps.append(1) or step(self))
    info = explain(model, batch_size=2, seq_len=L, n_vars=3, repeats=2)
    assert len(steps) == 2  # a timed step is forward, backward and Adam, as bench-step's
    after = model.state_dict()  # and the timed updates are undone
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    stages = {s["stage"]: s["shape"] for s in info["stages"]}
    assert stages["patch embedding"] == (6, model.num_patches, 8)
    assert stages["reprogramming"] == (6, model.num_patches, 384)
    assert stages["output (de-normalised)"] == (2, H, 3)
    assert info["parameters"]["llm"]["trainable"] == 0
    assert info["totals"]["trainable"] == sum(p.numel() for p in model.trainable_parameters())
    assert info["memory"]["rss_peak_mb"] > 0
    assert info["timing"]["train_step_s"] > 0 and info["timing"]["forward_s"] > 0
    assert "Peak RSS" in render(info) and "Time per training step" in render(info)
    assert all(p.grad is None for p in model.trainable_parameters())


def test_saved_tensors_count_activations_once_and_not_the_weights() -> None:
    from torch import nn

    from timellm.explain import _SavedTensors

    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    for grad in (False, True):  # with an input gradient, Linear also saves its weight
        x = torch.randn(16, 4, requires_grad=grad)
        with _SavedTensors(net) as saved:
            net(x).sum()
        # Linear saves x (16 x 4 float32), ReLU its output (16 x 8 float32)
        assert saved.mib * 2**20 == 16 * 4 * 4 + 16 * 8 * 4


def test_explain_activations_grow_with_the_batch_and_bound_it(minilm: Backbone) -> None:
    from timellm.explain import explain, gpu_budget

    model = _model(minilm)
    mem = {b: explain(model, b, L, 1, repeats=0)["memory"] for b in (2, 4)}
    ratio = mem[4]["saved_for_backward_mb"] / mem[2]["saved_for_backward_mb"]
    assert 1.8 < ratio < 2.2  # per series: what the largest-batch answer assumes
    # the batch-of-one point: the intercept and slope agree between the two batches
    slope = {
        b: (m["saved_for_backward_mb"] - m["saved_for_backward_one_mb"]) / (b - 1)
        for b, m in mem.items()
    }
    assert slope[2] == pytest.approx(slope[4], rel=0.1)
    m = mem[2]
    assert m["weights_mb"] > 10 and m["gradients_mb"] * 2 == pytest.approx(
        m["adam_state_mb"], abs=0.1
    )
    # the answer does not depend on the batch explained. Without the step's RSS growth:
    # a process-wide measure, it depends on what ran before (the allocator's free pages)
    saved = {b: {k: v for k, v in m.items() if k != "rss_step_mb"} for b, m in mem.items()}
    assert gpu_budget(saved[2], 2, 1, 2)["max_batch_size"] == pytest.approx(
        gpu_budget(saved[4], 4, 1, 2)["max_batch_size"], rel=0.1
    )


def test_gpu_budget_arithmetic() -> None:
    from timellm.explain import gpu_budget

    # saved 40 MiB at batch 4 and 16 at batch 1: 8 per item on 8 fixed; the step grew 51,
    # 10 beyond the saved tensors and the 1 MiB of gradients; weights, gradients, Adam 103
    m = dict(weights_mb=100.0, gradients_mb=1.0, adam_state_mb=2.0)
    m |= dict(saved_for_backward_mb=40.0, saved_for_backward_one_mb=16.0, rss_step_mb=51.0)
    b = gpu_budget(m, batch_size=4, series_per_item=1, gpu_gib=2)
    # (103 + 8 + 10 + 8 x batch) x 1.1 + 600 <= 2048  ->  batch <= 149.4
    assert b["max_batch_size"] == 149 and b["fixed_mb"] == 121.0 and b["per_series_mb"] == 8.0
    assert b["fits"] and b["need_mb"] == pytest.approx((121 + 32) * 1.1 + 600)
    assert b["activations_from"] == "RSS growth in the step here"
    assert gpu_budget({**m, "cuda_step_mb": 61.0}, 4, 1, 2)["fixed_mb"] == 131.0  # a GPU's
    assert gpu_budget(m, 4, 7, 2)["per_series_mb"] == pytest.approx(8 / 7, abs=0.01)
    one = gpu_budget({**m, "saved_for_backward_one_mb": 0.0}, 4, 1, 2)  # no second point
    assert one["per_series_mb"] == 10.0 and one["max_batch_size"] < 149
    tight = gpu_budget(m, 4, 1, gpu_gib=0.5)
    assert not tight["fits"] and tight["max_batch_size"] == 0
    flat = dict(m, saved_for_backward_mb=16.0, rss_step_mb=0.0)  # nothing grows
    assert gpu_budget(flat, 4, 1, 2)["max_batch_size"] is None


def test_explain_measures_the_prompt_the_member_would_build(minilm: Backbone) -> None:
    from timellm.explain import explain

    model = _model(minilm)
    tokens = {
        p: explain(model, 2, L, 1, prompt=p, repeats=0)["config"]["prompt_tokens"]
        for p in ("concise", "official", "none")
    }
    assert tokens["official"] > tokens["concise"] > 0 == tokens["none"]


def test_explain_and_bench_step_work_without_proc_and_resource(minilm, monkeypatch) -> None:
    # Windows has neither /proc nor the resource module: no RSS, but everything else.
    import builtins
    import sys

    from timellm import explain as ex

    real_open = builtins.open

    def no_proc(file, *a, **kw):
        if str(file).startswith("/proc/"):
            raise FileNotFoundError(file)
        return real_open(file, *a, **kw)

    monkeypatch.setattr(builtins, "open", no_proc)
    monkeypatch.setitem(sys.modules, "resource", None)  # import resource -> ImportError
    assert ex.rss_mb() is None and ex.peak_rss_mb() is None
    info = ex.explain(_model(minilm), batch_size=2, seq_len=L, n_vars=3)
    assert "rss_peak_mb" not in info["memory"]
    assert "not measured" in ex.render(info)


@pytest.mark.parametrize("backbone_dropout", [False, True])
def test_bench_step_cli(capsys, monkeypatch, backbone_dropout: bool) -> None:
    from experiments.cli import main

    modes = []
    forward = TimeLLM.forward
    monkeypatch.setattr(
        TimeLLM,
        "forward",
        lambda self, *a: modes.append((self.training, self.llm.training)) or forward(self, *a),
    )
    code = main(
        [
            "bench-step",
            "--backbone",
            "minilm",
            "--llm-layers",
            "1",
            "--seq-len",
            "64",
            "--pred-len",
            "8",
            "--batch-size",
            "2",
            "--d-ff",
            "16",
            "--num-prototypes",
            "16",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--json",
            *(["--backbone-dropout"] if backbone_dropout else []),
        ]
    )
    assert code == 0
    # Timed as the trainer trains: backbone in eval mode unless asked for the official path.
    assert modes and set(modes) == {(True, backbone_dropout)}
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["samples_per_s"] > 0 and result["backbone"] == "minilm"
    assert result["prompt_tokens_mean"] > 10
    assert result["backbone_dropout"] is backbone_dropout
    assert result["device"] == "cpu" and result["cuda_max_allocated_mb"] is None


def test_bench_step_fp16_scales_the_loss_and_cuda_without_a_gpu_is_one_line(
    capsys, monkeypatch
) -> None:
    from experiments.cli import main

    scaled = []
    original = torch.amp.GradScaler.scale
    monkeypatch.setattr(
        torch.amp.GradScaler,
        "scale",
        lambda self, x: scaled.append(self.is_enabled()) or original(self, x),
    )
    small = ["bench-step", "--llm-layers", "1", "--seq-len", "64", "--pred-len", "8"]
    small += ["--d-ff", "16", "--num-prototypes", "16", "--steps", "2", "--warmup", "0"]
    assert main([*small, "--autocast", "fp16", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scaled == [True, True] and result["autocast"] == "fp16"
    assert np.isfinite(result["final_loss"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([*small, "--device", "cuda"]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag", ["--seq-len", "--pred-len", "--patch-len", "--stride", "--n-vars", "--threads"]
)
def test_bench_step_refuses_non_positive_sizes(flag, capsys) -> None:
    from experiments.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench-step", flag, "0"])
    assert exc.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_bench_step_refuses_a_patch_longer_than_the_lookback(capsys, monkeypatch) -> None:
    from experiments.cli import main

    # refused before the backbone is loaded
    monkeypatch.setattr("timellm.backbone.load_backbone", lambda *a, **k: pytest.fail("loaded"))
    assert main(["bench-step", "--seq-len", "48", "--patch-len", "100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --patch-len 100 is longer than --seq-len 48: give a patch that fits in the lookback"
    ]
    for seed in ("-1", "99999999999999999999"):
        assert main(["bench-step", "--seed", seed]) == 2
        assert capsys.readouterr().err.startswith("error: --seed must be from 0 to 4294967295")


def test_bench_step_sizes_the_backbone_cannot_take_are_one_line(capsys) -> None:
    from experiments.cli import main

    argv = ["bench-step", "--backbone", "minilm", "--llm-layers", "1", "--d-ff", "1000"]
    assert main([*argv, "--seq-len", "64", "--pred-len", "16", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: bench-step: d_ff 1000 exceeds the backbone hidden size 384"]


def test_a_checkpoint_made_with_the_bert_pooler_resumes_with_the_same_forecasts(
    minilm: Backbone,
) -> None:
    # checkpoints hold the trainable state only (no llm.* keys), so one written while
    # MiniLM still carried its pooler loads into today's model and forecasts the same
    from transformers import AutoModel

    from timellm.backbone import _dtype_arg, _freeze, _minilm_dir
    from timellm.trainer import load_trainable_state, trainable_state

    pooled = AutoModel.from_pretrained(
        _minilm_dir(), num_hidden_layers=2, **{_dtype_arg(): torch.float32}
    ).eval()
    _freeze(pooled)
    assert pooled.pooler is not None and minilm.model.pooler is None
    old = _model(Backbone(pooled, minilm.tokenizer, "minilm", 384, 2, False))
    with torch.no_grad():  # trained weights, not the seed's
        for p in old.trainable_parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = trainable_state(old)
    assert not any(k.startswith("llm.") for k in state)
    new = _model(minilm)
    load_trainable_state(new, state)
    x, ids, mask = _batch(minilm)
    old.eval(), new.eval()
    with torch.no_grad():
        assert torch.equal(old(x, ids, mask), new(x, ids, mask))


def test_explain_storage_counts_buffers() -> None:
    # the low-rank map's basis [r, D] is held as the weights are, though not a parameter
    from timellm.explain import _param_stats

    proto = LowRankPrototypes(torch.randn(100, 16), num_prototypes=10)
    stats = _param_stats(proto)
    assert proto.basis.shape == (16, 16) and stats["trainable"] == 10 * 16 + 10
    assert stats["bytes"] == 4 * (10 * 16 + 10 + 16 * 16)


@pytest.mark.parametrize(
    ("flag", "value"), [("--pred-len", "1000000000000"), ("--num-prototypes", "1000000000000")]
)
def test_bench_step_sizes_no_machine_holds_are_one_line(flag: str, value: str, capsys) -> None:
    # petabytes: refused by the allocator at once, on any machine
    from experiments.cli import main

    argv = ["bench-step", "--llm-layers", "1", "--seq-len", "96", "--steps", "1", "--warmup", "0"]
    assert main([*argv, flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: bench-step: out of memory (an allocation")
    assert f"{flag} (now {value})" in err[0] and "--batch-size (now 8)" in err[0]


def test_bench_step_out_of_memory_in_a_step_is_one_line(capsys, monkeypatch) -> None:
    # as CUDA says it, raised by the forward rather than by building the model
    from experiments.cli import main
    from timellm.model import TimeLLM

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0")

    monkeypatch.setattr(TimeLLM, "forward", oom)
    argv = ["bench-step", "--llm-layers", "1", "--seq-len", "64", "--pred-len", "8"]
    assert main([*argv, "--steps", "1", "--warmup", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: bench-step: out of memory (an allocation of 2.0 GiB) on the cpu building the "
        "model or running a step; lower --pred-len (now 8), --seq-len (now 64), "
        "--num-prototypes (now 1000), --batch-size (now 8), --n-vars (now 1), --d-model "
        "(now 32), --llm-layers (now 1)"
    ]


def test_allocation_failure_tells_memory_from_other_errors() -> None:
    from timellm.explain import allocation_failure

    cpu = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 6144000000000 bytes. Error code 12"
    )
    assert allocation_failure(cpu) == "out of memory (an allocation of 5,722.0 GiB)"
    numpy = MemoryError("Unable to allocate 143. GiB for an array with shape (10, 3)")
    assert allocation_failure(numpy) == "out of memory (an allocation of 143.0 GiB)"
    assert allocation_failure(MemoryError()) == "out of memory"
    assert allocation_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert allocation_failure(ValueError("out of memory")) is None


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_backbone_folder_without_tokenizer_says_so(arch: str, tmp_path) -> None:
    # LLaMA's tokenizer fails to load; GPT-2's and Qwen2's load under transformers 5 with
    # an empty vocabulary (every prompt zero tokens): both must be refused.
    from ensemble.errors import UserError
    from timellm.backbone import load_backbone, random_backbone

    tiny = {
        "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1),
        "qwen2": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1),
        "gpt2": dict(n_embd=32, n_layer=1, n_head=2),
    }[arch]
    random_backbone(arch, **tiny).model.save_pretrained(tmp_path)
    with pytest.raises(UserError, match="copy the model's tokenizer files") as exc:
        load_backbone(str(tmp_path))
    assert "\n" not in str(exc.value)


def test_backbone_path_that_is_not_there_says_so(capsys) -> None:
    # not transformers' hub repo-id naming rules
    from experiments.cli import main

    assert main(["bench-step", "--backbone", "/no/such/model", "--llm-layers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "backbone folder '/no/such/model' does not exist" in err[0]


def test_an_encoder_of_older_transformers_without_use_cache_or_position_ids(minilm) -> None:
    """transformers 4.x gives ALBERT, DeBERTa and MPNet no ``use_cache`` and DistilBERT no
    ``position_ids`` (and no ``**kwargs``): passing them was a TypeError."""
    import copy
    import dataclasses

    from ensemble.errors import UserError

    bert = type(minilm.model)

    class NoUseCache(bert):
        def forward(self, inputs_embeds=None, attention_mask=None, position_ids=None):
            return bert.forward(
                self,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
            )

    class NoPositions(bert):
        def forward(self, inputs_embeds=None, attention_mask=None):
            return bert.forward(self, inputs_embeds=inputs_embeds, attention_mask=attention_mask)

    def like(cls) -> Backbone:
        model = copy.copy(minilm.model)  # the same (frozen) weights under another class
        model.__class__ = cls
        return dataclasses.replace(minilm, model=model)

    x, ids, mask = _batch(minilm)
    with torch.no_grad():
        want = _model(minilm).eval()(x, ids, mask)
        got = _model(like(NoUseCache)).eval()(x, ids, mask)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # BERT's absolute positions: without position_ids left padding would shift them
    with pytest.raises(UserError, match="takes no position_ids.*upgrade transformers"):
        _model(like(NoPositions))


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated")  # 4.x's name, on purpose
def test_a_decoder_without_position_ids_runs_both_paths() -> None:
    """OPT in transformers 4.x takes no ``position_ids`` (it counts positions from the
    mask): the prefix-cache path passed them anyway. A rotary decoder (LLaMA here) is
    unchanged by the shift the left padding then gives its positions."""
    import copy
    import dataclasses

    bb = random_backbone("llama", **DECODERS["llama"])
    llama = type(bb.model)

    class NoPositions(llama):  # and no **kwargs that would swallow them
        def forward(
            self, inputs_embeds=None, attention_mask=None, use_cache=None, past_key_values=None
        ):
            return llama.forward(
                self,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                use_cache=use_cache,
                past_key_values=past_key_values,
            )

    model = copy.copy(bb.model)
    model.__class__ = NoPositions
    x, ids, mask = _batch(bb)
    with torch.no_grad():
        want = _model(bb).eval()(x, ids, mask)
        for prefix_cache in (True, False):
            got = _model(dataclasses.replace(bb, model=model), prefix_cache=prefix_cache)
            torch.testing.assert_close(got.eval()(x, ids, mask), want, atol=1e-5, rtol=1e-5)
