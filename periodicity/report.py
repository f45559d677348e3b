"""The dataset-level analysis: ranked periods per channel and overall.

``analyse`` runs ``spectrum.find_peaks`` on each channel, merges the channels' periods
into an overall ranking, and measures each period's seasonal and trend strength with
STL (``strength``). It works on any array; callers decide which rows it sees (the
``periods`` command passes the train rows only, so nothing is fitted on test).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from periodicity.spectrum import Peak, autocorrelation, calendar_periods, find_peaks
from periodicity.strength import SEASONAL_THRESHOLD, strength_table


@dataclass(frozen=True)
class PeriodCandidate:
    """One ranked period.

    Attributes:
        period: cycle length in steps.
        power: share of the detrended series' variance in the period's spectral peak and
            its harmonics (overall: the mean over channels, 0 where a channel lacks it).
        acf: autocorrelation of the detrended series at ``period`` (overall: channel mean).
        strength: STL seasonal strength F_S in [0, 1] (overall: channel mean).
        trend_strength: STL trend strength F_T in [0, 1] (overall: channel mean).
    """

    period: int
    power: float
    acf: float
    strength: float
    trend_strength: float


@dataclass
class PeriodReport:
    """Ranked periods of a multivariate series.

    Attributes:
        overall: candidates for the whole dataset, by power (strongest first).
        channels: each channel's candidates, by power; keys are the column names given
            to ``analyse``, else channel indices.
        freq: the sampling frequency used for calendar snapping (or None).
        n_rows: rows analysed.
    """

    overall: list[PeriodCandidate]
    channels: dict[int | str, list[PeriodCandidate]] = field(default_factory=dict)
    freq: str | None = None
    n_rows: int = 0

    @property
    def seasonal(self) -> bool:
        """Whether any overall period has seasonal strength above 0.3."""
        return any(c.strength > SEASONAL_THRESHOLD for c in self.overall)

    def top_periods(self, k: int = 5, seasonal_only: bool = False) -> list[int]:
        """The k strongest overall periods (optionally only those with F_S > 0.3)."""
        cands = [c for c in self.overall if not seasonal_only or c.strength > SEASONAL_THRESHOLD]
        return [c.period for c in cands[:k]]

    def to_dict(self) -> dict:
        """JSON-ready: {"overall": [...], "channels": {name: [...]}, "seasonal", "freq", "n_rows"}."""
        return {
            "overall": [asdict(c) for c in self.overall],
            "channels": {str(k): [asdict(c) for c in v] for k, v in self.channels.items()},
            "seasonal": self.seasonal,
            "freq": self.freq,
            "n_rows": self.n_rows,
        }


def merge_channels(peaks: list[list[Peak]], max_candidates: int) -> list[tuple[int, float]]:
    """Overall periods from the channels' peaks.

    Periods within 2% (or one lag) of each other across channels are one period, named
    by the channel period with the most power. A period's overall power is the mean over
    all channels, so a cycle that only one channel has counts for less.

    Args:
        peaks: per channel, its peaks.
        max_candidates: periods returned at most.

    Returns:
        [(period, mean power)], strongest first.
    """
    groups: list[dict] = []  # {"period", "best", "power"}
    flat = sorted((p for ch in peaks for p in ch), key=lambda p: -p.power)
    for p in flat:
        g = next((g for g in groups if abs(g["period"] - p.period) <= max(1, 0.02 * g["period"])), None)
        if g is None:
            groups.append({"period": p.period, "power": p.power})
        else:
            g["power"] += p.power
    n = max(len(peaks), 1)
    ranked = sorted(((g["period"], g["power"] / n) for g in groups), key=lambda t: -t[1])
    return ranked[:max_candidates]


def analyse(
    x: np.ndarray,
    freq: str | None = None,
    max_candidates: int = 5,
    columns: list[str] | None = None,
) -> PeriodReport:
    """Ranked periods of each channel and of the whole series.

    Args:
        x: [T, C] values (or [T]); pass the train rows only when the result feeds a model.
        freq: pandas-style sampling frequency ('h', '15min', 'W-TUE', ...) for calendar
            snapping, or None.
        max_candidates: periods listed per channel and overall.
        columns: C channel names for the report's keys (default: 0..C-1).

    Returns:
        The report. Strengths are measured by STL on the last 16 cycles (at least 4096
        rows) of each channel, see ``periodicity.strength``.

    Raises:
        ValueError: x has non-finite values or fewer than 8 rows.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] < 8 or not np.isfinite(x).all():
        raise ValueError(f"need a finite [T, C] array with T >= 8, got shape {x.shape}")
    keys = list(columns) if columns is not None else list(range(x.shape[1]))
    calendar = calendar_periods(freq)
    peaks = [find_peaks(x[:, c], calendar, max_candidates) for c in range(x.shape[1])]
    overall = merge_channels(peaks, max_candidates)

    # One STL per distinct (channel, period) pair: channel lists and the overall list share.
    periods = sorted({p for p, _ in overall} | {p.period for ch in peaks for p in ch})
    f_s, f_t = strength_table(x, periods)
    row = {p: i for i, p in enumerate(periods)}
    acf = autocorrelation(x, max(periods, default=1))  # [max period + 1, C]

    channels = {
        keys[c]: [
            PeriodCandidate(p.period, p.power, p.acf, float(f_s[row[p.period], c]), float(f_t[row[p.period], c]))
            for p in ch
        ]
        for c, ch in enumerate(peaks)
    }
    overall_cands = []
    for period, power in overall:
        overall_cands.append(
            PeriodCandidate(
                period,
                power,
                float(acf[period].mean()),
                float(np.nanmean(f_s[row[period]])),
                float(np.nanmean(f_t[row[period]])),
            )
        )
    return PeriodReport(overall=overall_cands, channels=channels, freq=freq, n_rows=int(x.shape[0]))
