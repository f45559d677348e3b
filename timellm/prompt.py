"""Prompt-as-prefix texts for Time-LLM, built and tokenised once per window.

The official model formats and tokenises the prompt of every series inside `forward`,
every batch, every epoch. Here the caller builds the texts for all windows at once
(statistics vectorised over windows), tokenises each distinct text once (cached), and
hands the model token ids and masks.

Text order is window-major, then channel: text `w * C + c` belongs to window `w`,
channel `c`, matching the model's channel-independent reshape `[B, L, N] -> [B*N, L]`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

# Our concise template. Statistics are of the instance-normalised window, as the official
# model computes them after RevIN; ``{stats}`` lists the chosen ones (`STAT_LABELS`).
TEMPLATE = (
    "{description} Task: forecast the next {pred_len} steps from the previous {seq_len}. "
    "Input: {stats}.{extra}"
)

# What the concise prompt can state about a window, and how it names each in the text.
# min / max / median / last / volatility are of the RevIN-normalised window (what the
# patches carry); mean and std are the window's level and scale in the data the model is
# given, which RevIN removes from the patches, so only the prompt can tell the LLM.
STAT_LABELS = {
    "min": "min",
    "max": "max",
    "median": "median",
    "trend": "trend",  # upward / downward: last value above or below the first
    "periods": "top periods",  # the run's periods (the same in every prompt)
    "mean": "mean",
    "std": "std",
    "last": "last",
    "volatility": "volatility",  # std of the normalised window's first differences
    "seasonal_strength": "seasonal strength",  # F_S at the window's best-fitting period
    "trend_strength": "trend strength",  # F_T (`periodicity.features`)
    "window_period": "window period",  # the period that fits this window best (or none)
    "acf1": "lag-1 autocorrelation",
}
DEFAULT_STATS = ("min", "max", "median", "trend", "periods")
# Statistics read off `periodicity.features.window_features` (their names there).
FEATURE_STATS = {
    "seasonal_strength": "seasonal_strength",
    "trend_strength": "trend_strength",
    "window_period": "period",
    "acf1": "acf1",
}


def parse_stats(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """The prompt's statistics from "min,max,mean" (or "min+max"), a list, or None (the
    default `DEFAULT_STATS`).

    Raises:
        ValueError: an unknown or repeated name, or none at all.
    """
    if value is None:
        return DEFAULT_STATS
    if not isinstance(value, str | list | tuple):  # a YAML number or true
        raise ValueError(f"prompt_stats must name statistics, e.g. min,max,mean (got {value!r})")
    if isinstance(value, str) and value.strip().lower() in ("[]", "null", "none"):
        value = ""  # what a user means by an empty list: refused below with the fix
    names = value.replace("+", ",").split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip() for n in names if str(n).strip()]
    unknown = [n for n in names if n not in STAT_LABELS]
    if unknown:
        raise ValueError(
            f"unknown prompt statistic(s) {', '.join(unknown)}; choose from "
            f"{', '.join(STAT_LABELS)}"
        )
    if not names:
        raise ValueError("prompt_stats needs at least one statistic (prompt=none drops the prompt)")
    if len(set(names)) != len(names):
        raise ValueError(f"prompt_stats names a statistic twice: {','.join(names)}")
    return tuple(names)


# The official wording (with our periods instead of its broken lags and full-precision
# numbers); kept to measure what the concise prompt saves.
OFFICIAL_TEMPLATE = (
    "<|start_prompt|>Dataset description: {description}"
    "Task description: forecast the next {pred_len} steps given the previous {seq_len} "
    "steps information; Input statistics: min value {min}, max value {max}, median value "
    "{median}, the trend of input is {trend}, top 5 lags are : {periods}{extra}<|<end_prompt>|>"
)

DATASETS = (
    "ETTh1",
    "ETTh2",
    "ETTm1",
    "ETTm2",
    "weather",
    "illness",
    "exchange_rate",
    "ECL",
    "traffic",
)
# Other names of those files (the official repo's and the Autoformer collection's)
_ALIASES = {"electricity": "ECL", "national_illness": "illness", "exchange": "exchange_rate"}


def load_description(dataset: str | None) -> str:
    """Our one-paragraph description of a dataset (generic text for unknown names).

    Args:
        dataset: e.g. "ETTh1", "weather"; matched case-insensitively; None gives the
            generic description.
    """
    bank = resources.files("timellm") / "prompt_bank"
    name = "generic"
    if dataset:
        wanted = dataset.lower()
        wanted = _ALIASES.get(wanted, wanted).lower()
        for known in DATASETS:
            if known.lower() == wanted:
                name = known
    return (bank / f"{name}.txt").read_text(encoding="utf-8").strip()


def window_stats(
    x: np.ndarray,
    stats: Sequence[str] = ("min", "max", "median", "trend"),
    periods: Sequence[int] = (),
    *,
    eps: float = 1e-5,
) -> dict[str, np.ndarray]:
    """Prompt statistics of every series of every window, vectorised.

    Each series is first normalised as RevIN does (mean 0, population std 1, ``eps``
    added to the variance); "min", "max", "median", "last" and "volatility" are of that
    normalised series, "mean" and "std" of the series as given, "trend" is whether it
    ends above its start, and the rest come from `periodicity.features.window_features`
    with ``periods`` as its candidates. "periods" is not per window and is skipped.

    Args:
        x: [W, L, C] windows.
        stats: names from `STAT_LABELS`.
        periods: candidate periods for the seasonal statistics.
        eps: RevIN's variance epsilon.

    Returns:
        name -> [W, C] array ("trend": bools, True for upward; "window_period": ints).
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=1, keepdims=True)
    std = np.sqrt(x.var(axis=1, keepdims=True) + eps)
    z = (x - mean) / std
    compute = {
        "min": lambda: z.min(axis=1),
        "max": lambda: z.max(axis=1),
        "median": lambda: np.median(z, axis=1),
        "trend": lambda: (z[:, -1, :] - z[:, 0, :]) > 0,
        "mean": lambda: mean[:, 0, :],
        "std": lambda: x.std(axis=1),
        "last": lambda: z[:, -1, :],
        "volatility": lambda: np.diff(z, axis=1).std(axis=1),
    }
    out = {name: compute[name]() for name in stats if name in compute}
    wanted = [name for name in stats if name in FEATURE_STATS]
    if wanted:
        from periodicity.features import window_features

        feats, names = window_features(x, [int(p) for p in periods])
        for name in wanted:
            out[name] = feats[..., names.index(FEATURE_STATS[name])]
        if "window_period" in out:
            out["window_period"] = out["window_period"].astype(np.int64)
    return out


def _fmt(values: np.ndarray, compact: bool) -> list[str]:
    if compact:
        return [f"{v:.3g}" for v in values.ravel().tolist()]
    return [str(v) for v in values.astype(np.float32).ravel().tolist()]


def _format_stat(name: str, values: np.ndarray) -> list[str]:
    """The texts of one statistic's [W, C] values, window-major then channel."""
    if name == "trend":
        return np.where(values, "upward", "downward").ravel().tolist()
    if name == "window_period":
        return [str(v) if v > 0 else "none" for v in values.ravel().tolist()]
    return [f"{v:.3g}" if np.isfinite(v) else "undefined" for v in values.ravel().tolist()]


def _digest(text: str) -> bytes:
    """16 bytes naming a prompt in the token cache (the chance of a collision among 4
    billion texts: about 3e-20)."""
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class PromptBuilder:
    """Build and tokenise Time-LLM prompts.

    Args:
        tokenizer: the backbone's tokenizer.
        description: dataset description (see `load_description`).
        pred_len: forecast horizon H.
        periods: top periods from the periodicity analyser, most important first.
        seq_len: lookback L written into the task line (default: taken from the windows).
        max_length: token cap per prompt; longer prompts are cut from the right (their
            statistics first), with a warning the first time.
        official: use the official wording and number format (for measurements).
        stats: what the concise prompt states about each window, in this order (names
            from `STAT_LABELS`; see `parse_stats`); the official wording has its fixed
            five.
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
        stats: str | Sequence[str] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.description = description.strip()
        self.pred_len = pred_len
        self.periods = [int(p) for p in periods]
        self.seq_len = seq_len
        self.max_length = max_length
        self.official = official
        self.stats = parse_stats(stats)
        if official and self.stats != DEFAULT_STATS:
            raise ValueError(
                "the official prompt states min, max, median, trend and lags only; "
                "choose other statistics with the concise prompt"
            )
        # text digest -> token ids. Compact on purpose: a text and its ids as Python
        # objects take about 2.7 kB, a digest and an int32 array about 0.5 kB (the ETTm1
        # run tokenises about 400k prompts: about 1 GB of cache before, 0.2 GB now)
        self._cache: dict[bytes, np.ndarray] = {}
        self.cut = 0  # prompts tokenised so far that reached the cap
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))

    def build_texts(
        self,
        x: np.ndarray,
        extra: Sequence[str] | None = None,
        swap: Sequence[str] = (),
        donor: np.ndarray | None = None,
    ) -> list[str]:
        """One prompt per window and channel.

        Args:
            x: [W, L, C] windows in the scale the model sees.
            extra: optional text per window (e.g. the classical members' forecast
                summaries), appended to every channel's prompt of that window.
            swap: statistics stated with ``donor``'s values instead of ``x``'s
                (`timellm.probe`: which statistics does the model read?).
            donor: [W, L, C] windows, required with ``swap``.

        Returns:
            W * C texts, window-major then channel.
        """
        x = np.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"x must be [W, L, C], got shape {x.shape}")
        w, seq_len, c = x.shape
        if extra is not None and len(extra) != w:
            raise ValueError(f"extra has {len(extra)} entries for {w} windows")
        values = window_stats(x, self.stats, self.periods)
        if swap:
            if donor is None or np.shape(donor) != x.shape:
                raise ValueError(f"swap needs donor windows of shape {x.shape}")
            values.update(window_stats(donor, [n for n in swap if n in values], self.periods))
        extras = [""] * w if extra is None else [f" {e.strip()}" if e else "" for e in extra]
        if self.official:
            return self._official_texts(values, seq_len, extras, c)
        periods = ", ".join(map(str, self.periods)) if self.periods else "none"
        # Everything shared by all prompts is formatted once; the loop only joins numbers.
        # The template is split first: a description may hold any text, "{stats}" too.
        head, _, tail = TEMPLATE.partition("{stats}")
        head = (
            head.replace("{pred_len}", str(self.pred_len))
            .replace("{seq_len}", str(self.seq_len or seq_len))
            .replace("{description}", self.description)
        )
        tail = tail.replace("{extra}", "")
        columns = [
            [f"{STAT_LABELS[name]} {periods}"] * (w * c)
            if name == "periods"
            else [f"{STAT_LABELS[name]} {v}" for v in _format_stat(name, values[name])]
            for name in self.stats
        ]
        return [
            head + ", ".join(parts) + tail + extras[i // c]
            for i, parts in enumerate(zip(*columns, strict=True))
        ]

    def _official_texts(
        self, values: dict[str, np.ndarray], seq_len: int, extras: list[str], c: int
    ) -> list[str]:
        """The official wording with full-precision numbers (`OFFICIAL_TEMPLATE`)."""
        mins, maxs, meds = (_fmt(values[k], compact=False) for k in ("min", "max", "median"))
        trends = np.where(values["trend"], "upward", "downward").ravel().tolist()
        head, _, tail = OFFICIAL_TEMPLATE.partition("{min}")
        head = (
            head.replace("{description}", self.description)
            .replace("{pred_len}", str(self.pred_len))
            .replace("{seq_len}", str(self.seq_len or seq_len))
        )
        tail = "{min}" + tail.replace("{periods}", str(self.periods))
        return [
            head
            + tail.format(
                min=mins[i], max=maxs[i], median=meds[i], trend=trends[i], extra=extras[i // c]
            )
            for i in range(len(mins))
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
        keys = [_digest(t) for t in texts]
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._cache}
        if todo:
            ids = self.tokenizer(
                list(todo.values()),
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=True,
            )["input_ids"]
            self._cache.update(
                (k, np.array(i, dtype=np.int32)) for k, i in zip(todo, ids, strict=True)
            )
            cut = sum(len(i) >= self.max_length for i in ids)
            if cut and not self.cut:  # once: a warning per batch would flood the log
                log.warning(
                    "%d of %d prompts reached the %d-token cap and lose their end (the "
                    "window statistics come last); raise timellm.prompt_max_length (the "
                    "official code allows 2048) or shorten the description",
                    cut,
                    len(ids),
                    self.max_length,
                )
            self.cut += cut
        seqs = [self._cache[k] for k in keys]
        lens = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        width = int(lens.max(initial=0))
        mask = np.arange(width)[None, :] >= (width - lens)[:, None]  # [T, P], left-padded
        ids = np.full(mask.shape, self.pad_id, dtype=np.int64)
        if seqs:
            ids[mask] = np.concatenate(seqs)
        return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))

    def __call__(self, x: np.ndarray, extra: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
        """`encode(build_texts(x, extra))`: ids and mask [W*C, P]."""
        return self.encode(self.build_texts(x, extra))
