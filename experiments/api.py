"""``HybridForecaster``: the hybrid ensemble behind a statsforecast-shaped Python API.

    >>> from experiments.api import HybridForecaster
    >>> hf = HybridForecaster(members=["dlinear", "arima"], router="learned",
    ...                       seq_len=512, pred_len=96)
    >>> hf.fit(df)                 # long (unique_id, ds, y) or wide (ds + one column per series)
    >>> fc = hf.predict(h=96)      # long: unique_id, ds, hybrid, <member columns>
    ...                            # wide: ds, one column per series (the hybrid forecast)

What ``fit`` does, in the run's protocol: the last ``val_size`` share of the rows is held
out as validation; the scaler and the members are fitted on the rows before it (the
validation rows serve members only for early stopping); the router is fitted on the
members' validation forecasts. ``predict`` forecasts the ``h`` steps after the last row,
weighting the members per series with the router. Members are not refitted on the
validation rows (their forecasts there are what the router learned to weigh).
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ensemble import hybrid
from ensemble.csvfile import find_gaps, infer_freq, off_grid, parse_dates
from ensemble.data import Split, StandardScaler, Windows
from ensemble.errors import InputError, UserError
from ensemble.forecaster import Forecaster
from experiments.forecast import day_or_longer, offset_zone, written_offsets

# Output columns besides the members' (with the frame's id and time columns).
_ENSEMBLE_COLUMN = "hybrid"
# Frequency names pandas 3 refuses (2.2 warned), and what it calls them now; anchored
# ones ("A-DEC", "Q-JAN") are looked up by the part before the dash.
_OLD_ALIASES = {
    "H": "'h'",
    "T": "'min'",
    "S": "'s'",
    "L": "'ms'",
    "U": "'us'",
    "N": "'ns'",
    "M": "'ME' (month end) or 'MS' (month start)",
    "BM": "'BME'",
    "SM": "'SME'",
    "Q": "'QE' or 'QS', with the same -MON anchor",
    "BQ": "'BQE'",
    "A": "'YE' or 'YS', with the same -MON anchor",
    "Y": "'YE' or 'YS', with the same -MON anchor",
    "BA": "'BYE'",
    "BY": "'BYE'",
    "BH": "'bh'",
}


def _long_to_wide(df: pd.DataFrame, id_col: str, time_col: str, target_col: str) -> pd.DataFrame:
    """A long frame -> wide (time index, one column per ``id_col`` value), refusing
    what pivoting would silently resolve: text targets, NaN, repeated (id, time) rows."""
    if pd.api.types.is_complex_dtype(df[target_col]):
        raise UserError(f"column {target_col!r} holds complex numbers; forecast real values")
    y = pd.to_numeric(df[target_col], errors="coerce")
    bad = y.isna() & df[target_col].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(
            f"column {target_col!r} is not numeric (row {row}: {df[target_col].iloc[row]!r}); "
            "convert or drop those rows"
        )
    if y.isna().any():
        row = int(np.flatnonzero(y.isna().to_numpy())[0])
        raise UserError(
            f"column {target_col!r} has NaN (series {df[id_col].iloc[row]!r} at "
            f"{df[time_col].iloc[row]}); fill the gaps before fitting"
        )
    if df[id_col].isna().any():  # pivot would forecast them as a series labelled NaN
        row = int(np.flatnonzero(df[id_col].isna().to_numpy())[0])
        raise UserError(
            f"column {id_col!r} has a missing id (row {row}, at {df[time_col].iloc[row]}); "
            "fill or drop those rows"
        )
    repeated = df.duplicated([id_col, time_col])
    if repeated.any():
        row = int(np.flatnonzero(repeated.to_numpy())[0])
        raise UserError(
            f"series {df[id_col].iloc[row]!r} has two rows at {df[time_col].iloc[row]}; "
            "keep one row per unique_id and ds"
        )
    extra = [c for c in df.columns if c not in (id_col, time_col, target_col)]
    if extra:
        warnings.warn(
            f"columns {extra} are ignored: only {target_col!r} is forecast (no exogenous inputs)",
            stacklevel=4,
        )
    wide = df.assign(**{target_col: y}).pivot(index=time_col, columns=id_col, values=target_col)
    missing = wide.isna()
    if missing.any().any():
        # the series are channels of one multivariate window: they must share every timestamp
        sid = missing.any()[lambda m: m].index[0]
        span = wide[sid].dropna().index
        longest = int(wide.notna().sum().max())
        starts, ends = (
            wide.apply(pd.Series.first_valid_index),
            wide.apply(pd.Series.last_valid_index),
        )
        if starts.max() > ends.min():  # regular or not, no time has them all: no grid helps
            a, b = ends.idxmin(), starts.idxmax()
            raise UserError(
                f"the series do not overlap in time: {a!r} ends at {ends[a]}, before {b!r} "
                f"begins at {starts[b]}; they are forecast together, as the channels of one "
                "window on shared timestamps: fit them separately (one HybridForecaster "
                "each), or give series that cover the same span"
            )
        common = wide.loc[starts.max() : ends.min()]
        if len(wide) > 1.5 * longest and common.isna().any().any():
            # not a shorter span: timestamps that miss each other where all the series run
            raise UserError(
                f"the series' timestamps do not line up: together they have {len(wide)} "
                f"distinct times, the longest series {longest} rows ({sid!r} has "
                f"{len(span)}); resample them onto one regular grid first, e.g. "
                f"df.groupby({id_col!r}).resample('h', on={time_col!r})[{target_col!r}]"
                ".mean().reset_index() (with your step in place of 'h')"
            )
        hole = wide.index[wide[sid].isna().to_numpy()][0]
        raise UserError(
            f"the series must share their timestamps (they are forecast together): "
            f"{sid!r} has {len(span)} rows from {span[0]} to {span[-1]}, the frame "
            f"{len(wide)} from {wide.index[0]} to {wide.index[-1]}, and {sid!r} lacks "
            f"{hole} first; keep the common span (or fill the missing rows), or fit the "
            "series separately"
        )
    return wide


def _to_matrix(
    df: pd.DataFrame, id_col: str, time_col: str, target_col: str
) -> tuple[np.ndarray, pd.Index, list[Any], str, np.ndarray | None]:
    """A long or wide frame -> (values [T, C], time [T], series labels [C], layout,
    offsets [T] or None).

    The time is a DatetimeIndex, or an int64 index for frames counted in steps. Offsets:
    each time's UTC offset in minutes as the frame wrote it, where the time is text (or
    datetimes) with offsets that change, read as UTC as the command line reads them."""
    offsets = None  # [T] in the frame's rows' order, then by time

    def parsed(col: pd.Series, where: str) -> pd.DatetimeIndex:
        nonlocal offsets
        dates = parse_dates(col, where, file_lines=False)
        if dates.tz is not None and str(dates.tz) == "UTC":  # offsets parsed into one timeline
            minutes = written_offsets(col)
            if minutes is not None and len(np.unique(minutes)) > 1:
                offsets = pd.Series(minutes, index=dates)
        return dates

    if not isinstance(df, pd.DataFrame):
        raise UserError(f"fit takes a pandas DataFrame (got {type(df).__name__})")
    if isinstance(df.index, pd.MultiIndex):  # e.g. df.set_index(["unique_id", "ds"])
        names = [str(n) for n in df.index.names]
        hint = "df.reset_index() to get unique_id, ds, y columns"
        if len(names) == 2 and (names[0], names[1]) != (id_col, time_col):
            hint = (
                f"fit(df.reset_index(), id_col={names[0]!r}, time_col={names[1]!r}, "
                "target_col=...) (or rename them unique_id, ds, y)"
            )
        raise UserError(f"the frame has a MultiIndex ({', '.join(names)}); call {hint}")
    if isinstance(df.columns, pd.MultiIndex):
        raise UserError(
            "the frame's columns are a MultiIndex; give one flat name per series, e.g. "
            "df.columns = ['_'.join(map(str, c)) for c in df.columns]"
        )
    if len(df) == 0:  # e.g. a filter that left nothing
        raise UserError("the frame has no rows; pass the series' history")
    if df.columns.has_duplicates:
        raise UserError(
            f"column {df.columns[df.columns.duplicated()][0]!r} appears twice in the frame; "
            "give each column its own name"
        )
    if time_col in df.columns:
        steps = _steps(df[time_col], f"column {time_col!r}")
        if steps is None:  # numbers other than whole steps would be nanoseconds since 1970
            steps = parsed(df[time_col], f"column {time_col!r}")
        df = df.assign(**{time_col: steps.to_numpy()})
    if {id_col, time_col, target_col} <= set(df.columns):
        wide, layout = _long_to_wide(df, id_col, time_col, target_col), "long"
    elif id_col in df.columns:  # a long frame whose other columns are named differently
        missing = [c for c in (time_col, target_col) if c not in df.columns]
        hint = "name them with fit(df, time_col=..., target_col=...)"
        if df.index.name in missing:
            hint = f"{df.index.name!r} is the frame's index: call df.reset_index() first"
        raise UserError(
            f"a long frame needs columns {id_col!r}, {time_col!r}, {target_col!r}; "
            f"{' and '.join(map(repr, missing))} missing: {hint}"
        )
    else:
        wide = df.set_index(time_col) if time_col in df.columns else df
        dated = _date_columns(df) if time_col not in df.columns else []
        # a new frame in each case: the caller's index stays as it was
        steps = None if dated else _steps(pd.Series(wide.index), "the frame's index")
        if steps is not None:
            wide = wide.set_axis(steps, axis=0)
        elif pd.api.types.is_string_dtype(wide.index) or wide.index.dtype == object:
            try:  # timestamps stored as text, as read_csv leaves them (day-first too)
                index = parsed(pd.Series(wide.index), "the frame's index")
            except UserError:
                index = None
            if index is not None:
                wide = wide.set_axis(index, axis=0)
        if steps is None and not isinstance(wide.index, pd.DatetimeIndex):
            hint = f"; e.g. fit(df, time_col={dated[0]!r})" if dated else ""
            raise UserError(
                f"a wide frame needs a {time_col!r} column, a DatetimeIndex or an integer "
                f"index of steps; a long frame needs columns {id_col!r}, {time_col!r}, "
                f"{target_col!r}{hint}"
            )
        if isinstance(wide.index, pd.DatetimeIndex) and wide.index.hasnans:
            row = int(np.flatnonzero(wide.index.isna())[0])
            raise UserError(
                f"the frame's index has a missing timestamp (NaT) at row {row}; "
                "fill or drop that row"
            )
        if wide.index.has_duplicates:
            raise UserError(
                f"timestamp {wide.index[wide.index.duplicated()][0]} appears twice in the wide "
                "frame; keep one row per time (several series belong in columns, or in a long "
                f"frame with {id_col!r})"
            )
        numeric = wide.select_dtypes("number", exclude="complex")
        dropped = [c for c in wide.columns if c not in numeric.columns]
        as_text = [c for c in dropped if _numbers_as_text(wide[c])]
        if as_text:  # a series read from text, surely not a column to leave out
            raise UserError(
                f"column(s) {as_text} hold numbers as text; convert them before fitting: "
                f"cols = {as_text}; df[cols] = df[cols].apply(pd.to_numeric) (or drop "
                "those that are no series)"
            )
        if dropped and numeric.shape[1]:
            warnings.warn(f"non-numeric columns {dropped} are ignored", stacklevel=3)
        elif dropped:
            raise UserError(
                f"the frame has no numeric series to forecast: column(s) {dropped} are not "
                "numeric; give one numeric column per series (numbers as text convert with "
                "df[cols] = df[cols].apply(pd.to_numeric))"
            )
        wide, layout = numeric, "wide"
    wide = wide.sort_index()
    values = wide.to_numpy(dtype=np.float64)
    if values.size == 0:
        raise UserError(
            "the frame has no series to forecast (no column besides the times); give one "
            f"numeric column per series, or a long frame with {id_col!r}, {time_col!r}, "
            f"{target_col!r}"
        )
    bad = ~np.isfinite(values)
    if bad.any():
        t, c = np.argwhere(bad)[0]
        raise UserError(
            f"series {wide.columns[c]!r} has {values[t, c]} at {wide.index[t]} "
            f"({int(bad.sum())} such values in all); fill or drop them before fitting"
        )
    index = wide.index
    if not (pd.api.types.is_integer_dtype(index) and index.dtype == np.int64):
        index = pd.DatetimeIndex(index)
    if offsets is not None:  # a long frame repeats each time once per series
        by_time = offsets[~offsets.index.duplicated()]
        offsets = by_time.reindex(index).to_numpy(dtype=np.int64)
    return values, index, list(wide.columns), layout, offsets


def _steps(col: pd.Series, where: str) -> pd.Index | None:
    """A time column's integer steps (0, 1, 2... as statsforecast takes them) as int64,
    or None when it holds something else (timestamps, text).

    Raises:
        UserError: missing or fractional numbers, or steps beyond int64.
    """
    values = col.to_numpy()
    if col.dtype == object and len(values):  # Python ints, as a list or an object column makes
        present = values[~col.isna().to_numpy()]
        if not len(present) or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in present
        ):
            return None
    elif not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return None
    if col.isna().any():  # rows counted from 1, as parse_dates counts them
        row = int(np.flatnonzero(col.isna().to_numpy())[0])
        raise UserError(f"{where} has a missing time at row {row + 1}; fill or drop that row")
    if not pd.api.types.is_integer_dtype(col) and col.dtype != object:
        head = ", ".join(map(str, col.head(3).tolist()))
        raise UserError(
            f"{where} holds floats ({head}, ...): time must be integer steps (0, 1, 2, "
            "...; whole floats convert with .astype(int)) or timestamps (epoch seconds "
            "convert with pandas.to_datetime(x, unit='s'))"
        )
    big = [int(v) for v in (min(values), max(values))]
    if big[0] >= 10**7:  # steps count from small numbers; these look like dates
        raise UserError(
            f"{where} holds integers from {big[0]}: timestamps, not steps? Epoch seconds "
            "convert with pandas.to_datetime(x, unit='s') ('ms', 'ns' likewise), dates "
            "written 20150101 with pandas.to_datetime(x.astype(str)); steps count from 0"
        )
    if not -(2**62) <= big[0] <= big[1] < 2**62:  # room to count the forecast's steps on
        raise UserError(
            f"{where} holds steps up to {big[1]} (from {big[0]}): too large to continue; "
            "number the rows from 0"
        )
    return pd.Index(np.asarray(values, dtype=np.int64))


def _numbers_as_text(col: pd.Series) -> bool:
    """Whether a column left out of a wide frame's series holds numbers as text ("1.5"):
    text or objects that `pd.to_numeric` reads whole (booleans and dates are no such)."""
    if not (col.dtype == object or pd.api.types.is_string_dtype(col)):
        return False
    present = col.dropna()
    if present.empty or present.map(lambda v: isinstance(v, bool | np.bool_)).all():
        return False
    try:
        pd.to_numeric(present)
    except (ValueError, TypeError):
        return False
    return True


def _date_columns(df: pd.DataFrame) -> list[str]:
    """Columns that hold dates (datetime dtype, or text whose first values parse as
    dates): what a wide frame's time column is probably called."""
    found = []
    for col in df.columns:
        values = df[col]
        if pd.api.types.is_datetime64_any_dtype(values):
            found.append(col)
        elif values.dtype == object or pd.api.types.is_string_dtype(values):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                head = pd.to_datetime(values.head(5), errors="coerce")
            if len(head) and head.notna().all():
                found.append(col)
    return found


def _calendar(dates: pd.DatetimeIndex, freq: str | None, example: str) -> str | None:
    """The frequency of the timestamps: ``freq`` checked against them, or inferred.

    Args:
        example: a resampling call for the user's frame, for the irregular-steps message.

    Raises:
        UserError: an unknown offset, timestamps off its grid, or no regular step.
    """
    given = freq
    if freq is None:
        freq = infer_freq(dates)
    else:
        try:
            freq = pd.tseries.frequencies.to_offset(freq).freqstr
            pd.tseries.frequencies.to_offset(freq)  # an alias the data layer reads back
        except (ValueError, TypeError):
            if isinstance(given, pd.DateOffset):
                raise UserError(
                    f"freq {given!r} has no pandas alias; pass one such as 'MS', 'W-MON' "
                    "or '2h' (monthly dates on a day other than the 1st or the last: "
                    "move them to the 1st and pass 'MS')"
                ) from None
            old = _OLD_ALIASES.get(str(freq).lstrip("0123456789").split("-")[0])
            hint = f" (pandas now spells {freq!r} as {old})" if old else ""
            raise UserError(
                f"freq {freq!r} is not a pandas offset such as 'h', 'B' or 'MS'{hint}"
            ) from None
    if len(dates) > 1 and freq is not None:  # else the forecast would start at the wrong step
        off = off_grid(dates, freq)
        if off.any():
            first = dates[np.flatnonzero(off)[0]]
            if given is not None:
                raise UserError(
                    f"freq {given!r}: timestamp {first} is not on its grid ({freq}; e.g. "
                    "weekly data on Mondays is 'W-MON', not 'W'); pass the frequency the "
                    "dates follow, or leave freq=None to infer it"
                )
            # the future dates would continue an invented grid
            if _monthly_on_one_day(dates):
                raise UserError(
                    f"the timestamps are monthly on day {dates[0].day}, which no pandas "
                    "frequency is anchored on; move them to the month's start, e.g. "
                    "df['ds'] = df['ds'].dt.to_period('M').dt.to_timestamp(), and fit "
                    "with freq='MS'"
                )
            raise UserError(
                f"the timestamps follow no regular step: {int(off.sum())} of "
                f"{len(dates)} (first {first}) are off the grid of the inferred step "
                f"({freq}); resample onto a regular grid first, e.g. {example} (with "
                "the step you want in place of 'h')"
            )
    return freq


def _monthly_on_one_day(dates: pd.DatetimeIndex) -> bool:
    """Whether the timestamps fall on one day of the month (not the 1st), a month or so
    apart: a grid pandas has no offset for."""
    if len(dates) < 3 or dates.day[0] == 1 or (dates.day != dates.day[0]).any():
        return False
    return bool(np.median(np.diff(dates.year * 12 + dates.month)) >= 1)


def _step(times: np.ndarray, freq: Any) -> int:
    """The step of integer times: ``freq`` (statsforecast's ``freq=1``) or the commonest
    difference, with the times checked against it.

    Raises:
        UserError: a non-integer ``freq``, or times off the step's grid.
    """
    if freq is not None and (
        isinstance(freq, bool) or not isinstance(freq, int | np.integer) or freq < 1
    ):
        raise UserError(
            f"freq {freq!r}: integer times take a whole step such as freq=1 (offsets such "
            "as 'h' are for timestamps)"
        )
    diffs = np.diff(times)
    if freq is None and len(diffs):
        values, counts = np.unique(diffs, return_counts=True)
        freq = int(values[counts.argmax()])
    step = int(freq or 1)
    off = np.flatnonzero((times - times[0]) % step != 0)
    if len(off):  # (sorted and distinct already)
        first = times[off[0]]
        raise UserError(
            f"the integer times are not steps of {step}: {first} is off the grid from "
            f"{times[0]}; number the rows 0, 1, 2, ... (or pass freq=the step)"
        )
    return step


def _grid(
    dates: pd.Index, offsets: np.ndarray | None, freq: Any, layout: str, cols: tuple[str, str, str]
) -> tuple[str | None, int | None, Any, pd.Index]:
    """The frame's grid: (frequency, step of integer times, the zone of the forecast's
    dates, the times checked against the grid: those its gaps are counted on)."""
    if not isinstance(dates, pd.DatetimeIndex):  # integer steps: no calendar for the members
        return None, _step(dates.to_numpy(dtype=np.int64), freq), None, dates
    id_col, time_col, target_col = cols
    example = f"df.resample('h', on={time_col!r}).mean()"
    if layout == "long":
        example = (
            f"df.groupby({id_col!r}).resample('h', on={time_col!r})"
            f"[{target_col!r}].mean().reset_index()"
        )
    # offsets that change (daylight saving time): days are the wall clock's, 23 or
    # 25 hours in UTC; shorter steps are UTC's (an hour repeats on the clock)
    zone, checked = None, dates
    if offsets is not None:
        zone = offset_zone(offsets[-1])  # the last row's, for the forecast's dates
        wall = dates.tz_convert(None) + pd.to_timedelta(offsets, unit="min")
        if day_or_longer(freq or infer_freq(wall)):
            checked = wall
    return _calendar(checked, freq, example), None, zone, checked


def _gap_rows(clock: pd.Index, freq: str | None, step: int | None) -> np.ndarray:
    """Rows with steps of the grid missing before them (row i: between rows i - 1 and i)."""
    if step is not None:
        return np.flatnonzero(np.diff(clock.to_numpy(dtype=np.int64)) > step) + 1
    return np.asarray(find_gaps(clock, freq), dtype=np.int64)


def _fill_hint(
    layout: str, cols: tuple[str, str, str], freq: str | None, step: int | None, clock: pd.Index
) -> str:
    """How to put the frame's rows on every step of its grid (the missing ones filled)."""
    id_col, time_col, target_col = cols
    if step is not None:
        steps = f"range({clock[0]}, {clock[-1] + step}, {step})"
        if layout == "long":
            return f"reindex each series' {time_col!r} onto {steps} and forward-fill {target_col!r}"
        return f"df.set_index({time_col!r}).reindex({steps}).ffill().reset_index()"
    if layout == "long":
        return (
            f"df.set_index({time_col!r}).groupby({id_col!r})[{target_col!r}]"
            f".resample({freq!r}).ffill().reset_index()"
        )
    return f"df.set_index({time_col!r}).asfreq({freq!r}).ffill().reset_index()"


def _periods(train: np.ndarray, freq: str | None) -> list[int]:
    """Ranked seasonal periods of the train rows (as `run` uses them)."""
    from periodicity import analyse

    report = analyse(train, freq=freq, channel_strengths=False)
    return [int(p) for p in report.top_periods(3, seasonal_only=True)]


def _whole(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as a whole number >= ``minimum`` (UserError otherwise: a bool, a float)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise UserError(f"{name} must be a whole number >= {minimum} (got {value!r})")
    return int(value)


def _as_written(times: pd.Index, offsets: np.ndarray | None, rows: np.ndarray) -> Any:
    """``times[rows]``, each in the UTC offset the frame wrote it in where the offsets
    change (read as UTC: a local midnight would come back as 23:00 the day before)."""
    picked = times.take(rows)
    if offsets is None:
        return picked
    out = np.empty(len(rows), dtype=object)
    written = offsets[rows]
    for minutes in np.unique(written):  # a zone or two (summer and winter time)
        where = written == minutes
        out[where] = picked[where].tz_convert(offset_zone(int(minutes))).to_numpy(object)
    return out


def _value_errors(method: Callable) -> Callable:
    """The public methods raise their refusals as ``InputError``: a ``UserError`` that is
    also a ``ValueError``, which a caller's ``except ValueError`` catches."""

    @functools.wraps(method)
    def wrapped(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except InputError:
            raise
        except UserError as exc:
            raise InputError(str(exc)) from None

    return wrapped


class HybridForecaster:
    """Members combined window by window by a feature-conditioned router.

    Args:
        members: member names as on the command line (``"dlinear"``,
            ``"dlinear@kernel=49"``...) or ``Forecaster`` instances built for
            ``seq_len`` / ``pred_len``.
        router: a combiner name from ``router.COMBINERS`` (``learned``, ``greedy``, ``mean``...).
        seq_len: lookback L.
        pred_len: the longest horizon ``predict`` may be asked for (H).
        val_size: share of the rows held out for the router's validation forecasts.
        seed: random seed of members and router.
        member_params: per-member defaults, e.g. ``{"timellm": {"llm_layers": 2}}``.
        progress: progress bars while fitting (members, and epochs of the members that
            train by epochs); None: only on a terminal.
        periods: ranked seasonal periods handed to the members, as the command line's
            ``--periods``; None: found in the training rows by the periodicity analyser.
    """

    def __init__(
        self,
        members: Sequence[str | Forecaster] = ("dlinear", "arima", "lightgbm"),
        router: str = "learned",
        seq_len: int = 512,
        pred_len: int = 96,
        val_size: float = 0.2,
        seed: int = 0,
        member_params: dict[str, dict[str, Any]] | None = None,
        progress: bool | None = None,
        periods: Sequence[int] | None = None,
    ):
        # "dlinear, arima" as on the command line, not the letters of one name
        if isinstance(members, str):
            from experiments.registry import split_members

            members = split_members(members, "members")
        self.members = list(members or [])
        self.router = router
        self.seq_len = seq_len
        self.pred_len = pred_len
        self.val_size = val_size
        self.seed = seed
        self.member_params = member_params or {}
        self.progress = progress
        self.periods = periods

    # -------------------------------------------------------------------- fitting

    def _check_settings(self) -> None:
        """The constructor's numbers and members, before any work (UserError if wrong)."""
        for name in ("seq_len", "pred_len"):
            _whole(name, getattr(self, name))
        periods = getattr(self, "periods", None)  # None in a forecaster pickled before it
        if periods is not None:
            if isinstance(periods, str | int) or not len(periods):
                raise UserError(
                    f"periods is a list of ranked seasonal periods, e.g. [24, 168] (got "
                    f"{periods!r}); None: found in the data"
                )
            for p in periods:
                _whole("each of periods", p, 2)
        share = self.val_size
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
            raise UserError(f"val_size is a share of the rows, in (0, 1) (got {share!r})")
        if not self.members:
            raise UserError("no members given: pass members=['dlinear', 'arima', ...]")
        for m in self.members:
            if isinstance(m, str):
                continue
            window_model = callable(getattr(m, "fit", None)) and callable(
                getattr(m, "predict", None)
            )
            if not window_model or hasattr(m, "get_params"):  # scikit-learn's fit(X, y)
                raise UserError(
                    "members are names such as 'dlinear' or Forecaster instances (fit(train, "
                    f"val) on ensemble.data.Split, predict(windows) -> [W, H, C]); got "
                    f"{type(m).__name__}: wrap other models in a Forecaster (see "
                    "ensemble/forecaster.py's BaseForecaster), or use 'lightgbm' for a "
                    "gradient-boosting member"
                )
        if not isinstance(self.member_params, dict) or not all(
            isinstance(v, dict) for v in self.member_params.values()
        ):
            raise UserError(
                "member_params maps a member to its settings, e.g. "
                f"{{'dlinear': {{'kernel': 49}}}} (got {self.member_params!r})"
            )
        from router import COMBINERS, make_combiner

        if self.router not in COMBINERS:  # now, not after every member has been fitted
            make_combiner(self.router)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise UserError(f"seed must be a whole number (got {self.seed!r})")
        if not 0 <= self.seed < 2**32:
            raise UserError(f"seed must lie in 0 .. {2**32 - 1} (got {self.seed})")
        from experiments import registry

        bases = {registry.parse_spec(m)[0] for m in self.members if isinstance(m, str)}
        instances = {getattr(m, "name", None) for m in self.members if not isinstance(m, str)}
        for key in sorted(set(self.member_params) - bases):
            if key in instances:
                raise UserError(
                    f"member_params[{key!r}] would not reach the {key} instance: member_params "
                    "applies to members given by name; set it when you build the instance"
                )
            raise UserError(
                f"member_params has settings for {key!r}, which is not among the members "
                f"({', '.join(sorted(bases)) or 'instances only'}); check the spelling or add it"
            )

    def _member_names(self, reserved: set[str]) -> list[str]:
        """One distinct name per member: the spec for strings (checked as the CLI checks
        them), the instance's ``name`` otherwise, numbered where instances share one."""
        from experiments import registry

        specs = [m for m in self.members if isinstance(m, str)]
        if specs:
            registry.parse_members(specs)  # unknown names, repeated specs
        names: list[str] = []
        for i, m in enumerate(self.members):
            name = m if isinstance(m, str) else str(getattr(m, "name", f"m{i}"))
            base, k = name, 2
            while name in names:
                name, k = f"{base}_{k}", k + 1
            names.append(name)
        clash = sorted(set(names) & reserved)
        if clash:
            raise UserError(f"member name {clash[0]!r} is an output column; rename the member")
        return names

    def _gaps_read(
        self,
        gaps: np.ndarray,
        clock: pd.Index,
        origins: np.ndarray,
        freq: str | None,
        step: int | None,
        layout: str,
        cols: tuple[str, str, str],
        cutoff: bool = False,
    ) -> str | None:
        """What to say of a gap (`_gap_rows`) within the rows a forecast from one of
        ``origins`` reads (None: none there). The members and the router read those rows
        as consecutive steps, so where the missing steps are lost readings, a seasonal
        member's forecast is shifted under the right dates; where they are steps without
        data (a business-day series' holidays) that is how the members were fitted too.
        So it is said, not refused: `run` and the command line's `forecast` read a run's
        own rows the same way, gaps and all, and the two must give the same forecast.

        Args:
            cutoff: name the origin as a cross-validation cutoff.
        """
        from router import COMBINERS
        from router.features import skill_context_rows

        L, H = self.seq_len, self.pred_len
        # the lookback, and the windows whose errors the router's skill features score
        features = getattr(COMBINERS.get(self.router), "needs_features", True)
        rows = skill_context_rows(L, H) if features else L
        origins = np.asarray(origins, dtype=np.int64)
        first = np.searchsorted(gaps, origins - rows + 2)  # a row after each window's first
        inside = first < len(gaps)
        inside[inside] = gaps[first[inside]] <= origins[inside]
        if not inside.any():
            return None
        k = int(np.flatnonzero(inside)[0])
        row, origin = int(gaps[first[k]]), int(origins[k])
        grid = freq if step is None else f"{step} (integer times)"
        reads = "the lookback" + (
            " and the windows the router's skill features score" if features else ""
        )
        said = (
            f"the row at {clock[row]} follows {clock[row - 1]}: the steps between are "
            f"missing, and the forecast{f' from cutoff {clock[origin]}' if cutoff else ''} "
            f"reads its last {min(rows, origin + 1)} rows ({reads}) as consecutive steps of "
            f"{grid}"
        )
        if len(gaps) > 1:
            said += f" ({len(gaps)} gaps in the frame in all)"
        return (
            f"{said}; if the missing steps are lost readings rather than steps without data "
            f"(holidays), add them, e.g. {_fill_hint(layout, cols, freq, step, clock)}"
        )

    @staticmethod
    def _gaps_scored(
        dates: pd.Index,
        offsets: np.ndarray | None,
        cutoffs: np.ndarray,
        h: int,
        freq: Any,
        grid_freq: str | None,
        step: int | None,
        layout: str,
        cols: tuple[str, str, str],
    ) -> str | None:
        """What to say of a gap among the ``h`` rows after a cross-validation cutoff (None:
        none there). Those rows are the cutoff's actuals, set against the forecast's steps
        in order, so from a gap on each actual meets a forecast step made for an earlier
        time (and carries that step's date); an actual off the grid is said so."""
        try:
            _, _, _, clock = _grid(dates, offsets, grid_freq or freq, layout, cols)
        except UserError as exc:  # a warning never stops the backtest the rows allowed
            return (
                f"the actuals after the last cutoff are off the grid of the rows before it ({exc})"
            )
        gaps = _gap_rows(clock, grid_freq, step)
        cut = np.asarray(cutoffs, dtype=np.int64)[:, None]
        hit = (gaps[None, :] > cut) & (gaps[None, :] <= cut + h)  # [cutoffs, gaps]
        if not hit.any():
            return None
        c, g = np.argwhere(hit)[0]
        row, origin = int(gaps[g]), int(cutoffs[c])
        many = int(hit.any(axis=0).sum())
        return (
            f"the row at {clock[row]} follows {clock[row - 1]}: the steps between are missing, "
            f"and the {h} rows after cutoff {clock[origin]} are its actuals, set against the "
            "forecast's steps in order, so from that row on each actual meets the forecast "
            "for an earlier step"
            + (f" ({many} such gaps after cutoffs)" if many > 1 else "")
            + f"; put the frame on its grid, e.g. {_fill_hint(layout, cols, grid_freq, step, clock)}"
            " (the filled rows are then scored too), or choose n_windows and step_size whose "
            "horizons miss the gap"
        )

    def _build(
        self,
        spec: str | Forecaster,
        name: str,
        periods: list[int],
        n_channels: int,
        freq: str | None,
    ) -> Forecaster:
        if not isinstance(spec, str):
            built = (
                getattr(spec, "seq_len", self.seq_len),
                getattr(spec, "pred_len", self.pred_len),
            )
            if built != (self.seq_len, self.pred_len):
                raise UserError(
                    f"member {name!r} was built for seq_len {built[0]}, pred_len {built[1]}; "
                    f"build it with this forecaster's {self.seq_len}, {self.pred_len}"
                )
            # a copy: the caller's instance (possibly shared by several forecasters) stays unfitted
            member = copy.deepcopy(spec)
            member.name = name
            return member
        # The name -> member map lives with the CLI's registry; imported lazily so that
        # ensemble never depends on a member package at import time.
        from experiments import registry

        base, _ = registry.parse_spec(spec)
        ctx = registry.MemberContext(
            seq_len=self.seq_len,
            pred_len=self.pred_len,
            n_channels=n_channels,
            freq=freq,
            periods=periods,
            seed=self.seed,
            dataset="custom",
            params=dict(self.member_params.get(base, {})),
            progress=self.progress,
        )
        return registry.build(spec, ctx)

    @_value_errors
    def fit(
        self,
        df: pd.DataFrame,
        id_col: str = "unique_id",
        time_col: str = "ds",
        target_col: str = "y",
        freq: str | None = None,
    ) -> HybridForecaster:
        """Fit members on the earlier rows and the router on their validation forecasts.

        Args:
            df: long frame (``unique_id, ds, y``) or wide frame (``ds`` column or a
                DatetimeIndex, one numeric column per series). Integer times are steps.
            id_col, time_col, target_col: column names of the long layout.
            freq: the sampling frequency as a pandas offset ("h", "B", "MS"...), or the
                step of integer times (1); inferred from the times when None.

        Raises:
            InputError (a UserError and a ValueError): the frame or a setting cannot be
                used, or the series is too short. A failed fit leaves a fitted forecaster
                as it was.
        """
        self._check_settings()
        values, dates, labels, layout, offsets = _to_matrix(df, id_col, time_col, target_col)
        return self._fit_arrays(
            values, dates, labels, layout, offsets, (id_col, time_col, target_col), freq
        )

    def _fit_arrays(
        self,
        values: np.ndarray,
        dates: pd.Index,
        labels: list[Any],
        layout: str,
        offsets: np.ndarray | None,
        cols: tuple[str, str, str],
        freq: Any,
    ) -> HybridForecaster:
        """``fit`` on ``_to_matrix``'s output: values [T, C], times [T], labels [C]."""
        from router import check_router_data, make_combiner
        from router.features import window_features

        id_col, time_col, target_col = cols
        if _ENSEMBLE_COLUMN in (id_col, time_col):
            raise UserError(
                f"{_ENSEMBLE_COLUMN!r} is the forecast's own column; rename your "
                f"{'id' if id_col == _ENSEMBLE_COLUMN else 'time'} column"
            )
        member_names = self._member_names({_ENSEMBLE_COLUMN, id_col, time_col})
        freq, step, zone, clock = _grid(dates, offsets, freq, layout, cols)
        times = dates
        if step is not None:  # integer steps: no calendar for the members, the steps for the output
            dates = pd.DatetimeIndex([])
            if int(times[-1]) + step * self.pred_len >= 2**63:
                raise UserError(
                    f"the forecast's steps would pass int64's range ({times[-1]} + "
                    f"{self.pred_len} x {step}); number the rows from 0"
                )
        gaps = _gap_rows(clock, freq, step)
        read = self._gaps_read(gaps, clock, np.array([len(clock) - 1]), freq, step, layout, cols)
        if read:
            warnings.warn(read, stacklevel=4)
        elif len(gaps):  # before the rows the forecast reads: read as the run reads them
            grid = f"the {freq} timestamps" if step is None else f"the integer times (step {step})"
            warnings.warn(
                f"{len(gaps)} gap(s) in {grid}, first before {clock[gaps[0]]}; the rows are "
                "used as consecutive steps",
                stacklevel=4,
            )
        n, L, H = values.shape[0], self.seq_len, self.pred_len
        n_val = max(int(n * self.val_size), 2 * H + 1)  # the router needs some val windows
        n_train = n - n_val
        if n_train < L + H:
            # the smallest n with n - max(int(n * val_size), 2H + 1) >= L + H
            need = L + H + 2 * H + 1
            while need - max(int(need * self.val_size), 2 * H + 1) < L + H:
                need += 1
            raise UserError(
                f"{n} rows are too few for seq_len {L} + pred_len {H} with {n_val} validation "
                f"rows (val_size {self.val_size}, at least 2 x pred_len + 1): need at least "
                f"{need}; lower seq_len/pred_len or pass a longer series"
            )
        check_router_data(self.router, len(self.members), n_val - H + 1)  # val windows
        scaler = StandardScaler().fit(values[:n_train])
        scaled = scaler.transform(values)
        scaled.flags.writeable = False
        channels = [str(c) for c in labels]

        def split(name: str, lo: int, hi: int) -> Split:
            return Split(name, scaled[lo:hi], dates[lo:hi], lo, L, H, channels, freq)

        train, val = split("train", 0, n_train), split("val", n_train - L, n)
        periods = (
            _periods(scaled[:n_train], freq)
            if getattr(self, "periods", None) is None
            else [int(p) for p in self.periods]
        )
        members = [
            self._build(m, name, periods, len(labels), freq)
            for m, name in zip(self.members, member_names, strict=True)
        ]
        from tqdm.auto import tqdm

        val_fc = []
        disable = None if self.progress is None else not self.progress
        bar = tqdm(members, desc="members", unit="member", disable=disable)
        for member, name in zip(bar, member_names, strict=True):
            bar.set_postfix_str(name)
            member.fit(train, val)
            with np.errstate(over="ignore"):  # beyond float32: inf, refused in one line
                val_fc.append(np.asarray(member.predict(val.windows()), dtype=np.float32))
            hybrid.refuse_non_finite(name, val_fc[-1], "the validation windows")
        val_stack = hybrid.stack(dict(zip(member_names, val_fc, strict=True)))
        router = make_combiner(self.router, seed=self.seed, member_names=member_names)
        feats = None
        if router.needs_features:
            feats, fnames = window_features(val.inputs(), val_stack, periods, member_names)
            router.feature_names = fnames
            router.channel_names = channels  # printed rules
        router.fit(val_stack, val.targets(), feats)
        # Only now, with everything fitted, replace what an earlier fit left.
        self.layout_, self.series_, self.cols_ = layout, labels, (id_col, time_col, target_col)
        self.freq_, self.scaler_, self.periods_ = freq, scaler, periods
        self.members_, self.member_names_, self.router_ = members, member_names, router
        self.values_, self.dates_, self.times_, self.step_ = scaled, dates, times, step
        self.zone_ = zone  # the forecast's dates' offset, where the frame's offsets change
        self.val_context_ = val.windows().context.shape[0]
        self.fitted_lengths_ = (L, H)
        return self

    # -------------------------------------------------------------------- forecasting

    @_value_errors
    def predict(self, h: int | None = None) -> pd.DataFrame:
        """Forecast the ``h`` steps after the last row of the fitted frame.

        Args:
            h: horizon, at most ``pred_len`` (default ``pred_len``).

        Returns:
            Long layout: ``unique_id, ds, hybrid`` and one column per member. Wide layout:
            ``ds`` and one column per series (the hybrid forecast). The router's weights
            of this forecast are in ``weights_`` ([h, C, M]: each step, the series in the
            order of ``series_``, the members in that of ``member_names_``): the hybrid
            is ``sum_m weights_[..., m] * member m``, step by step.
        """
        if not hasattr(self, "router_"):
            raise UserError("this HybridForecaster is not fitted: call fit(df) before predict")
        L, H = getattr(self, "fitted_lengths_", (self.seq_len, self.pred_len))
        if (self.seq_len, self.pred_len) != (L, H):  # the members were built for (L, H)
            raise UserError(
                f"seq_len/pred_len changed since fit ({L}/{H} -> {self.seq_len}/"
                f"{self.pred_len}); call fit again with the new settings"
            )
        h = H if h is None else _whole("h", h)
        if h > H:
            raise UserError(f"h must be in 1..pred_len={H} (got {h}); refit with a longer pred_len")
        n = self.values_.shape[0]
        zone = getattr(self, "zone_", None)
        if zone is not None and self.step_ is None and day_or_longer(self.freq_):
            warnings.warn(
                "the frame's UTC offsets change (daylight saving time?) and those ahead "
                f"are not known: the forecast's dates keep the last row's offset ({zone})",
                stacklevel=2,
            )
        times = self.dates_ if self.step_ is None else self.times_
        ds = self._future(times, H)[0]
        combined, stack, weights = self._forecast_origins(
            self.values_, self.dates_, np.array([n - 1])
        )
        # per step: learned and inverse_error weigh each step of the horizon differently
        self.weights_ = weights[-1, :h]  # [h, C, M]
        members = {
            n: self.scaler_.inverse_transform(stack[i, -1, :h])
            for i, n in enumerate(self.member_names_)
        }
        ens = self.scaler_.inverse_transform(combined[-1, :h])
        ds = ds[:h]
        if self.layout_ == "wide":
            out = pd.DataFrame(ens, columns=self.series_)
            out.insert(0, self.cols_[1], ds)
            return out
        id_col, time_col, _ = self.cols_
        frames = []
        for c, sid in enumerate(self.series_):
            # a list: an id that is a tuple would be read as a column of values
            frame = {id_col: [sid] * len(ds), time_col: ds, _ENSEMBLE_COLUMN: ens[:, c]}
            frame |= {n: f[:, c] for n, f in members.items()}
            frames.append(pd.DataFrame(frame))
        return pd.concat(frames, ignore_index=True)

    @_value_errors
    def cross_validation(
        self,
        df: pd.DataFrame,
        h: int | None = None,
        n_windows: int = 1,
        step_size: int = 1,
        refit: bool | int = True,
        id_col: str = "unique_id",
        time_col: str = "ds",
        target_col: str = "y",
        freq: str | None = None,
    ) -> pd.DataFrame:
        """Forecasts of the frame's last ``n_windows`` windows, each from the rows up to its
        cutoff, beside what followed (statsforecast's ``cross_validation``).

        The cutoffs are ``step_size`` rows apart, the last one ``h`` rows before the end.
        A copy of this forecaster is fitted (``fit``'s protocol) on the rows up to a
        cutoff: every cutoff's with ``refit=True``, every ``refit``-th one's with a whole
        number, the first one's only with False; the cutoffs after a fit are forecast by
        its members and router from the rows up to each cutoff, as a run forecasts its
        test windows. No value after a cutoff reaches its forecast (scaler, periods,
        members, router); this forecaster itself stays as it was.

        Args:
            df, id_col, time_col, target_col, freq: as for ``fit``.
            h: horizon, at most ``pred_len`` (default ``pred_len``).
            n_windows: cutoffs.
            step_size: rows between cutoffs.
            refit: fit at every cutoff (True), once (False) or at every k-th (k).

        Returns:
            Long frame: id, time, ``cutoff``, the target (what happened), ``hybrid`` and one
            column per member, in the frame's units, by series, cutoff and time; a wide
            frame's series are named under ``id_col``.

        Raises:
            InputError: a bad setting, or too few rows before the first cutoff to fit.
        """
        from tqdm.auto import tqdm

        self._check_settings()
        H = self.pred_len
        h = H if h is None else _whole("h", h)
        n_windows, step_size = _whole("n_windows", n_windows), _whole("step_size", step_size)
        if h > H:
            raise UserError(f"h must be in 1..pred_len={H} (got {h}); use a longer pred_len")
        if not isinstance(refit, bool) and (not isinstance(refit, int | np.integer) or refit < 1):
            raise UserError(f"refit is True, False or a whole number >= 1 (got {refit!r})")
        columns = [id_col, time_col, "cutoff", target_col, _ENSEMBLE_COLUMN]
        repeated = next((c for i, c in enumerate(columns) if c in columns[:i]), None)
        if repeated is not None:  # one would overwrite the other in the output
            raise UserError(
                f"{repeated!r} names two of the output's columns (id, time, cutoff, target, "
                "hybrid); rename your column"
            )
        names = self._member_names(set(columns))
        values, dates, labels, layout, offsets = _to_matrix(df, id_col, time_col, target_col)
        n = values.shape[0]
        cutoffs = n - h - 1 - step_size * np.arange(n_windows)[::-1]  # last input rows
        if cutoffs[0] < 0:
            raise UserError(
                f"{n_windows} windows {step_size} rows apart with h={h} need more than "
                f"{h + step_size * (n_windows - 1)} rows (the frame has {n}); lower n_windows "
                "or step_size"
            )
        every = 1 if refit is True else n_windows if refit is False else int(refit)
        cols = (id_col, time_col, target_col)
        # every cutoff's last rows, before any fit: those after a fold's own cutoff (refit
        # False or k) are forecast from rows its fit did not look at
        seen = int(cutoffs[-1]) + 1
        grid_freq, step, _, clock = _grid(
            dates[:seen], None if offsets is None else offsets[:seen], freq, layout, cols
        )
        gaps = _gap_rows(clock, grid_freq, step)
        read = self._gaps_read(gaps, clock, cutoffs, grid_freq, step, layout, cols, cutoff=True)
        if read:
            warnings.warn(read, stacklevel=2)
        elif len(gaps):  # before every cutoff's last rows: read as the run reads them
            grid = "the integer times" if step is not None else f"the {grid_freq} timestamps"
            warnings.warn(
                f"{len(gaps)} gap(s) in {grid}, first before {clock[gaps[0]]}; the rows are "
                "used as consecutive steps",
                stacklevel=2,
            )
        scored = self._gaps_scored(dates, offsets, cutoffs, h, freq, grid_freq, step, layout, cols)
        if scored:
            warnings.warn(scored, stacklevel=2)
        timeline = dates if isinstance(dates, pd.DatetimeIndex) else pd.DatetimeIndex([])
        hybrids, stacks = [], []
        disable = None if self.progress is None else not self.progress
        for g in tqdm(range(0, n_windows, every), desc="cutoffs", unit="fit", disable=disable):
            cut = cutoffs[g : g + every]
            rows = int(cut[0]) + 1
            fold = copy.copy(self)  # the settings; the fitted state is the fold's own
            for attr in [a for a in vars(fold) if a.endswith("_")]:
                delattr(fold, attr)
            part = None if offsets is None else offsets[:rows]
            try:
                with warnings.catch_warnings():  # said once above, not again per fold
                    for said in (r"the row at .* follows", r"\d+ gap\(s\) in "):
                        warnings.filterwarnings("ignore", message=said, category=UserWarning)
                    fold._fit_arrays(values[:rows], dates[:rows], labels, layout, part, cols, freq)
            except UserError as exc:
                raise UserError(
                    f"cross_validation: the fit on the {rows} rows up to cutoff "
                    f"{dates[rows - 1]}: {exc} (or lower n_windows/step_size)"
                ) from None
            end = int(cut[-1]) + 1  # nothing after the last cutoff: values or dates
            scaled = fold.scaler_.transform(values[:end])
            ens, stack, _ = fold._forecast_origins(scaled, timeline[:end], cut)
            hybrids.append(fold.scaler_.inverse_transform(ens[:, :h]))
            stacks.append(fold.scaler_.inverse_transform(stack[:, :, :h]))
        ens = np.concatenate(hybrids)  # [n_windows, h, C]
        stack = np.concatenate(stacks, axis=1)  # [M, n_windows, h, C]
        rows = cutoffs[:, None] + np.arange(1, h + 1)  # [n_windows, h] rows forecast
        C = values.shape[1]

        def by_series(a: np.ndarray) -> np.ndarray:  # [n_windows, h, C] -> series-major
            return a.transpose(2, 0, 1).reshape(-1)

        ids = np.empty(C, dtype=object)
        for c, label in enumerate(labels):  # one by one: tuple ids stay tuples
            ids[c] = label
        out = {
            id_col: np.repeat(ids, n_windows * h),
            time_col: _as_written(dates, offsets, np.tile(rows.reshape(-1), C)),
            "cutoff": _as_written(dates, offsets, np.tile(np.repeat(cutoffs, h), C)),
            target_col: by_series(values[rows]),
            _ENSEMBLE_COLUMN: by_series(ens),
        }
        out |= {name: by_series(stack[i]) for i, name in enumerate(names)}
        return pd.DataFrame(out)

    def _future(self, times: pd.Index, k: int) -> tuple[pd.Index, pd.Index]:
        """The ``k`` steps after the last of ``times`` (timestamps, or integer steps):
        (as the output writes them, as the members see them). Timestamps continue on the
        fitted frequency; where the frame's UTC offsets change, the output keeps the
        last row's offset and the members see UTC, as they did when fitted."""
        if self.step_ is not None:
            ds = pd.Index(times[-1] + self.step_ * np.arange(1, k + 1))
            return ds, ds
        zone = getattr(self, "zone_", None)
        offset = pd.tseries.frequencies.to_offset(self.freq_ or "D")
        # from the first step after the last row: date_range(last, ...) would roll an
        # off-grid last timestamp forward to a grid point and [1:] would drop that step
        last = times[-1] if zone is None else times[-1].tz_convert(zone)
        ds = pd.date_range(last + offset, periods=k, freq=offset)
        return ds, (ds if zone is None else ds.tz_convert(times.tz))

    def _forecast_origins(
        self, scaled: np.ndarray, dates: pd.DatetimeIndex, origins: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fitted members' and router's forecasts of the windows whose last input
        rows are ``origins``, in the fitted scale.

        Args:
            scaled: [T, C] the frame's rows, scaled: the fitted rows and any after them.
            dates: [T] their timestamps (empty for integer steps).
            origins: [n] increasing row indices, each at least seq_len - 1.

        Returns:
            hybrid [n, H, C], members [M, n, H, C], weights [n, H, C, M].
        """
        from ensemble.forecaster import predict_last
        from router.features import skill_context_rows, window_features

        L, H = self.fitted_lengths_
        end = int(origins[-1]) + 1
        # Every window from the first origin's skill context on: the router's skill
        # features score the windows t - H back to t - 5H + 1, as when it was fitted.
        lo = max(0, int(origins[0]) + 1 - skill_context_rows(L, H))
        # A member whose filter scans the context (ARIMA) gets as many rows as it had on
        # the last validation window, so its state is the one the router was fitted with.
        lo_scan = max(0, min(lo, end - getattr(self, "val_context_", 0)))
        if self.step_ is None:  # the context rows' dates and the H after the last
            after = end + H - len(dates)
            ahead = self._future(dates[:end], H)[1][H - after :] if after > 0 else None
            dates = dates[lo_scan : end + H]
            if ahead is not None:
                dates = dates.append(ahead)

        def rows(first: int) -> Windows:
            d = dates[first - lo_scan :] if self.step_ is None else dates
            return Windows(scaled[first:end], L, H, d, first)

        windows, scanned = rows(lo), rows(lo_scan)
        stack = hybrid.stack(
            {
                name: predict_last(m, windows, scanned)
                for name, m in zip(self.member_names_, self.members_, strict=True)
            }
        )
        feats = None
        if self.router_.needs_features:
            feats, _ = window_features(windows.x, stack, self.periods_, self.member_names_)
        keep = np.asarray(origins) - (lo + L - 1)
        combined = hybrid.combined_forecast(self.router_, stack, feats)[keep]
        weights = np.asarray(self.router_.step_weights(stack, feats))[keep]
        return combined, stack[:, keep], weights
