"""Reading a CSV's time index: frequencies inferred through gaps, clock shifts and
calendars; repeated timestamps; day-first dates and changing offsets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def test_repeated_timestamps_are_not_a_frequency():
    # Every timestamp twice: the most common step is 0, which is no sampling frequency.
    from ensemble.csvfile import infer_freq

    dates = pd.DatetimeIndex(np.repeat(pd.date_range("2020-01-01", periods=50, freq="h"), 2))
    assert infer_freq(dates) == "h"


def test_semi_monthly_dates_get_a_24_step_year():
    # pandas infers no frequency here; the most common step (14 days) gave a 26-step year
    from ensemble.csvfile import infer_freq
    from periodicity import calendar_periods

    for freq in ("SMS", "SME"):
        dates = pd.date_range("2020-01-01", periods=60, freq=freq)
        assert infer_freq(dates) == freq and calendar_periods(infer_freq(dates)) == [24]
    # monthly on the 15th is not semi-monthly
    assert (
        infer_freq(pd.date_range("2020-01-15", periods=30, freq="MS") + pd.Timedelta(days=14))
        != "SMS"
    )


@pytest.mark.parametrize(
    ("freq", "start", "drop"),
    [
        ("B", "2021-01-01", ["2021-01-18", "2021-02-15", "2021-05-31"]),  # holidays
        ("MS", "1990-01-01", ["1994-03-01"]),
        ("ME", "1990-01-31", ["1994-03-31"]),
        ("W-WED", "1990-01-03", ["1991-01-02"]),
        ("QS-FEB", "1960-02-01", ["1970-05-01"]),
        ("YS-JAN", "1900-01-01", ["1950-01-01"]),
    ],
)
def test_calendar_frequency_survives_gaps(freq, start, drop):
    # pandas infers nothing once a step is missing; the most common step as a fixed length
    # ("24h", "744h") would put forecast dates on weekends or off the 1st of the month
    from ensemble.csvfile import find_gaps, infer_freq

    dates = pd.date_range(start, periods=120, freq=freq)
    dates = dates[~dates.isin(pd.to_datetime(drop))]
    assert pd.infer_freq(dates) is None
    assert infer_freq(dates) == freq
    gaps = find_gaps(dates, freq)
    assert len(gaps) == len(drop) and dates[gaps[0]] > pd.Timestamp(drop[0])


def test_fixed_steps_are_not_read_as_a_calendar():
    from ensemble.csvfile import find_gaps, infer_freq

    # weekday office hours lie on business days, but hours are the step
    hours = pd.date_range("2021-01-04", periods=24 * 7 * 8, freq="h")
    hours = hours[hours.day_of_week < 5].delete(100)
    assert infer_freq(hours) == "h"
    gaps = find_gaps(hours, "h")
    assert 100 in gaps and len(gaps) == 1 + 7  # the missing hour and 7 weekends
    days = pd.date_range("2021-01-01", periods=400, freq="D").delete(70)
    assert infer_freq(days) in ("D", "24h") and find_gaps(days, infer_freq(days)).tolist() == [70]
    # local days: the 25-hour day of a daylight-saving change is no gap, a missing day is
    local = pd.date_range("2021-10-01", periods=60, freq="D", tz="Europe/Berlin")
    assert find_gaps(local, "D").tolist() == [] and find_gaps(local.delete(40), "D").tolist() == [
        40
    ]


def test_one_clock_shift_does_not_halve_the_step():
    from ensemble.csvfile import find_gaps, infer_freq

    hours = pd.date_range("2020-01-01", periods=600, freq="h")
    shifted = hours[:300].append(hours[300:] + pd.Timedelta("30min"))  # one odd 90-min step
    assert infer_freq(shifted) == "h" and find_gaps(shifted, "h").tolist() == [300]
    # steps of 1 and 2 days, the 2-day ones more common: the data are daily
    steps = np.where(np.arange(299) % 3 == 0, 1, 2).cumsum()
    days = pd.DatetimeIndex(pd.Timestamp("2020-01-01") + pd.to_timedelta(steps, "D"))
    assert infer_freq(days) in ("D", "24h")


def test_day_first_and_changing_offset_dates():
    from ensemble.csvfile import infer_freq, parse_dates

    months = pd.date_range("2000-01-01", periods=36, freq="MS")
    got = parse_dates(pd.Series(months.strftime("%d.%m.%Y")), "x")
    assert (got == months).all() and infer_freq(got) == "MS"  # not Jan 1, Jan 2, ...
    us = parse_dates(pd.Series(months.strftime("%m/%d/%Y")), "x")
    assert (us == months).all()
    hours = pd.date_range("2000-01-05", periods=400, freq="h")
    assert (parse_dates(pd.Series(hours.strftime("%d.%m.%Y %H:%M")), "x") == hours).all()
    dst = pd.date_range("2020-03-28", periods=48, freq="h", tz="Europe/Berlin")
    got = parse_dates(pd.Series([t.isoformat() for t in dst]), "x")  # +01:00, then +02:00
    assert str(got.tz) == "UTC" and (got == dst.tz_convert("UTC")).all()


# ------------------------------------------------------------ the file as a whole


def _hourly(n: int = 300) -> pd.DataFrame:
    x = np.sin(2 * np.pi * np.arange(n) / 24).round(4) + 1.5
    dates = pd.date_range("2016-07-01", periods=n, freq="h")
    return pd.DataFrame({"date": dates.astype(str), "a": x, "b": x * 2, "OT": x + 3})


@pytest.mark.parametrize(
    "kind", ["iso", "saved-index", "day-first-semicolon", "numbers-only", "day-first-pipe"]
)
def test_a_file_without_a_header_line_is_refused(tmp_path, kind):
    # pandas named the channels after the first row's values ("5.827000141143799") and
    # lost that row; nothing said so
    from ensemble.csvfile import read_csv
    from ensemble.errors import UserError

    df, path = _hourly(), tmp_path / "no_header.csv"
    if kind == "iso":
        df.to_csv(path, header=False, index=False)
    elif kind == "saved-index":
        df.to_csv(path, header=False)
    elif kind == "day-first-semicolon":
        df["date"] = pd.to_datetime(df["date"]).dt.strftime("%d.%m.%Y %H:%M")
        df.to_csv(path, header=False, index=False, sep=";", decimal=",")
    elif kind == "numbers-only":
        df["date"] = pd.to_datetime(df["date"]).astype("int64") / 1e9 + 0.5
        df.to_csv(path, header=False, index=False)
    else:
        df["date"] = pd.to_datetime(df["date"]).dt.strftime("%d/%m/%Y %H:%M")
        df.to_csv(path, header=False, index=False, sep="|")
    with pytest.raises(UserError, match=r"the first line looks like data, not column names"):
        read_csv(path)


@pytest.mark.parametrize(
    "names",
    [["date", "0", "1", "OT"], ["date", "0.1", "0.5", "0.9"], ["Datum", "1", "2", "3"]],
)
def test_numeric_column_names_under_a_date_header_are_read(tmp_path, names):
    # exchange_rate.csv names its series 0..6; quantiles or sensor numbers are names too
    from ensemble.csvfile import read_csv

    df, path = _hourly(), tmp_path / "wide.csv"
    df.columns = names
    df.to_csv(path, index=False)
    got = read_csv(path)
    assert list(got.columns) == names and len(got) == len(df)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", r"the file is empty"),
        (b"\n\n", r"the file is empty"),
        (b"date,OT\n", r"has a header line but no rows"),
        (
            b"date\n2020-01-01\n2020-01-02\n",
            r"one column found \(date\).*commas, semicolons, tabs or \|",
        ),
    ],
)
def test_empty_and_one_column_files_say_so(tmp_path, content, match):
    from ensemble.csvfile import read_csv
    from ensemble.errors import UserError

    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match=match):
        read_csv(path)


def test_pipe_separated_files_are_read_and_pipes_in_names_are_not_separators(tmp_path):
    from ensemble.csvfile import read_csv

    df, path = _hourly(), tmp_path / "pipe.csv"
    df.to_csv(path, index=False, sep="|")
    pd.testing.assert_frame_equal(read_csv(path), df)
    # a comma file whose names hold more pipes than commas stays comma-separated
    df.columns = ["date", "a|b|c", "d|e", "OT"]
    df.to_csv(path, index=False)
    assert list(read_csv(path).columns) == ["date", "a|b|c", "d|e", "OT"]


@pytest.mark.parametrize("header", ["date,Temp (°C),note,OT", "日期,温度,note,OT"])
def test_a_stray_byte_in_a_utf8_file_does_not_turn_its_names_to_mojibake(tmp_path, header):
    # one "café" typed in cp1252 into a text column: cp1252 decodes any bytes, and the
    # whole file read as cp1252 named the columns æ—¥æœŸ, Temp (Â°C)
    from ensemble.csvfile import read_csv

    dates = pd.date_range("2020-01-01", periods=50, freq="h")
    rows = "".join(f"{t:%Y-%m-%d %H:%M:%S},{i * 0.5},ok,{i}\n" for i, t in enumerate(dates))
    data = (header + "\n" + rows).encode("utf-8").replace(b",ok,", b",caf\xe9,", 1)
    path = tmp_path / "stray.csv"
    path.write_bytes(data)
    assert list(read_csv(path).columns)[:2] == header.split(",")[:2]


def test_an_unnamed_index_over_number_names_is_a_header(tmp_path):
    # pandas' to_csv of an unnamed index: ",0.5,1.5" is a header, not a row of data
    from ensemble.csvfile import read_csv

    path = tmp_path / "saved.csv"
    path.write_text(",0.5,1.5\n0,1.0,2.0\n1,1.5,2.5\n", encoding="utf-8")
    assert list(read_csv(path).columns) == ["0.5", "1.5"]


# ------------------------------------------------------------ files that are no CSV text


def _packed(kind: str, text: bytes, path) -> bytes:
    import bz2
    import gzip
    import io
    import lzma
    import zipfile

    if kind == "gz":
        return gzip.compress(text)
    if kind == "bz2":
        return bz2.compress(text)
    if kind == "xz":
        return lzma.compress(text)
    if kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(path.stem, text)
        return buf.getvalue()
    return b"\x1f\x8b\x08garbage"  # a gzip file cut short


@pytest.mark.parametrize(
    ("kind", "what", "unpack"),
    [
        ("gz", "gzip-compressed", "gunzip -k"),
        ("bz2", "bzip2-compressed", "bunzip2 -k"),
        ("xz", "xz-compressed", "unxz -k"),
        ("zip", "a zip archive", "unzip"),
        ("cut", "gzip-compressed", "gunzip -k"),
    ],
)
def test_a_compressed_file_is_refused_in_one_line(tmp_path, kind, what, unpack):
    # pandas decompressed by the name (a cut .gz: EOFError, a bad .bz2: OSError
    # tracebacks) while the encoding and separator were guessed from the compressed
    # bytes: a valid .bz2 or .zip was refused as "the last line ... looks cut off"
    from ensemble.csvfile import read_csv
    from ensemble.errors import UserError

    path = tmp_path / f"x.csv.{'gz' if kind == 'cut' else kind}"
    text = _hourly().to_csv(index=False).encode()
    path.write_bytes(_packed(kind, text, path))
    with pytest.raises(UserError) as err:
        read_csv(path)
    assert str(err.value) == (
        f"{path} is {what}: unpack it first ({unpack} {path}) and give the CSV inside"
    )


def test_a_text_file_named_as_compressed_is_read_as_text(tmp_path):
    from ensemble.csvfile import read_csv

    df, path = _hourly(), tmp_path / "x.csv.gz"
    path.write_text(df.to_csv(index=False), encoding="utf-8")
    pd.testing.assert_frame_equal(read_csv(path), df)


def test_a_workbook_is_refused_as_not_a_csv(tmp_path):
    from ensemble.csvfile import read_csv
    from ensemble.errors import UserError

    path = tmp_path / "data.xlsx"
    path.write_bytes(_packed("zip", b"<xml/>", tmp_path / "sheet1.xml"))
    with pytest.raises(UserError, match=r"data.xlsx is a spreadsheet workbook, not a CSV: open"):
        read_csv(path)


def test_a_line_with_more_fields_is_named_with_the_fix(tmp_path):
    from ensemble.csvfile import read_csv
    from ensemble.errors import UserError

    path = tmp_path / "ragged.csv"
    lines = _hourly(30).to_csv(index=False).splitlines()
    lines[20] += ",4,5"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        read_csv(path)
    assert str(err.value) == (
        f"{path}: line 21 has 6 fields where the lines before it have 4 (a stray separator, "
        "or a value holding one without quotes); fix or delete that line"
    )


def test_a_binary_file_is_not_called_a_ragged_csv(tmp_path):
    from ensemble.csvfile import read_csv
    from ensemble.errors import UserError

    path = tmp_path / "binary.csv"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(UserError, match=r"binary.csv: not a text file \(binary bytes"):
        read_csv(path)


# ------------------------------------------------------------ dates the loader refuses


def test_an_empty_date_cell_says_to_fill_in_or_delete_the_row(tmp_path):
    from ensemble.data import load_dataset
    from ensemble.errors import UserError

    df, path = _hourly(), tmp_path / "hole.csv"
    df.loc[100, "date"] = None
    df.to_csv(path, index=False)
    with pytest.raises(UserError) as err:
        load_dataset(data_path=path)
    assert str(err.value) == (
        f"{path}: column 'date': no timestamp at row 101 (line 102); fill in or delete that row"
    )


@pytest.mark.parametrize(
    ("start", "row"),
    [("9999-12-01", 1), ("2262-04-10", 49), ("1677-09-20", 1)],
)
def test_dates_beyond_pandas_nanoseconds_are_refused_when_loading(tmp_path, start, row):
    # pandas 3 reads year 9999 (in microseconds): the run passed, its steps counted in
    # nanoseconds wrapped round to 1816, and `forecast` failed with OutOfBoundsDatetime
    from ensemble.data import load_dataset
    from ensemble.errors import UserError

    df, path = _hourly(100), tmp_path / "far.csv"
    dates = pd.date_range(start, periods=100, freq="h", unit="s")
    df["date"] = dates.strftime("%Y-%m-%d %H:%M:%S")
    df.to_csv(path, index=False)
    with pytest.raises(UserError) as err:
        load_dataset(data_path=path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: column 'date': timestamp {dates[row - 1]} at row {row} ")
    assert msg.endswith(
        "is outside the dates handled, 1677-09-21 00:12:44 .. 2262-04-11 23:47:16; check "
        "its year, or shift the dates into that range"
    )


def test_dates_up_to_the_last_nanosecond_day_load(tmp_path):
    from ensemble.data import load_dataset

    df, path = _hourly(100), tmp_path / "edge.csv"
    dates = pd.date_range(end="2262-04-11 23:00", periods=100, freq="h")
    df["date"] = dates.strftime("%Y-%m-%d %H:%M:%S")
    df.to_csv(path, index=False)
    assert load_dataset(data_path=path).dates[-1] == dates[-1]
