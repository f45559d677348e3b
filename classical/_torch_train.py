"""A small trainer for window-to-horizon torch models (DLinear, NLinear, PatchTST,
iTransformer), and the member class they share.

The loop follows the LTSF-Linear reference: Adam on the MSE, validation MSE after each
epoch, early stopping with a patience, and the best-validation weights reloaded at the
end. One difference: the learning rate is halved after every epoch, so the second epoch
runs at half of it; LTSF-Linear's "type1" keeps the full rate for two epochs. Measured
on ETTh1 (L=336, H=96, DLinear, seeds 0-2), ours gave test MSE 0.3707 / 0.3709 / 0.3706
and the LTSF schedule 0.3725 / 0.3728 / 0.3769 (fifteenth-session audit).

Models here are channels-first: ``[B, C, L] -> [B, C, H]``, the natural layout of a
channel-independent map over time, and of iTransformer's channel tokens (no transposes
inside a training step).

Windows are never materialised: the split's rows live once as a contiguous float32
tensor ``[C, T]`` and each batch copies just its windows out of an ``unfold`` view, so
ETTm1's 34k training windows cost no more memory than the series itself.

DLinear and NLinear train on one CPU thread: a step of these models is ~1 ms of small
matrix products, where a second thread only adds synchronisation (and, on a shared 2-core
machine, made steps 30x slower). PatchTST and iTransformer, whose steps are larger, use
the process's thread setting unless given ``threads``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ensemble.data import Split, Windows
from ensemble.forecaster import BaseForecaster
from ensemble.progress import PROGRESS

log = logging.getLogger(__name__)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (None: as set, e.g. by OMP_NUM_THREADS),
    restoring the previous setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class WindowGather:
    """Gathers ``(x, y)`` batches of windows from one contiguous series.

    Args:
        data: [T, C] scaled rows of a split.
        seq_len: L.
        pred_len: H.
    """

    def __init__(
        self,
        data: np.ndarray,
        seq_len: int,
        pred_len: int,
        device: torch.device | None = None,
        loss_channels: tuple[int, ...] | None = None,
    ):
        series = torch.from_numpy(np.ascontiguousarray(data.T, dtype=np.float32))  # [C, T]
        series = series.to(device) if device is not None else series
        self.seq_len = seq_len
        self.n = max(0, data.shape[0] - seq_len - pred_len + 1)
        # [W, C, L + H] view: window w is series[:, w : w + L + H]; nothing is copied here
        self.windows = series.unfold(1, seq_len + pred_len, 1).permute(1, 0, 2)
        self.loss_channels = (
            None
            if loss_channels is None
            else torch.tensor(loss_channels, dtype=torch.long, device=series.device)
        )

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """idx: [B] window starts -> x: [B, C, L], y: [B, C', H] (C' = the loss channels)."""
        b = self.windows.index_select(0, idx.to(self.windows.device))
        return b[..., : self.seq_len], self.scored(b[..., self.seq_len :])

    def scored(self, y: torch.Tensor) -> torch.Tensor:
        """[B, C, H] -> [B, C', H]: the channels the loss and early stopping use."""
        return y if self.loss_channels is None else y.index_select(1, self.loss_channels)


@torch.no_grad()
def predict_windows(
    model: nn.Module, x: np.ndarray, batch_size: int = 2048, threads: int | None = 1
) -> np.ndarray:
    """Run ``model`` over windows in batches.

    Args:
        model: channels-first, maps [B, C, L] -> [B, C, H].
        x: [W, L, C] inputs (a strided view is fine: only one batch is copied at a time).
        batch_size: windows per forward pass.
        threads: torch intra-op threads (None: as set).

    Returns:
        [W, H, C] float32 forecasts.
    """
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch_threads(threads):
        for s in range(0, x.shape[0], batch_size):
            xb = np.ascontiguousarray(x[s : s + batch_size].transpose(0, 2, 1), dtype=np.float32)
            y = model(torch.from_numpy(xb).to(device)).cpu()
            out.append(y.numpy().transpose(0, 2, 1))
    return np.concatenate(out, axis=0)


# Values of one batch's windows (inputs and targets, all channels) that scoring or
# forecasting holds at once: 2**27 float32 is 512 MB, and a pass holds about four times
# that. Every benchmark shape (weather: 21 channels, L + H up to 1440) stays under it at
# the set batch sizes, so their numbers are unchanged; 862 channels at L=512 took 6 GB
# in 2048-window batches.
BATCH_VALUES = 2**27


def capped_batch(batch: int, channels: int, steps: int) -> int:
    """``batch`` windows, fewer where their ``channels * steps`` values each would exceed
    ``BATCH_VALUES`` in all."""
    return max(1, min(batch, BATCH_VALUES // max(1, channels * steps)))


@torch.no_grad()
def _val_mse(model: nn.Module, val: WindowGather, batch_size: int) -> float:
    """MSE over every val window at once (sum of squares / count, not a mean of batch means)."""
    model.eval()
    sse, count = 0.0, 0
    for s in range(0, val.n, batch_size):
        x, y = val.batch(torch.arange(s, min(s + batch_size, val.n)))
        sse += float(((val.scored(model(x)) - y) ** 2).sum())
        count += y.numel()
    return sse / max(count, 1)


def train_window_model(
    model: nn.Module,
    train: Split,
    val: Split,
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    patience: int,
    lr_decay: float = 0.5,
    seed: int = 0,
    progress: bool | None = None,
    desc: str = "fit",
    on_epoch: Callable[[int, float], None] | None = None,
    threads: int | None = 1,
    eval_batch_size: int = 4096,
    device: str | None = "cpu",
) -> list[dict[str, float]]:
    """Train ``model`` in place and leave it holding its best-validation weights.

    Args:
        model: channels-first, maps x [B, C, L] -> [B, C, H].
        train, val: splits; every train window is used once per epoch (shuffled, no
            drop_last), val MSE is over every val window.
        lr: initial Adam learning rate.
        batch_size: windows per step.
        epochs: maximum number of epochs.
        patience: epochs without a val improvement before stopping (0: never stop early,
            still reload the best epoch, as Time-LLM's trainer reads it).
        lr_decay: factor applied to the learning rate after each epoch, the first too.
        seed: seeds the shuffling generator (initial weights are seeded by the caller).
        progress: show a tqdm bar (None: only on a terminal).
        desc: label of the progress bar.
        on_epoch: called with (epoch, val MSE) after each epoch (epochs count from 1);
            an exception it raises (a pruned tuning trial) ends the training.
        threads: torch intra-op threads (1 suits the linear models, see above; None:
            as set, e.g. by OMP_NUM_THREADS).
        eval_batch_size: windows per forward pass when scoring val.
        device: "cpu", "cuda", or None for a GPU where torch sees one; the model is
            moved there and the splits' rows copied there once.

    Returns:
        Per-epoch history: ``{"epoch", "lr", "train_mse", "val_mse"}``.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev)
    tr = WindowGather(train.data, train.seq_len, train.pred_len, dev, train.loss_channels)
    va = WindowGather(val.data, val.seq_len, val.pred_len, dev, val.loss_channels)
    if tr.n == 0 or va.n == 0:
        raise ValueError(f"need train and val windows (got {tr.n} and {va.n})")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    loss_fn = nn.MSELoss()
    best, best_state, bad = math.inf, copy.deepcopy(model.state_dict()), 0
    history: list[dict[str, float]] = []
    steps = math.ceil(tr.n / batch_size)
    # disable=None is tqdm's own rule: a bar only when writing to a terminal
    disable = None if progress is None else not progress
    bar = tqdm(total=epochs * steps, desc=desc, disable=disable, leave=False)
    with torch_threads(threads), bar:
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(tr.n, generator=gen)
            total = 0.0
            for s in range(0, tr.n, batch_size):
                x, y = tr.batch(perm[s : s + batch_size])
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(tr.scored(model(x)), y)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * x.shape[0]
                bar.update(1)
            val_mse = _val_mse(model, va, eval_batch_size)
            history.append(
                {
                    "epoch": epoch + 1,
                    "lr": opt.param_groups[0]["lr"],
                    "train_mse": total / tr.n,
                    "val_mse": val_mse,
                }
            )
            bar.set_postfix(val=f"{val_mse:.4f}", best=f"{min(best, val_mse):.4f}")
            log.info(
                "%s epoch %d: train %.4f val %.4f",
                desc,
                epoch + 1,
                total / tr.n,
                val_mse,
                extra=PROGRESS,
            )
            if on_epoch is not None:
                on_epoch(epoch + 1, val_mse)
            if val_mse < best:
                best, best_state, bad = val_mse, copy.deepcopy(model.state_dict()), 0
            else:
                bad += 1
                if patience and bad >= patience:
                    break
            for g in opt.param_groups:
                g["lr"] *= lr_decay
    if not math.isfinite(best):
        # Reloading best_state would hand back the untrained weights, whose forecasts are
        # finite: nothing downstream would notice.
        raise ValueError(
            f"fit diverged: validation MSE was not finite in any of {len(history)} "
            f"epoch(s); lower the learning rate (@lr=..., now {lr:g}) or look for extreme "
            "values in the data"
        )
    model.load_state_dict(best_state)
    model.eval()
    return history


class WindowNetForecaster(BaseForecaster):
    """A member around a channels-first network trained by `train_window_model`.

    Subclasses set ``name``, list their own constructor arguments in ``_OWN`` (saved
    with the weights, with the training ones) and build the network in ``_build``.

    Args:
        seq_len: L.
        pred_len: H.
        lr: initial Adam learning rate.
        batch_size: windows per training step.
        epochs: maximum epochs.
        patience: early-stopping patience in epochs (0: never stop early).
        lr_decay: learning-rate factor after each epoch, the first too.
        seed: seeds the initial weights and the shuffling.
        progress: tqdm bar while fitting (None: only on a terminal).
        threads: torch intra-op threads for training and forecasting.
        device: where to train: "cpu", "cuda", or None for a GPU where torch sees one
            (a loaded model forecasts on the CPU).
    """

    name = "window_net"
    # the loss and early stopping follow Split.loss_channels (the target under MS)
    uses_loss_channels = True
    # 1: patience 0 runs every epoch (it stopped at the first epoch without improvement)
    # and a fit with no finite val MSE is an error (it was kept), since aa79775
    cache_version = 1
    _OWN: tuple[str, ...] = ()
    _TRAINING = (
        "seq_len",
        "pred_len",
        "lr",
        "batch_size",
        "epochs",
        "patience",
        "lr_decay",
        "seed",
    )
    # windows per forward pass when scoring val in training / when forecasting
    _EVAL_BATCH, _PREDICT_BATCH = 4096, 2048

    def __init__(
        self,
        seq_len: int,
        pred_len: int,
        *,
        lr: float,
        batch_size: int,
        epochs: int,
        patience: int,
        lr_decay: float,
        seed: int,
        progress: bool | None,
        threads: int | None = 1,
        device: str | None = "cpu",
    ):
        if device not in (None, "cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda (got {device!r}), or left out")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device cuda asked for, but torch sees no CUDA GPU here")
        self.seq_len = int(seq_len)
        self.pred_len = int(pred_len)
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.epochs = int(epochs)
        self.patience = int(patience)
        self.lr_decay = float(lr_decay)
        self.seed = int(seed)
        self.progress = progress
        self.threads = threads if threads is None else int(threads)
        self.device = device
        self.n_channels: int | None = None
        self.net: nn.Module | None = None
        self.history: list[dict[str, float]] = []
        # (epoch, val MSE) after each epoch: how `tune` prunes hopeless trials mid-training
        self.on_epoch: Callable[[int, float], None] | None = None

    def config(self) -> dict[str, Any]:
        """Constructor arguments (what ``load`` needs to rebuild the model)."""
        return {k: getattr(self, k) for k in (*self._TRAINING, *self._OWN)}

    def _build(self, n_channels: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, train: Split, val: Split) -> WindowNetForecaster:
        """Train on ``train`` windows, early-stop on ``val`` MSE; keeps the best weights."""
        if (train.seq_len, train.pred_len) != (self.seq_len, self.pred_len):
            raise ValueError(
                f"{self.name} was built for L={self.seq_len}, H={self.pred_len} but the split has "
                f"L={train.seq_len}, H={train.pred_len}"
            )
        self.n_channels = train.n_channels
        torch.manual_seed(self.seed)
        self.net = self._build(self.n_channels)
        self.history = train_window_model(
            self.net,
            train,
            val,
            lr=self.lr,
            batch_size=self.batch_size,
            epochs=self.epochs,
            patience=self.patience,
            lr_decay=self.lr_decay,
            seed=self.seed,
            progress=self.progress,
            desc=self.name,
            on_epoch=self.on_epoch,
            threads=self.threads,
            device=self.device,
            eval_batch_size=capped_batch(
                self._EVAL_BATCH, train.n_channels, self.seq_len + self.pred_len
            ),
        )
        return self

    def predict(self, windows: Windows) -> np.ndarray:
        """windows.x: [W, L, C] -> [W, H, C] float32."""
        if self.net is None:
            raise RuntimeError(f"{self.name}: call fit() (or load()) before predict()")
        batch = capped_batch(self._PREDICT_BATCH, windows.x.shape[2], self.seq_len + self.pred_len)
        return predict_windows(self.net, windows.x, batch, self.threads)

    def save(self, path: str | Path) -> None:
        """Write ``state_dict.pt`` (weights only) and ``config.json`` (constructor kwargs)."""
        if self.net is None:
            raise RuntimeError(f"{self.name}: nothing to save before fit()")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), path / "state_dict.pt")
        meta = {
            "class": type(self).__name__,
            "name": self.name,
            "kwargs": self.config(),
            "n_channels": self.n_channels,
            "history": self.history,
        }
        (path / "config.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> WindowNetForecaster:
        path = Path(path)
        meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if meta["class"] != cls.__name__:
            raise TypeError(f"{path} holds a {meta['class']}, not a {cls.__name__}")
        obj = cls(**meta["kwargs"])
        obj.name = meta.get("name", cls.name)
        obj.n_channels = int(meta["n_channels"])
        obj.history = meta.get("history", [])
        obj.net = obj._build(obj.n_channels)
        obj.net.load_state_dict(
            torch.load(path / "state_dict.pt", map_location="cpu", weights_only=True)
        )
        obj.net.eval()
        return obj
