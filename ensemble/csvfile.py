"""Reading a user's CSV: its encoding and delimiter, the date column, the timestamps'
frequency, and where rows are missing or off the grid.

Anything a spreadsheet may save is read or refused in one line: GBK from a Chinese Excel,
';'-separated files with decimal commas, day-first dates, numbers that are not dates,
timestamps that go backwards. `ensemble.data` loads datasets through these.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble.errors import UserError

log = logging.getLogger("ensemble.data")  # the data layer's, as before the split


def read_csv(path: Path) -> pd.DataFrame:
    """The CSV as a frame: its encoding and dialect guessed, header names stripped, a
    saved index column dropped.

    Raises:
        UserError: not a readable CSV, an empty file, a first line of data rather than
            column names, or no date and value column or no rows.
    """
    _refuse_packed(path)
    try:
        encoding = _text_encoding(path)
        dialect = _csv_dialect(path, encoding)
        # compression=None: a text file named .gz is read as the text it is, as the
        # sniffers above read it (compressed bytes were refused by `_refuse_packed`)
        df = pd.read_csv(
            path, encoding=encoding, encoding_errors="replace", compression=None, **dialect
        )
    except pd.errors.EmptyDataError:  # no bytes, or blank lines only
        raise UserError(
            f"{path}: the file is empty (no header line, no rows); check that it was saved "
            "or copied completely"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(_unreadable(path, str(exc))) from None
    sep = dialect.get("sep", ",")
    names = _header_names(path, encoding, sep)  # as written, once
    if encoding in ("gb18030", "cp1252"):  # a guess: the names show whether it was right
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        # GB18030 names with no trace of cp1252 in them (the README's GBK files): quietly
        doubt = encoding == "cp1252" or _gb18030_signs("".join(names))[0] > 0
        log.log(
            logging.WARNING if doubt else logging.INFO,
            "%s: not UTF-8; read as %s, which gives the columns %s; if these look wrong, "
            "save the file as UTF-8",
            path.name,
            _ENCODING_NAMES[encoding],
            shown,
        )
    _refuse_data_as_header(path, encoding, names or [str(c) for c in df.columns], sep)
    _refuse_cut_last_line(path, encoding, sep, names)
    # "date, OT" headers: names as written, without the space after the comma
    df.columns = [c.strip() if isinstance(c, str) else c for c in df.columns]
    _refuse_repeated_names(path, names, df.shape[1])
    saved_index = [c for c in df.columns if re.fullmatch(r"Unnamed: \d+", str(c))]
    if saved_index:  # DataFrame.to_csv kept the index: a row counter, not a channel
        log.warning("%s: column(s) %s without a header dropped", path.name, saved_index)
        df = df.drop(columns=saved_index)
    if df.shape[1] < 2:
        found = ", ".join(map(str, df.columns)) or "none"
        raise UserError(
            f"{path}: one column found ({found[:60]}); a date column and at least one value "
            "column are needed, separated by commas, semicolons, tabs or |"
        )
    if df.shape[0] == 0:
        raise UserError(f"{path}: the file has a header line but no rows of data")
    return df


# Files whose first bytes say they are not text. The sniffers read a file's own bytes,
# so a compressed CSV was read as garbage (pandas, which decompresses by the file's name,
# gave EOFError tracebacks or a wrong "cut off" line), and is refused rather than guessed
_PACKED = (
    (b"\x1f\x8b", "gzip-compressed", ["gunzip", "-k"]),
    (b"BZh", "bzip2-compressed", ["bunzip2", "-k"]),
    (b"\xfd7zXZ\x00", "xz-compressed", ["unxz", "-k"]),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", ["unzstd"]),
    (b"PK\x03\x04", "a zip archive", ["unzip"]),
    (b"PK\x05\x06", "a zip archive", ["unzip"]),
)
_WORKBOOKS = (".xlsx", ".xlsm", ".xls", ".ods")  # zip archives (.xls: OLE) of sheets
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _refuse_packed(path: Path) -> None:
    """Refuse a compressed file or a spreadsheet workbook, by its first bytes.

    Raises:
        UserError: naming what it is and the command that unpacks it.
    """
    from ensemble import shell

    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith((b"PK", _OLE)) and path.suffix.lower() in _WORKBOOKS:
        raise UserError(
            f"{path} is a spreadsheet workbook, not a CSV: open it and save the sheet as "
            "CSV (Excel: Save as, CSV UTF-8)"
        )
    for magic, what, unpack in _PACKED:
        # bzip2's "BZh" is followed by its block size, 1 to 9 (a header may start "BZh")
        if head.startswith(magic) and (magic != b"BZh" or head[3:4] in b"123456789"):
            raise UserError(
                f"{path} is {what}: unpack it first ({shell.join([*unpack, path])}) and "
                "give the CSV inside"
            )


def _unreadable(path: Path, why: str) -> str:
    """The one line for a file pandas' parser refused: a line with more fields than the
    ones before it (a stray separator, an unquoted value holding one), or bytes that are
    no text at all."""
    why = why.splitlines()[0] if why else "unknown error"
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    # text has no NULs and few control characters; a binary file (an image, a
    # database) is full of both
    controls = sum(head.count(bytes([b])) for b in range(32) if b not in b"\t\n\r\f")
    if not head.startswith((b"\xff\xfe", b"\xfe\xff")) and (
        b"\x00" in head or controls > len(head) // 20
    ):
        return (
            f"{path}: not a text file (binary bytes: NUL or control characters); give a "
            "CSV saved as text, with a header line and one row per line"
        )
    ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", why)
    if ragged:
        want, line, saw = ragged.groups()
        return (
            f"{path}: line {line} has {saw} fields where the lines before it have {want} "
            "(a stray separator, or a value holding one without quotes); fix or delete "
            "that line"
        )
    return f"{path}: not a readable CSV ({why[:200]}); check that it is a CSV saved as text"


# a timestamp's date part: 2016-07-01, 01.07.2016, 7/1/2016, 2016/07/01 (a time may follow)
_DATE_START = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}(?:[ T]\S.*)?")


def _looks_like_data(names: list[str], sep: str) -> bool:
    """Whether header names are rather a row of data: the first or second a timestamp (a
    date column's header is never a date), or every one a number and one with a decimal
    point (a wide file's series may be named 0, 1, 2 under a ``date`` header, as
    exchange_rate.csv's are)."""
    # an empty first name: pandas' to_csv of an unnamed (date) index, a header after all
    indexed = bool(names) and not names[0]
    names = [n for n in names if n]
    if len(names) < 2:
        return False
    dated = [n for n in names[:2] if _DATE_START.fullmatch(n)]  # the date, after an index
    if dated:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas' "could not infer format" chatter
            if _to_datetime(pd.Series(dated)).notna().any():
                return True

    def number(name: str) -> bool:
        try:
            float(name.replace(",", ".") if sep != "," else name)
        except ValueError:
            return False
        return True

    return not indexed and all(map(number, names)) and any(re.search(r"[.,eE]", n) for n in names)


def _refuse_data_as_header(path: Path, encoding: str, names: list[str], sep: str) -> None:
    """Refuse a file without a header line: pandas would name the columns after the
    first row's values (``5.827000141143799``) and lose that row.

    The first line is also split at the other separators: without names the separator
    guessed from it may be wrong (``01.07.2016 00:00;1,5;3,0`` has as many ',' as ';').
    """
    with open(path, encoding=encoding, errors="replace", newline="") as fh:
        line = fh.readline().lstrip("\ufeff").rstrip("\r\n")
    splits = [(sep, names)] + [
        (other, [n.strip() for n in line.split(other)])
        for other in (",", ";", "\t", "|")
        if other != sep and other in line
    ]
    for used, fields in splits:
        if _looks_like_data(fields, used):
            break
    else:
        return
    n = len(fields)
    example = (
        used.join(["date", *(f"x{i}" for i in range(1, n))])
        if n <= 8
        else f"date{used}x1{used}...{used}x{n - 1}"
    )
    raise UserError(
        f"{path}: the first line looks like data, not column names ({line[:50]!r}); add a "
        f"header line naming the {n} columns, such as {example}"
    )


def _header_names(path: Path, encoding: str, sep: str) -> list[str]:
    """The header's names as written (pandas renames a repeated ``OT`` to ``OT.1``)."""
    import csv

    try:
        with open(path, encoding=encoding, errors="replace", newline="") as fh:
            row = next(csv.reader(fh, delimiter=sep), [])
    except csv.Error:  # bytes no CSV writer makes: pandas' reading of it stands
        return []
    return [name.strip().lstrip("\ufeff").strip() for name in row]


def _refuse_repeated_names(path: Path, names: list[str], n_columns: int) -> None:
    """Refuse a header naming one column twice ("OT" and " OT" too, once stripped).

    pandas would keep both under new names ("OT", "OT.1"): the target could then be the
    other column, and a dataset's channels silently renamed.
    """
    if len(names) != n_columns:  # a header pandas read otherwise: nothing to compare
        return
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if not name:  # a saved index's empty header: dropped below
            continue
        if name in first:
            raise UserError(
                f"{path}: column {name!r} appears twice in the header (columns "
                f"{first[name] + 1} and {i + 1}); rename one"
            )
        first[name] = i


def _refuse_cut_last_line(path: Path, encoding: str, sep: str, names: list[str]) -> None:
    """Refuse a file whose last line has fewer fields than its header and no line end: a
    copy or download cut off mid-row, whose cut value would otherwise pass (or be
    forward-filled by ``--fill ffill``) as data."""
    import csv

    tail = 1 << 16
    if encoding == "utf-16":  # two bytes a character: read as text (Excel's, small)
        text, whole = path.read_text(encoding=encoding, errors="replace"), True
    else:  # the last 64 KiB hold the last line of all but the widest files
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - tail))
            text, whole = fh.read().decode(encoding, errors="replace"), size <= tail
    if not text or text.endswith(("\n", "\r")):
        return
    if "\n" not in text and not whole:  # a last line longer than the tail: not judged
        return
    last = text.rsplit("\n", 1)[-1]
    if not last.strip():  # a last line of blanks: no row
        return
    try:
        fields = next(csv.reader([last], delimiter=sep), [])
    except csv.Error:  # a stray carriage return or NUL: not a line cut short
        return
    # named columns: a header ending in a separator names one column less than it lists
    n_header = len([n for n in names if n])
    if 0 < len(fields) < n_header:
        with open(path, encoding=encoding, errors="replace") as fh:
            line = sum(1 for _ in fh)
        raise UserError(
            f"{path}: the last line ({line}: {last[:40]!r}) has {len(fields)} of "
            f"{n_header} fields and no line end: the file looks cut off; copy or "
            "download it again (or delete that line)"
        )


_ENCODING_NAMES = {
    "gb18030": "GB18030 (GBK, as Excel saves on a Chinese Windows)",
    "cp1252": "cp1252 (Windows Western European / latin-1)",
}


def _text_encoding(path: Path, probe: int = 1 << 16) -> str:
    """UTF-8, else GB18030 or cp1252, judged on the file's first 64 KiB.

    Excel on a Chinese Windows saves "CSV (comma delimited)" in GBK (a subset of GB18030),
    on a Western one in cp1252 (latin-1 and €). Read as UTF-8 their non-ASCII headers
    would become U+FFFD and no --target could name them. Most cp1252 bytes also decode as
    GB18030 (``température`` as ``temp閞ature``), so the choice is judged on the
    characters GB18030 makes of them (`_reads_as_western`). A file that is none of these
    stays UTF-8, its bad bytes replaced."""
    import codecs

    with open(path, "rb") as fh:
        head = fh.read(probe)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text"
        return "utf-16"
    # A header of UTF-8 names beyond ASCII is a UTF-8 file with a stray byte further on
    # (a "café" typed in cp1252 into a text column): cp1252 decodes any bytes, and read
    # so the names would turn to mojibake (日期 as æ—¥æœŸ)
    header = head.split(b"\n", 1)[0]
    try:
        if not header.isascii() and header.decode("utf-8"):
            return "utf-8"
    except UnicodeDecodeError:
        pass
    decoded: dict[str, str] = {}
    for encoding in ("utf-8", "gb18030", "cp1252"):
        try:  # incremental: a character cut at the end of the probe is no error
            decoded[encoding] = codecs.getincrementaldecoder(encoding)().decode(head, final=False)
        except UnicodeDecodeError:
            continue
        if encoding == "utf-8":
            return encoding
    if "gb18030" in decoded and "cp1252" in decoded:
        return "cp1252" if _reads_as_western(decoded["gb18030"]) else "gb18030"
    return next(iter(decoded), "utf-8")


def _reads_as_western(gb_text: str) -> bool:
    """Whether text decoded as GB18030 is rather cp1252 read wrongly: its characters
    that look Western outnumber those that look Chinese (`_gb18030_signs`)."""
    western, chinese = _gb18030_signs(gb_text)
    return western > chinese


def _gb18030_signs(gb_text: str) -> tuple[int, int]:
    """(characters that look like cp1252 read as GB18030, characters that look Chinese).

    Chinese text is mostly characters of two bytes >= 0x80 each (GB2312's range). A
    Western accented letter or sign is one byte >= 0x80, which GB18030 pairs with the byte
    after it: the character it makes has an ASCII second byte (``é`` + ``r``), or sits
    between two ASCII letters inside a word (``Größe`` read as ``Gr跺e``), or takes four
    bytes.
    """
    western = chinese = 0
    for i, ch in enumerate(gb_text):
        if ord(ch) < 0x80 or ch == "\ufffd":  # ASCII, or a byte replaced: neither
            continue
        raw = ch.encode("gb18030")
        before, after = gb_text[i - 1 : i], gb_text[i + 1 : i + 2]
        in_word = bool(before and after) and all(
            c.isascii() and c.isalpha() for c in before + after
        )
        if len(raw) != 2 or raw[1] < 0x80 or in_word:
            western += 1
        else:
            chinese += 1
    return western, chinese


def _csv_dialect(path: Path, encoding: str = "utf-8") -> dict[str, str]:
    """read_csv's separator (from the header) and decimal mark.

    Spreadsheets in many locales save ';'-separated files with decimal commas; read as
    ','-separated they would be one column. Comma-separated files get pandas' defaults;
    '|' (database exports) is read where the header has no ',', ';' or tab.
    """
    with open(path, encoding=encoding, errors="replace") as fh:
        header = fh.readline()
        # the most frequent of the three in the header ("date;temp, C;OT" is ';'-separated)
        counts = {sep: header.count(sep) for sep in (",", ";", "\t")}
        sep = max(counts, key=counts.get)
        if counts[sep] == 0 and "|" in header:  # '|' only where no other separator is
            return {"sep": "|"}
        if counts[sep] == 0 or sep == ",":
            return {}
        # a decimal comma may first appear after any number of rows of whole numbers:
        # the file is searched until one is found (to its end where there is none)
        decimal = "."
        if sep == ";":
            for chunk in iter(lambda: fh.read(1 << 20), ""):
                if re.search(r"\d,\d", chunk):  # a "1,5" cut between chunks: rows repeat it
                    decimal = ","
                    break
    return {"sep": sep, "decimal": decimal}


def find_date_column(df: pd.DataFrame, path: Path) -> str:
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


TIME_OF_DAY = r"\s*\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*"  # 7:05, 17:24:00, 17:24:00.5


def join_time_of_day(df: pd.DataFrame, date_col: str, path: Path) -> pd.DataFrame:
    """A date column followed by a time-of-day column (``Date;Time``, as UCI's household
    power file, many loggers and spreadsheet exports write them) -> one timestamp column
    under the date column's name; any other frame unchanged.

    Joined only when every date is a bare date, every value of the next column a time
    of day, and the dates repeat (two rows a date or more, as readings within a day
    have): a daily file whose second column measures a time (sunrise, a shift's start)
    keeps it as data. Anything less is left to the loader, which names the column to fix.
    """
    pos = df.columns.get_loc(date_col)
    if not isinstance(pos, int) or pos + 1 >= len(df.columns):
        return df
    time_col = df.columns[pos + 1]
    times, dates = df[time_col], df[date_col]
    if pd.api.types.is_numeric_dtype(times) or times.isna().any() or dates.isna().any():
        return df
    times, dates = times.astype(str), dates.astype(str)
    if dates.str.contains(":").any() or not times.str.fullmatch(TIME_OF_DAY).all():
        return df
    if 2 * dates.nunique() > len(dates):  # about one row a date: a daily series
        return df
    log.info("%s: column %r joined to the dates of %r", path.name, time_col, date_col)
    out = df.drop(columns=time_col)
    out[date_col] = dates.str.strip() + " " + times.str.strip()
    return out


def checked_dates(column: pd.Series, date_col: str, path: Path) -> pd.DatetimeIndex:
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
            "2016-07-01 00:00:00 ("
            + (
                "Excel's serial day numbers convert with pandas.to_datetime(x, unit='D', "
                "origin='1899-12-30')"
                if col.between(20_000, 80_000).all()  # 1954 .. 2119 as Excel days
                else "epoch seconds convert with pandas.to_datetime(x, unit='s')"
            )
            + ")"
        )
    dates = _to_datetime(col)

    def at(row: int) -> str:
        return f"row {row + 1}" + (f" (line {row + 2})" if file_lines else "")

    if dates.isna().any():
        row = int(np.flatnonzero(dates.isna().to_numpy())[0])
        if pd.isna(col.iloc[row]) or not str(col.iloc[row]).strip():
            raise UserError(f"{where}: no timestamp at {at(row)}; fill in or delete that row")
        fix = (
            f"; the rows before are written like {col.iloc[0]!r}: use that one format throughout"
            if row > 0
            else ""
        )
        raise UserError(f"{where}: unreadable timestamp {col.iloc[row]!r} at {at(row)}{fix}")
    dates = pd.DatetimeIndex(dates)
    _refuse_out_of_range(dates, where, at)
    return dates


# pandas' nanosecond timestamps (every step, gap and forecast date is counted in them)
_FIRST, _LAST = pd.Timestamp.min.ceil("s"), pd.Timestamp.max.floor("s")


def _refuse_out_of_range(dates: pd.DatetimeIndex, where: str, at) -> None:
    """Refuse dates nanoseconds since 1970 cannot count (before 1677-09-21 or after
    2262-04-11): pandas 3 reads them (at a coarser unit), but the steps are counted in
    nanoseconds, where year 9999 wrapped round to 1816, and a forecast failed."""
    utc = dates.tz_convert(None) if dates.tz is not None else dates
    outside = np.flatnonzero(np.asarray((utc < _FIRST) | (utc > _LAST)))
    if len(outside):
        row = int(outside[0])
        raise UserError(
            f"{where}: timestamp {dates[row]} at {at(row)} is outside the dates handled, "
            f"{_FIRST} .. {_LAST}; check its year, or shift the dates into that range"
        )


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
            warnings.simplefilter("ignore", UserWarning)  # "could not infer format" (AM/PM)
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
