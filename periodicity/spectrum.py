"""Candidate periods: periodogram peaks, confirmed and refined on the autocorrelation.

The steps follow Autoperiod (Vlachos et al., SDM 2005) with two additions:

1. Periodogram of the linearly detrended, Hann-windowed series; its local maxima,
   leaving out the DC term and periods over half the length, are the hints. A hint must
   stand out of the local spectral background (red noise has many small maxima).
2. The periodogram is coarse at long periods (bin k covers periods T/(k+1)..T/(k-1)), so
   each hint is looked up on the autocorrelation: it must sit on an ACF hill in that
   range, and the period becomes the hill's top.
3. Periods near the calendar periods of the sampling frequency (24 and 168 for hourly
   data) are snapped to them.
4. Harmonics (q/2, q/3, ...) of a stronger period q are part of q's wave shape, not cycles
   of their own: their power is added to q and they are not listed.

All functions work on numpy arrays; shapes are ``x: [T, C]`` (time first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy.fft import next_fast_len
from scipy.ndimage import median_filter

# Nanoseconds per unit of the pandas offset aliases with a fixed length (whole numbers, so
# a cycle is a whole number of steps exactly when the division leaves no remainder).
_SECOND = 10**9
_FIXED_UNITS = {"s": _SECOND, "min": 60 * _SECOND, "t": 60 * _SECOND, "h": 3600 * _SECOND}
_FIXED_UNITS["d"] = 24 * _FIXED_UNITS["h"]
# Sub-second units are case-sensitive: 'ms' is a millisecond, 'MS' a month start.
_SUB_SECOND = {"ns": 1, "N": 1, "us": 10**3, "U": 10**3, "ms": 10**6, "L": 10**6}
_DAY = _FIXED_UNITS["d"]
_YEAR_DAYS = 365.25


@dataclass(frozen=True)
class Peak:
    """One confirmed period before strengths are measured.

    Attributes:
        period: the period in steps (an ACF hill top, possibly snapped to the calendar).
        power: share of the detrended series' variance in the peak (harmonics included).
        acf: autocorrelation of the detrended series at ``period``.
        freq: the spectral peak's refined frequency in cycles per step (NaN: unknown),
            for telling harmonics from cycles of their own (``is_harmonic_freq``).
    """

    period: int
    power: float
    acf: float
    freq: float = float("nan")


def detrend(x: np.ndarray) -> np.ndarray:
    """Remove each channel's least-squares line.

    Args:
        x: [T, C] values.

    Returns:
        [T, C] residuals around the line (mean zero).
    """
    t = np.arange(x.shape[0], dtype=np.float64) - (x.shape[0] - 1) / 2.0
    centred = x - x.mean(axis=0)
    slope = (t @ centred) / max(float(t @ t), 1e-12)
    return centred - np.outer(t, slope)


def periodogram(x: np.ndarray) -> np.ndarray:
    """Normalised periodogram of the detrended, Hann-windowed series.

    Args:
        x: [T, C] values.

    Returns:
        [T // 2 + 1, C] power per frequency bin k (period T / k); the DC bin is zero and
        each channel sums to 1, so a bin's value is its share of the variance.
    """
    d = detrend(x)
    # The window trades a little resolution for far less leakage from strong peaks.
    w = np.hanning(d.shape[0])[:, None]
    spec = np.abs(np.fft.rfft(d * w, axis=0)) ** 2
    spec[0] = 0.0
    if d.shape[0] % 2 == 0:
        # The Nyquist bin (period 2) has no mirror image among the negative frequencies:
        # every other bin stands for two, so it counts half (else a 2-step cycle's share
        # of the variance came out twice its real one).
        spec[-1] *= 0.5
    total = spec.sum(axis=0)
    return spec / np.where(total > 0, total, 1.0)


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocorrelation (biased estimator, via FFT); detrend first for a detrended ACF.

    Args:
        x: [T, C] values.
        max_lag: last lag returned (at most T - 1).

    Returns:
        [max_lag + 1, C]; lag 0 is 1 (0 for a constant channel).
    """
    d = x - x.mean(axis=0)
    n = d.shape[0]
    nfft = next_fast_len(2 * n - 1, real=True)  # zero padding makes it linear, not circular
    f = np.fft.rfft(d, n=nfft, axis=0)
    acov = np.fft.irfft(f.real**2 + f.imag**2, n=nfft, axis=0)[: max_lag + 1]
    var0 = acov[0]
    return acov / np.where(var0 > 0, var0, np.inf)


def spectral_background(power: np.ndarray, width: int = 21) -> np.ndarray:
    """Running median of the periodogram, the level a peak must stand out of.

    Args:
        power: [K] or [K, C] periodogram.
        width: bins in the median window.

    Returns:
        Same shape as ``power``.
    """
    size = (width,) + (1,) * (power.ndim - 1)
    # Past the last bin the spectrum of a real series mirrors itself (bin K-1+j is bin
    # K-1-j); repeating the last bin instead made the Nyquist bin its own background.
    half = min(width // 2, power.shape[0] - 1)
    padded = np.concatenate([power, power[-2 : -2 - half : -1]]) if half > 0 else power
    return median_filter(padded, size=size, mode="nearest")[: power.shape[0]]


def spectral_peaks(power: np.ndarray, n: int, min_prominence: float = 2.5) -> np.ndarray:
    """Bins of the strongest local maxima of one periodogram.

    Args:
        power: [K] periodogram of a series of length T (K = T // 2 + 1).
        n: how many peaks to return at most.
        min_prominence: a peak must exceed the running median by this factor (periodogram
            values of noise are exponential, so a factor c is exceeded by 2^-c of noise
            bins: 18 % at 2.5; the local-maximum test and the ACF check weed out the rest).

    Returns:
        [<= n] bin indices k >= 2 (periods <= T / 2), strongest first. The last bin (the
        Nyquist frequency, period 2, where T is even) has no right neighbour: it is a
        maximum when it exceeds its left one.
    """
    k = np.arange(2, power.shape[0])
    if k.size == 0:
        return k
    right = np.append(power[k[:-1] + 1], -np.inf)  # the last bin: no right neighbour
    is_max = (power[k] > power[k - 1]) & (power[k] >= right)
    stands_out = power[k] > min_prominence * spectral_background(power)[k]
    k = k[is_max & stands_out]
    return k[np.argsort(-power[k], kind="stable")][:n]


def peak_power(power: np.ndarray, k: int) -> float:
    """Power of the peak at bin k: the Hann main lobe, bins k-1..k+1."""
    return float(power[max(k - 1, 1) : k + 2].sum())


def fine_spectrum(x: np.ndarray, pad: int = 4) -> np.ndarray:
    """Magnitude spectrum of the Hann-windowed series, zero-padded for sub-bin peaks.

    Args:
        x: [T] detrended series.
        pad: zero-padding factor; bin k of the plain periodogram is bin ``pad * k`` here.

    Returns:
        [pad * T // 2 + 1] magnitudes.
    """
    return np.abs(np.fft.rfft(x * np.hanning(x.shape[0]), n=pad * x.shape[0]))


def peak_frequency(fine: np.ndarray, k: int, pad: int = 4) -> float:
    """Sub-bin location of the periodogram peak near bin k.

    Args:
        fine: [pad * T // 2 + 1] output of ``fine_spectrum``.
        k: periodogram bin of the peak (frequency k / T).
        pad: the padding factor ``fine`` was made with.

    Returns:
        The peak's frequency in bins of the unpadded spectrum (T / result is the period).
    """
    lo, hi = max(1, (k - 1) * pad), min((k + 1) * pad + 1, fine.shape[0])
    band = fine[lo:hi]
    i = int(np.argmax(band))
    shift = 0.0
    if 0 < i < band.size - 1:  # parabola through the log magnitudes around the top
        a, b, c = np.log(band[i - 1 : i + 2] + 1e-300)
        den = a - 2 * b + c
        shift = 0.5 * (a - c) / den if den < 0 else 0.0
    return float((lo + i + shift) / pad)


def sinusoid_fits(x: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Joint least-squares fit of one sinusoid per frequency.

    Args:
        x: [T] detrended series.
        freqs: [H] frequencies in cycles per step.

    Returns:
        [H, T] each frequency's fitted sinusoid (their sum is the joint fit).
    """
    arg = 2 * np.pi * np.outer(np.arange(x.shape[0]), freqs)
    design = np.concatenate([np.cos(arg), np.sin(arg)], axis=1)  # [T, 2H]
    # Normal equations: the hints are distinct peaks, so the 2H x 2H system is well
    # conditioned, and solving it is ~20x faster than lstsq's SVD of the T x 2H design.
    gram = design.T @ design
    coef = np.linalg.solve(gram + 1e-9 * np.trace(gram) * np.eye(gram.shape[0]), design.T @ x)
    h = freqs.shape[0]
    return (design[:, :h] * coef[:h] + design[:, h:] * coef[h:]).T


def nearest_acf_peak(acf: np.ndarray, period: float, lo: int, hi: int) -> int | None:
    """Confirm a period on the ACF: the hill nearest to ``period`` within lags [lo, hi].

    Args:
        acf: [max_lag + 1] autocorrelation.
        period: where the spectrum puts the period (fractional lag).
        lo, hi: the lags the hill top may take.

    Returns:
        round(period) if a hill top lies within noise of it, else the nearest hill's top;
        None when the range holds no hill with ACF > 0.
    """
    lo, hi = max(lo, 2), min(hi, acf.shape[0] - 2)
    if hi < lo:
        return None
    lags = np.arange(lo, hi + 1)
    hill = (acf[lags] >= acf[lags - 1]) & (acf[lags] >= acf[lags + 1]) & (acf[lags] > 0)
    if not hill.any():
        return None
    tops = lags[hill]
    top = int(tops[np.argmin(np.abs(tops - period))])
    # The hill confirms the period. Where the spectrum's estimate is as close to the top
    # as noise moves a hill's top (a few lags, ~3 % of a long period), the estimate is
    # the more precise one (a planted 81 read as hill top 83 in 2 of 40 noisy draws).
    return int(round(period)) if abs(top - period) <= max(2.5, 0.03 * period) else top


def calendar_periods(freq: str | None) -> list[int]:
    """Natural cycle lengths, in steps, for a pandas-style sampling frequency.

    Fixed steps up to a day get half-day, day, week and year cycles where they are a
    whole number of steps ('h' -> 12, 24, 168, 8766; '15min' -> 48, 96, 672, ...);
    'D' -> 7, 365; 'B' -> 5, 261; weekly ('W', 'W-TUE') -> 52; semi-monthly ('SME',
    'SMS', older 'SM') -> 24; monthly -> 12; quarterly -> 4.

    Args:
        freq: an offset alias such as 'h', '15min', '10min', '100ms', 'W-TUE', 'D', 'B',
            'MS', or None ('ms' is a millisecond, 'MS' a month start).

    Returns:
        Sorted periods >= 2; empty for None or an alias it does not know.
    """
    if not freq:
        return []
    m = re.fullmatch(r"(\d*)\s*([A-Za-z]+)(?:-\w+)?", freq.strip())
    if m is None:
        return []
    mult = int(m.group(1) or 1)
    unit = m.group(2)
    key = unit.lower()
    if unit in _SUB_SECOND or key in _FIXED_UNITS:
        step = mult * (_SUB_SECOND.get(unit) or _FIXED_UNITS[key])
        cycles = [_DAY // 2, _DAY, 7 * _DAY]
        out = {c // step for c in cycles if c % step == 0}
        out.add(round(_YEAR_DAYS * _DAY / step))
    elif key == "b":
        out = {round(5 / mult), round(_YEAR_DAYS * 5 / 7 / mult)}
    elif key == "w":
        out = {round(_YEAR_DAYS / 7 / mult)}
    elif key in ("sm", "sms", "sme"):
        out = {round(24 / mult)}
    elif key in ("m", "ms", "me", "bm", "bms", "bme"):
        out = {round(12 / mult)}
    elif key in ("q", "qs", "qe", "bq", "bqs", "bqe"):
        out = {round(4 / mult)}
    else:
        return []
    return sorted(p for p in out if p >= 2)


# A calendar period is snapped to only where the spectral peak lies within this many
# periodogram bins of it: the sub-bin estimate is good to a fraction of a bin, so a peak
# farther away is another cycle (23 or 25 steps of hourly data, 160 or 176), not the day
# or the week.
SNAP_BINS = 1.5


def snap_to_calendar(
    period: int,
    calendar: list[int],
    tol: float = 0.05,
    n: int | None = None,
    nu: float | None = None,
    max_bins: float = SNAP_BINS,
) -> int:
    """The calendar period within ``tol`` (relative) of ``period``, else ``period``.

    Args:
        period: the period found, in steps.
        calendar: calendar periods (``calendar_periods``).
        tol: relative distance snapped at most.
        n, nu: rows of the series and the spectral peak's sub-bin frequency in bins
            (``peak_frequency``); where given, a calendar period c is snapped to only if
            its bin n / c lies within ``max_bins`` of nu as well.
        max_bins: see n, nu.
    """
    near = [
        c
        for c in calendar
        if abs(period - c) <= tol * c and (n is None or nu is None or abs(n / c - nu) <= max_bins)
    ]
    return min(near, key=lambda c: abs(period - c)) if near else period


# The highest harmonic order merged into its fundamental.
MAX_HARMONIC = 6


def is_harmonic(
    p: int,
    q: int,
    calendar: list[int] | None = None,
    max_order: int = MAX_HARMONIC,
    tol: float = 0.02,
) -> bool:
    """Whether p is q/m for some m in 2..max_order (p and q are whole lags).

    The tolerance is relative (``tol``) but at least the rounding of q/m to a whole lag.
    A calendar period is never a harmonic of a non-calendar one: slow wander near
    3 x 672 must not swallow the week of 15-minute data.
    """
    calendar = calendar or []
    if p in calendar and q not in calendar:
        return False
    m = round(q / p)
    if not 2 <= m <= max_order:
        return False
    return abs(q - m * p) <= max(tol * q, m / 2)


# Spectral peaks this many periodogram bins apart on one ACF hill are one cycle's leakage.
SAME_CYCLE_BINS = 3.0


def is_harmonic_freq(
    f: float,
    period: int,
    parent_period: int,
    parent_freq: float,
    n: int,
    calendar: list[int] | None = None,
    max_order: int = MAX_HARMONIC,
) -> bool:
    """Whether a spectral peak at ``f`` cycles per step is the m-th harmonic (m in
    2..max_order) of a cycle of ``parent_period`` steps, whose own peak is at
    ``parent_freq``: within one periodogram bin (1 / n) of m times either.

    In frequency, not in whole lags: 24 / 5 = 4.8 rounds to 5, so a real 5-step cycle
    beside a daily one would pass as the day's fifth harmonic, as would 34 beside 168
    (168 / 5 = 33.6). The sub-bin peak estimates tell them apart by dozens of bins on a
    few thousand rows. A calendar period is never a harmonic of a non-calendar one, and
    always one of a calendar multiple (12 h of the day: peaks near it snap to 12).
    """
    calendar = calendar or []
    if period in calendar:
        if parent_period not in calendar:
            return False
        if parent_period % period == 0 and 2 <= parent_period // period <= max_order:
            return True
    refs = [1.0 / parent_period] + ([parent_freq] if np.isfinite(parent_freq) else [])
    for ref in refs:
        m = round(f / ref)
        if 2 <= m <= max_order and abs(f - m * ref) <= 1.0 / n:
            return True
    return False


def is_multiple(q: int, p: int, calendar: list[int] | None = None, max_order: int = 12) -> bool:
    """Whether q is m * p for some m in 2..max_order (p a harmonic of q), and not a
    calendar period.

    A series with a cycle of p steps is exactly periodic at every multiple of p, so the
    ACF has a hill there and STL at q finds the p-cycle (ETTh1: F_S ~0.46 at every
    multiple of 24, ~0.18 between them). Such a q says nothing of its own; a calendar
    multiple (the week of hourly data) is kept, as it is known a priori.

    The tolerance is 2% of q (a short q, under 50, must be an exact multiple), not
    ``is_harmonic``'s m / 2: that one rounds q / m to a whole lag, and with m up to 12 it
    made 11 a multiple of 5 and 37 of 3, so a real 11-step cycle merged into a 5.
    """
    if q in (calendar or []) or p < 2:
        return False
    m = round(q / p)
    return 2 <= m <= max_order and abs(q - m * p) <= max(0.02 * q, 0.5)


def rank_key(period: int, power: float, calendar: list[int]) -> tuple[bool, float]:
    """Sort key: confirmed calendar periods first, then by power (strongest first).

    Slow wander puts more power at long periods than a weak but real weekly cycle has
    (ETTh1: a 47-day "period" carries 2% of the variance, the week under 1%), so power
    alone would rank noise above the calendar; the calendar is known a priori.
    """
    return (period not in calendar, -power)


def high_pass_acf(spec: np.ndarray, nu: float, n: int, max_lag: int) -> np.ndarray:
    """ACF of a series with its drift below half a frequency removed.

    A slow trend that a line does not take out (a curve, a random walk) makes the ACF of
    the series near 1 and falling steadily for hundreds of lags, with no hill at a cycle
    riding on it (a daily cycle under a quadratic trend, STL F_S 0.73, was dropped).
    Zeroing the Fourier terms below ``nu / 2`` keeps the cycle at ``nu`` and the lags
    around its period, and takes that drift out.

    Args:
        spec: [n // 2 + 1] ``np.fft.rfft`` of the series (length n).
        nu: the frequency of interest in bins (cycles per n steps).
        n: the series' length.
        max_lag: last lag returned.

    Returns:
        [max_lag + 1] autocorrelation of the high-passed series.
    """
    y = spec.copy()
    y[: max(1, int(nu / 2))] = 0.0
    return autocorrelation(np.fft.irfft(y, n=n)[:, None], max_lag)[:, 0]


# A hint without a hill on the ACF is looked up again on the high-passed ACF where its
# periodogram value is this many times the running median (noise: 1 bin in 1000, a cycle
# on a random walk or a curve: hundreds).
HIGH_PASS_PROMINENCE = 10.0

# A kept period p is taken for the harmonic of a longer hint q = m * p (m <= MAX_HARMONIC)
# where the series' ACF at q exceeds that at p by this much: a cycle of p steps repeats at
# q as well (about equal ACF), a cycle of q steps with a sharp shape (a spike a day) has
# strong harmonics at q / m but does not repeat there (ACF ~0 at 12 for a daily spike).
HARMONIC_ACF_GAP = 0.1
# ... and where q's own peak has at least this share of p's power (a noise peak at a
# multiple of a real cycle must not swallow it, whatever the ACF says).
HARMONIC_POWER_SHARE = 0.25


def find_peaks(
    x: np.ndarray,
    calendar: list[int] | None = None,
    max_candidates: int = 5,
    max_period: int | None = None,
    n_hints: int = 24,
) -> list[Peak]:
    """Confirmed, refined, snapped and harmonic-merged periods of one series.

    Each hint is located finely on the zero-padded spectrum, then looked up on the ACF of
    the series with every *other* hint's sinusoid removed (a joint least-squares fit).
    Without that, the ACF of a mixture of cycles follows the strongest one, and weaker
    cycles show no hill of their own (the weak point of plain Autoperiod). A hint far out
    of the spectral background with no hill there is looked up again with the drift below
    half its frequency filtered out (``high_pass_acf``): a curved trend or a random walk
    hides every hill.

    A hint whose kept harmonics (q / m) repeat less than it does on the ACF takes them in
    (``HARMONIC_ACF_GAP``): a spike a day has as much power at 12 as at 24, and the
    stronger of the two came first.

    Args:
        x: [T] values of one channel.
        calendar: calendar periods to snap to and rank first (see ``calendar_periods``).
        max_candidates: periods returned at most.
        max_period: longest period returned (default T / 2).
        n_hints: periodogram peaks examined at most.

    Returns:
        Up to ``max_candidates`` peaks, ranked by ``rank_key``.
    """
    n = x.shape[0]
    calendar = calendar or []
    max_period = n // 2 if max_period is None else min(max_period, n // 2)
    d = detrend(x[:, None])[:, 0]
    power = periodogram(d[:, None])[:, 0]
    hints = spectral_peaks(power, n_hints)
    if hints.size == 0:
        return []
    background = spectral_background(power)
    fine = fine_spectrum(d)
    nus = np.array([peak_frequency(fine, int(k)) for k in hints])
    fits = sinusoid_fits(d, nus / n)
    unexplained = d - fits.sum(axis=0)
    max_lag = n // 2 + 1
    acf0 = autocorrelation(d[:, None], max_lag)[:, 0]
    d_spec = np.fft.rfft(d)
    kept: list[list[float]] = []  # [period, power, frequency, own power], strongest first
    for k, nu, fit in zip(hints, nus, fits, strict=True):
        pw = peak_power(power, int(k))
        guess = n / nu
        # The snapped guess, so a week estimated at 673 steps keeps the calendar guard of
        # ``is_harmonic`` and is not merged into slow wander near 3 x 672.
        snapped = snap_to_calendar(round(guess), calendar, n=n, nu=nu)
        parent = next(
            (c for c in kept if is_harmonic_freq(nu / n, snapped, int(c[0]), c[2], n, calendar)),
            None,
        )
        if parent is not None:  # part of a stronger cycle's wave shape
            parent[1] += pw
            continue
        if guess > 1.05 * max_period:
            continue
        own = unexplained + fit
        # Autoperiod's range: the periods between the neighbouring bins.
        lo, hi = int(n / (nu + 1)), int(np.ceil(n / max(nu - 1, 1e-9)))
        lag = nearest_acf_peak(autocorrelation(own[:, None], max_lag)[:, 0], guess, lo, hi)
        if lag is None and power[k] >= HIGH_PASS_PROMINENCE * background[k]:
            # No hill: drift may hide it. Only for a peak far out of the background: the
            # filtered ACF of a random walk has hills too (5 of 40 walks were "seasonal").
            lag = nearest_acf_peak(high_pass_acf(np.fft.rfft(own), nu, n, max_lag), guess, lo, hi)
        if lag is None:
            continue
        lag = snap_to_calendar(lag, calendar, n=n, nu=nu)
        if lag > max_period:
            continue
        same = next((c for c in kept if abs(c[0] - lag) <= 0.02 * lag), None)
        if same is not None:
            # Two hints on one hill: one cycle, where their peaks are a few bins apart
            # (leakage). Farther apart, on a short lag, they are noise peaks that round
            # to it: adding them gave white noise a short "period" with 3-5 % of the variance.
            if abs(nu / n - same[2]) <= SAME_CYCLE_BINS / n:
                same[1] += pw
            continue
        entry = [lag, pw, nu / n, pw]
        harmonics = [
            c
            for c in kept
            if c[0] < lag
            and pw >= HARMONIC_POWER_SHARE * c[3]
            and is_harmonic_freq(c[2], int(c[0]), lag, nu / n, n, calendar)
        ]
        if harmonics:
            full = high_pass_acf(d_spec, nu, n, lag)
            harmonics = [c for c in harmonics if full[lag] > full[int(c[0])] + HARMONIC_ACF_GAP]
        if harmonics:  # kept before as cycles of their own, but part of this one's shape
            entry[1] += sum(c[1] for c in harmonics)
            kept = [c for c in kept if all(c is not h for h in harmonics)]
        kept.append(entry)
    kept.sort(key=lambda c: rank_key(int(c[0]), c[1], calendar))
    return [
        Peak(int(p), float(pw), float(acf0[int(p)]), f) for p, pw, f, _ in kept[:max_candidates]
    ]
