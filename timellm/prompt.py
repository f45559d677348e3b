"""Prompt-as-prefix texts for Time-LLM, built and tokenised once per window.

The official model formats and tokenises the prompt of every series inside `forward`,
every batch, every epoch. Here the caller builds the texts for all windows at once
(statistics vectorised over windows), tokenises each distinct text once (cached), and
hands the model token ids and masks.

Text order is window-major, then channel: text `w * C + c` belongs to window `w`,
channel `c`, matching the model's channel-independent reshape `[B, L, N] -> [B*N, L]`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
import torch
from torch import Tensor

# Our concise template. Statistics are of the instance-normalised window, as the official
# model computes them after RevIN.
TEMPLATE = (
    "{description} Task: forecast the next {pred_len} steps from the previous {seq_len}. "
    "Input: min {min}, max {max}, median {median}, trend {trend}, top periods {periods}.{extra}"
)

# The official wording (with our periods instead of its broken lags and full-precision
# numbers); kept to measure what the concise prompt saves.
OFFICIAL_TEMPLATE = (
    "<|start_prompt|>Dataset description: {description}"
    "Task description: forecast the next {pred_len} steps given the previous {seq_len} "
    "steps information; Input statistics: min value {min}, max value {max}, median value "
    "{median}, the trend of input is {trend}, top 5 lags are : {periods}{extra}<|<end_prompt>|>"
)

DATASETS = ("ETTh1", "ETTh2", "ETTm1", "ETTm2", "weather", "illness", "exchange_rate")


def load_description(dataset: str | None) -> str:
    """Our one-paragraph description of a dataset (generic text for unknown names).

    Args:
        dataset: e.g. "ETTh1", "weather"; matched case-insensitively; None gives the
            generic description.
    """
    bank = resources.files("timellm") / "prompt_bank"
    name = "generic"
    if dataset:
        for known in DATASETS:
            if known.lower() == dataset.lower():
                name = known
    return (bank / f"{name}.txt").read_text(encoding="utf-8").strip()


def window_stats(x: np.ndarray, eps: float = 1e-5) -> dict[str, np.ndarray]:
    """Prompt statistics of every series of every window, vectorised.

    Each series is first normalised as RevIN does (mean 0, population std 1), then:
    min, max, median, and trend = sign of the summed first differences (x[-1] - x[0]).

    Args:
        x: [W, L, C] windows.
        eps: RevIN's variance epsilon.

    Returns:
        "min", "max", "median": [W, C] floats; "up": [W, C] bools.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=1, keepdims=True)
    std = np.sqrt(x.var(axis=1, keepdims=True) + eps)
    z = (x - mean) / std
    return {
        "min": z.min(axis=1),
        "max": z.max(axis=1),
        "median": np.median(z, axis=1),
        "up": (z[:, -1, :] - z[:, 0, :]) > 0,
    }


def _fmt(values: np.ndarray, compact: bool) -> list[str]:
    if compact:
        return [f"{v:.3g}" for v in values.ravel().tolist()]
    return [str(v) for v in values.astype(np.float32).ravel().tolist()]


class PromptBuilder:
    """Build and tokenise Time-LLM prompts.

    Args:
        tokenizer: the backbone's tokenizer.
        description: dataset description (see `load_description`).
        pred_len: forecast horizon H.
        periods: top periods from the periodicity analyser, most important first.
        seq_len: lookback L written into the task line (default: taken from the windows).
        max_length: token cap per prompt; longer prompts are cut from the right.
        official: use the official wording and number format (for measurements).
    """

    def __init__(
        self,
        tokenizer: Any,
        description: str,
        pred_len: int,
        periods: Sequence[int],
        *,
        seq_len: int | None = None,
        max_length: int = 256,
        official: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.description = description.strip()
        self.pred_len = pred_len
        self.periods = [int(p) for p in periods]
        self.seq_len = seq_len
        self.max_length = max_length
        self.official = official
        self._cache: dict[str, list[int]] = {}
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))

    def build_texts(self, x: np.ndarray, extra: Sequence[str] | None = None) -> list[str]:
        """One prompt per window and channel.

        Args:
            x: [W, L, C] windows in the scale the model sees.
            extra: optional text per window (e.g. the classical members' forecast
                summaries), appended to every channel's prompt of that window.

        Returns:
            W * C texts, window-major then channel.
        """
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"x must be [W, L, C], got shape {x.shape}")
        w, seq_len, c = x.shape
        if extra is not None and len(extra) != w:
            raise ValueError(f"extra has {len(extra)} entries for {w} windows")
        stats = window_stats(x)
        compact = not self.official
        mins, maxs, meds = (_fmt(stats[k], compact) for k in ("min", "max", "median"))
        trends = np.where(stats["up"], "upward", "downward").ravel().tolist()
        template = OFFICIAL_TEMPLATE if self.official else TEMPLATE
        # Everything shared by all prompts is formatted once; the loop only fills numbers.
        head, _, tail = template.partition("{min}")
        head = (
            head.replace("{description}", self.description)
            .replace("{pred_len}", str(self.pred_len))
            .replace("{seq_len}", str(self.seq_len or seq_len))
        )
        periods = ", ".join(map(str, self.periods)) if self.periods else "none"
        if self.official:
            periods = str(self.periods)
        tail = "{min}" + tail.replace("{periods}", periods)
        extras = [""] * w if extra is None else [f" {e.strip()}" if e else "" for e in extra]
        return [
            head
            + tail.format(
                min=mins[i],
                max=maxs[i],
                median=meds[i],
                trend=trends[i],
                extra=extras[i // c],
            )
            for i in range(w * c)
        ]

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Tokenise texts, left-padded to the longest (each distinct text tokenised once).

        Left padding keeps the real tokens next to the patches; the model derives
        position ids from the mask, so padding changes nothing in its output.

        Args:
            texts: T prompts.

        Returns:
            ids: [T, P] LongTensor; mask: [T, P] LongTensor, 1 for real tokens.
        """
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            ids = self.tokenizer(
                todo, truncation=True, max_length=self.max_length, add_special_tokens=True
            )["input_ids"]
            self._cache.update(zip(todo, ids, strict=True))
        seqs = [self._cache[t] for t in texts]
        lens = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        width = int(lens.max(initial=0))
        mask = np.arange(width)[None, :] >= (width - lens)[:, None]  # [T, P], left-padded
        ids = np.full(mask.shape, self.pad_id, dtype=np.int64)
        ids[mask] = np.fromiter(itertools.chain.from_iterable(seqs), np.int64, int(lens.sum()))
        return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))

    def __call__(self, x: np.ndarray, extra: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
        """`encode(build_texts(x, extra))`: ids and mask [W*C, P]."""
        return self.encode(self.build_texts(x, extra))
