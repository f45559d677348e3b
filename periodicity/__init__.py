"""Periodicity analyser: ranked periods, patch candidates and per-window features.

Pure functions on numpy arrays (time first: ``x: [T, C]``, windows ``x: [W, L, C]``).

* ``analyse(x, freq)`` -> ``PeriodReport``: periodogram peaks confirmed on the ACF,
  harmonics merged, snapped to calendar periods, with STL seasonal/trend strength.
* ``window_features(x, periods)`` -> ([W, C, F], names): vectorised features per window.
* ``patch_candidates(periods, seq_len)`` and ``lookback_candidates(periods, lo, hi)``.
"""

from periodicity.features import FEATURE_NAMES, window_features
from periodicity.patches import lookback_candidates, patch_candidates
from periodicity.report import PeriodCandidate, PeriodReport, analyse
from periodicity.spectrum import calendar_periods
from periodicity.strength import SEASONAL_THRESHOLD

__all__ = [
    "FEATURE_NAMES",
    "SEASONAL_THRESHOLD",
    "PeriodCandidate",
    "PeriodReport",
    "analyse",
    "calendar_periods",
    "lookback_candidates",
    "patch_candidates",
    "window_features",
]
