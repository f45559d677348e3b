"""Classical forecasts as prompt text: fitted out-of-fold for training windows.

With injection on, each Time-LLM prompt ends with a one-line summary of what classical
models forecast for that series, e.g.::

    Classical forecasts: dlinear level 0.41, rising, range [-0.20, 1.10].

Numbers are in the window's instance-normalised units (the same units as the prompt's
min/max/median), so the text means the same thing for every channel and dataset.

Leakage rule (docs/protocol.md): a forecast injected into a *training* window's prompt
must come from a model that never saw that window's target, or the LLM learns to copy a
forecast that already knew the answer. `oof_plan` cuts the train windows into K
time-ordered blocks; the model for block k is fitted only on windows whose whole span
(input and target, ``L + H`` rows) is disjoint from the rows any window of block k
touches, i.e. with a gap of ``L + H - 1`` window starts on each side. Val and test
windows get forecasts from a model fitted on all train windows.

Injectors (``make_injector(name)``):

* ``ridge``: a closed-form ridge map ``L -> H`` on last-value-normalised series, shared
  by all channels (NLinear's model solved exactly; fits in well under a second).
* ``dlinear`` / ``nlinear``: the classical members' networks (`classical.dlinear`)
  trained here on exactly the windows the plan allows, with Adam for a few epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

INJECTORS = ("ridge", "dlinear", "nlinear")


class Injector(Protocol):
    """A classical model fitted on chosen windows of one series."""

    name: str

    def fit(self, series: np.ndarray, starts: np.ndarray) -> Injector:
        """Fit on windows ``series[s : s + L] -> series[s + L : s + L + H]`` for s in starts.

        Args:
            series: [T, C] scaled rows.
            starts: [n] window start rows.
        """
        ...

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x: [W, L, C] inputs -> [W, H, C] forecasts."""
        ...


def gather(series: np.ndarray, starts: np.ndarray, offset: int, length: int) -> np.ndarray:
    """[n, length, C] copies of ``series[s + offset : s + offset + length]``."""
    return series[np.asarray(starts)[:, None] + offset + np.arange(length)]


class RidgeLinear:
    """Closed-form ridge regression ``x - last -> y - last`` shared by all channels.

    Args:
        seq_len: L.
        pred_len: H.
        alpha: ridge penalty, relative to the mean diagonal of ``X^T X``.
        chunk: windows per accumulation chunk (bounds memory).
    """

    name = "ridge"

    def __init__(self, seq_len: int, pred_len: int, alpha: float = 1e-3, chunk: int = 1024):
        self.seq_len, self.pred_len, self.alpha, self.chunk = seq_len, pred_len, alpha, chunk
        self.weight: np.ndarray | None = None  # [L + 1, H] (last row: bias)

    def _design(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x: [n, L, C] -> rows [n*C, L + 1] and the last values [n*C, 1]."""
        series = np.moveaxis(x, 2, 1).reshape(-1, self.seq_len).astype(np.float64)
        last = series[:, -1:]
        return np.hstack([series - last, np.ones_like(last)]), last

    def fit(self, series: np.ndarray, starts: np.ndarray) -> RidgeLinear:
        if len(starts) == 0:
            raise ValueError("ridge: no windows to fit on")
        d = self.seq_len + 1
        xtx, xty = np.zeros((d, d)), np.zeros((d, self.pred_len))
        for s in range(0, len(starts), self.chunk):
            part = starts[s : s + self.chunk]
            design, last = self._design(gather(series, part, 0, self.seq_len))
            y = np.moveaxis(gather(series, part, self.seq_len, self.pred_len), 2, 1)
            target = y.reshape(-1, self.pred_len) - last
            xtx += design.T @ design
            xty += design.T @ target
        ridge = self.alpha * np.trace(xtx) / d
        self.weight = np.linalg.solve(xtx + ridge * np.eye(d), xty)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.weight is None:
            raise RuntimeError("ridge: fit before predict")
        w, _, c = x.shape
        out = np.empty((w, self.pred_len, c), dtype=np.float32)
        for s in range(0, w, self.chunk):
            design, last = self._design(x[s : s + self.chunk])
            y = (design @ self.weight + last).reshape(-1, c, self.pred_len)
            out[s : s + self.chunk] = np.moveaxis(y, 1, 2)
        return out


class TorchLinear:
    """The classical DLinear/NLinear network trained on chosen windows.

    Args:
        kind: "dlinear" or "nlinear".
        seq_len: L.
        pred_len: H.
        epochs: passes over the windows (no early stopping: no held-out windows here).
        lr: Adam learning rate (LTSF-Linear's ETTh setting, halved every epoch).
        batch_size: windows per step.
        seed: initial weights and shuffling.
    """

    def __init__(
        self,
        kind: str,
        seq_len: int,
        pred_len: int,
        *,
        epochs: int = 3,
        lr: float = 0.005,
        batch_size: int = 32,
        seed: int = 0,
    ):
        self.name, self.seq_len, self.pred_len = kind, seq_len, pred_len
        self.epochs, self.lr, self.batch_size, self.seed = epochs, lr, batch_size, seed
        self.net = None

    def fit(self, series: np.ndarray, starts: np.ndarray) -> TorchLinear:
        import torch

        from classical.dlinear import DLinearNet, NLinearNet

        torch.manual_seed(self.seed)
        c = series.shape[1]
        if self.name == "dlinear":
            self.net = DLinearNet(self.seq_len, self.pred_len, c)
        else:
            self.net = NLinearNet(self.seq_len, self.pred_len, c)
        data = torch.from_numpy(np.ascontiguousarray(series, dtype=np.float32))
        starts_t = torch.as_tensor(np.asarray(starts), dtype=torch.long)
        t_in = torch.arange(self.seq_len)
        t_out = torch.arange(self.seq_len, self.seq_len + self.pred_len)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        self.net.train()
        for epoch in range(self.epochs):
            for group in opt.param_groups:
                group["lr"] = self.lr * 0.5**epoch
            perm = starts_t[torch.randperm(len(starts_t), generator=gen)]
            for s in range(0, len(perm), self.batch_size):
                rows = perm[s : s + self.batch_size, None]
                x, y = data[rows + t_in], data[rows + t_out]  # [B, L, C], [B, H, C]
                loss = torch.nn.functional.mse_loss(self.net(x.transpose(1, 2)), y.transpose(1, 2))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.net.eval()
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        import torch

        if self.net is None:
            raise RuntimeError(f"{self.name}: fit before predict")
        out = []
        with torch.no_grad():
            for s in range(0, x.shape[0], 2048):
                xb = torch.from_numpy(np.ascontiguousarray(x[s : s + 2048], dtype=np.float32))
                out.append(self.net(xb.transpose(1, 2)).transpose(1, 2).numpy())  # nets: [B, C, *]
        return np.concatenate(out) if out else np.zeros((0, self.pred_len, x.shape[2]), np.float32)


def make_injector(name: str, seq_len: int, pred_len: int, seed: int = 0) -> Injector:
    """An unfitted injector by name: "ridge", "dlinear" or "nlinear"."""
    if name == "ridge":
        return RidgeLinear(seq_len, pred_len)
    if name in ("dlinear", "nlinear"):
        return TorchLinear(name, seq_len, pred_len, seed=seed)
    raise ValueError(f"unknown injected member {name!r}: choose from {', '.join(INJECTORS)}")


# ----------------------------------------------------------------------------- out-of-fold


def oof_plan(
    n_windows: int, seq_len: int, pred_len: int, n_folds: int = 5
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Time-ordered folds over a split's windows and the windows each fold may fit on.

    Window ``j`` spans rows ``[j, j + L + H)``. Block k holds window starts ``[a, b)``,
    which touch rows ``[a, b - 1 + L + H)``; its model may fit on window j only if j's
    span is disjoint from those rows: ``j + L + H <= a`` or ``j >= b - 1 + L + H``.

    Args:
        n_windows: windows in the train split (starts ``0 .. n_windows - 1``).
        seq_len: L.
        pred_len: H.
        n_folds: K time-ordered blocks.

    Returns:
        K pairs (block starts [n_k], allowed fitting starts [m_k]).

    Raises:
        ValueError: a fold would have no window to fit on (too few windows for K).
    """
    span = seq_len + pred_len
    edges = np.linspace(0, n_windows, n_folds + 1).astype(np.int64)
    everything = np.arange(n_windows, dtype=np.int64)
    plan = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b <= a:
            continue
        allowed = everything[(everything + span <= a) | (everything >= b - 1 + span)]
        if len(allowed) == 0:
            raise ValueError(
                f"out-of-fold injection: fold [{a}, {b}) leaves no window to fit on "
                f"({n_windows} windows, L + H = {span}); use fewer folds or a longer split"
            )
        plan.append((everything[a:b], allowed))
    return plan


def out_of_fold(
    make: Callable[[], Injector],
    series: np.ndarray,
    n_windows: int,
    wanted: np.ndarray,
    seq_len: int,
    pred_len: int,
    n_folds: int = 5,
) -> np.ndarray:
    """Forecasts for train windows from models that never saw their targets.

    Args:
        make: builds a fresh, unfitted injector.
        series: [T, C] the train split's scaled rows.
        n_windows: windows in the split.
        wanted: [M] sorted window starts to forecast (e.g. the strided training windows).
        seq_len, pred_len: L and H.
        n_folds: K.

    Returns:
        [M, H, C] forecasts, row i for window ``wanted[i]``.
    """
    wanted = np.asarray(wanted, dtype=np.int64)
    out = np.empty((len(wanted), pred_len, series.shape[1]), dtype=np.float32)
    for block, allowed in oof_plan(n_windows, seq_len, pred_len, n_folds):
        rows = np.flatnonzero((wanted >= block[0]) & (wanted <= block[-1]))
        if len(rows) == 0:
            continue
        model = make().fit(series, allowed)
        out[rows] = model.predict(gather(series, wanted[rows], 0, seq_len))
    return out


# ----------------------------------------------------------------------------- text


def summaries(x: np.ndarray, forecasts: dict[str, np.ndarray], eps: float = 1e-5) -> list[str]:
    """One summary line per window and channel, window-major then channel.

    Args:
        x: [W, L, C] the windows' inputs (for the instance normalisation).
        forecasts: member name -> [W, H, C] forecast in the same scale as ``x``.
        eps: RevIN's variance epsilon.

    Returns:
        W * C strings, e.g. "Classical forecasts: dlinear level 0.41, rising, range
        [-0.20, 1.10]."
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=1)  # [W, C]
    std = np.sqrt(x.var(axis=1) + eps)
    parts: list[list[str]] = []
    for name, f in forecasts.items():
        z = (np.asarray(f, dtype=np.float64) - mean[:, None]) / std[:, None]  # [W, H, C]
        level = z.mean(axis=1).ravel()
        lo, hi = z.min(axis=1).ravel(), z.max(axis=1).ravel()
        slope = (z[:, -1] - z[:, 0]).ravel()
        # "flat" when the forecast moves less than a tenth of the window's std end to end
        direction = np.where(slope > 0.1, "rising", np.where(slope < -0.1, "falling", "flat"))
        parts.append(
            [
                f"{name} level {lv:.2f}, {d}, range [{a:.2f}, {b:.2f}]"
                for lv, d, a, b in zip(level, direction, lo, hi, strict=True)
            ]
        )
    return ["Classical forecasts: " + "; ".join(p) + "." for p in zip(*parts, strict=True)]


def summary_names(names: Sequence[str] | None) -> list[str]:
    """Validate injected member names (None or empty: injection off)."""
    names = list(names or [])
    bad = [n for n in names if n not in INJECTORS]
    if bad:
        raise ValueError(f"unknown injected member(s) {bad}: choose from {', '.join(INJECTORS)}")
    return names
