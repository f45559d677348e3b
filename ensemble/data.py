"""Datasets, splits, scaling and windows under the Time-LLM / Time-Series-Library protocol.

The protocol (docs/protocol.md), which every number this project publishes depends on:

* ETTh1/ETTh2: train rows ``[0, 8640)``, val ``[8640 - L, 11520)``, test ``[11520 - L, 14400)``;
  ETTm1/ETTm2 the same times four. Any other CSV: 70 % / 10 % / 20 % of the rows, with
  val and test starting ``L`` rows earlier so that their first window's input reaches back
  into the previous split (targets never overlap).
* A standard scaler fitted on the train rows only.
* Windows: input ``x = rows[t : t + L]``, target ``y = rows[t + L : t + L + H]`` for every
  ``t`` (stride 1, no ``drop_last``): a split of ``T`` rows has ``T - L - H + 1`` windows.

Windows are strided views over one contiguous array, never copies: ETTm1 at L=512 is
34k windows x 7 channels, which as copies would be 34k x 512 x 7 x 8 bytes = 1 GB.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble.errors import UserError

log = logging.getLogger(__name__)

DATA_ENV = "HYBRID_FORECAST_DATA"

# name -> (path under the data directory, split rule)
DATASETS: dict[str, tuple[str, str]] = {
    "ETTh1": ("ETT-small/ETTh1.csv", "ett_hour"),
    "ETTh2": ("ETT-small/ETTh2.csv", "ett_hour"),
    "ETTm1": ("ETT-small/ETTm1.csv", "ett_minute"),
    "ETTm2": ("ETT-small/ETTm2.csv", "ett_minute"),
    "weather": ("weather/weather.csv", "ratio"),
    "illness": ("illness/national_illness.csv", "ratio"),
    "exchange_rate": ("exchange_rate/exchange_rate.csv", "ratio"),
}

FEATURES = ("M", "S", "MS")


@dataclass(frozen=True)
class Dataset:
    """A loaded, validated multivariate series (raw values, before scaling).

    Attributes:
        name: dataset name (a registered name, or the CSV file's stem).
        values: [T, C] float64 raw values; for ``features`` S only the target column,
            otherwise all columns with the target last (as the reference loaders order them).
        columns: the C column names, in the order of ``values``.
        dates: [T] timestamps.
        freq: pandas frequency string inferred from the dates ('h', '15min', ...) or None.
        target: name of the target column.
        features: 'M' (all channels in, all out), 'S' (target only), 'MS' (all in, target out).
        split_rule: 'ett_hour', 'ett_minute' or 'ratio'.
        path: the file the data came from.
        sha256: the file's SHA-256 (hex), so a result names exactly which bytes made it.
        published: for a registered dataset, whether the file is the published one
            (its sum in `ensemble.download.SHA256`); None for any other CSV.
    """

    name: str
    values: np.ndarray
    columns: list[str]
    dates: pd.DatetimeIndex
    freq: str | None
    target: str
    features: str
    split_rule: str
    path: Path
    sha256: str = ""
    published: bool | None = None

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.values.shape[1])

    @property
    def target_index(self) -> int:
        return self.columns.index(self.target)


class StandardScaler:
    """Per-channel standardisation, fitted on the train rows only."""

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.mean = mean
        self.std = std

    def fit(self, x: np.ndarray, columns: list[str] | None = None) -> StandardScaler:
        """x: [T, C]; ``columns`` names the channels in errors.

        Raises:
            UserError: a channel whose mean or spread overflows float64 (finite values
                near 1e307, or 1e160 squared): every scaled value would be inf or NaN.
        """
        with np.errstate(over="ignore", invalid="ignore"):  # refused below, with a column
            self.mean = x.mean(axis=0)
            std = x.std(axis=0)
            _refuse_unscalable(x, self.mean, std, columns)
            # A constant channel would divide by zero; scale it by 1 instead (sklearn does
            # the same). Rounding leaves a constant 0.1 with a std of ~1e-14, not 0, and a
            # later 0.2 would scale to ~1e13: compare the variance with the rounding error
            # of the sums (sklearn's bound for constant features).
            n, eps = x.shape[0], np.finfo(np.float64).eps
            var = std**2
            constant = var <= n * eps * var + (n * eps * np.abs(self.mean)) ** 2
        self.std = np.where(constant, 1.0, std)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """x: [..., C] -> [..., C]."""
        return (x - self.mean) / self.std

    def inverse_transform(
        self, x: np.ndarray, channels: slice | list[int] | None = None
    ) -> np.ndarray:
        """x: [..., C'] scaled -> raw units; ``channels`` selects the scaler's columns if C' < C."""
        sel = slice(None) if channels is None else channels
        return x * self.std[sel] + self.mean[sel]


def _refuse_unscalable(
    x: np.ndarray, mean: np.ndarray, std: np.ndarray, columns: list[str] | None, where: str = ""
) -> None:
    """UserError naming the first channel whose mean or standard deviation is not finite."""
    bad = ~(np.isfinite(mean) & np.isfinite(std))
    if not bad.any():
        return
    c = int(np.flatnonzero(bad)[0])
    name = repr(columns[c]) if columns is not None else f"{c + 1}"
    if not np.isfinite(x[:, c]).all():  # the loader refuses these first; other callers
        raise UserError(f"{where}column {name} holds NaN or inf; fix or fill those values")
    peak = float(np.max(np.abs(x[:, c])))
    raise UserError(
        f"{where}column {name} holds values too large to standardise (up to {peak:.3g}; "
        f"its mean or standard deviation overflows); rescale the column, e.g. divide it "
        f"by 1e{int(np.floor(np.log10(peak)))}"
    )


def sliding(data: np.ndarray, length: int) -> np.ndarray:
    """Read-only strided view of all windows: data [T, C] -> [T - length + 1, length, C]."""
    return np.lib.stride_tricks.sliding_window_view(data, length, axis=0).transpose(0, 2, 1)


@dataclass(frozen=True)
class Windows:
    """The input side of a split's forecast windows, as members see them at predict time.

    ``context`` holds exactly the rows that are the input of some window, so no target
    value of the last ``pred_len`` rows is visible. Causal members (ARIMA's filter) may
    scan ``context`` left to right; others use ``x``.

    Attributes:
        context: [W + L - 1, C] scaled rows.
        seq_len: L.
        pred_len: H.
        dates: [W + L - 1 + H] timestamps of the context rows and of the horizon after it
            (for calendar features of the forecast steps).
        start: index of ``context[0]`` in the full dataset's rows.
    """

    context: np.ndarray
    seq_len: int
    pred_len: int
    dates: pd.DatetimeIndex
    start: int = 0

    @property
    def n(self) -> int:
        return int(self.context.shape[0] - self.seq_len + 1)

    @property
    def x(self) -> np.ndarray:
        """[W, L, C] strided view."""
        return sliding(self.context, self.seq_len)

    @property
    def origins(self) -> np.ndarray:
        """[W] index into ``context`` of each window's last input row."""
        return np.arange(self.seq_len - 1, self.context.shape[0])


@dataclass(frozen=True)
class Split:
    """One contiguous, scaled part of the series (train, val or test).

    Attributes:
        name: 'train', 'val' or 'test'.
        data: [T_split, C] scaled rows (val and test include the L rows of lookback before
            their first target).
        dates: [T_split] timestamps.
        start: index of ``data[0]`` in the full dataset's rows.
        seq_len, pred_len: L and H.
        columns: channel names.
        freq: inferred pandas frequency or None.
        loss_channels: the channels the window nets' and LightGBM's loss and early
            stopping use: the target under MS, as the Time-Series-Library's ``f_dim = -1``
            does; None: all. Members still read every channel as input, and Time-LLM
            trains on all of them (docs/timellm.md, deviation 16).
    """

    name: str
    data: np.ndarray
    dates: pd.DatetimeIndex
    start: int
    seq_len: int
    pred_len: int
    columns: list[str]
    freq: str | None = None
    loss_channels: tuple[int, ...] | None = None

    @property
    def n_windows(self) -> int:
        return max(0, int(self.data.shape[0] - self.seq_len - self.pred_len + 1))

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[1])

    def windows(self) -> Windows:
        """The input side of every window (targets not included)."""
        t_ctx = self.data.shape[0] - self.pred_len
        return Windows(
            context=self.data[:t_ctx],
            seq_len=self.seq_len,
            pred_len=self.pred_len,
            dates=self.dates,
            start=self.start,
        )

    def inputs(self) -> np.ndarray:
        """[W, L, C] strided view of the inputs."""
        return sliding(self.data[: self.data.shape[0] - self.pred_len], self.seq_len)

    def targets(self) -> np.ndarray:
        """[W, H, C] strided view of the targets."""
        return sliding(self.data[self.seq_len :], self.pred_len)


@dataclass(frozen=True)
class Splits:
    """Train / val / test splits of one dataset, with the scaler fitted on train rows.

    Attributes:
        borders: ((b1_train, b1_val, b1_test), (b2_train, b2_val, b2_test)) row borders.
        eval_channels: channels the metrics use (all for M/S, the target for MS).
    """

    dataset: Dataset
    train: Split
    val: Split
    test: Split
    scaler: StandardScaler
    borders: tuple[tuple[int, int, int], tuple[int, int, int]]
    eval_channels: list[int] = field(default_factory=list)

    def __iter__(self):
        return iter((self.train, self.val, self.test))

    def window_counts(self) -> dict[str, int]:
        return {s.name: s.n_windows for s in self}


# ---------------------------------------------------------------------------- loading


def data_dir_from(arg: str | os.PathLike | None) -> Path:
    """--data-dir, else $HYBRID_FORECAST_DATA, else ./dataset."""
    if arg:
        return Path(arg)
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path("dataset")


def _registered_stems() -> dict[str, str]:
    """Lower-case file stems -> registered names: the name itself and its file's stem
    (the official repo's illness file is national_illness.csv)."""
    stems = {k.lower(): k for k in DATASETS}
    stems.update({Path(rel).stem.lower(): k for k, (rel, _) in DATASETS.items()})
    return stems


def resolve_path(
    name: str | None, data_path: str | os.PathLike | None, data_dir
) -> tuple[str, Path, str]:
    """Return (dataset name, file path, split rule) for a registered name or a CSV path."""
    if data_path:
        path = Path(data_path)
        if name and name in DATASETS and not path.exists():
            path = data_dir_from(data_dir) / path
        # A file named like a registered dataset (the official repo's ETT-small/ETTh1.csv)
        # is that dataset: it gets its split, or its results would sit beside published
        # ETTh1 numbers while coming from another split.
        named = _registered_stems().get(path.stem.lower())
        if name and named and named != name:
            raise UserError(
                f"--dataset {name} with --data-path {path.name}, which is {named}'s file: pass "
                f"--dataset {named}, or leave --dataset out, so the results carry its name"
            )
        label = name or named or path.stem  # etth1.csv is ETTh1 too, with its split
        rule = DATASETS[label][1] if label in DATASETS else "ratio"
        return label, path, rule
    if not name:
        raise UserError(
            "no data given: pass --dataset NAME (one of "
            + ", ".join(DATASETS)
            + ") or --data-path FILE.csv"
        )
    if name not in DATASETS:
        close = [k for k in DATASETS if k.lower() == name.lower()]
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(
            f"unknown dataset {name!r}{hint}: choose one of {', '.join(DATASETS)}, or pass any CSV with --data-path FILE"
        )
    rel, rule = DATASETS[name]
    return name, data_dir_from(data_dir) / rel, rule


def _text_encoding(path: Path, probe: int = 1 << 16) -> str:
    """UTF-8, or GB18030 where the file's first 64 KiB are not UTF-8 but are GB18030: Excel
    on a Chinese Windows saves "CSV (comma delimited)" in GBK (a subset), and read as
    UTF-8 its Chinese headers would become U+FFFD and no --target could name them. A file
    that is neither stays UTF-8, its bad bytes replaced."""
    import codecs

    with open(path, "rb") as fh:
        head = fh.read(probe)
    for encoding in ("utf-8", "gb18030"):
        try:  # incremental: a character cut at the end of the probe is no error
            codecs.getincrementaldecoder(encoding)().decode(head, final=False)
        except UnicodeDecodeError:
            continue
        return encoding
    return "utf-8"


def _csv_dialect(path: Path, encoding: str = "utf-8") -> dict[str, str]:
    """read_csv's separator and decimal mark, from the header and the first 50 data rows.

    Spreadsheets in many locales save ';'-separated files with decimal commas; read as
    ','-separated they would be one column. Comma-separated files get pandas' defaults.
    """
    with open(path, encoding=encoding, errors="replace") as fh:
        header = fh.readline()
        rows = [fh.readline() for _ in range(50)]
    # the most frequent of the three in the header ("date;temp, C;OT" is ';'-separated)
    counts = {sep: header.count(sep) for sep in (",", ";", "\t")}
    sep = max(counts, key=counts.get)
    if counts[sep] == 0 or sep == ",":
        return {}
    # a decimal comma may first appear after rows of whole numbers
    decimal = "," if sep == ";" and any(re.search(r"\d,\d", r) for r in rows) else "."
    return {"sep": sep, "decimal": decimal}


def parse_dates(col: pd.Series, where: str, *, file_lines: bool = True) -> pd.DatetimeIndex:
    """Timestamps from a column of date strings (or datetimes), refusing what would be wrong.

    Numbers are refused rather than read as nanoseconds since 1970 (pandas' reading,
    which makes an hourly series look like a 1 ns one). All values must share one
    format: pandas infers it from the first value.

    Args:
        col: the time column.
        where: what to name in errors, e.g. "data.csv: column 'date'".
        file_lines: also give the file line of a bad row (a CSV with one header line).

    Raises:
        UserError: numbers, or a value that does not parse, named with its row.
    """
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        head = ", ".join(map(str, col.head(3).tolist()))
        raise UserError(
            f"{where} holds numbers ({head}, ...), not timestamps; write dates such as "
            "2016-07-01 00:00:00 (epoch seconds convert with pandas.to_datetime(x, unit='s'))"
        )
    dates = _to_datetime(col)
    if dates.isna().any():
        row = int(np.flatnonzero(dates.isna().to_numpy())[0])
        fix = (
            f"; the rows before are written like {col.iloc[0]!r}: use that one format throughout"
            if row > 0 and pd.notna(col.iloc[row])
            else ""
        )
        line = f" (line {row + 2})" if file_lines else ""
        raise UserError(
            f"{where}: unreadable timestamp {col.iloc[row]!r} at row {row + 1}{line}{fix}"
        )
    return pd.DatetimeIndex(dates)


_DAY_MONTH = re.compile(r"^\s*\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")


def _to_datetime(col: pd.Series) -> pd.Series:
    """Timestamps (NaT where unreadable), settling what pandas' first-value guess gets wrong.

    * ``01.02.2000`` is 1 February in most of the world: when the values start with day
      and month, both readings are tried and the one that reads more rows, then runs
      forward, then leaves fewer gaps in its own frequency wins (monthly data read
      month-first became Jan 1, Jan 2, ... Jan 12 of each year, with a gap warning only).
    * Offsets that change (``+01:00`` then ``+02:00`` across DST) are one timeline in UTC.
    """
    try:
        with warnings.catch_warnings():  # pandas 2.2 warns of mixed offsets, 3 refuses them
            warnings.simplefilter("ignore", FutureWarning)
            month_first = pd.to_datetime(col, errors="coerce")
    except ValueError:  # "Mixed timezones detected"
        return pd.to_datetime(col, errors="coerce", utc=True)
    if not pd.api.types.is_datetime64_any_dtype(month_first):  # pandas 2.2: objects
        return pd.to_datetime(col, errors="coerce", utc=True)
    first = col.dropna().astype(str).head(1)
    if first.empty or not _DAY_MONTH.match(first.iloc[0]):
        return month_first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas' "could not infer format" chatter
        day_first = pd.to_datetime(col, errors="coerce", dayfirst=True)

    def score(d: pd.Series) -> tuple[int, bool, int]:
        ok = pd.DatetimeIndex(d.dropna())
        gaps = len(find_gaps(ok, infer_freq(ok))) if ok.is_monotonic_increasing else 0
        return (int(ok.size), bool(ok.is_monotonic_increasing), -gaps)

    return day_first if score(day_first) > score(month_first) else month_first


def _find_date_column(df: pd.DataFrame, path: Path) -> str:
    for col in df.columns:
        if str(col).strip().lower() in ("date", "datetime", "timestamp", "time", "ds"):
            return col
    first = df.columns[0]
    if pd.api.types.is_string_dtype(df[first]) or df[first].dtype == object:  # pandas 3: str
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas' "could not infer format" chatter
            parsed = _to_datetime(df[first].head(20))  # day-first (13.01.2015) too
        if parsed.notna().all():
            return first
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        bad = df[first].iloc[row]
        if pd.isna(bad) and parsed.notna().any():  # dates with a hole, not another column
            raise UserError(
                f"{path}: the date column {first!r} is empty at line {row + 2}; fill in that "
                "timestamp or drop the row"
            )
        raise UserError(
            f"{path}: no date column named date/time/timestamp, and the first column "
            f"{first!r} holds {bad!r} (line {row + 2}), which is not a date; name the date "
            "column 'date' (or write its timestamps as 2016-07-01 00:00)"
        )
    raise UserError(
        f"{path}: no date column found (columns: {', '.join(map(str, df.columns[:8]))}...); "
        "name the timestamp column 'date' or put it first"
    )


def infer_freq(dates: pd.DatetimeIndex) -> str | None:
    """The series' sampling frequency as a pandas offset string, robust to a few gaps."""
    if len(dates) < 3:
        return None
    try:
        with warnings.catch_warnings():  # pandas 3 announces an offset return type; we keep strings
            warnings.simplefilter("ignore")
            freq = pd.infer_freq(dates[: min(len(dates), 2000)])
    except (TypeError, ValueError):
        freq = None
    if freq:
        return freq if isinstance(freq, str) else freq.freqstr
    # pandas does not infer semi-monthly steps; the most common step (14 or 15 days) would
    # make a 26- or 24-step year out of them
    head = dates[: min(len(dates), 2000)]
    day, month_end = head.day, head.is_month_end
    if (day == 1).any() and (day == 15).any() and ((day == 1) | (day == 15)).all():
        return "SMS"
    if month_end.any() and (day == 15).any() and (month_end | (day == 15)).all():
        return "SME"
    # calendars and day-length steps on the wall clock: a local day is 23 or 25 hours at a
    # daylight-saving change, and the absolute step would drift off midnight
    head = dates[: min(len(dates), 5000)]
    local = head.tz_localize(None) if head.tz is not None else head
    calendar = _calendar_freq(local)
    if calendar is not None:
        return calendar
    ns = local.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    diffs = np.diff(ns)
    diffs = diffs[diffs > 0]  # repeated timestamps are not a frequency
    if len(diffs) == 0:
        return None
    values, counts = np.unique(diffs, return_counts=True)
    step = int(values[counts.argmax()])  # the most common step...
    odd = int(np.count_nonzero(diffs % step))
    if odd > max(1, len(diffs) // 100):
        # ... unless more than a stray few steps are not multiples of it (daily data with
        # 1- and 2-day steps; not hourly data with one clock shift of 30 min): their
        # common divisor, if the dates fill at least half of its grid
        divisor = int(np.gcd.reduce(diffs))
        if (ns[-1] - ns[0]) // divisor + 1 <= 2 * len(ns):
            step = divisor
    day = pd.Timedelta("1D").value
    if step % day == 0:  # "D" also keeps local midnights across a daylight-saving change
        return f"{step // day}D" if step > day else "D"
    try:
        return pd.tseries.frequencies.to_offset(pd.Timedelta(step)).freqstr
    except ValueError:
        return None


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
# Offsets of uneven length, coarsest last; anchored variants cover every phase.
_CALENDAR_FREQS = (
    ["B"]
    + [f"W-{d}" for d in ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")]
    + ["MS", "ME", "BMS", "BME"]
    + [f"QS-{m}" for m in _MONTHS[:3]]
    + [f"QE-{m}" for m in ("DEC", "JAN", "FEB")]
    + [f"YS-{m}" for m in _MONTHS]
    + [f"YE-{m}" for m in _MONTHS]
)


def _calendar_freq(dates: pd.DatetimeIndex) -> str | None:
    """The calendar offset (business day, week, month, quarter, year) every date lies on,
    for series with gaps that ``pd.infer_freq`` gives up on.

    Without it, business days with holidays or months with one missing fall back to the
    most common step as a fixed length, and the dates ``predict`` writes drift: a "24h"
    step puts forecasts on weekends, "744h" moves monthly ones off the 1st. Among the
    offsets every date lies on, the one with the fewest steps over the span wins (the
    data's own spacing); at most half of those steps may be missing.
    """
    if not dates.is_unique or len(dates) < 3:
        return None
    best, best_steps = None, 2 * len(dates) + 1
    with warnings.catch_warnings():  # some offsets apply element-wise, with a warning
        warnings.simplefilter("ignore")
        for name in _CALENDAR_FREQS:
            offset = pd.tseries.frequencies.to_offset(name)
            if not ((dates + offset) - offset == dates).all():  # cheap first filter
                continue
            grid = pd.date_range(dates[0], dates[-1], freq=offset)
            # every date a grid point (also at its time of day: weekday hours are not "B")
            if len(grid) < best_steps and (grid.get_indexer(dates) >= 0).all():
                best, best_steps = name, len(grid)
    return best


def _fixed_step(dates: pd.DatetimeIndex, offset) -> int | None:
    """The step of ``offset`` in nanoseconds where it has one fixed length on ``dates``;
    None for calendar offsets (B, MS...) and for whole days on tz-aware dates (a local
    day is 23 or 25 hours at a daylight-saving change)."""
    try:
        step = pd.Timedelta(offset).value
    except ValueError:  # uneven calendar offsets
        return None
    return None if dates.tz is not None and step % pd.Timedelta("1D").value == 0 else step


def off_grid(dates: pd.DatetimeIndex, freq: str) -> np.ndarray:
    """[T] bool: the dates that are not on the ``freq`` grid through the first date."""
    offset = pd.tseries.frequencies.to_offset(freq)
    step = _fixed_step(dates, offset)
    if step is None:  # few points: calendar offsets are days or longer
        return pd.date_range(dates[0], dates[-1], freq=offset).get_indexer(dates) < 0
    ns = dates.to_numpy(dtype="datetime64[ns]").astype(np.int64)  # no grid of 1e8 points
    return (ns - ns[0]) % step != 0


def find_gaps(dates: pd.DatetimeIndex, freq: str | None) -> np.ndarray:
    """Rows before which the ``freq`` grid misses at least one timestamp.

    Fixed-length frequencies compare consecutive steps with the step; calendar ones
    (``B``, ``MS``..., and days on tz-aware dates) place the dates on the grid between
    the first and the last.
    """
    if freq is None or len(dates) < 2:
        return np.zeros(0, dtype=np.int64)
    offset = pd.tseries.frequencies.to_offset(freq)
    step = _fixed_step(dates, offset)
    if step is None:
        grid = pd.date_range(dates[0], dates[-1], freq=offset)
        position = grid.get_indexer(dates)
        if (position < 0).any():  # dates off the grid: no gap count means anything
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(np.diff(position) > 1) + 1
    ns = dates.to_numpy(dtype="datetime64[ns]").astype(np.int64)  # whatever the index's unit
    return np.flatnonzero(np.diff(ns) > step) + 1


def load_dataset(
    name: str | None = None,
    *,
    data_path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    features: str = "M",
    target: str | None = None,
    fill: str | None = None,
) -> Dataset:
    """Load and validate a dataset.

    Args:
        name: a registered dataset (ETTh1, ETTh2, ETTm1, ETTm2, weather, illness,
            exchange_rate), or None with ``data_path``.
        data_path: any CSV with a date column; the 70/10/20 split rule applies unless
            ``name`` is a registered dataset.
        data_dir: directory holding ``ETT-small/``, ``weather/``...; default
            ``$HYBRID_FORECAST_DATA`` then ``./dataset``.
        features: 'M', 'S' or 'MS'.
        target: target column (default 'OT' if present, else the last column).
        fill: None (NaN/inf is an error) or 'ffill' (forward fill, explicit opt-in).

    Raises:
        UserError: any problem the user can fix, with a one-line explanation.
    """
    if features not in FEATURES:
        raise UserError(
            f"unknown --features {features!r}: use M (multivariate), S (univariate target) or MS"
        )
    if fill not in (None, "ffill"):
        raise UserError(f"unknown --fill {fill!r}: the only filling offered is 'ffill'")
    ds_name, path, rule = resolve_path(name, data_path, data_dir)
    if not path.is_file():
        how = (
            f"run `hybrid-forecast data download {ds_name} --data-dir {path.parents[1] if ds_name in DATASETS else 'DIR'}`"
            if ds_name in DATASETS
            else "check the path"
        )
        raise UserError(
            f"data file not found: {path}; {how}, or point --data-dir / ${DATA_ENV} at the folder holding it"
        )
    df = _read_csv(path)
    date_col = _find_date_column(df, path)
    dates = _checked_dates(df[date_col], date_col, path)
    values, cols, target = _channels(df, date_col, features, target, fill, path)

    # Finite but huge values (1e307) pass `_channels`' check and overflow every statistic
    # downstream (scaling, periodicity): refused here, for every command that loads data.
    with np.errstate(over="ignore", invalid="ignore"):
        _refuse_unscalable(
            values, values.mean(axis=0), values.std(axis=0), [str(c) for c in cols], f"{path}: "
        )

    freq = infer_freq(dates)
    gaps = find_gaps(dates, freq)
    if len(gaps):
        row = int(gaps[0])
        log.warning(
            "%s: %d gap(s) in the %s timestamps, first before row %d (%s); rows used as they are",
            path.name,
            len(gaps),
            freq,
            row + 1,
            dates[row],
        )
    digest, published = _provenance(ds_name, path)
    return Dataset(
        name=ds_name,
        values=values,
        columns=[str(c) for c in cols],
        dates=dates,
        freq=freq,
        target=str(target),
        features=features,
        split_rule=rule,
        path=path,
        sha256=digest,
        published=published,
    )


def _read_csv(path: Path) -> pd.DataFrame:
    """The CSV as a frame: its encoding and dialect guessed, header names stripped, a
    saved index column dropped.

    Raises:
        UserError: not a readable CSV, or no date and value column or no rows.
    """
    try:
        encoding = _text_encoding(path)
        if encoding != "utf-8":
            log.info("%s: not UTF-8; read as %s (a GBK file from Excel, say)", path.name, encoding)
        df = pd.read_csv(
            path, encoding=encoding, encoding_errors="replace", **_csv_dialect(path, encoding)
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    # "date, OT" headers: names as written, without the space after the comma
    df.columns = [c.strip() if isinstance(c, str) else c for c in df.columns]
    saved_index = [c for c in df.columns if re.fullmatch(r"Unnamed: \d+", str(c))]
    if saved_index:  # DataFrame.to_csv kept the index: a row counter, not a channel
        log.warning("%s: column(s) %s without a header dropped", path.name, saved_index)
        df = df.drop(columns=saved_index)
    if df.shape[0] == 0 or df.shape[1] < 2:
        raise UserError(f"{path}: needs a date column and at least one value column, with rows")
    return df


def _checked_dates(column: pd.Series, date_col: str, path: Path) -> pd.DatetimeIndex:
    """The parsed timestamps, refused where they go backwards (duplicates: a warning).

    Raises:
        UserError: unreadable dates, or a timestamp before the one above it.
    """
    dates = parse_dates(column, f"{path}: column {date_col!r}")
    diffs = np.diff(
        dates.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    )  # ns, whatever the index's unit
    if (diffs < 0).any():
        row = int(np.flatnonzero(diffs < 0)[0]) + 1
        raise UserError(
            f"{path}: timestamps go backwards at row {row + 1} (line {row + 2}: {dates[row]} after {dates[row - 1]}); sort the file by date"
        )
    n_dup = int((diffs == 0).sum())
    if n_dup:
        row = int(np.flatnonzero(diffs == 0)[0]) + 1
        log.warning(
            "%s: %d duplicate timestamp(s), first %s at row %d; rows used as they are",
            path.name,
            n_dup,
            dates[row],
            row + 1,
        )
    return dates


def _channels(
    df: pd.DataFrame,
    date_col: str,
    features: str,
    target: str | None,
    fill: str | None,
    path: Path,
) -> tuple[np.ndarray, list, str]:
    """The value columns as [T, C] float64, target last (as the reference loaders order
    the channels; the target alone under S), with the target's name.

    Raises:
        UserError: a non-numeric column, an unknown target, or NaN/inf that ``fill`` does
            not remove.
    """
    value_cols = [c for c in df.columns if c != date_col]
    for col in value_cols:
        if not pd.api.types.is_numeric_dtype(df[col]):
            num = pd.to_numeric(df[col], errors="coerce")
            bad = num.isna() & df[col].notna()
            row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
            raise UserError(
                f"{path}: column {col!r} is not numeric (row {row + 1}, line {row + 2}: {df[col].iloc[row]!r}); "
                "remove the column or fix the value"
            )
    if target is None:
        target = "OT" if "OT" in value_cols else value_cols[-1]
    elif target not in value_cols:
        raise UserError(
            f"{path}: target column {target!r} not found; columns are {', '.join(map(str, value_cols))}"
        )

    # Target last, as the reference loaders order the channels.
    if features == "S":
        cols = [target]
    else:
        cols = [c for c in value_cols if c != target] + [target]
    values = df[cols].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        if fill == "ffill":
            frame = pd.DataFrame(np.where(bad, np.nan, values)).ffill()
            values = frame.to_numpy()
            bad = ~np.isfinite(values)
        if bad.any():
            row, c = (int(v) for v in np.argwhere(bad)[0])
            what = "NaN" if np.isnan(values[row, c]) else "inf"
            extra = (
                " (leading values cannot be forward-filled)"
                if fill
                else "; fix the file or pass --fill ffill to forward-fill"
            )
            raise UserError(
                f"{path}: {what} in column {cols[c]!r} at row {row + 1} (line {row + 2}){extra}"
            )
    return values, cols, target


def _provenance(name: str, path: Path) -> tuple[str, bool | None]:
    """(SHA-256 of the file, whether it is the published file of registered ``name``).

    A file given a registered name that is not that dataset's published file (another
    series, or an edited copy) still gets the name and its split, as asked, but a warning
    and ``published: false`` in results.json: its numbers are not comparable with the
    published ones.
    """
    from ensemble.download import SHA256, sha256_file  # download imports this module

    digest = sha256_file(path)
    if name not in DATASETS:
        return digest, None
    published = digest == SHA256.get(DATASETS[name][0])
    if not published:
        log.warning(
            "%s is not the published %s file (its SHA-256 differs): the results are "
            "labelled %s and use its split, but are not comparable with published %s "
            "numbers",
            path,
            name,
            name,
            name,
        )
    return digest, published


# ---------------------------------------------------------------------------- splitting


def split_borders(
    n_rows: int, rule: str, seq_len: int
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Row borders (starts, ends) of train / val / test, as the reference loaders set them."""
    if rule in ("ett_hour", "ett_minute"):
        k = 4 if rule == "ett_minute" else 1
        month = 30 * 24 * k
        b1 = (0, 12 * month - seq_len, 16 * month - seq_len)
        b2 = (12 * month, 16 * month, 20 * month)
        if n_rows < b2[2]:
            raise UserError(
                f"the ETT split needs {b2[2]} rows but the file has {n_rows}; use the full ETT file, or rename the file (a CSV not named like a registered dataset gets the 70/10/20 split)"
            )
        return b1, b2
    num_train = int(n_rows * 0.7)
    num_test = int(n_rows * 0.2)
    num_val = n_rows - num_train - num_test
    b1 = (0, num_train - seq_len, n_rows - num_test - seq_len)
    b2 = (num_train, num_train + num_val, n_rows)
    return b1, b2


def make_splits(dataset: Dataset, seq_len: int, pred_len: int, *, percent: int = 100) -> Splits:
    """Split, scale (on train rows only) and wrap the dataset.

    Args:
        dataset: a loaded dataset.
        seq_len: lookback L.
        pred_len: horizon H.
        percent: few-shot, as the Time-LLM loaders do: the train split ends after the
            first ``percent`` % of its rows past the first lookback, ``(T_train - L) *
            percent // 100 + L`` rows, so its windows are a little fewer than ``percent``
            % (ETTh1, L=512, H=96, 10 %: 717 of 8033); the scaler still uses all train rows.

    Raises:
        UserError: the series is too short for ``seq_len + pred_len`` in some split.
    """
    if seq_len < 1 or pred_len < 1:
        raise UserError(f"--seq-len and --pred-len must be positive (got {seq_len}, {pred_len})")
    if not 0 < percent <= 100:
        raise UserError(f"--percent must be in (0, 100] (got {percent})")
    b1, b2 = split_borders(dataset.n_rows, dataset.split_rule, seq_len)
    for name, lo, hi in zip(("train", "val", "test"), b1, b2, strict=True):
        if lo < 0 or hi - lo < seq_len + pred_len:
            raise UserError(
                f"{dataset.name}: {dataset.n_rows} rows are too few for seq_len {seq_len} + pred_len {pred_len} "
                f"in the {name} split (rows {lo}..{hi}); lower --seq-len/--pred-len or use a longer series"
            )
    scaler = StandardScaler().fit(dataset.values[b1[0] : b2[0]], dataset.columns)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = scaler.transform(dataset.values)
    _refuse_float32_overflow(dataset, scaled, scaler)
    ends = list(b2)
    if percent < 100:
        ends[0] = (b2[0] - seq_len) * percent // 100 + seq_len
        if ends[0] - b1[0] < seq_len + pred_len:
            raise UserError(f"--percent {percent} leaves no training window; raise it")
    loss_channels = (dataset.target_index,) if dataset.features == "MS" else None
    splits = [
        Split(
            name=name,
            data=scaled[lo:hi],
            dates=dataset.dates[lo:hi],
            start=lo,
            seq_len=seq_len,
            pred_len=pred_len,
            columns=dataset.columns,
            freq=dataset.freq,
            loss_channels=loss_channels,
        )
        for name, lo, hi in zip(("train", "val", "test"), b1, ends, strict=True)
    ]
    for s in splits:  # views of one array: make accidental writes fail loudly
        s.data.flags.writeable = False
    eval_channels = (
        [dataset.target_index] if dataset.features == "MS" else list(range(dataset.n_channels))
    )
    return Splits(dataset, *splits, scaler=scaler, borders=(b1, b2), eval_channels=eval_channels)


def _refuse_float32_overflow(dataset: Dataset, scaled: np.ndarray, scaler: StandardScaler) -> None:
    """UserError for a scaled value that float32 (the members' forecasts) cannot hold,
    over 3.4e38 train standard deviations from the train mean: the statistics of the
    whole column are finite, but a later value is out of all proportion to the train rows."""
    limit = np.finfo(np.float32).max
    over = ~(np.abs(scaled) <= limit)  # NaN too
    if not over.any():
        return
    row, c = (int(v) for v in np.argwhere(over)[0])
    raise UserError(
        f"{dataset.path}: column {dataset.columns[c]!r} at row {row + 1} (line {row + 2}) "
        f"is {dataset.values[row, c]:.3g}, {abs(scaled[row, c]):.3g} train standard "
        f"deviations (std {scaler.std[c]:.3g}) from the train mean; rescale the column "
        "or fix that value"
    )


# ---------------------------------------------------------------------------- CLI glue


def add_data_arguments(parser) -> None:
    """The common data flags of every sub-command that reads a dataset."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", help=f"registered dataset: {', '.join(DATASETS)}")
    g.add_argument(
        "--data-path",
        help="any CSV with a date column (70/10/20 split; a file named like a registered "
        "dataset, e.g. ETTh1.csv, gets that dataset's split)",
    )
    g.add_argument(
        "--data-dir",
        help=f"folder holding ETT-small/, weather/... (default ${DATA_ENV}, else ./dataset)",
    )
    g.add_argument(
        "--features",
        choices=FEATURES,
        help="M (default): all channels; S: target only; MS: all in, target out",
    )
    g.add_argument("--target", help="target column (default OT, else the last column)")
    g.add_argument("--fill", choices=["ffill"], help="forward-fill NaN/inf instead of failing")


def dataset_from_args(args) -> Dataset:
    return load_dataset(
        args.dataset,
        data_path=args.data_path,
        data_dir=args.data_dir,
        features=args.features or "M",
        target=args.target,
        fill=args.fill,
    )
