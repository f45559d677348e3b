"""Backbone loading: embedded MiniLM, random configs, truncation, checks, 4-bit."""

from __future__ import annotations

import json

import pytest
import torch

from ensemble.errors import UserError
from timellm.backbone import _is_decoder, _minilm_dir, load_backbone, random_backbone

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


def _minilm_with_pooler(layers: int | None = None) -> torch.nn.Module:
    """MiniLM as transformers builds it by default, BERT's pooler included."""
    from transformers import AutoModel

    from timellm.backbone import _dtype_arg

    extra = {"num_hidden_layers": layers} if layers else {}
    model = AutoModel.from_pretrained(_minilm_dir(), **{_dtype_arg(): torch.float32}, **extra)
    return model.eval()


def test_minilm_leaves_out_the_pooler_and_its_hidden_states_are_unchanged() -> None:
    bb = load_backbone("minilm")
    pooled = _minilm_with_pooler()
    assert bb.model.pooler is None  # neither counted nor run in every forward
    assert sum(p.numel() for p in pooled.pooler.parameters()) == 147_840
    assert sum(p.numel() for p in bb.model.parameters()) == 22_713_216 - 147_840
    torch.manual_seed(0)
    ids = torch.randint(0, 30522, (3, 40))
    mask = torch.ones_like(ids)
    mask[0, 30:] = 0
    with torch.no_grad():  # Time-LLM passes embeddings; the prompt alone passes ids
        for kw in (
            {"input_ids": ids, "attention_mask": mask},
            {"inputs_embeds": torch.randn(3, 20, 384)},
        ):
            assert torch.equal(bb.model(**kw).last_hidden_state, pooled(**kw).last_hidden_state)


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


def test_unreachable_hub_id_fails_at_once(monkeypatch) -> None:
    # Offline, transformers retries a hub id for ~25 s; the DNS check answers at once.
    import socket
    import time

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    for _ in range(2):  # the second call is timed: not transformers' first import
        start = time.perf_counter()
        with pytest.raises(UserError, match="not in the Hugging Face cache, and huggingface.co"):
            load_backbone("no-such-org/no-such-model")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("spec", ["/no/such/model", "C:\\models\\Qwen2.5-3B", "D:/models/qwen"])
def test_a_missing_backbone_path_is_refused_before_any_member_fits(
    spec, synth_csv, tmp_path, capsys
):
    from experiments.cli import main

    out = tmp_path / "r"
    argv = ["run", "--data-path", str(synth_csv(n=600)), "--seq-len", "48", "--pred-len", "8"]
    argv += ["--members", f"dlinear,timellm@backbone={spec}", "--out", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"backbone folder '{spec}' does not exist" in err[0]
    assert not out.exists()  # refused with the settings: dlinear was not fitted either


def test_only_a_member_that_will_fit_needs_its_backbone_folder(tmp_path, monkeypatch) -> None:
    from timellm.backbone import check_local_backbone
    from timellm.member import TimeLLMForecaster

    # built from a moved run's config.yaml: fine until it has to fit (its saved
    # forecasts may be reused without the backbone)
    m = TimeLLMForecaster(seq_len=32, pred_len=8, backbone=str(tmp_path / "moved"))
    with pytest.raises(UserError, match="does not exist"):
        m.preflight()
    # ~ is the home folder in the check as in the load
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="the folder has no config.json"):
        check_local_backbone("~/empty")
    check_local_backbone("Qwen/Qwen2.5-3B")  # a hub id: not a path, left to transformers
    # a llama.cpp file, named with or without a folder: not "does not exist", not the network
    (tmp_path / "qwen.gguf").write_bytes(b"GGUF")
    for spec in (str(tmp_path / "qwen.gguf"), "~/qwen.gguf"):
        with pytest.raises(UserError, match="it is a file, not a folder.*GGUF"):
            check_local_backbone(spec)


def test_the_checks_before_a_run_refuse_what_loading_would(tmp_path) -> None:
    from timellm.backbone import check_backbone

    check_backbone("none")  # the no-LLM ablation: nothing to look for
    check_backbone("minilm", llm_layers=6, llm_dim=384)
    with pytest.raises(UserError, match="llm_layers 7 is out of range"):
        check_backbone("minilm", llm_layers=7)
    with pytest.raises(UserError, match="llm_dim 999 does not match"):
        check_backbone("llama-random", llm_dim=999)
    (tmp_path / "config.json").write_text("{", encoding="utf-8")
    with pytest.raises(UserError, match="cannot read backbone"):
        check_backbone(str(tmp_path))
    # found only when the model was built, after the other members had fitted and the
    # previous run's results were gone
    check_backbone("minilm", d_ff=384)
    with pytest.raises(UserError, match="d_ff 385 exceeds the hidden size 384.*timellm.d_ff=384"):
        check_backbone("minilm", d_ff=385)
    # config and tokenizer without weights: the load failed in fit, after the others
    import shutil

    from timellm.backbone import _minilm_dir

    bare = tmp_path / "bare"
    shutil.copytree(_minilm_dir(), bare, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    with pytest.raises(UserError, match="holds no weight file"):
        check_backbone(str(bare))


def test_a_tokenizer_that_cannot_load_names_its_cause(tmp_path, monkeypatch) -> None:
    # a LLaMA folder with only tokenizer.model, without sentencepiece: "copy the
    # tokenizer files" alone sent the user after files that were there
    import transformers

    from timellm.backbone import _load_tokenizer

    def refuse(*a, **k):
        raise ImportError("LlamaTokenizer requires the SentencePiece library")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    with pytest.raises(UserError, match="ImportError: LlamaTokenizer requires the SentencePiece"):
        _load_tokenizer("x", str(tmp_path))


def test_folder_without_config_is_named(tmp_path) -> None:
    with pytest.raises(UserError, match="the folder has no config.json"):
        load_backbone(str(tmp_path))


def test_local_path_truncates_saved_model(tmp_path) -> None:
    _save_with_minilm_tokenizer(random_backbone("qwen2", **TINY_QWEN).model, tmp_path)
    bb = load_backbone(str(tmp_path), llm_layers=2, llm_dim=32)
    assert bb.num_layers == 2 and len(bb.model.layers) == 2 and bb.is_decoder


def test_a_weights_file_cut_short_is_one_clear_error(tmp_path) -> None:
    # what the seeds' user meets when a shard is still downloading
    _save_with_minilm_tokenizer(random_backbone("qwen2", **TINY_QWEN).model, tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(UserError, match="damaged or incomplete.*repeat the model download"):
        load_backbone(str(tmp_path), llm_layers=2)


def _save_with_minilm_tokenizer(model: torch.nn.Module, path) -> None:
    from transformers import AutoTokenizer

    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(_minilm_dir()).save_pretrained(path)


def test_bf16_checkpoint_loads_as_float32_unless_asked(tmp_path) -> None:
    tiny_llama = {**TINY_QWEN, "num_key_value_heads": 2}
    _save_with_minilm_tokenizer(
        random_backbone("llama", dtype=torch.bfloat16, **tiny_llama).model, tmp_path
    )
    bb = load_backbone(str(tmp_path))  # transformers alone would keep the file's bf16
    assert bb.dtype == torch.float32
    assert {p.dtype for p in bb.model.parameters()} == {torch.float32}
    assert load_backbone(str(tmp_path), dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "model_type,decoder",
    [
        ("bert", False),
        ("roberta", False),
        ("distilbert", False),
        ("roformer", False),  # also has a causal-LM head class, but trained as an MLM
        ("megatron-bert", False),
        ("data2vec-text", False),
        ("gpt2", True),
        ("llama", True),
        ("qwen2", True),
        ("mistral", True),
    ],
)
def test_encoder_or_decoder_from_the_model_type(model_type: str, decoder: bool) -> None:
    from transformers import AutoConfig

    assert _is_decoder(AutoConfig.for_model(model_type)) is decoder


def test_bert_configured_as_a_decoder_is_causal() -> None:
    from transformers import AutoConfig

    assert _is_decoder(AutoConfig.for_model("bert", is_decoder=True))


def test_roformer_takes_the_encoder_path_and_reads_its_prompt(tmp_path) -> None:
    import numpy as np
    from transformers import AutoConfig, AutoModel

    from timellm.model import TimeLLM
    from timellm.prompt import PromptBuilder

    config = AutoConfig.for_model(
        "roformer",
        hidden_size=32,
        embedding_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    _save_with_minilm_tokenizer(AutoModel.from_config(config), tmp_path)
    bb = load_backbone(str(tmp_path))
    assert not bb.is_decoder
    torch.manual_seed(0)
    model = TimeLLM(bb, seq_len=48, pred_len=8, d_model=8, d_ff=16, n_heads=2, num_prototypes=20)
    x = np.random.default_rng(0).standard_normal((2, 48, 1)).cumsum(axis=1).astype(np.float32)
    pb = PromptBuilder(bb.tokenizer, "Test series.", 8, [12, 6])
    with torch.no_grad():
        plain = model.eval()(torch.from_numpy(x), *pb(x))
        other = model(torch.from_numpy(x), *pb(x, ["another text", "and another"]))
    assert not torch.allclose(plain, other, atol=1e-6)


def test_encoder_decoder_models_are_refused(tmp_path) -> None:
    from transformers import AutoConfig

    AutoConfig.for_model("t5").save_pretrained(tmp_path)
    with pytest.raises(UserError, match="encoder-decoder"):
        load_backbone(str(tmp_path))


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
        _save_with_minilm_tokenizer(random_backbone("qwen2", **shape).model, tmp_path)
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


def test_4bit_backbone_trains_after_a_no_grad_pass(tmp_path) -> None:
    # The trainer keeps the frozen backbone in eval mode and runs the prompt pass and
    # evaluation without grad. On a CPU with AVX512-BF16 bitsandbytes then repacked the
    # 4-bit weights for an inference-only kernel, and the next training step failed.
    from timellm.model import TimeLLM

    shape = {**TINY_QWEN, "hidden_size": 64, "intermediate_size": 128, "num_key_value_heads": 2}
    _save_with_minilm_tokenizer(random_backbone("qwen2", **shape).model, tmp_path)
    bb = _load_4bit(str(tmp_path), llm_layers=2)
    torch.manual_seed(0)
    model = TimeLLM(bb, seq_len=48, pred_len=8, d_model=8, d_ff=16, n_heads=2, num_prototypes=20)
    x = torch.randn(2, 48, 1)
    ids, mask = torch.randint(5, 100, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    model.train()
    model.llm.eval()
    with torch.no_grad():
        model(x, ids, mask)  # evaluation between epochs
    loss = model(x, ids, mask).float().pow(2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


def test_the_qwen25_3b_shape_has_the_published_parameter_counts():
    # The seeds' model, measured without its weights (`--backbone qwen2.5-3b-random`). Its
    # model card (Hugging Face, Qwen/Qwen2.5-3B) gives 3.09B parameters, 2.77B without the
    # embedding; counted here on the meta device, nothing allocated.
    from transformers import AutoModel

    from timellm.backbone import random_config

    config = random_config("qwen2.5-3b")
    assert config.model_type == "qwen2" and config.hidden_size == 2048
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    assert (round(total / 1e9, 2), round((total - embedding) / 1e9, 2)) == (3.09, 2.77)


def test_backbone_identity_follows_the_model_files_only(tmp_path) -> None:
    from timellm.backbone import backbone_identity

    assert backbone_identity("none") is None and backbone_identity("qwen2-random") is None
    assert backbone_identity(str(tmp_path / "missing")) is None
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    big = bytearray(3 << 20)  # three MiB: the middle is not read
    (tmp_path / "model-00001.safetensors").write_bytes(bytes(big))
    first = backbone_identity(str(tmp_path))
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    assert backbone_identity(str(tmp_path)) == first
    for where in (0, len(big) - 1):  # the header end, the last bytes
        changed = bytearray(big)
        changed[where] = 1
        (tmp_path / "model-00001.safetensors").write_bytes(bytes(changed))
        assert backbone_identity(str(tmp_path)) != first
    (tmp_path / "model-00001.safetensors").write_bytes(bytes(big))
    (tmp_path / "tokenizer.json").write_text("{}", encoding="utf-8")
    assert backbone_identity(str(tmp_path)) != first


def test_the_dtype_keyword_follows_the_transformers_version(monkeypatch):
    # transformers before 4.56 hands an unknown ``dtype`` to the model's constructor
    import transformers

    from timellm.backbone import _dtype_arg

    monkeypatch.setattr(transformers, "__version__", "4.40.0")
    assert _dtype_arg() == "torch_dtype"
    monkeypatch.setattr(transformers, "__version__", "4.56.0")
    assert _dtype_arg() == "dtype"


# Tiny checkpoints as the hub ships them (with their LM heads, tied where the model ties
# them), 64 wide for bitsandbytes' CPU blocks; the regex finds layer 0 in each naming.
_TINY_HEADED = {
    "bert": ("BertForMaskedLM", "BertConfig", {"num_attention_heads": 2}),
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", {"n_head": 2, "n_positions": 128}),
    "llama": ("LlamaForCausalLM", "LlamaConfig", {"num_attention_heads": 2}),
    "qwen2": (
        "Qwen2ForCausalLM",
        "Qwen2Config",
        {"num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": True},
    ),
}
_LAYER_0 = r"(^|\.)(layer|layers|h)\.0\."


def _save_headed(arch: str, path) -> None:
    import transformers

    model_cls, config_cls, extra = _TINY_HEADED[arch]
    config = getattr(transformers, config_cls)(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, vocab_size=30522, **extra
    )
    torch.manual_seed(0)
    _save_with_minilm_tokenizer(getattr(transformers, model_cls)(config), path)


def _load(spec: str, quant: str | None, **kw):
    try:
        return load_backbone(spec, load_in_4bit=quant == "4bit", load_in_8bit=quant == "8bit", **kw)
    except (RuntimeError, ImportError, NotImplementedError) as exc:  # pragma: no cover
        pytest.skip(f"bitsandbytes {quant} path unavailable on this machine: {exc}")


@pytest.mark.parametrize(
    "arch,quant",
    [("bert", None), ("gpt2", None), ("llama", None), ("qwen2", None)]
    + [("qwen2", "4bit"), ("bert", "4bit"), ("llama", "8bit")],
)
def test_a_weights_file_without_some_layers_is_refused(arch: str, quant, tmp_path) -> None:
    # transformers initialised the absent layers at random, and its report of them was
    # silenced: a run trained on a partly random backbone, exit 0
    import re

    from safetensors.torch import load_file, save_file

    _save_headed(arch, tmp_path)
    # intact: the layers cut off (unexpected), the LM head and tied weights are no error
    assert _load(str(tmp_path), quant, llm_layers=1).num_layers == 1
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    kept = {k: v for k, v in state.items() if not re.search(_LAYER_0, k)}
    assert len(kept) < len(state)
    save_file(kept, weights, metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"weights file is incomplete, it lacks \S*0\..*download"):
        _load(str(tmp_path), quant, llm_layers=1)


def test_a_config_of_other_shapes_than_the_weights_is_one_line_naming_them(
    tmp_path, monkeypatch
) -> None:
    # transformers' RuntimeError pointed at "the above report", which is kept quiet
    _save_headed("bert", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    config["intermediate_size"] = 96
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(UserError, match=r"shapes its config.json gives: \S+ \(128,\) vs \(96,\)"):
        load_backbone(str(tmp_path), llm_layers=1)
    import timellm.backbone

    # large weights are not loaded a second time for the names: the error stands alone
    monkeypatch.setattr(timellm.backbone, "MISMATCH_RELOAD_BYTES", 0)
    with pytest.raises(UserError, match=r"shapes its config.json gives; the folder mixes"):
        load_backbone(str(tmp_path), llm_layers=1)


def test_a_checkpoint_without_a_pooler_is_no_error(tmp_path, monkeypatch) -> None:
    # an MLM checkpoint has no pooler; a model class without the add_pooling_layer switch
    # builds one anyway, and Time-LLM never reads it
    import timellm.backbone

    _save_headed("bert", tmp_path)
    monkeypatch.setattr(timellm.backbone, "_has_pooling_switch", lambda config: False)
    assert load_backbone(str(tmp_path)).model.pooler is not None


def test_a_bert_folder_without_tokenizer_files_is_refused(tmp_path) -> None:
    # transformers builds BERT a tokenizer of its 5 special tokens: every prompt word
    # was [UNK], and the run trained without its prompt, exit 0
    import shutil
    from types import SimpleNamespace

    from timellm.backbone import _load_tokenizer, check_backbone

    shutil.copy(f"{_minilm_dir()}/config.json", tmp_path)
    for attempt in (check_backbone, load_backbone):
        with pytest.raises(UserError, match="lacks its tokenizer files .*unknown token"):
            attempt(str(tmp_path))
    # a stand-in that maps some words but knows a fraction of the model's vocabulary
    with pytest.raises(UserError, match="knows 30522 of the model's 100000 tokens"):
        _load_tokenizer("x", _minilm_dir(), SimpleNamespace(vocab_size=100_000))
    assert len(_load_tokenizer("x", _minilm_dir(), SimpleNamespace(vocab_size=30_522))) == 30522


def _bin_weights(kind: str) -> bytes:
    import io

    buf = io.BytesIO()
    weights = {"wte.weight": torch.zeros(512, 256)}  # 512 KiB
    torch.save(weights, buf, _use_new_zipfile_serialization=kind != "legacy-cut")
    data = buf.getvalue()
    # a zip without its directory at the end (RuntimeError; cut below about 64 KiB, an
    # OSError EINVAL instead); a legacy pickle whose tensor data ends early
    cut = {"zip-cut": len(data) // 2, "small-zip-cut": 30_000, "legacy-cut": len(data) - 10}
    return {"garbage": b"garbage" * 100, "empty": b""}.get(kind, data[: cut.get(kind)])


@pytest.mark.parametrize("kind", ["garbage", "empty", "zip-cut", "small-zip-cut", "legacy-cut"])
def test_a_damaged_pytorch_model_bin_is_one_clear_error(kind: str, tmp_path, monkeypatch) -> None:
    # an UnpicklingError advised weights_only=False; a cut .bin's RuntimeError escaped
    import transformers

    _save_headed("gpt2", tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(_bin_weights(kind))
    with pytest.raises(UserError, match="damaged or incomplete.*repeat the model download") as err:
        load_backbone(str(tmp_path))
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)

    # other RuntimeErrors while loading are not called damage
    def out_of_memory(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", out_of_memory)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        load_backbone(str(tmp_path))
