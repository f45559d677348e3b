"""Training loop for Time-LLM: Adam, a learning-rate schedule, early stopping, checkpoints.

What the loop does, epoch by epoch:

1. Shuffle the training windows (a seeded generator, so a resumed run draws the same
   order) and step Adam over batches of ``batch_size`` windows x all C channels
   (``[B, L, C]`` becomes ``B*C`` univariate series inside the model), or, with
   ``sample="series"`` (the official batching), of ``batch_size`` (window, channel)
   series.
2. Score the validation windows it is given (the member draws one window from each
   block of ``val_stride``, see `select_starts`) with the MSE over all their values at
   once, in eval mode with the prototypes cached.
3. Keep the best trainable state in memory; write a checkpoint (trainable weights,
   optimiser, scheduler, generator, history, best state) atomically into ``workdir``.
4. Stop after ``patience`` epochs without improvement; reload the best state.

The frozen backbone is never saved: checkpoints hold only the parameters and buffers
outside ``model.llm`` (a few MB), so the backbone is referenced by its spec.

Devices go through `accelerate`: one process on CPU or one GPU, or several GPUs under
``accelerate launch`` (DDP over the trainable part; no DeepSpeed). Under several
processes each takes every n-th batch of the shared permutation (the last few batches
are dropped so the shares are equal) and validation sums are reduced across processes.
Only the main process writes checkpoints.

Windows are never copied up front: `WindowSet` keeps one ``[T, C]`` float32 tensor of
the split's rows and the start row of each selected window, and gathers a batch with
index arithmetic. Prompts are pre-tokenised once per split (``[W, C, P]``) and indexed
per batch.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ensemble.errors import clip
from ensemble.io import replace
from ensemble.progress import PROGRESS

log = logging.getLogger(__name__)
# Seconds between progress lines in run.log while forecasting or validating
HEARTBEAT_S = 60.0

CHECKPOINT = "checkpoint.pt"
# What a refused checkpoint leaves the user, right under both commands that resume.
START_AFRESH = (
    "delete it, or let the rerun start afresh (`timellm`: leave out --resume; `run`: "
    "--set timellm.resume=auto)"
)
SCHEDULES = (
    "cosine",
    "onecycle",
    "type1",
    "constant",
    "official_type1",
    "official_cos",
    "official_constant",
)


# ----------------------------------------------------------------------------- data


@dataclass
class WindowSet:
    """Selected windows of one split, with their pre-tokenised prompts.

    Attributes:
        series: [T, C] float32 rows the windows are cut from (a split's data, or a
            `Windows` context when there are no targets).
        starts: [W] int64 row of each selected window's first input value.
        ids: [W, C, P] int32 prompt token ids (left-padded), window then channel.
        mask: [W, C, P] bool, True for real tokens.
        seq_len: L.
        pred_len: H; targets are read only when ``has_targets``.
        has_targets: whether ``series`` holds the H rows after each window.
    """

    series: Tensor
    starts: Tensor
    ids: Tensor
    mask: Tensor
    seq_len: int
    pred_len: int
    has_targets: bool = True
    _in: Tensor = field(init=False, repr=False)
    _out: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._in = torch.arange(self.seq_len)
        self._out = torch.arange(self.seq_len, self.seq_len + self.pred_len)
        if self.ids.shape[:2] != (len(self.starts), self.series.shape[1]):
            raise ValueError(
                f"prompts {tuple(self.ids.shape)} do not match {len(self.starts)} windows "
                f"x {self.series.shape[1]} channels"
            )

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.series.shape[1])

    def batch(self, sel: Tensor) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """Gather a batch.

        Args:
            sel: [B] positions into this set (not rows).

        Returns:
            x [B, L, C], y [B, H, C] (None without targets), prompt ids [B*C, P] and
            mask [B*C, P] (int64, as the model takes them), window-major then channel.
        """
        rows = self.starts[sel][:, None]
        x = self.series[rows + self._in]
        y = self.series[rows + self._out] if self.has_targets else None
        ids = self.ids[sel].flatten(0, 1).long()
        mask = self.mask[sel].flatten(0, 1).long()
        return x, y, ids, mask

    def batch_series(self, sel: Tensor) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """Gather univariate series: item ``i`` is window ``i // C``, channel ``i % C``.

        Args:
            sel: [B] positions into the ``len(self) * C`` (window, channel) pairs.

        Returns:
            x [B, L, 1], y [B, H, 1] (None without targets), ids [B, P], mask [B, P].
        """
        c = self.n_channels
        w, ch = sel // c, (sel % c)[:, None]
        rows = self.starts[w][:, None]
        x = self.series[rows + self._in, ch].unsqueeze(-1)
        y = self.series[rows + self._out, ch].unsqueeze(-1) if self.has_targets else None
        return x, y, self.ids[w, ch[:, 0]].long(), self.mask[w, ch[:, 0]].long()


# ----------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    """Optimisation settings.

    Attributes:
        lr: peak Adam learning rate.
        epochs: maximum epochs.
        patience: epochs without a validation improvement before stopping (0: never stop
            early, still reload the best epoch).
        batch_size: items per step: windows (each bringing all C channels) when
            ``sample`` is "windows", univariate series when it is "series".
        eval_batch_size: windows per forward pass when scoring or predicting.
        schedule: "cosine" (per step to lr/1000 over all epochs), "onecycle" (official
            Time-LLM's OneCycleLR, warm-up over the first ``pct_start``; its ``--lradj
            TST``), "type1" (halve after every epoch from the first; TSL's type1 holds
            lr for two epochs, as "official_type1" does) or "constant"; or the per-epoch
            rates official Time-LLM's run_main.py actually trains with (see
            `make_scheduler`): "official_type1" (its default ``--lradj type1``),
            "official_cos" (``--lradj COS``) or "official_constant".
        pct_start: warm-up fraction for "onecycle".
        weight_decay: Adam's L2 term (0 as the official).
        clip_grad: max gradient norm, or None.
        seed: seeds the shuffling generator.
        log_every: log the running loss every this many steps.
        sample: "windows" (a batch is B windows x all C channels) or "series" (a batch is
            B (window, channel) pairs drawn from all of them, as the official data loader
            yields them: C times fewer series per step, more distinct windows per epoch).
    """

    lr: float = 1e-3
    epochs: int = 10
    patience: int = 3
    batch_size: int = 16
    eval_batch_size: int = 64
    schedule: str = "cosine"
    pct_start: float = 0.2
    weight_decay: float = 0.0
    clip_grad: float | None = None
    seed: int = 0
    log_every: int = 20
    sample: str = "windows"

    def __post_init__(self) -> None:
        if self.sample not in ("windows", "series"):
            raise ValueError(f"sample must be 'windows' or 'series', got {self.sample!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be >= 1")


@dataclass
class TrainResult:
    """What `Trainer.fit` returns.

    Attributes:
        history: one dict per epoch: epoch, lr (at its first step), train_mse, val_mse,
            seconds, and on a GPU gpu_peak_mib (the epoch's peak allocated memory).
        best_epoch: epoch (0-based) whose state was reloaded.
        best_val: its validation MSE.
        resumed_from: the epoch the run resumed after, or None.
        val_forecast: [W_val, H, C] the best epoch's forecasts of the val windows it
            scored, so that they need not be predicted again; None under several
            processes, or when the best epoch ran before a resume (not checkpointed: for
            weather at H=720 they would add about 275 MB to every checkpoint).
    """

    history: list[dict[str, float]]
    best_epoch: int
    best_val: float
    resumed_from: int | None = None
    val_forecast: Tensor | None = None


# ----------------------------------------------------------------------------- helpers


def trainable_state(model: nn.Module) -> dict[str, Tensor]:
    """State of everything outside the frozen backbone ``model.llm`` (detached copies)."""
    return {
        k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("llm.")
    }


def load_trainable_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load a `trainable_state` dict; every non-backbone key must be present."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("llm.")]
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file, so a crash leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # An open file, not the path: torch's writer takes a non-ASCII path (C:\\Users\\张三)
    # through an in-memory buffer, which some versions cut short past 2 GiB.
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())  # on disk before the rename: a power cut keeps one whole file
    replace(tmp, path)


def official_epoch_lr(schedule: str, lr: float, epoch: int) -> float:
    """The learning rate official Time-LLM's run_main.py trains epoch ``epoch`` (0-based)
    with, for ``--learning_rate lr``.

    run_main.py builds ``OneCycleLR(max_lr=lr)`` for every ``--lradj`` but COS; building
    it sets the rate to lr / 25 (its ``div_factor``). For type1 and constant it is never
    stepped: after epoch 0 the script copies that rate into ``args.learning_rate``, which
    type1 then halves every epoch: lr/25, lr/25, lr/50, lr/100, ...; constant keeps
    lr/25. COS is ``CosineAnnealingLR(T_max=20, eta_min=1e-8)`` from lr, stepped once
    per epoch (T_max stays 20 whatever ``--train_epochs`` is).

    Args:
        schedule: "official_type1", "official_cos" or "official_constant".
        lr: the official ``--learning_rate``.
        epoch: 0-based epoch.
    """
    if schedule == "official_cos":
        eta_min = 1e-8
        return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * epoch / 20)) / 2
    if schedule == "official_type1":
        return lr / 25 * 0.5 ** max(0, epoch - 1)
    if schedule == "official_constant":
        return lr / 25
    raise ValueError(f"not an official schedule: {schedule!r}")


def make_scheduler(
    optimiser: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A scheduler stepped once per optimiser step.

    The "official_*" schedules hold `official_epoch_lr` for a whole epoch. For
    official_type1 and official_constant it also sets Adam's beta1 to 0.95: the official
    OneCycleLR's construction does that too (``cycle_momentum`` starts at
    ``max_momentum``), and it is never stepped back.
    """
    total = max(1, cfg.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler
    if cfg.schedule.startswith("official_"):
        if cfg.schedule != "official_cos":
            for group in optimiser.param_groups:
                group["betas"] = (0.95, *group["betas"][1:])
        spe = max(1, steps_per_epoch)
        return sched.LambdaLR(
            optimiser,
            lambda step: official_epoch_lr(cfg.schedule, cfg.lr, step // spe) / cfg.lr,
        )
    if cfg.schedule == "cosine":
        return sched.CosineAnnealingLR(optimiser, T_max=total, eta_min=cfg.lr * 1e-3)
    if cfg.schedule == "onecycle":
        return sched.OneCycleLR(
            optimiser, max_lr=cfg.lr, total_steps=total, pct_start=cfg.pct_start
        )
    if cfg.schedule == "type1":
        return sched.LambdaLR(optimiser, lambda step: 0.5 ** (step // max(1, steps_per_epoch)))
    return sched.LambdaLR(optimiser, lambda step: 1.0)


def make_accelerator(device: str | None = None):
    """An `accelerate.Accelerator` for ``device`` ("cpu", "cuda", None = best available).

    Mixed precision is not delegated to accelerate: the model autocasts itself
    (``TimeLLM(compute_dtype=...)``), which also covers evaluation.
    """
    from accelerate import Accelerator

    cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    return Accelerator(cpu=cpu, mixed_precision="no")


# ----------------------------------------------------------------------------- trainer


def keep_finished(done: Path, key: str, batch: int, forecast: np.ndarray) -> None:
    """Write a finished forecast [W, H, C] where `Trainer.predict` reads it back (``done``)
    for the same ``key`` (weights and windows) and eval batch size."""
    from ensemble.io import write_npz

    write_npz(done, done=forecast, key=np.array(key), batch=np.array(batch))


class Trainer:
    """Fit a Time-LLM-style model (forward(x, ids, mask) -> [B, H, C]) on window sets.

    Args:
        model: the module; only parameters with ``requires_grad`` are optimised. Its
            frozen backbone must live under ``model.llm`` (not checkpointed).
        config: optimisation settings.
        workdir: folder for ``checkpoint.pt`` (None: no checkpoints).
        resume: continue from ``workdir/checkpoint.pt`` if it exists: True refuses a
            checkpoint of other settings or a damaged one; "auto" logs why and starts
            afresh instead (a rerun into the same folder continues an interrupted fit and
            never returns a model of other settings).
        fingerprint: anything that must match between a checkpoint and this run (the
            member's constructor arguments and a digest of its data); a mismatch refuses
            to resume.
        stamps: content identities checked like ``fingerprint`` where the checkpoint
            recorded them (the backbone folder's `backbone_identity`: the same path may
            hold other weights); checkpoints written before stamps existed still resume.
        accelerator: an `accelerate.Accelerator` (default: `make_accelerator()`).
        progress: show a tqdm bar per epoch (None: only on a terminal).
        backbone_eval: keep ``model.llm`` in eval mode while training (no dropout in the
            frozen backbone); False reproduces the official train-mode backbone.
        on_epoch: called with (epochs done, val MSE) after each epoch's checkpoint (1
            after the first, as DLinear's); an exception it raises (a pruned tuning
            trial) ends the fit.
        on_step: called after each training step; an exception it raises ends the fit
            (`tune` raises there a Ctrl-C that Python swallowed during the step: an epoch
            of Time-LLM takes minutes).
        checkpoint_every_s: also write a checkpoint inside an epoch once this many
            seconds have passed since the last one (None: at epoch ends only). An epoch of
            a 3B backbone on a small GPU takes hours; a resume from such a checkpoint
            draws the epoch's shuffle again and goes on after its last step, as the
            uninterrupted fit would (bit-identical on a CPU).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        *,
        workdir: str | os.PathLike | None = None,
        resume: bool | Literal["auto"] = False,
        fingerprint: dict[str, Any] | None = None,
        stamps: dict[str, str] | None = None,
        accelerator: Any = None,
        progress: bool | None = None,
        backbone_eval: bool = True,
        on_epoch: Callable[[int, float], None] | None = None,
        on_step: Callable[[], None] | None = None,
        checkpoint_every_s: float | None = None,
    ) -> None:
        self.model = model
        self.checkpoint_every_s = checkpoint_every_s
        self._saved_at = time.monotonic()  # the last checkpoint's time
        self.on_epoch = on_epoch
        self.on_step = on_step
        self.backbone_eval = backbone_eval
        self.cfg = config
        self.workdir = Path(workdir) if workdir else None
        self.resume = resume
        self.fingerprint = fingerprint or {}
        self.stamps = stamps or {}
        self.acc = accelerator or make_accelerator()
        self.progress = progress
        self.resumed_predict = False  # whether the last `predict` went on from a partial file

    @property
    def device(self) -> torch.device:
        return self.acc.device

    # -- evaluation -------------------------------------------------------------------

    def _heartbeat(self, what: str, total: int, first: int = 0) -> Callable[[int], bool]:
        """A callable ``beat(done)`` logging ``what``'s progress at most once a minute (and
        saying whether it did): tqdm's bar shows only on a terminal, and a batch job's
        run.log would otherwise be silent for the minutes forecasting every val and test
        window takes. ``first``: batches done before this call (a resumed forecast)."""
        start = last = time.monotonic()

        def beat(done: int) -> bool:
            nonlocal last
            now = time.monotonic()
            if now - last < HEARTBEAT_S or done >= total:
                return False
            last = now
            left = (now - start) / max(done - first, 1) * (total - done)
            log.info(
                "%s: %d/%d batches, %.0f s so far, ~%.0f s left",
                what,
                done,
                total,
                now - start,
                left,
                extra=PROGRESS,
            )
            return True

        return beat

    @torch.no_grad()
    def predict(
        self,
        data: WindowSet,
        model: nn.Module | None = None,
        partial: Path | None = None,
        key: str = "",
        done: Path | None = None,
        what: str = "forecast",
    ) -> Tensor:
        """Forecast every window of ``data`` (no drop_last), in eval mode.

        Args:
            partial: a file that keeps the forecasts made so far (written atomically
                at each progress line, removed at the end), so that an interrupted
                forecast (hours of windows with a large backbone) resumes where it
                stopped. It is read back only when its ``key`` (which should name the
                model's weights and the windows) and the batch size match.
            done: a file that keeps the finished forecast (written atomically at the
                end, with ``key`` and the batch size as in ``partial``) until the caller
                deletes it: a call finding one of the same key and batch size returns it
                instead of forecasting again (None: none is read or kept).
            what: names the forecast in the log line of a ``done`` read back.

        Returns:
            [W, H, C] float32 on the CPU.
        """
        from tqdm.auto import tqdm

        from ensemble.io import write_npz

        model = model or self.model
        model.eval()
        size = self.cfg.eval_batch_size
        finished = self._finished_before(done, key, data) if done is not None else None
        if finished is not None:
            log.info("resuming: %s already done (%s)", what, done)
            self.resumed_predict = True
            if partial is not None:  # a kill between writing `done` and removing this
                partial.unlink(missing_ok=True)
            return finished
        total = -(-len(data) // size)
        out = self._predicted_before(partial, key, len(data)) if partial is not None else []
        self.resumed_predict = bool(out)  # this call's time covers only the rest
        first = sum(len(o) for o in out) // size
        batches = list(_chunks(len(data), size))[first:]
        disable = None if self.progress is None else not self.progress
        beat = self._heartbeat("predict", total, first)
        bar = tqdm(
            batches, total=total, initial=first, desc="predict", leave=False, disable=disable
        )
        for i, sel in enumerate(bar, first + 1):
            x, _, ids, mask = data.batch(sel)
            out.append(model(x.to(self.device), ids, mask).float().cpu())
            if beat(i) and partial is not None:
                forecast = torch.cat(out)
                out = [forecast]  # one tensor from here on: no repeated concatenation
                write_npz(partial, done=forecast.numpy(), key=np.array(key), batch=np.array(size))
        if out:
            forecast = torch.cat(out)
        else:
            forecast = torch.zeros(0, data.pred_len, data.n_channels)
        if done is not None:  # before the partial goes: a kill between them loses nothing
            keep_finished(done, key, size, forecast.numpy())
        if partial is not None:
            partial.unlink(missing_ok=True)
        return forecast

    def _kept(self, path: Path, key: str) -> Tensor | None:
        """The forecasts [N, H, C] a `predict` kept in ``path`` for this ``key`` and batch
        size (None: no file, a damaged one, or one of other weights, windows or batches)."""
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                same = str(z["key"]) == key and int(z["batch"]) == self.cfg.eval_batch_size
                return torch.from_numpy(z["done"]) if same else None
        except (OSError, ValueError, KeyError, EOFError):  # damaged: start over
            return None

    def _predicted_before(self, partial: Path, key: str, n: int) -> list[Tensor]:
        """The forecasts an interrupted `predict` of the same model and windows kept in
        ``partial`` ([] when there are none, or they belong to something else)."""
        done = self._kept(partial, key)
        if done is None or len(done) > n or len(done) % self.cfg.eval_batch_size:
            return []
        log.info("predict: resuming after %d of %d windows (%s)", len(done), n, partial)
        return [done]

    def _finished_before(self, done: Path, key: str, data: WindowSet) -> Tensor | None:
        """The whole forecast [W, H, C] of ``data`` a finished `predict` of the same model
        and windows kept in ``done`` (None when there is none of that key and shape)."""
        forecast = self._kept(done, key)
        shape = (len(data), data.pred_len, data.n_channels)
        return forecast if forecast is not None and tuple(forecast.shape) == shape else None

    def evaluate(self, data: WindowSet, model: nn.Module | None = None) -> float:
        """MSE over every value of every window (sum of squares / count, not batch means)."""
        return self._score(data, model or self.model, keep=False)[0]

    def _score(self, data: WindowSet, model: nn.Module, keep: bool) -> tuple[float, Tensor | None]:
        """MSE of ``data`` and, with ``keep`` on one process, its forecasts [W, H, C]
        float32 on the CPU (what `predict` would return: same batches, eval mode)."""
        model.eval()
        sse = torch.zeros((), dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        parts = list(_chunks(len(data), self.cfg.eval_batch_size))
        keep = keep and self.acc.num_processes == 1  # each process sees only its share
        kept = []
        mine = parts[self.acc.process_index :: self.acc.num_processes]
        beat = self._heartbeat("validation", len(mine))
        with torch.no_grad():
            for done, sel in enumerate(mine, 1):
                x, y, ids, mask = data.batch(sel)
                pred = model(x.to(self.device), ids, mask).float()
                sse += ((pred - y.to(self.device)) ** 2).sum(dtype=torch.float64)
                count += y.numel()
                if keep:
                    kept.append(pred.cpu())
                beat(done)
        if self.acc.num_processes > 1:
            sse, count = self.acc.reduce(sse), self.acc.reduce(count)
        forecasts = torch.cat(kept) if kept else None
        return float(sse / count.clamp(min=1)), forecasts

    # -- training ---------------------------------------------------------------------

    def fit(self, train: WindowSet, val: WindowSet) -> TrainResult:
        """Train, early-stop on ``val`` and leave the model holding its best state; the
        best epoch's forecasts of ``val`` are returned too (in memory: the member hands
        them over instead of forecasting those windows again).

        An epoch whose validation MSE is not finite counts as no improvement.

        Raises:
            ValueError: no windows, or no epoch had a finite validation MSE (diverged).
        """
        cfg = self.cfg
        if len(train) == 0 or len(val) == 0:
            raise ValueError(f"need train and val windows (got {len(train)} and {len(val)})")
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimiser = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        # Under several processes each steps only its share of the batches.
        batches = math.ceil(self._items(train) / cfg.batch_size)
        world = self.acc.num_processes
        steps_per_epoch = max(1, batches // world if world > 1 else batches)
        scheduler = make_scheduler(optimiser, cfg, steps_per_epoch)
        model, optimiser = self.acc.prepare(self.model, optimiser)
        generator = torch.Generator().manual_seed(cfg.seed)
        # float16 gradients underflow to zero without loss scaling (bf16 has fp32's range)
        fp16 = getattr(self.model, "compute_dtype", None) == torch.float16
        scaler = torch.amp.GradScaler(self.device.type) if fp16 else None

        history: list[dict[str, float]] = []
        best_val, best_epoch, bad = math.inf, -1, 0
        best_state, best_forecast = trainable_state(self.model), None
        start_epoch, resumed_from = 0, None
        ckpt = self._load_checkpoint()
        if ckpt is not None:
            load_trainable_state(self.model, ckpt["model"])
            optimiser.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            generator.set_state(ckpt["generator"])
            if scaler is not None and ckpt.get("scaler"):  # none from a bf16/fp32 epoch
                scaler.load_state_dict(ckpt["scaler"])
            # CPU dropout draws continue where they were: a CPU resume is bit-identical.
            # CUDA's generator is not kept; GPU kernels (atomics in the backward) are not
            # bit-reproducible anyway, so a resumed GPU fit is as another draw of it.
            torch.set_rng_state(ckpt["torch_rng"])
            history, best_state = ckpt["history"], ckpt["best_state"]
            best_val, best_epoch, bad = ckpt["best_val"], ckpt["best_epoch"], ckpt["bad_epochs"]
            start_epoch = resumed_from = ckpt["epoch"] + 1
            within = ckpt.get("within")  # written inside epoch start_epoch
            if within is not None:
                generator.set_state(within["generator"])  # that epoch's shuffle again
                log.info(
                    "resuming epoch %d after step %d (best val %.4f)",
                    start_epoch,
                    within["step"],
                    best_val,
                )
            else:
                log.info("resuming after epoch %d (best val %.4f)", ckpt["epoch"], best_val)
            if cfg.patience and bad >= cfg.patience:
                start_epoch = cfg.epochs  # it had already stopped early
        else:
            within = None

        def state(epoch_done: int) -> dict[str, Any]:
            """What a checkpoint holds besides the weights, after epoch ``epoch_done``."""
            return {
                "epoch": epoch_done,
                "optimizer": optimiser.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "torch_rng": torch.get_rng_state(),
                "history": history,
                "best_state": best_state,
                "best_val": best_val,
                "best_epoch": best_epoch,
                "bad_epochs": bad,
            }

        def save_within(epoch: int, progress: dict[str, Any]) -> None:
            """A checkpoint inside ``epoch`` (``progress``: its shuffle's generator state,
            steps done, loss sums, first lr, seconds), when one is due."""
            every = self.checkpoint_every_s
            if every is None or self.checkpoint_path is None or not self.acc.is_main_process:
                return  # nothing would be written: no state built either
            if time.monotonic() - self._saved_at < every:
                return
            self._save_checkpoint(**state(epoch - 1), within=progress)

        cuda = self.device.type == "cuda"
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            if cuda:  # each epoch's own peak, for a thesis's memory table
                torch.cuda.reset_peak_memory_stats(self.device)
            lr = optimiser.param_groups[0]["lr"]  # the epoch's first step's
            if within is not None:  # the part of the epoch run before the resume
                lr, t0 = within["lr"], t0 - within["seconds"]
            train_mse = self._train_epoch(
                model,
                optimiser,
                scheduler,
                train,
                generator,
                epoch,
                scaler=scaler,
                within=within,
                save=save_within,
                lr=lr,
                started=t0,
            )
            within = None
            val_mse, forecast = self._score(val, model, keep=True)
            improved = math.isfinite(val_mse) and val_mse < best_val  # NaN: no improvement
            if improved:
                best_val, best_epoch, bad = val_mse, epoch, 0
                best_state, best_forecast = trainable_state(self.model), forecast
            else:
                bad += 1
            row = {
                "epoch": epoch,
                "lr": lr,
                "train_mse": train_mse,
                "val_mse": val_mse,
                "seconds": round(time.perf_counter() - t0, 2),
            }
            if cuda:
                row["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20)
            history.append(row)
            log.info(
                "epoch %d: train %.4f val %.4f%s (lr %.3g, %.0fs%s)",
                epoch,
                train_mse,
                val_mse,
                " *" if improved else "",
                lr,
                row["seconds"],
                f", GPU peak {row['gpu_peak_mib']} MiB" if cuda else "",
                extra=PROGRESS,
            )
            self._save_checkpoint(**state(epoch))
            if self.on_epoch is not None:
                self.on_epoch(epoch + 1, val_mse)
            if cfg.patience and bad >= cfg.patience:
                log.info("early stop: no improvement for %d epochs", bad)
                break

        if best_epoch < 0:
            # Reloading the best state would silently hand back the untrained weights,
            # whose forecasts are finite: nothing downstream would notice.
            raise ValueError(
                f"fit diverged: validation MSE was not finite in any of {len(history)} "
                f"epoch(s); lower the learning rate (@lr=..., now {cfg.lr:g})"
            )
        load_trainable_state(self.model, best_state)
        self.model.eval()
        return TrainResult(history, best_epoch, best_val, resumed_from, best_forecast)

    def _train_epoch(
        self,
        model: nn.Module,
        optimiser: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train: WindowSet,
        generator: torch.Generator,
        epoch: int,
        scaler: torch.amp.GradScaler | None = None,
        within: dict[str, Any] | None = None,
        save: Callable[[int, dict[str, Any]], None] | None = None,
        lr: float = 0.0,
        started: float = 0.0,
    ) -> float:
        """One pass over the shuffled training windows; returns their mean MSE.

        ``scaler`` (given for float16 compute) scales the loss before backward and
        skips the optimiser step when the scaled gradients overflowed. ``within``: a
        checkpoint written inside this epoch (its steps are skipped, its loss sums
        carried); ``save(epoch, progress)`` is offered a checkpoint after every step
        (``lr``, ``started``: the epoch's first rate and start time, kept in it)."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        model.train()
        # The frozen backbone stays in eval mode: no dropout inside it (the official code
        # leaves it in train mode; dropout there only adds noise and forces the slower
        # attention kernels, since none of its weights learn).
        llm = getattr(self.model, "llm", None)
        if llm is not None and self.backbone_eval:
            llm.eval()
        n = self._items(train)
        gather = train.batch_series if cfg.sample == "series" else train.batch
        shuffle = generator.get_state()  # what a checkpoint inside the epoch draws again
        perm = torch.randperm(n, generator=generator)
        batches = [perm[s : s + cfg.batch_size] for s in range(0, n, cfg.batch_size)]
        world = self.acc.num_processes
        if world > 1:  # equal shares, or DDP's gradient all-reduce would wait forever
            batches = batches[: max(world, len(batches) - len(batches) % world)]
        mine = batches[self.acc.process_index :: world]
        disable = None if self.progress is None else not self.progress
        done, total, count = 0, 0.0, 0
        if within is not None:
            done, total, count = within["step"], within["total"], within["count"]
        bar = tqdm(
            total=len(mine), initial=done, desc=f"epoch {epoch}", leave=False, disable=disable
        )
        for step, sel in enumerate(mine[done:], start=done):
            bar.update()
            x, y, ids, mask = gather(sel)
            optimiser.zero_grad(set_to_none=True)
            pred = model(x.to(self.device), ids, mask)
            loss = nn.functional.mse_loss(pred.float(), y.to(self.device))
            self.acc.backward(loss if scaler is None else scaler.scale(loss))
            if scaler is not None:
                scaler.unscale_(optimiser)  # clip the true gradients, not the scaled ones
            if cfg.clip_grad:
                self.acc.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            stepped = True
            if scaler is None:
                optimiser.step()
            else:
                scale = scaler.get_scale()
                scaler.step(optimiser)  # skipped if any gradient is inf / NaN
                scaler.update()
                stepped = scaler.get_scale() >= scale  # a skipped step lowers the scale
            if stepped:  # the schedule counts optimiser steps, as in HF's Trainer
                scheduler.step()
            total += float(loss.detach()) * len(sel)
            count += len(sel)
            if save is not None:  # before on_step, whose exception ends the fit
                # the steps are this process's share of the batches: of `world` processes
                progress = {"generator": shuffle, "step": step + 1, "total": total, "world": world}
                progress |= {"count": count, "lr": lr, "seconds": time.perf_counter() - started}
                save(epoch, progress)
            if self.on_step is not None:
                self.on_step()
            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                log.info(
                    "epoch %d step %d/%d: loss %.4f", epoch, step + 1, len(mine), total / count
                )
                bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        return total / max(count, 1)

    def _items(self, data: WindowSet) -> int:
        """Training items per epoch: windows, or (window, channel) pairs."""
        return len(data) * (data.n_channels if self.cfg.sample == "series" else 1)

    # -- checkpoints ------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path | None:
        return self.workdir / CHECKPOINT if self.workdir else None

    def _save_checkpoint(self, **state: Any) -> None:
        if self.checkpoint_path is None or not self.acc.is_main_process:
            return
        state["model"] = trainable_state(self.model)
        state["fingerprint"] = self.fingerprint
        state["stamps"] = self.stamps
        atomic_save(state, self.checkpoint_path)
        self._saved_at = time.monotonic()

    def _load_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint to continue from, or None to start afresh (see ``resume``)."""
        path = self.checkpoint_path
        if not self.resume or path is None or not path.is_file():
            if self.resume is True:
                log.info("no checkpoint to resume from at %s; starting afresh", path)
            return None
        from ensemble.errors import UserError

        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(ckpt, dict) or "epoch" not in ckpt:
                raise ValueError("not a checkpoint this trainer wrote")
        except (
            OSError,
            RuntimeError,
            EOFError,
            ValueError,
            KeyError,
            AttributeError,
            pickle.UnpicklingError,
        ) as exc:
            # cut short by a crash or a full disk, or another file under its name
            reason = f"is damaged ({type(exc).__name__}: {clip(str(exc), 120)})"
            if self.resume == "auto":
                log.warning("%s %s; starting afresh (it is overwritten)", path, reason)
                return None
            raise UserError(f"{path} {reason}; {START_AFRESH}") from None
        diff = checkpoint_differences(ckpt, self.fingerprint, self.stamps)
        world = (ckpt.get("within") or {}).get("world", 1)
        if ckpt.get("within") and world != self.acc.num_processes:
            # its steps count one process's share of the epoch's batches
            diff.append(
                f"written inside an epoch by {world} process(es), not {self.acc.num_processes}"
            )
        if diff:
            why = f"was written with different settings ({', '.join(diff)})"
            if self.resume == "auto":
                log.info("%s %s; starting afresh (it is overwritten)", path, why)
                return None
            raise UserError(f"{path} {why}; {START_AFRESH}")
        return ckpt


def checkpoint_differences(
    ckpt: dict[str, Any],
    fingerprint: dict[str, Any],
    stamps: dict[str, str],
    ignore: tuple[str, ...] = (),
) -> list[str]:
    """The settings (and stamped files) a checkpoint was written with that differ from
    ``fingerprint`` and ``stamps``, sorted; ``ignore``: fingerprint keys not compared."""
    theirs = ckpt.get("fingerprint")
    theirs = theirs if isinstance(theirs, dict) else {}
    their_stamps = ckpt.get("stamps")
    their_stamps = their_stamps if isinstance(their_stamps, dict) else {}
    diff = [
        k
        for k in set(fingerprint) | set(theirs)
        if k not in ignore and fingerprint.get(k) != theirs.get(k)
    ]
    diff += [f"{k} files" for k in set(stamps) & set(their_stamps) if stamps[k] != their_stamps[k]]
    return sorted(diff)


def _chunks(n: int, size: int) -> Iterator[Tensor]:
    for s in range(0, n, size):
        yield torch.arange(s, min(s + size, n))


def select_starts(
    n_windows: int, stride: int = 1, percent: int = 100, seed: int | None = None
) -> np.ndarray:
    """Window positions to train or score on.

    Args:
        n_windows: windows in the split.
        stride: keep one window in ``stride`` (``--train-stride``); the last window is
            always kept so the most recent targets are seen.
        percent: keep only the first ``percent`` % of the windows first (few-shot, as the
            Time-LLM loaders cut the train split).
        seed: None keeps windows 0, stride, 2 stride, ...; a seed draws one window at
            random from each block of ``stride`` consecutive ones instead (the count may
            differ by one: the last window is added when not drawn). A fixed stride
            that shares a factor with the data's period keeps only some phases of it:
            stride 8 on hourly data trains and early-stops on windows starting at
            hours 0, 8 and 16 only, and such a Time-LLM scored 0.377 on the test
            windows of those hours against 0.452 on the others (ETTh1, BENCHMARKS.md,
            twenty-fifth session).

    Returns:
        [n] int64 sorted window positions.
    """
    if stride < 1 or not 0 < percent <= 100:
        raise ValueError(f"stride must be >= 1 and percent in (0, 100] (got {stride}, {percent})")
    n = max(1, n_windows * percent // 100) if n_windows else 0
    idx = np.arange(0, n, stride, dtype=np.int64)
    if seed is not None and stride > 1 and n:
        width = np.minimum(stride, n - idx)  # the last block may be shorter
        idx += (np.random.default_rng(seed).random(idx.size) * width).astype(np.int64)
    if n and idx[-1] != n - 1:
        idx = np.append(idx, n - 1)
    return idx


__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "WindowSet",
    "atomic_save",
    "load_trainable_state",
    "make_accelerator",
    "make_scheduler",
    "official_epoch_lr",
    "select_starts",
    "trainable_state",
]
