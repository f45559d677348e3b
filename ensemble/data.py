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

A CSV's encoding, delimiter, date column and frequency are read in `ensemble.csvfile`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble import shell
from ensemble.cliargs import Once, refuse_empty
from ensemble.csvfile import (
    TIME_OF_DAY,
    checked_dates,
    find_date_column,
    find_gaps,
    infer_freq,
    join_time_of_day,
    read_csv,
)
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
        self.constant: np.ndarray | None = None  # [C] bool: scaled by 1, not by a spread

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
        self.constant = np.asarray(constant)
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
        return Path(arg).expanduser()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path("dataset")


def registered_stems() -> dict[str, str]:
    """Lower-case file stems -> registered names: the name itself and its file's stem
    (the official repo's illness file is national_illness.csv)."""
    stems = {k.lower(): k for k in DATASETS}
    stems.update({Path(rel).stem.lower(): k for k, (rel, _) in DATASETS.items()})
    return stems


def resolve_path(
    name: str | None,
    data_path: str | os.PathLike | None,
    data_dir,
    *,
    csv_hint: str = "pass any CSV with --data-path FILE",
) -> tuple[str, Path, str]:
    """Return (dataset name, file path, split rule) for a registered name or a CSV path;
    ``csv_hint`` tells an unknown name how the command takes a file instead."""
    if data_path:
        path = Path(data_path).expanduser()
        if name and name in DATASETS and not path.exists():
            path = data_dir_from(data_dir) / path
        # A file named like a registered dataset (the official repo's ETT-small/ETTh1.csv)
        # is that dataset: it gets its split, or its results would sit beside published
        # ETTh1 numbers while coming from another split.
        named = registered_stems().get(path.stem.lower())
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
            f"unknown dataset {name!r}{hint}: choose one of {', '.join(DATASETS)}, or {csv_hint}"
        )
    rel, rule = DATASETS[name]
    return name, data_dir_from(data_dir) / rel, rule


def _refuse_folder_or_file_in_path(path: Path, name: str, data_path) -> None:
    """Refuse a data path that is a folder, or that runs through a file (``--data-dir``
    given a CSV), with what to give instead; a path simply absent is left to the caller.

    Raises:
        UserError: the path is a folder, or a part of it is a file.
    """
    flag = "--data-path" if data_path else f"--data-dir / ${DATA_ENV}"
    if path.is_dir():
        if not data_path:  # a registered file's place taken by a folder
            raise UserError(f"{path} is a folder, not the {name} CSV file; move it away")
        found = sorted(path.glob("*.csv"))[:1] or sorted(path.glob("*/*.csv"))[:1]
        example = f", such as {found[0]}" if found else " (there is none in it)"
        held = [k for k, (rel, _) in DATASETS.items() if (path / rel).is_file()]
        other = f"; or pass --dataset {held[0]} --data-dir {path}" if held else ""
        raise UserError(f"{path} is a folder; --data-path needs a CSV file{example}{other}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(
                    f"{path} cannot exist: {parent} is a file, not a folder; check {flag}"
                    + ("" if data_path else f" (the folder holding {DATASETS[name][0]})")
                )
            return


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
        _refuse_folder_or_file_in_path(path, ds_name, data_path)
        how = "check the path"
        if ds_name in DATASETS and not data_path:  # found by name under the data folder
            download = ["hybrid-forecast", "data", "download", ds_name, "--data-dir"]
            how = f"run `{shell.join([*download, path.parents[1]])}`"
        raise UserError(
            f"data file not found: {path}; {how}, or point --data-dir / ${DATA_ENV} at the folder holding it"
        )
    df, date_col = read_table(path)
    return dataset_from_table(
        df,
        date_col,
        path,
        name=ds_name,
        split_rule=rule,
        features=features,
        target=target,
        fill=fill,
    )


def read_table(path: Path) -> tuple[pd.DataFrame, str]:
    """A CSV read as every command reads data: the frame and its date column (a separate
    time-of-day column joined to it)."""
    df = read_csv(path)
    date_col = find_date_column(df, path)
    return join_time_of_day(df, date_col, path), date_col


def dataset_from_table(
    df: pd.DataFrame,
    date_col: str,
    path: Path,
    *,
    name: str,
    split_rule: str,
    features: str = "M",
    target: str | None = None,
    fill: str | None = None,
) -> Dataset:
    """A ``read_table`` frame checked and turned into a Dataset: every column but the
    date is a channel (drop the others first).

    Raises:
        UserError: bad dates, a non-numeric column, an unknown target, NaN/inf that
            ``fill`` does not remove, values too large to scale.
    """
    dates = checked_dates(df[date_col], date_col, path)
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
    digest, published = _provenance(name, path)
    return Dataset(
        name=name,
        values=values,
        columns=[str(c) for c in cols],
        dates=dates,
        freq=freq,
        target=str(target),
        features=features,
        split_rule=split_rule,
        path=path,
        sha256=digest,
        published=published,
    )


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
            value = df[col].iloc[row]
            text = value if isinstance(value, str) else ""
            if re.fullmatch(r"\s*[-+]?\d+,\d+\s*", text):
                fix = (
                    "a decimal comma? Only ';'-separated files may use them: save the file "
                    "';'-separated or with decimal points"
                )
            elif re.fullmatch(TIME_OF_DAY, text):
                fix = (
                    f"a time of day: if it is each reading's time, join it with the date "
                    f"column {date_col!r} into one timestamp column (e.g. 2016-07-01 "
                    "00:00:00); if it is a measurement, write it as a number (minutes)"
                )
            else:
                fix = "remove the column or fix the value"
            raise UserError(
                f"{path}: column {col!r} is not numeric (row {row + 1}, line {row + 2}: "
                f"{value!r}); {fix}"
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
                "; leading values cannot be forward-filled: delete the leading rows or fill "
                "them in the file"
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
    (``make_splits``) and ``published: false`` in results.json: its numbers are not comparable with the
    published ones.
    """
    from ensemble.download import SHA256, sha256_file  # download imports this module

    digest = sha256_file(path)
    if name not in DATASETS:
        return digest, None
    return digest, digest == SHA256.get(DATASETS[name][0])


def _warn_unpublished(dataset: Dataset) -> None:
    """Said once the split has succeeded, so that a refusal stays one line."""
    if dataset.published is False:
        log.warning(
            "%s is not the published %s file (its SHA-256 differs): the results are "
            "labelled %s and use its split, but are not comparable with published %s "
            "numbers",
            dataset.path,
            dataset.name,
            dataset.name,
            dataset.name,
        )


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


def make_splits(
    dataset: Dataset, seq_len: int, pred_len: int, *, percent: int = 100, warn: bool = True
) -> Splits:
    """Split, scale (on train rows only) and wrap the dataset.

    Args:
        dataset: a loaded dataset.
        seq_len: lookback L.
        pred_len: horizon H.
        percent: few-shot, as the Time-LLM loaders do: the train split ends after the
            first ``percent`` % of its rows past the first lookback, ``(T_train - L) *
            percent // 100 + L`` rows, so its windows are a little fewer than ``percent``
            % (ETTh1, L=512, H=96, 10 %: 717 of 8033); the scaler still uses all train rows.
        warn: log the columns whose scaled metrics mislead (`_warn_scale`) and a file
            given a registered name that is not its published file; `tune`'s trials split
            again what its start has warned about.

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
    if warn:
        _warn_scale(dataset, scaled, scaler)
    ends = list(b2)
    if percent < 100:
        ends[0] = (b2[0] - seq_len) * percent // 100 + seq_len
        if ends[0] - b1[0] < seq_len + pred_len:
            raise UserError(f"--percent {percent} leaves no training window; raise it")
    if warn:
        _warn_unpublished(dataset)
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


# Train standard deviations from the train mean past which a value is reported: the
# benchmark files stay under 200 (weather's -9999 wind readings), and a value this far
# out dominates the MSE, while float32 forecasts round it by 1e-3 or more.
FAR_FROM_TRAIN = 1e4


def _warn_scale(dataset: Dataset, scaled: np.ndarray, scaler: StandardScaler) -> None:
    """Warn, naming the column, where the scaled metrics will not mean what they seem: a
    channel constant over the train rows (scaled by 1, so its errors count in its own
    units) and a value ``FAR_FROM_TRAIN`` train standard deviations out."""

    constant = scaler.constant if scaler.constant is not None else np.zeros(len(scaler.std), bool)
    for c in np.flatnonzero(constant):
        log.warning(
            "%s: column %r is constant over the train rows (%.6g): it is scaled by 1, not by "
            "its spread, so its errors count in its own units wherever it is scored; "
            "drop the column if it carries nothing",
            dataset.path.name,
            dataset.columns[c],
            scaler.mean[c],
        )
    far = np.abs(scaled).max(axis=0)
    for c in np.flatnonzero((far > FAR_FROM_TRAIN) & ~constant):
        row = int(np.abs(scaled[:, c]).argmax())
        log.warning(
            "%s: column %r is %.3g train standard deviations from its train mean at row %d "
            "(line %d, value %.6g): its errors will dominate the MSE, and its float32 "
            "forecasts are rounded there; check that value and the column's train rows",
            dataset.path.name,
            dataset.columns[c],
            far[c],
            row + 1,
            row + 2,
            dataset.values[row, c],
        )


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


def add_data_arguments(parser, hints: dict[str, str] | None = None) -> None:
    """The common data flags of every sub-command that reads a dataset. Each is taken
    once: argparse would keep the last of ``--dataset ETTh1 --dataset ETTh2`` without a
    word. ``hints``: flag dest -> the advice a repeat gets instead of the default one."""
    hints = hints or {}
    advice = {
        "dataset": "this command reads one dataset: run it once per dataset",
        "data_path": "this command reads one file: run it once per file",
        "data_dir": "give one folder",
        "features": "choose one of M, S, MS",
        "target": "give one target column",
    } | hints
    g = parser.add_argument_group("data")
    g.add_argument(
        "--dataset",
        action=Once,
        hint=advice["dataset"],
        help=f"registered dataset: {', '.join(DATASETS)}",
    )
    g.add_argument(
        "--data-path",
        action=Once,
        hint=advice["data_path"],
        help="any CSV with a date column (70/10/20 split; a file named like a registered "
        "dataset, e.g. ETTh1.csv, gets that dataset's split)",
    )
    g.add_argument(
        "--data-dir",
        action=Once,
        hint=advice["data_dir"],
        help=f"folder holding ETT-small/, weather/... (default ${DATA_ENV}, else ./dataset)",
    )
    g.add_argument(
        "--features",
        action=Once,
        hint=advice["features"],
        choices=FEATURES,
        help="M (default): all channels; S: target only; MS: all in, target out",
    )
    g.add_argument(
        "--target",
        action=Once,
        hint=advice["target"],
        help="target column (default OT, else the last column)",
    )
    g.add_argument("--fill", choices=["ffill"], help="forward-fill NaN/inf instead of failing")


def dataset_from_args(args) -> Dataset:
    refuse_empty(args, ("dataset", "data_path", "data_dir", "target"))
    return load_dataset(
        args.dataset,
        data_path=args.data_path,
        data_dir=args.data_dir,
        features=args.features or "M",
        target=args.target,
        fill=args.fill,
    )
