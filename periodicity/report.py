"""The dataset-level analysis: ranked periods per channel and overall.

``analyse`` runs ``spectrum.find_peaks`` on each channel, merges the channels' periods
into an overall ranking, and measures each period's seasonal and trend strength with
STL (``strength``). It works on any array; callers decide which rows it sees (the
``periods`` command passes the train rows only, so nothing is fitted on test).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
from tqdm.auto import tqdm

from periodicity.spectrum import (
    HARMONIC_ACF_GAP,
    HARMONIC_POWER_SHARE,
    MAX_HARMONIC,
    Peak,
    autocorrelation,
    calendar_periods,
    detrend,
    find_peaks,
    is_harmonic,
    is_harmonic_freq,
    is_multiple,
    rank_key,
)
from periodicity.strength import (
    column_strengths,
    is_flat,
    measured_cycles,
    recent_rows,
    seasonal_threshold,
    stl_components,
    strength_table,
)


@dataclass(frozen=True)
class PeriodCandidate:
    """One ranked period.

    Attributes:
        period: cycle length in steps.
        power: share of the detrended series' variance in the period's spectral peak and
            its harmonics (overall: the mean over channels, 0 where a channel lacks it;
            constant channels are left out).
        acf: autocorrelation of the detrended series at ``period`` (overall: channel mean,
            constant channels left out).
        strength: STL seasonal strength F_S in [0, 1] (overall: mean over the channels
            where it is measurable; NaN where none is, such as a constant stretch).
        trend_strength: STL trend strength F_T in [0, 1] (overall: channel mean, as F_S).
        cycles: cycles in the stretch STL measured: 16 for long periods, fewer where the
            series is shorter, more for short ones (at least 4096 rows are measured).
    """

    period: int
    power: float
    acf: float
    strength: float
    trend_strength: float
    cycles: float

    @property
    def seasonal(self) -> bool:
        """Whether F_S exceeds the threshold for the cycles measured (0.3 on 16 or more,
        see ``strength.seasonal_threshold``); NaN (not measurable) is not seasonal."""
        return bool(self.strength > seasonal_threshold(self.cycles))


@dataclass
class PeriodReport:
    """Ranked periods of a multivariate series.

    Attributes:
        overall: candidates for the whole dataset, confirmed calendar periods first, then
            by power (``spectrum.rank_key``).
        channels: each channel's candidates, ranked the same way; keys are the column
            names given to ``analyse``, else channel indices.
        freq: the sampling frequency used for calendar snapping (or None).
        n_rows: rows analysed.
    """

    overall: list[PeriodCandidate]
    channels: dict[int | str, list[PeriodCandidate]] = field(default_factory=dict)
    freq: str | None = None
    n_rows: int = 0

    @property
    def seasonal(self) -> bool:
        """Whether any overall period is seasonal (``PeriodCandidate.seasonal``)."""
        return any(c.seasonal for c in self.overall)

    def top_periods(self, k: int = 5, seasonal_only: bool = False) -> list[int]:
        """The k best-ranked overall periods (optionally only the seasonal ones)."""
        cands = [c for c in self.overall if not seasonal_only or c.seasonal]
        return [c.period for c in cands[:k]]

    def to_dict(self) -> dict:
        """JSON-ready: {"overall": [...], "channels": {name: [...]}, "seasonal", "freq", "n_rows"}."""
        return {
            "overall": [_jsonable(c) for c in self.overall],
            "channels": {str(k): [_jsonable(c) for c in v] for k, v in self.channels.items()},
            "seasonal": self.seasonal,
            "freq": self.freq,
            "n_rows": self.n_rows,
        }


def _jsonable(c: PeriodCandidate) -> dict:
    """The candidate as a dict with its ``seasonal`` verdict, NaN (not measurable) as None."""
    d = {
        k: (None if isinstance(v, float) and not np.isfinite(v) else v)
        for k, v in asdict(c).items()
    }
    return d | {"seasonal": c.seasonal}


def merge_channels(
    peaks: list[list[Peak]],
    calendar: list[int],
    max_candidates: int,
    n_rows: int,
    acf: np.ndarray | None = None,
    n_channels: int | None = None,
) -> list[tuple[int, float]]:
    """Overall periods from the channels' peaks.

    Periods within 2% of each other across channels, or less than a periodogram bin
    apart (1 / n_rows in frequency: these rows cannot tell them apart), are one period,
    named by the channel period with the most power. A period's overall power is the mean over
    the channels (0 where a channel lacks it), so a cycle of one channel counts for less.
    Harmonics of a stronger overall period are merged into it, as within a channel, and
    so are its non-calendar multiples (``spectrum.is_multiple``): a p-cycle repeats at
    every m * p, so the ACF and STL confirm those too (ETTh1's 240, weather's 859).
    Where a weaker period q is m * p of a stronger p, and the series repeats at q clearly
    more than at p (``acf``, as ``spectrum.find_peaks`` does it in a channel), p is q's
    harmonic (a spike a day has more power at 12 than at 24): q takes p in.

    Args:
        peaks: per channel, its peaks.
        calendar: calendar periods (ranked first, see ``spectrum.rank_key``).
        max_candidates: periods returned at most.
        n_rows: rows the peaks were found on (a periodogram bin is 1 / n_rows).
        acf: [max lag + 1] channel-mean ACF of the detrended series, covering every
            period in ``peaks`` (None: no harmonic taken in by a weaker period).
        n_channels: channels the power is averaged over (default ``len(peaks)``; the
            constant channels are left out).

    Returns:
        [(period, mean power)], ranked.
    """
    # [period, summed power, frequency of the strongest, power before harmonics taken in]
    groups: list[list[float]] = []
    for p in sorted((p for ch in peaks for p in ch), key=lambda p: -p.power):
        g = next((g for g in groups if _same_period(g[0], p.period, n_rows)), None)
        if g is None:
            groups.append([p.period, p.power, p.freq, p.power])
        else:
            g[1] += p.power
            g[3] += p.power

    def harmonic(g: list[float], m: list[float]) -> bool:
        if not np.isfinite(g[2]):  # peaks made without a frequency: whole lags
            return is_harmonic(int(g[0]), int(m[0]), calendar)
        return is_harmonic_freq(g[2], int(g[0]), int(m[0]), m[2], n_rows, calendar)

    def harmonic_of(m: list[float], g: list[float]) -> bool:
        """Whether the merged m is rather g's harmonic (g longer, repeating more)."""
        return (
            acf is not None
            and m[0] < g[0]
            and g[3] >= HARMONIC_POWER_SHARE * m[3]
            and harmonic(m, g)
            and acf[int(g[0])] > acf[int(m[0])] + HARMONIC_ACF_GAP
        )

    merged: list[list[float]] = []
    for g in sorted(groups, key=lambda g: -g[1]):
        shapes = [m for m in merged if harmonic_of(m, g)]
        if shapes:
            g[1] += sum(m[1] for m in shapes)
            merged = [m for m in merged if all(m is not h for h in shapes)] + [g]
            continue
        parent = next(
            (m for m in merged if harmonic(g, m) or is_multiple(int(g[0]), int(m[0]), calendar)),
            None,
        )
        if parent is None:
            merged.append(g)
        else:
            parent[1] += g[1]
    n = max(len(peaks) if n_channels is None else n_channels, 1)
    ranked = sorted(
        ((int(g[0]), g[1] / n) for g in merged), key=lambda t: rank_key(t[0], t[1], calendar)
    )
    return ranked[:max_candidates]


def _same_period(p: float, q: float, n_rows: int) -> bool:
    """Whether two channels' periods are one: within 2%, or less than a periodogram bin
    apart in frequency (weather's 3218 and 3137 steps, 0.3 bins apart in 36,887 rows)."""
    return abs(p - q) <= 0.02 * p or abs(1 / p - 1 / q) < 1 / n_rows


# Times a period must repeat in the rows to be tested (see ``analyse``'s min_cycles).
MIN_CYCLES = 10


def analyse(
    x: np.ndarray,
    freq: str | None = None,
    max_candidates: int = 5,
    columns: list[str] | None = None,
    min_cycles: int = MIN_CYCLES,
    progress: bool = False,
    channel_strengths: bool = True,
) -> PeriodReport:
    """Ranked periods of each channel and of the whole series.

    Args:
        x: [T, C] values (or [T]); pass the train rows only when the result feeds a model.
        freq: pandas-style sampling frequency ('h', '15min', 'W-TUE', ...) for calendar
            snapping and ranking, or None.
        max_candidates: periods listed per channel and overall.
        columns: C channel names for the report's keys (default: 0..C-1).
        min_cycles: a period must fit this many times into T. The periodogram looks at
            periods up to T / 2, but with few cycles neither an ACF hill nor STL tells a
            cycle from slow wander (noise scores F_S 0.26 on 10 cycles, 0.5 on 4), and real data
            are full of such wander (ETTh1: "periods" of 40-50 days carry more variance
            than the week). 10 cycles keep every calendar period of the benchmarks.
        progress: a bar over the channels' spectra and STL fits, on a terminal (minutes
            on hundreds of channels).
        channel_strengths: also measure the periods only a channel lists (False: those
            channels' F_S, F_T are NaN; the overall list, all a model reads, is the same,
            in a third of the STL fits on weather).

    Returns:
        The report; lists are ranked with confirmed calendar periods first, then by
        power. Strengths come from STL on the last 16 cycles (at least 4096 rows) of
        each channel, see ``periodicity.strength``.

    Raises:
        ValueError: x has non-finite values or fewer than 16 rows.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] < 16 or not np.isfinite(x).all():
        raise ValueError(f"need a finite [T, C] array with T >= 16, got shape {x.shape}")
    n, n_ch = x.shape
    keys = list(columns) if columns is not None else list(range(n_ch))
    calendar = calendar_periods(freq)
    max_period = max(2, n // max(min_cycles, 2))
    # Channels keep more periods than they list: a cycle weak in every channel (ETTh1's
    # week) still adds up to a strong overall period.
    with tqdm(
        total=n_ch,
        desc="periods: spectra",
        unit="ch",
        leave=False,
        disable=None if progress else True,
    ) as bar:
        peaks = []
        for c in range(n_ch):
            peaks.append(find_peaks(x[:, c], calendar, 3 * max_candidates, max_period))
            bar.update()
    # A constant channel has no period, and is left out of the channel means (its F_S of
    # 0 or its power of 0 would pull every period towards "not seasonal").
    live = ~is_flat(x)
    acf = autocorrelation(detrend(x), max_period)[:, live]  # [max_period + 1, live C]
    acf_mean = acf.mean(axis=1) if acf.shape[1] else np.zeros(acf.shape[0])
    overall = merge_channels(
        peaks, calendar, max_candidates, n, acf=acf_mean, n_channels=int(live.sum())
    )
    peaks = [ch[:max_candidates] for ch in peaks]

    # One STL per distinct (channel, period) pair: channel lists and the overall list share.
    periods = sorted({p for p, _ in overall} | {p.period for ch in peaks for p in ch})
    needed = {(c, p) for c in range(n_ch) for p, _ in overall}
    if channel_strengths:
        needed |= {(c, p.period) for c, ch in enumerate(peaks) for p in ch}
    with tqdm(
        total=len(needed),
        desc="periods: STL",
        unit="fit",
        leave=False,
        disable=None if progress else True,
    ) as bar:
        f_s, f_t = strength_table(x, periods, needed, bar.update)
    row = {p: i for i, p in enumerate(periods)}

    channels = {
        keys[c]: [
            PeriodCandidate(
                p.period,
                p.power,
                p.acf,
                float(f_s[row[p.period], c]),
                float(f_t[row[p.period], c]),
                measured_cycles(n, p.period),
            )
            for p in ch
        ]
        for c, ch in enumerate(peaks)
    }
    if channel_strengths:
        channels = {
            k: _net_of_stronger(x[:, [c]], v, calendar) for c, (k, v) in enumerate(channels.items())
        }
    overall_cands = [
        PeriodCandidate(
            period,
            power,
            float(acf_mean[period]),
            _mean_measured(f_s[row[period]]),
            _mean_measured(f_t[row[period]]),
            measured_cycles(n, period),
        )
        for period, power in overall
    ]
    overall_cands = _net_of_stronger(x, overall_cands, calendar)
    return PeriodReport(overall=overall_cands, channels=channels, freq=freq, n_rows=n)


def _mean_measured(values: np.ndarray) -> float:
    """Mean of the finite values (the channels where a strength was measurable); NaN
    where there are none."""
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def _net_of_stronger(
    x: np.ndarray, cands: list[PeriodCandidate], calendar: list[int]
) -> list[PeriodCandidate]:
    """The candidates, each seasonal one measured again with the STL seasonal parts of
    the other seasonal ones removed first (channel mean over x [T, C]): those ranked
    before it, then also those ranked after it that are not within 5 % of its multiples
    or divisors (STL at 190 takes a 96-step cycle in as a drifting phase). A calendar period keeps its raw F_S beside its divisors (the week of hourly
    data, as known a priori: ``net_strengths`` shows its net value).

    STL at 22 steps on a series with a strong 24-step cycle follows the day as a slowly
    drifting phase, STL at 200 finds a 5-step cycle (200 = 40 x 5), and at 8 the daily
    spike's third harmonic: noise there scored F_S 0.42, 0.33 and 0.35, "seasonal", and
    reached the members. A cycle of its own (40 beside 24) keeps its strength once the
    others are gone. The second pass, over those ranked after, makes the strengths of
    unrelated cycles independent of their order: of 7 and 24 at equal power, the first
    scored F_S 0.44 with the other in its remainder, the second 0.8 without.
    """
    out: list[PeriodCandidate] = []
    kept: list[int] = []
    before: dict[int, list[int]] = {}  # the periods each was measured without
    for cand in cands:
        q = cand.period
        others = [
            p
            for p in kept
            # not beside a divisor, for a calendar multiple (the week beside the day), nor
            # beside a multiple past the harmonics (the day beside a stronger week: STL at
            # 168 takes the whole day in); a harmonic (8 beside 24) is measured without it
            if not (q in calendar and q % p == 0) and not (p % q == 0 and p // q > MAX_HARMONIC)
        ]
        if cand.seasonal and others:
            cand = _measured_without(x, cand, others)
        if cand.seasonal:
            kept.append(q)
            before[q] = others
        out.append(cand)
    for i, cand in enumerate(out):
        q = cand.period
        if q not in kept:
            continue
        after = [p for p in kept[kept.index(q) + 1 :] if not _near_multiple(p, q)]
        if after:
            out[i] = _measured_without(x, cands[i], before[q] + after)
    return out


def _near_multiple(p: int, q: int, tol: float = 0.05) -> bool:
    """Whether the longer of p, q is within ``tol`` (relative) of a whole multiple of the
    shorter: STL at one then finds the other's cycle too."""
    a, b = sorted((p, q))
    return abs(b - round(b / a) * a) <= tol * b


def _measured_without(x: np.ndarray, cand: PeriodCandidate, others: list[int]) -> PeriodCandidate:
    """``cand`` with its F_S measured after the STL seasonal parts of ``others`` are
    removed, one after the other (channel mean over x [T, C]); as it was where the
    stretch measured holds under two cycles of one of them."""
    q = cand.period
    seg = x[recent_rows(x.shape[0], q)]
    if seg.shape[0] < 2 * max(q, *others):
        return cand
    rest = seg[:, ~is_flat(seg)]  # as ``stl_strength``: flat is NaN
    for p in others:  # every channel in one STL
        rest = rest - stl_components(rest, p)[1]
    return replace(cand, strength=_mean_measured(column_strengths(rest, q)[0]))


def net_strengths(x: np.ndarray, report: PeriodReport) -> dict[int, tuple[int, float]]:
    """F_S of each seasonal overall period that is a multiple of a shorter seasonal one,
    measured after that shorter cycle's STL seasonal part is removed (as MSTL does).

    A series with a 24-step cycle is periodic at 168 too, so STL at 168 finds the day
    and F_S at 168 counts it: a daily cycle plus noise alone scores 0.6 there. The net
    value says whether the week adds anything of its own (white noise: about 0.2).

    Args:
        x: [T, C] the rows ``report`` was made from.
        report: ``analyse``'s report of them.

    Returns:
        {period: (the shorter period removed, channel mean of the net F_S)}.
    """
    x = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
    seasonal = [c.period for c in report.overall if c.seasonal]
    out: dict[int, tuple[int, float]] = {}
    for q in seasonal:
        divisors = [p for p in seasonal if p < q and q % p == 0]
        if not divisors:
            continue
        p = max(divisors)
        seg = x[recent_rows(x.shape[0], q)]
        if seg.shape[0] < 2 * q:
            continue
        live = seg[:, ~is_flat(seg)]  # as ``stl_strength``: flat is NaN
        rest = live - stl_components(live, p)[1]
        out[q] = (p, _mean_measured(column_strengths(rest, q)[0]))
    return out
