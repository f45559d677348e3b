"""The Forecaster protocol every member follows.

A member is fitted on the train split (the val split is for early stopping and model
selection only) and then forecasts any split's windows in the scaled space:
``predict(windows) -> [W, H, C]``. Members never see test targets: ``Windows`` carries
only the rows that are inputs of some window.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ensemble.data import Split, Windows
from ensemble.io import replace


@runtime_checkable
class Forecaster(Protocol):
    name: str

    def fit(self, train: Split, val: Split) -> Forecaster: ...

    def predict(self, windows: Windows) -> np.ndarray: ...

    def save(self, path: str | Path) -> None: ...


class BaseForecaster:
    """Shared plumbing: pickling save/load and a batched predict helper.

    Subclasses set ``name`` and implement ``fit`` and ``predict``. Members holding torch
    modules or large frozen parts override ``save``/``load``.
    """

    name: str = "base"
    # True for a member whose forecast of a window depends on the rows before it (a
    # filter run over the whole context, as ARIMA's): see ``predict_last``
    scans_context: bool = False
    # Raised by a change that gives other forecasts for the same settings and data: it is
    # in the key of the member's saved forecasts (`experiments.member_cache`), so a run
    # folder's earlier forecasts of the member are fitted again, not reused.
    cache_version: int = 0

    def fit(self, train: Split, val: Split) -> BaseForecaster:
        return self

    def predict(self, windows: Windows) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / "model.pkl.tmp"
        with open(tmp, "wb") as fh:
            pickle.dump(self, fh)
        replace(tmp, path / "model.pkl")

    @classmethod
    def load(cls, path: str | Path) -> BaseForecaster:
        with open(Path(path) / "model.pkl", "rb") as fh:
            obj = pickle.load(fh)
        if not isinstance(obj, cls):
            raise TypeError(f"{path} holds a {type(obj).__name__}, not a {cls.__name__}")
        return obj


def predict_last(member: Forecaster, windows: Windows, scanned: Windows) -> np.ndarray:
    """``member``'s forecasts of ``windows``: [W, H, C].

    ``scanned`` holds the same last windows after more rows, or fewer. A member that
    scans its context (``scans_context``) forecasts from it, so that its filter has run
    over as many rows as when it was scored; the others forecast ``windows`` alone (less
    work). Where ``scanned`` holds fewer windows than ``windows`` (a scan that must start
    late), the earlier windows are forecast from ``windows``' longer scan.
    """
    if not getattr(member, "scans_context", False):
        return np.asarray(member.predict(windows))
    if scanned.n >= windows.n:
        return np.asarray(member.predict(scanned))[-windows.n :]
    out = np.array(member.predict(windows))
    out[-scanned.n :] = member.predict(scanned)
    return out


def predict_at(member: Forecaster, windows: Windows, starts: np.ndarray) -> np.ndarray:
    """``member``'s forecasts of the windows at positions ``starts`` only: [n, H, C].

    A member with a ``predict_at`` of its own (Time-LLM, whose cost is a language-model
    pass per window) forecasts those windows alone; the others forecast every window and
    keep those (cheap for them, and ARIMA's filter must scan the whole context anyway).
    """
    own = getattr(member, "predict_at", None)
    if own is not None:
        return np.asarray(own(windows, starts))
    return np.asarray(member.predict(windows))[np.asarray(starts, dtype=np.int64)]
