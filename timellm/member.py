"""`TimeLLMForecaster`: Time-LLM as a member of the ensemble (the Forecaster protocol).

``fit(train, val)`` loads the frozen backbone, builds the model, pre-tokenises one prompt
per (window, channel) for the selected train windows and the scored val windows, and
runs `timellm.trainer.Trainer`. ``predict(windows)`` forecasts every window of a split
(no drop_last) in eval mode with cached prototypes and returns ``[W, H, C]`` float32 in
the scaled space.

Batching: each (window, channel) is one univariate series with its own prompt (channel
independence). ``sample="series"`` draws a batch of ``batch_size`` such series, as the
official data loader does (one channel of one window per item); the default
``sample="windows"`` takes ``batch_size`` windows x all C channels, C times the series
per step. Evaluation batches are ``eval_batch_size`` windows x all channels either way
(no gradient; the forecasts do not depend on the batching).

Window selection (documented deviations from "every window every epoch"):

* ``train_stride``: train on one window in n (consecutive windows overlap in L - 1
  rows, so a stride of 4-16 loses little and divides the epoch cost). The window is
  drawn at random from each block of n, not every n-th: a stride sharing a factor with
  the period (8 and 24 hours) would train on a few hours of the day only.
* ``val_stride``: the per-epoch early-stopping score uses one val window in n, drawn
  the same way; the metrics the run reports are always over all windows (run.py
  predicts them all).
* ``percent`` (few-shot) is applied by the data layer (`make_splits`), as the official
  loaders cut the train split.

Prompts: dataset description (prompt bank), task, the window's normalised min / max /
median / trend, the periodicity analyser's top periods (the run's, from train rows), and
optionally the classical forecasts summary (`timellm.inject`, out-of-fold on train).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ensemble.data import Split, Windows
from ensemble.errors import UserError
from ensemble.forecaster import BaseForecaster
from timellm import inject as inj
from timellm.backbone import (
    QUANTISE_ONE,
    backbone_identity,
    check_backbone,
    check_local_backbone,
    cpu_has_native_bf16,
    looks_like_path,
)
from timellm.prompt import DEFAULT_STATS, FEATURE_STATS, parse_stats
from timellm.trainer import (
    SCHEDULES,
    TrainConfig,
    Trainer,
    WindowSet,
    atomic_save,
    keep_finished,
    load_trainable_state,
    make_accelerator,
    select_starts,
    trainable_state,
)

log = logging.getLogger(__name__)
# How a finished forecast kept in the member's folder ends: `predict.<windows>.done.npz`
_DONE = ".done.npz"

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PROMPTS = ("concise", "official", "none")

# Constructor arguments that change nothing about the learned weights (not part of the
# resume fingerprint).
_RUNTIME_ONLY = {"workdir", "resume", "checkpoint_minutes", "progress", "eval_batch_size", "device"}

# Settings added after checkpoints were first written, with their defaults: left out of
# the fingerprint at these values, so those checkpoints still resume.
_ADDED_LATER = {
    "pct_start": 0.2,
    "backbone_dropout": False,
    "description": None,
    "prompt_stats": None,
    "weight_decay": 0.0,
    "clip_grad": None,
}


def _finite(value: Any) -> bool:
    """A finite int or float, not a bool (``--set`` gives "inf" and true as such)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _check_sizes(dropout: float, **sizes: int) -> None:
    """Sizes >= 1 and a dropout rate below 1, else a zero-size layer or an all-zero
    activation fails deep inside the first training step."""
    for name, value in sizes.items():
        # a float (16.0, 32.5) or bool passed here and failed deep in the model's build,
        # after the run's other members had been fitted
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise UserError(f"timellm: {name} must be a whole number >= 1 (got {value!r})")
    if not 0 <= dropout < 1:
        raise UserError(f"timellm: dropout must be in [0, 1) (got {dropout})")


def _prompt_stats(value: str | list[str] | None, prompt: str, backbone: str) -> list[str] | None:
    """The checked statistics, None for the paper's default (so that older checkpoints,
    written before the setting existed, keep their fingerprint)."""
    try:
        stats = parse_stats(value)
    except ValueError as exc:
        raise UserError(f"timellm: {exc}") from None
    if stats != DEFAULT_STATS and backbone == "none":
        raise UserError(
            "timellm: backbone=none has no prompt to state statistics in; drop prompt_stats"
        )
    if stats != DEFAULT_STATS and prompt != "concise":
        raise UserError(
            f"timellm: prompt_stats needs prompt=concise (the {prompt} prompt states "
            "no chosen statistics); drop prompt_stats or set prompt=concise"
        )
    return None if stats == DEFAULT_STATS else list(stats)


def data_identity(train: Split, val: Split, tr_starts: np.ndarray, va_starts: np.ndarray) -> str:
    """Short SHA-256 of what a fit trains and early-stops on: the train and val rows as
    the trainer sees them (float32, [T, C]) and the selected window starts.

    Part of the resume fingerprint: a rerun with another --percent, --features, --target
    or data file must not resume (and return) the model trained on the old data.
    """
    digest = hashlib.sha256()
    for array in (
        np.ascontiguousarray(train.data, dtype=np.float32),
        np.ascontiguousarray(val.data, dtype=np.float32),
        np.ascontiguousarray(tr_starts, dtype=np.int64),
        np.ascontiguousarray(va_starts, dtype=np.int64),
    ):
        digest.update(repr(array.shape).encode())  # the channel count, too
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


class TimeLLMForecaster(BaseForecaster):
    """Time-LLM member.

    Args:
        dataset: dataset name, for the prompt's description (unknown names get the
            generic text).
        backbone: "minilm" (embedded), "gpt2-random" / "llama-random" / "qwen2-random"
            (random weights, for tests and timing), a local Hugging Face model folder, or
            "none": the no-LLM ablation (`timellm.nollm.PatchLinear`, Tan et al. 2024).
        llm_layers: backbone layers kept (None: all).
        llm_dim: expected backbone hidden size (checked; None: not checked).
        seq_len: lookback L.
        pred_len: horizon H.
        patch_len, stride: patching (16, 8 as the paper).
        d_model: patch embedding size.
        d_ff: backbone features kept per patch.
        n_heads: reprogramming heads.
        num_prototypes: text prototypes (official ``--num_tokens``).
        dropout: dropout of the patch embedding and the head.
        prototype_map: "lowrank" (default: the same function class as the official full
            vocabulary map at a fraction of the cost) or "full" (official).
        lr: peak Adam learning rate.
        epochs: maximum epochs.
        patience: early-stopping patience in epochs (0: run all epochs, still reload
            the best).
        batch_size: items per step: windows (x all channels) or series (see ``sample``).
        sample: "windows" (default: ``batch_size`` windows x all C channels per step) or
            "series" (the official batching: ``batch_size`` random (window, channel)
            pairs, one channel of one window per item; see `TrainConfig`).
        eval_batch_size: windows per forward pass when scoring or predicting.
        schedule: "cosine", "onecycle", "type1" or "constant", or the official
            run_main.py's "official_type1", "official_cos" or "official_constant" (see
            `TrainConfig`).
        pct_start: warm-up fraction of the "onecycle" schedule (official ``--pct_start``).
        weight_decay: Adam's L2 penalty on the trained weights (0: none, as the official).
        clip_grad: clip the gradients' global norm to this before each step (None: no
            clipping, as the official; a guard when a quantised backbone's fp16
            gradients spike).
        train_stride: train on one train window in n, drawn at random within each block of n.
        val_stride: early-stop on one val window in n, drawn the same way.
        periods: ranked periods for the prompt (the run's periodicity analysis).
        inject: classical forecasts to summarise in the prompt ("ridge", "dlinear",
            "nlinear"); None or [] turns injection off.
        inject_folds: K time-ordered folds for the out-of-fold train forecasts.
        prompt_max_length: token cap per prompt.
        prompt: "concise" (our template, ~70 tokens), "official" (the official
            wording and number format, ~130 tokens; for measuring the deviation) or
            "none" (no prefix: only the reprogrammed patches go through the LLM, the
            paper's ablation of Prompt-as-Prefix).
        description: the dataset description the prompt starts with; None (default)
            takes ours from the prompt bank (`timellm.prompt.load_description`).
        prompt_stats: what the concise prompt states about each window, in order:
            "min,max,mean,seasonal_strength,..." or a list of names from
            `timellm.prompt.STAT_LABELS`; None (default) is min, max, median, trend and
            the run's periods, as the paper's prompt.
        backbone_dropout: train with the frozen backbone in train mode, its dropout on,
            as the official code does; False (default) keeps it in eval mode while the
            trainable parts train (no noise from a model that does not learn, faster
            attention kernels).
        load_in_4bit, load_in_8bit: quantise the backbone (bitsandbytes; a GPU).
        precision: "auto" (bf16 autocast and bf16 backbone on a GPU with native bf16,
            i.e. Ampere or newer; an older GPU computes a quantised backbone in fp16 and
            runs an unquantised one in fp32; fp32 on CPU, except a quantised backbone on
            a CPU with native bf16, AVX512-BF16 or AMX: bf16), "fp32", "bf16" or "fp16"
            (with loss scaling, for GPUs without native bf16).
        device: "cpu", "cuda" or None (best available).
        seed: weights, shuffling and injector seeds.
        workdir: folder for per-epoch checkpoints (None: none).
        resume: continue from ``workdir``'s checkpoint: "auto" (the default) when it
            has this member's settings and data, else start afresh; True refuses a
            checkpoint of other settings or data; False always starts afresh.
        checkpoint_minutes: also checkpoint inside an epoch this often (0: at epoch ends
            only): an epoch of a 3B backbone on a small GPU takes hours, and a resume goes
            on after the last step checkpointed.
        progress: tqdm bars (None: only on a terminal).
    """

    name = "timellm"

    def __init__(
        self,
        dataset: str | None = None,
        backbone: str = "minilm",
        llm_layers: int | None = 6,
        llm_dim: int | None = None,
        seq_len: int = 512,
        pred_len: int = 96,
        patch_len: int = 16,
        stride: int = 8,
        d_model: int = 32,
        d_ff: int = 128,
        n_heads: int = 8,
        num_prototypes: int = 1000,
        dropout: float = 0.1,
        prototype_map: str = "lowrank",
        lr: float = 1e-3,
        epochs: int = 10,
        patience: int = 3,
        batch_size: int = 16,
        sample: str = "windows",
        eval_batch_size: int = 64,
        schedule: str = "cosine",
        pct_start: float = 0.2,
        weight_decay: float = 0.0,
        clip_grad: float | None = None,
        train_stride: int = 1,
        val_stride: int = 1,
        periods: list[int] | None = None,
        inject: list[str] | None = None,
        inject_folds: int = 5,
        prompt_max_length: int = 256,
        prompt: str = "concise",
        description: str | None = None,
        prompt_stats: str | list[str] | None = None,
        backbone_dropout: bool = False,
        load_in_4bit: bool = False,
        load_in_8bit: bool = False,
        precision: str = "auto",
        device: str | None = None,
        seed: int = 0,
        workdir: str | None = None,
        resume: bool | Literal["auto"] = "auto",
        checkpoint_minutes: float = 10.0,
        progress: bool | None = None,
    ) -> None:
        if not (isinstance(resume, bool) or resume == "auto"):
            raise UserError(f"resume must be true, false or auto (got {resume!r})")
        if not _finite(checkpoint_minutes) or checkpoint_minutes < 0:
            raise UserError(
                "timellm: checkpoint_minutes must be a number >= 0 (0: at epoch ends only; "
                f"got {checkpoint_minutes!r})"
            )
        if precision not in PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
        if backbone == "none" and inject:
            raise UserError(
                "timellm: backbone=none has no prompt to inject forecasts into; drop inject"
            )
        if prompt not in PROMPTS:
            raise UserError(f"prompt must be one of {', '.join(PROMPTS)} (got {prompt!r})")
        if prompt == "none" and inject:
            raise UserError(
                "timellm: prompt=none has no prompt to inject forecasts into; drop inject"
            )
        if description is not None and (
            not isinstance(description, str) or not description.strip()
        ):
            raise UserError(f"timellm: description must be a non-empty text (got {description!r})")
        prompt_stats = _prompt_stats(prompt_stats, prompt, str(backbone))
        if set(prompt_stats or ()) & set(FEATURE_STATS) and seq_len < 16:
            raise UserError(
                f"timellm: prompt statistics {', '.join(sorted(FEATURE_STATS))} need a "
                f"lookback of at least 16 steps (got {seq_len})"
            )
        if sample not in ("windows", "series"):
            raise UserError(f"sample must be 'windows' or 'series' (got {sample!r})")
        if train_stride < 1 or val_stride < 1:
            raise UserError("train_stride and val_stride must be >= 1")
        if schedule not in SCHEDULES:
            raise UserError(f"schedule must be one of {', '.join(SCHEDULES)} (got {schedule!r})")
        if not 0 <= pct_start <= 1:
            raise UserError(f"pct_start must be in [0, 1] (got {pct_start})")
        if not _finite(weight_decay) or not weight_decay >= 0:
            raise UserError(f"timellm: weight_decay must be a number >= 0 (got {weight_decay!r})")
        if clip_grad is not None and (not _finite(clip_grad) or not clip_grad > 0):
            raise UserError(
                f"timellm: clip_grad must be a number above 0; leave it out for no clipping "
                f"(got {clip_grad!r})"
            )
        if load_in_4bit and load_in_8bit:
            raise UserError(QUANTISE_ONE)
        try:
            inject = inj.summary_names(inject)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if llm_layers is not None:  # None: every layer; "abc" crashed the layer check
            _check_sizes(dropout, llm_layers=llm_layers)
        _check_sizes(
            dropout,
            patch_len=patch_len,
            stride=stride,
            d_model=d_model,
            d_ff=d_ff,
            n_heads=n_heads,
            num_prototypes=num_prototypes,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            epochs=epochs,
            prompt_max_length=prompt_max_length,
        )
        # Checked here, before any member of a run is fitted, not deep inside this fit.
        if patch_len > seq_len:
            raise UserError(
                f"timellm: patch_len {patch_len} is longer than the lookback {seq_len}; "
                "give a patch that fits in it"
            )
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise UserError(f"timellm: lr must be a number above 0 (got {lr!r})")
        if patience < 0:
            raise UserError(f"timellm: patience must be >= 0 (got {patience}; 0 runs every epoch)")
        if inject and inject_folds < 2:
            raise UserError(
                f"timellm: inject_folds must be >= 2 (got {inject_folds}): the out-of-fold "
                "forecasts of the training windows need at least two folds"
            )
        if device not in (None, "cpu", "cuda"):
            raise UserError(
                f"timellm: device must be cpu or cuda (got {device!r}); leave it out for the "
                "best available (CUDA_VISIBLE_DEVICES picks the GPU)"
            )
        args = dict(locals())
        self.kwargs: dict[str, Any] = {
            k: v for k, v in args.items() if k not in ("self", "__class__", "args")
        }
        self.kwargs["periods"] = [int(p) for p in (periods or [])]
        self.kwargs["inject"] = inject
        for k, v in self.kwargs.items():
            setattr(self, k, v)
        self.model: torch.nn.Module | None = None
        self.backbone_obj = None
        self.builder = None
        self.injectors: dict[str, inj.Injector] = {}
        self.n_channels: int | None = None
        self.history: list[dict[str, float]] = []
        # whether a fit or forecast of this process went on from an interrupted one's
        # checkpoint (its time then covers the rest only: the run marks its timings)
        self.resumed = False
        self.best_epoch: int | None = None
        # (val rows [T, C], window starts [n], forecasts [n, H, C]): the best epoch's
        # forecast of the val windows it was scored on; `predict` (every window) and
        # `predict_at` (those starts: `tune --val-stride`) hand it back for the same rows
        # and windows instead of redoing it
        self._val_forecast: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # A member fitted here keeps each finished forecast in ``workdir`` until `save`
        # (after which the run writes them): a job killed between the val and test
        # forecasts would otherwise make the val one again on every rerun. A loaded one
        # (`forecast`) keeps none, as no `save` would delete them.
        self._keep_finished = False
        self._val_rows: np.ndarray | None = None  # [T, C]: names the val forecast in run.log
        # (epoch, val MSE) after each epoch: how `tune` prunes hopeless trials mid-training
        self.on_epoch: Callable[[int, float], None] | None = None
        # ... and after each training step (`tune` checks for a swallowed Ctrl-C there)
        self.on_step: Callable[[], None] | None = None
        self._acc = None

    # ----------------------------------------------------------------------- building

    def _accelerator(self):
        if self._acc is None:
            if self.device == "cuda" and not torch.cuda.is_available():
                raise UserError(
                    f"timellm: device {self.device} asked for, but no CUDA GPU is visible "
                    "here; set device=cpu or leave it out"
                )
            self._acc = make_accelerator(self.device)
        return self._acc

    def _dtypes(self, device: torch.device) -> tuple[torch.dtype | None, torch.dtype | None]:
        """(backbone weight dtype, autocast dtype) for this precision on ``device``."""
        if self.precision == "fp32":
            return torch.float32, None
        if self.precision == "bf16":
            return torch.bfloat16, torch.bfloat16
        if self.precision == "fp16":
            return torch.float16, torch.float16
        if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
            return torch.bfloat16, torch.bfloat16  # native bf16 from Ampere on
        if self.load_in_4bit or self.load_in_8bit:
            # Quantised layers compute in 16 bits. Before Ampere bf16 is only emulated
            # (slow): float16 there, as the seeds' BitsAndBytesConfig had it.
            if device.type == "cuda":
                return torch.float16, torch.float16
            if self.load_in_4bit and not cpu_has_native_bf16():
                # a CPU that emulates bf16 (AVX2): NF4 dequantised to float32 is ~40x faster
                return torch.float32, None
            return None, None  # the quantised path's own bf16 default (half the memory)
        # CPU, or an older GPU unquantised: float32, for its precision (bf16 was slower on
        # one CPU without AMX, 1.45x faster on this AMD one with AVX512-BF16: BENCHMARKS,
        # fortieth session; precision=bf16 asks for it). float16 weights can overflow.
        return torch.float32, None

    def build(self) -> torch.nn.Module:
        """Load the backbone and build an untrained model (seeded)."""
        from timellm.backbone import load_backbone
        from timellm.model import TimeLLM
        from timellm.prompt import PromptBuilder

        self._val_forecast = None  # it belonged to the model this one replaces

        device = self._accelerator().device
        if self.backbone == "none":
            return self._build_without_llm(device)
        weight_dtype, compute_dtype = self._dtypes(device)
        if self.load_in_8bit or (self.load_in_4bit and weight_dtype != torch.float32):
            # 16 bits (LLM.int8 casts to float16 anyway); NF4 also computes in float32
            weight_dtype = compute_dtype = compute_dtype or torch.bfloat16
        self.backbone_obj = load_backbone(
            self.backbone,
            llm_layers=self.llm_layers,
            llm_dim=self.llm_dim,
            load_in_4bit=self.load_in_4bit,
            load_in_8bit=self.load_in_8bit,
            dtype=weight_dtype,
            device=device,
        )
        self._log_placement(device, weight_dtype, compute_dtype)
        torch.manual_seed(self.seed)
        try:
            model = TimeLLM(
                self.backbone_obj,
                seq_len=self.seq_len,
                pred_len=self.pred_len,
                patch_len=self.patch_len,
                stride=self.stride,
                d_model=self.d_model,
                d_ff=self.d_ff,
                n_heads=self.n_heads,
                num_prototypes=self.num_prototypes,
                dropout=self.dropout,
                prototype_map=self.prototype_map,
                compute_dtype=compute_dtype,
            )
        except ValueError as exc:
            raise UserError(f"timellm: {exc}") from None
        # The trainable part in fp32 on the device; the backbone is already placed.
        for name, module in model.named_children():
            if name != "llm":
                module.to(device)
        if self.prompt == "none":
            self.builder = None
            self.model = model
            return model
        self.builder = PromptBuilder(
            self.backbone_obj.tokenizer,
            self.prompt_description(),
            self.pred_len,
            self.periods[:5],
            seq_len=self.seq_len,
            max_length=self.prompt_max_length,
            official=self.prompt == "official",
            stats=self.prompt_stats,
        )
        self.model = model
        return model

    def _log_placement(
        self,
        device: torch.device,
        weight_dtype: torch.dtype | None,
        compute_dtype: torch.dtype | None,
    ) -> None:
        """Say in run.log where and in what precision the backbone runs, and warn when a
        quantised backbone, meant for a GPU, ends up on the CPU without being asked to:
        a CPU-only torch on a GPU machine (PyPI's Windows wheels) trains there silently."""
        quantised = self.load_in_4bit or self.load_in_8bit
        weights = "4-bit NF4" if self.load_in_4bit else "8-bit" if self.load_in_8bit else None
        weights = weights or str(weight_dtype or "default").removeprefix("torch.")
        compute = str(compute_dtype or "float32").removeprefix("torch.")
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
        log.info(
            "timellm: backbone %s (%s layers), weights %s, compute %s, on %s",
            self.backbone,
            self.llm_layers or "all",
            weights,
            compute,
            where,
        )
        if quantised and device.type == "cpu" and self.device is None:
            build = (
                "; this torch is a CPU-only build: install a CUDA build of torch to use the GPU"
                if torch.version.cuda is None
                else ""
            )
            log.warning(
                "timellm: no CUDA GPU is visible, so the %s backbone runs on the CPU "
                "(slow)%s; set timellm.device=cpu to mean it",
                weights,
                build,
            )

    def _build_without_llm(self, device: torch.device) -> torch.nn.Module:
        """The no-LLM ablation (`timellm.nollm.PatchLinear`): no backbone, no prompts."""
        from timellm.nollm import PatchLinear

        torch.manual_seed(self.seed)
        try:
            model = PatchLinear(
                self.seq_len,
                self.pred_len,
                patch_len=self.patch_len,
                stride=self.stride,
                d_model=self.d_model,
                dropout=self.dropout,
            )
        except ValueError as exc:
            raise UserError(f"timellm: {exc}") from None
        self.backbone_obj = self.builder = None
        self.model = model.to(device)
        return self.model

    def prompt_description(self) -> str:
        """The dataset description the prompts start with (``description`` or ours)."""
        from timellm.prompt import load_description

        return load_description(self.dataset) if self.description is None else self.description

    def fingerprint(self) -> dict[str, Any]:
        """Settings a checkpoint must share with this member to be resumed (`fit` adds
        the data's `data_identity` under "data")."""
        return {
            k: v
            for k, v in self.kwargs.items()
            if k not in _RUNTIME_ONLY and not (k in _ADDED_LATER and v == _ADDED_LATER[k])
        }

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            lr=self.lr,
            epochs=self.epochs,
            patience=self.patience,
            batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size,
            schedule=self.schedule,
            pct_start=self.pct_start,
            weight_decay=float(self.weight_decay),
            clip_grad=None if self.clip_grad is None else float(self.clip_grad),
            seed=self.seed,
            sample=self.sample,
        )

    # ----------------------------------------------------------------------- prompts

    def _prompts(
        self,
        series: np.ndarray,
        starts: np.ndarray,
        forecasts: dict[str, np.ndarray] | None,
        swap: tuple[Sequence[str], np.ndarray] | None = None,
        chunk: int = 2048,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and masks for every (window, channel), built a chunk of windows at a
        time (ETTm1's 34k train windows as one [W, L, C] copy would be a gigabyte).

        Args:
            series: [T, C] rows.
            starts: [W] window start rows.
            forecasts: member name -> [W, H, C] classical forecasts to summarise, or None.
            swap: (statistics, donor starts [W]): state those statistics of the window
                starting at the donor row instead (`timellm.probe`).

        Returns:
            ids [W, C, P] int32 and mask [W, C, P] bool.
        """
        w, c = len(starts), series.shape[1]
        if self.builder is None:
            # No prompt (prompt=none, or no LLM): one token per series, masked out, which
            # `TimeLLM` drops before the backbone (PatchLinear ignores prompts anyway).
            return torch.zeros(w, c, 1, dtype=torch.int32), torch.zeros(w, c, 1, dtype=torch.bool)
        texts: list[str] = []
        names, donors = swap if swap else ((), None)
        for s in range(0, w, chunk):
            x = inj.gather(series, starts[s : s + chunk], 0, self.seq_len)  # [w', L, C]
            donor = None
            if donors is not None:
                donor = inj.gather(series, donors[s : s + chunk], 0, self.seq_len)
            if not forecasts:
                texts += self.builder.build_texts(x, swap=names, donor=donor)
                continue
            extra = inj.summaries(x, {k: f[s : s + chunk] for k, f in forecasts.items()})
            # One "window" per series so that each channel gets its own summary.
            texts += self.builder.build_texts(
                _per_series(x),
                extra,
                swap=names,
                donor=None if donor is None else _per_series(donor),
            )
        ids, mask = self.builder.encode(texts)
        return ids.to(torch.int32).view(w, c, -1), mask.bool().view(w, c, -1)

    def _window_set(
        self,
        series: np.ndarray,
        starts: np.ndarray,
        has_targets: bool,
        forecasts: dict[str, np.ndarray] | None,
        swap: tuple[Sequence[str], np.ndarray] | None = None,
    ) -> WindowSet:
        ids, mask = self._prompts(series, starts, forecasts, swap)
        return WindowSet(
            series=torch.from_numpy(np.ascontiguousarray(series, dtype=np.float32)),
            starts=torch.as_tensor(starts, dtype=torch.long),
            ids=ids,
            mask=mask,
            seq_len=self.seq_len,
            pred_len=self.pred_len,
            has_targets=has_targets,
        )

    # ----------------------------------------------------------------------- protocol

    def identity_stamps(self) -> dict[str, str]:
        """What a run's forecast cache of this member is stamped with beside its key: the
        backbone folder's content (`backbone_identity`), when there is a folder to read."""
        identity = backbone_identity(str(self.backbone))
        return {} if identity is None else {"backbone": identity}

    def preflight(self) -> None:
        """What can be checked before any member of a run is fitted, once it is known
        that this one will be (its saved forecasts cannot be reused): that the backbone
        is there and agrees with ``llm_layers`` and ``llm_dim``, before a rerun replaces
        the previous run in its folder. A run whose saved forecasts are reused does not
        need the backbone folder, so the constructor does not check it.

        Raises:
            UserError: the backbone path does not exist, holds no readable model config or
                tokenizer, or has fewer layers or another hidden size than asked, or a
                hidden size below d_ff.
        """
        check_backbone(str(self.backbone), self.llm_layers, self.llm_dim, self.d_ff)
        self._check_resumable()

    def _check_resumable(self) -> None:
        """Under ``resume=True``, refuse a checkpoint of other settings now: found at the
        fit, after the run had cleared its folder, the refusal cost the previous run's
        results (the data's identity is compared at the fit: it needs the splits)."""
        from timellm.trainer import CHECKPOINT, START_AFRESH, checkpoint_differences

        path = None if self.workdir is None else Path(self.workdir) / CHECKPOINT
        if self.resume is not True or path is None or not path.is_file():
            return
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # damaged: the trainer's own check says how, at the fit
            return
        if not isinstance(ckpt, dict):
            return
        diff = checkpoint_differences(
            ckpt, self.fingerprint(), self.identity_stamps(), ignore=("data",)
        )
        if diff:
            raise UserError(
                f"{path} was written with different settings ({', '.join(diff)}); "
                f"{START_AFRESH} (nothing in the folder was changed)"
            )

    def fit(self, train: Split, val: Split) -> TimeLLMForecaster:
        """Train on the (strided) train windows; early-stop on the (strided) val MSE."""
        if (train.seq_len, train.pred_len) != (self.seq_len, self.pred_len):
            raise UserError(
                f"timellm was built for L={self.seq_len}, H={self.pred_len} but the data has "
                f"L={train.seq_len}, H={train.pred_len}"
            )
        self.n_channels = train.n_channels
        model = self.build()
        tr_starts, va_starts = self._selected_starts(train, val)
        tr_fc = va_fc = None
        if self.inject:
            tr_fc, va_fc = self._fit_injectors(train, tr_starts, val, va_starts)
        tr_set = self._window_set(train.data, tr_starts, True, tr_fc)
        va_set = self._window_set(val.data, va_starts, True, va_fc)
        _check_prompts(model, tr_set, va_set)  # before training, not at the first bad batch
        log.info(
            "timellm: %d train windows (stride %d of %d), %d val windows, %d prompt tokens max",
            len(tr_set),
            self.train_stride,
            train.n_windows,
            len(va_set),
            tr_set.ids.shape[-1],
        )
        trainer = Trainer(
            model,
            self.train_config(),
            workdir=self.workdir,
            resume=self.resume,
            fingerprint={
                **self.fingerprint(),
                "data": data_identity(train, val, tr_starts, va_starts),
            },
            stamps=self.identity_stamps(),
            accelerator=self._accelerator(),
            progress=self.progress,
            backbone_eval=not self.backbone_dropout,
            on_epoch=self.on_epoch,
            on_step=self.on_step,
            checkpoint_every_s=60.0 * self.checkpoint_minutes or None,
        )
        with self._out_of_memory_hint("training"):
            result = trainer.fit(tr_set, va_set)
        self.history, self.best_epoch = result.history, result.best_epoch
        self.resumed |= result.resumed_from is not None
        if result.val_forecast is not None:
            self._val_forecast = (val.windows().context, va_starts, result.val_forecast.numpy())
        self._val_rows = val.windows().context
        self._keep_finished = self.workdir is not None
        return self

    @contextlib.contextmanager
    def _out_of_memory_hint(self, doing: str) -> Iterator[None]:
        """A GPU out of memory is one line naming the settings that shrink a step (the
        seeds' fallbacks), not a traceback; a fit resumes from its last checkpoint."""
        try:
            yield
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            evals = f"eval_batch_size (now {self.eval_batch_size} windows, each all channels)"
            size = (
                # training scores the validation windows too, at the evaluation batch
                f"batch_size (now {self.batch_size}), or {evals} if it failed while scoring "
                "validation"
                if doing == "training"
                else evals
            )
            # only what can still be lowered or switched, of these settings
            more = [f"seq_len (now {self.seq_len})"]
            if self.llm_layers is None or self.llm_layers > 1:  # None: every layer
                more.append(f"llm_layers (now {self.llm_layers})")
            if getattr(self, "prototype_map", None) == "full":
                more.append("prototype_map=lowrank (the full map holds 2.3 GiB for Qwen)")
            if not self.load_in_4bit:
                more.append("load the backbone in 4-bit (load_in_4bit=true)")
            raise UserError(
                f"timellm: the GPU ran out of memory while {doing}; lower {size}, or "
                + ", ".join(more)
                + " (`hybrid-forecast explain timellm` measures a step's peak memory); a "
                "rerun resumes from the last checkpoint"
            ) from None

    def _selected_starts(self, train: Split, val: Split) -> tuple[np.ndarray, np.ndarray]:
        """The train and val window starts `fit` trains and early-stops on: one window
        drawn from each block of ``train_stride`` (``val_stride``), so that every phase of
        the data's cycles is seen (``select_starts``)."""
        return (
            select_starts(train.n_windows, self.train_stride, seed=self.seed),
            select_starts(val.n_windows, self.val_stride, seed=self.seed + 1),
        )

    def derived_settings(self) -> dict[str, str]:
        """What the run's forecast cache keys on beyond the settings: strided windows are
        drawn at random within their blocks since the twenty-fifth session (a fixed
        stride skipped phases of the daily cycle), so caches of the fixed ones refit."""
        if self.train_stride == 1 and self.val_stride == 1:
            return {}
        return {"window_selection": "one at random per block"}

    def epoch_size(self, train: Split, val: Split) -> tuple[int, int]:
        """(optimiser steps, val series scored) per epoch of `fit` on these splits, on one
        process: what `hybrid-forecast explain timellm` multiplies its timed step by."""
        tr_starts, va_starts = self._selected_starts(train, val)
        items = len(tr_starts) * (train.n_channels if self.sample == "series" else 1)
        return -(-items // self.batch_size), len(va_starts) * val.n_channels

    def _fit_injectors(
        self, train: Split, tr_starts: np.ndarray, val: Split, va_starts: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Out-of-fold forecasts for the train windows; all-train models for the rest."""
        tr_fc, va_fc = {}, {}
        all_starts = np.arange(train.n_windows)
        for name in self.inject:

            def make(name: str = name) -> inj.Injector:
                return inj.make_injector(name, self.seq_len, self.pred_len, self.seed)

            tr_fc[name] = inj.out_of_fold(
                make,
                train.data,
                train.n_windows,
                tr_starts,
                self.seq_len,
                self.pred_len,
                self.inject_folds,
            )
            self.injectors[name] = make().fit(train.data, all_starts)
            va_fc[name] = self.injectors[name].predict(
                inj.gather(val.data, va_starts, 0, self.seq_len)
            )
        return tr_fc, va_fc

    def predict(self, windows: Windows) -> np.ndarray:
        """Forecast every window: windows.x [W, L, C] -> [W, H, C] float32 (scaled space)."""
        return self.predict_at(windows, np.arange(windows.n))

    def predict_at(self, windows: Windows, starts: np.ndarray) -> np.ndarray:
        """Forecast only the windows at positions ``starts`` of ``windows``: [n, H, C]
        float32 (scaled space). A language-model pass per window is the cost, so scoring
        one window in k (`tune --val-stride`) costs a k-th of every window.

        The best epoch's forecast of exactly these val windows (the ones `fit` early-stopped
        on) is handed back once instead of being made again.
        """
        if self.model is None:
            raise RuntimeError("timellm: call fit() (or load()) before predict()")
        starts = np.asarray(starts, dtype=np.int64)
        if self._val_forecast is not None and windows.seq_len == self.seq_len:
            rows, kept, forecast = self._val_forecast
            if np.array_equal(windows.context, rows):
                self._val_forecast = None  # used once, or never: no copy kept alive
                if np.array_equal(kept, starts):
                    log.info("timellm: val forecasts kept from the best epoch, not predicted again")
                    self._keep_best_epoch_forecast(windows, starts, forecast)
                    return forecast
        rows = self._val_rows
        val = rows is not None and np.array_equal(windows.context, rows)
        return self.predict_set(
            self.prompt_set(windows, starts=starts),
            what="validation forecast" if val else "forecast",
        )

    def _keep_best_epoch_forecast(
        self, windows: Windows, starts: np.ndarray, forecast: np.ndarray
    ) -> None:
        """Keep the best epoch's val forecast [n, H, C] as a finished one (`predict_set`'s
        file and key): a run killed in the test forecast then reads it back on resume
        rather than forecasting every val window again (hours with a large backbone)."""
        if not (self._keep_finished and self.workdir) or self._accelerator().num_processes > 1:
            return
        data = self.prompt_set(windows, starts=starts)
        windows_key = self._windows_key(data)
        keep_finished(
            Path(self.workdir) / f"predict.{windows_key}{_DONE}",
            self._predict_key(data, windows_key),
            self.train_config().eval_batch_size,
            forecast,
        )

    def injected_forecasts(self, windows: Windows) -> dict[str, np.ndarray] | None:
        """The classical forecasts the prompts of ``windows`` summarise (injector name ->
        [W, H, C]), or None when nothing is injected."""
        if not self.inject:
            return None
        return {n: m.predict(windows.x) for n, m in self.injectors.items()}

    def prompt_set(
        self,
        windows: Windows,
        swap: tuple[Sequence[str], np.ndarray] | None = None,
        forecasts: dict[str, np.ndarray] | None = None,
        starts: np.ndarray | None = None,
    ) -> WindowSet:
        """Every window of ``windows`` (or those at ``starts``) with its prompts (and
        injected forecasts), ready for `predict_set`; callers may swap the prompts (see
        `timellm.probe`).

        Args:
            windows: the windows to forecast.
            swap: (statistics, donors [W]): window ``w``'s prompt states those
                statistics of window ``donors[w]`` (same channel), the rest its own.
            forecasts: `injected_forecasts` of these windows, when the caller has them
                already (else computed here).
            starts: [n] positions of the windows to keep; None: all of them.
        """
        if windows.seq_len != self.seq_len:
            raise UserError(f"timellm expects L={self.seq_len}, got windows of {windows.seq_len}")
        if forecasts is None:
            forecasts = self.injected_forecasts(windows)
        if starts is None:
            starts = np.arange(windows.n)
        elif forecasts is not None:  # [W, H, C] of every window: the kept ones' rows
            forecasts = {name: f[starts] for name, f in forecasts.items()}
        data = self._window_set(windows.context, starts, False, forecasts, swap)
        _check_prompts(self.model, data)
        return data

    def predict_set(self, data: WindowSet, what: str = "forecast") -> np.ndarray:
        """Forecast a prepared window set: [W, H, C] float32 (scaled space). ``what``
        names the forecast in run.log when a finished one is read back."""
        if self.model is None:
            raise RuntimeError("timellm: call fit() (or load()) before predict()")
        trainer = Trainer(
            self.model, self.train_config(), accelerator=self._accelerator(), progress=self.progress
        )
        # An interrupted forecast resumes from what it kept in the member's folder: one
        # file per window set, so that a rerun's val forecast cannot overwrite the test
        # forecast's progress (a file of the same windows and other weights is replaced).
        # A finished one is kept as `predict.<windows>.done.npz`, under the same key,
        # until `save` (see ``_keep_finished``).
        partial = done = key = None
        if self.workdir and trainer.acc.num_processes == 1:
            windows = self._windows_key(data)  # hashed once: ids and mask may be 100 MB
            partial = Path(self.workdir) / f"predict.{windows}.partial.npz"
            if self._keep_finished:
                done = Path(self.workdir) / f"predict.{windows}{_DONE}"
            key = self._predict_key(data, windows)
            _drop_stale_partials(Path(self.workdir), key)
        with self._out_of_memory_hint("predicting"):
            forecast = trainer.predict(data, partial=partial, key=key or "", done=done, what=what)
        self.resumed |= trainer.resumed_predict
        return forecast.numpy().astype(np.float32)

    def _predict_key(self, data: WindowSet, windows: str | None = None) -> str:
        """What a kept partial forecast must match: ``<model>-<windows>``, the trained
        weights (those outside the frozen backbone, which its spec fixes) and the windows
        with their prompts (``windows``: their ``_windows_key``, when already hashed)."""
        h = hashlib.sha256(json.dumps(self.fingerprint(), sort_keys=True, default=str).encode())
        for p in self.model.trainable_parameters():
            h.update(p.detach().float().cpu().numpy().tobytes())
        return f"{h.hexdigest()[:16]}-{windows or self._windows_key(data)}"

    @staticmethod
    def _windows_key(data: WindowSet) -> str:
        """The windows with their prompts (not the weights): names a partial forecast."""
        h = hashlib.sha256()
        for t in (data.series, data.starts, data.ids, data.mask):
            h.update(t.cpu().numpy().tobytes())
        return h.hexdigest()[:12]

    # ----------------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> None:
        """Write ``trainable.pt`` (weights outside the backbone), ``config.json``
        (constructor kwargs, backbone spec, history) and ``injectors.pkl`` if any.

        The backbone's weights are not saved: ``load`` reloads them from the spec.
        """
        if self.model is None:
            raise RuntimeError("timellm: nothing to save before fit()")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_save(trainable_state(self.model), path / "trainable.pt")
        # a relative folder is found from this working directory only: stored absolute,
        # so `forecast` run from elsewhere finds it (and --backbone names a moved one)
        backbone = local_backbone(str(self.backbone)) or self.backbone
        kwargs = {k: v for k, v in self.kwargs.items() if k not in ("resume",)}
        meta = {
            "class": type(self).__name__,
            "name": self.name,
            "kwargs": {**kwargs, "backbone": backbone},
            "backbone": backbone,
            # the path alone does not say which weights were there (`load` compares)
            "backbone_identity": backbone_identity(str(self.backbone)),
            "n_channels": self.n_channels,
            "history": self.history,
            "best_epoch": self.best_epoch,
        }
        (path / "config.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if self.injectors:
            with open(path / "injectors.pkl", "wb") as fh:
                pickle.dump(self.injectors, fh)
        self._drop_finished()

    def _drop_finished(self) -> None:
        """Delete the finished forecasts `predict_set` kept (the model is saved, and the
        run writes its forecasts next) and keep no more."""
        self._keep_finished = False
        if self.workdir:
            for path in Path(self.workdir).glob(f"predict.*{_DONE}"):
                path.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> TimeLLMForecaster:
        """Rebuild from `save` output (reloads the backbone from its spec).

        Args:
            path: the folder `save` wrote.
            **overrides: constructor arguments to change, e.g. ``device="cpu"``.
        """
        path = Path(path)
        meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if meta.get("class") != cls.__name__:
            raise TypeError(f"{path} holds a {meta.get('class')}, not a {cls.__name__}")
        kwargs = {**meta["kwargs"], **overrides}
        if "device" not in overrides and kwargs.get("device") not in (None, "cpu", "cuda"):
            kwargs["device"] = None  # an older model's "cuda:0" or "mps": the best device here
        trained_on = meta.get("backbone_identity")  # absent in models saved before
        now = backbone_identity(str(kwargs.get("backbone", meta.get("backbone"))))
        moved = overrides.get("backbone")  # the folder named where the saved one is gone
        if moved is not None and moved != meta["kwargs"].get("backbone"):
            check_local_backbone(str(moved))  # there, and holding a model
            if trained_on is None:
                log.warning(
                    "%s was saved before its backbone's files were recorded: that %s holds "
                    "the model it was trained on is not checked",
                    path,
                    moved,
                )
            elif now != trained_on:
                raise UserError(
                    f"backbone folder {moved} holds other weights or another tokenizer than "
                    f"{path} was trained on; give the folder holding those"
                )
        if trained_on is not None and now is not None and now != trained_on:
            raise UserError(
                f"{path} was trained on other weights or another tokenizer than those now "
                f"in backbone '{kwargs.get('backbone')}' (its files changed since); put the "
                "original model back there, or fit again (rerun the run into a new folder)"
            )
        obj = cls(**kwargs)
        obj.name = meta.get("name", cls.name)
        obj.n_channels = meta.get("n_channels")
        obj.history = meta.get("history", [])
        obj.best_epoch = meta.get("best_epoch")
        model = obj.build()
        load_trainable_state(model, torch.load(path / "trainable.pt", weights_only=True))
        model.eval()
        if (path / "injectors.pkl").is_file():
            with open(path / "injectors.pkl", "rb") as fh:
                obj.injectors = pickle.load(fh)
        return obj


def backbone_override(model: Path, backbone: str | Path | None, spec: str) -> dict[str, str]:
    """The ``backbone`` argument `TimeLLMForecaster.load` needs for a saved model whose
    backbone folder has moved (a run folder carried to another machine): {} to load it as
    saved, or ``backbone`` where it ran on a local folder.

    Raises:
        UserError: the saved folder is not there and no other is given.
    """
    try:
        saved = json.loads((model / "config.json").read_text(encoding="utf-8"))["backbone"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # not a saved Time-LLM: its own load says what is wrong
    if not isinstance(saved, str) or saved in ("minilm", "none") or saved.endswith("-random"):
        return {}  # nothing on disk to move
    if backbone is not None:  # a folder, or a local copy of a hub model
        return {"backbone": str(backbone)}
    if looks_like_path(saved) and not Path(saved).expanduser().exists():  # a hub id: cached
        raise UserError(
            f"{spec}'s backbone folder {saved} is not there (a run folder moved to another "
            "machine?): give the folder holding that model with --backbone DIR"
        )
    return {}


def local_backbone(spec: str) -> str | None:
    """The absolute path of a backbone spec that names an existing local folder, else
    None (``minilm``, ``none``, the random ones, a hub id)."""
    if spec in ("minilm", "none") or spec.endswith("-random"):
        return None
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_dir() else None


def _per_series(windows: np.ndarray) -> np.ndarray:
    """[W, L, C] windows -> [W * C, L, 1] series, window-major (the prompts' order)."""
    return np.moveaxis(windows, 2, 1).reshape(-1, windows.shape[1], 1)


def _drop_stale_partials(workdir: Path, key: str) -> None:
    """Delete the partial and finished forecasts of other trained weights (a member
    fitted again, the one before interrupted while forecasting) and the single file
    earlier versions kept: only this model's can ever be resumed, and a file may hold
    hundreds of MB."""
    model = key.split("-")[0]
    for path in workdir.glob("predict.*npz"):
        try:
            with np.load(path) as z:
                stale = str(z["key"]).split("-")[0] != model or path.name == "predict.partial.npz"
        except Exception:  # damaged: of no use to anyone
            stale = True
        if stale:
            path.unlink(missing_ok=True)


def _check_prompts(model: torch.nn.Module, *sets: WindowSet) -> None:
    """Refuse prompts the backbone cannot take, once per set rather than per batch: too
    long for its position table, or token ids past its embedding table (PatchLinear,
    with no backbone, takes any)."""
    sets = tuple(s for s in sets if len(s))  # empty: the trainer says so
    if not sets or not hasattr(model, "check_positions"):
        return
    model.check_positions(max(int(s.mask.sum(dim=-1).max()) for s in sets))
    model.check_token_ids(max(int(s.ids.max()) for s in sets))
