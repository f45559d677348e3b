"""ensemble.data: the protocol's counts, train-only scaling, windows, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ensemble.data import load_dataset, make_splits, sliding, split_borders
from ensemble.errors import UserError


@pytest.mark.parametrize(
    "name,L,H,counts",
    [
        ("ETTh1", 512, 96, (8033, 2785, 2785)),
        ("ETTm1", 512, 96, (33953, 11425, 11425)),
        ("weather", 96, 96, (36696, 5175, 10444)),
    ],
)
def test_window_counts_match_reference_loaders(data_dir, name, L, H, counts):
    splits = make_splits(load_dataset(name, data_dir=data_dir), L, H)
    assert tuple(splits.window_counts().values()) == counts
    assert splits.train.inputs().shape == (counts[0], L, splits.dataset.n_channels)


def test_ett_borders_follow_time_llm():
    b1, b2 = split_borders(17420, "ett_hour", 512)
    assert b1 == (0, 8640 - 512, 11520 - 512) and b2 == (8640, 11520, 14400)
    b1, b2 = split_borders(69680, "ett_minute", 96)
    assert b2 == (34560, 46080, 57600) and b1[2] == 46080 - 96


def test_scaler_sees_train_rows_only(synth_csv):
    base = make_splits(load_dataset(data_path=synth_csv()), 96, 24)
    lo = base.borders[1][0]  # first non-train row

    def wreck_after_train(df: pd.DataFrame) -> pd.DataFrame:
        df.iloc[lo:, 1:] = df.iloc[lo:, 1:] * 100 + 7
        return df

    other = make_splits(
        load_dataset(data_path=synth_csv(edit=wreck_after_train, name="b.csv")), 96, 24
    )
    np.testing.assert_array_equal(base.scaler.mean, other.scaler.mean)
    np.testing.assert_array_equal(base.scaler.std, other.scaler.std)
    np.testing.assert_allclose(base.train.data.mean(axis=0), 0, atol=0.05)
    assert not np.allclose(base.test.data, other.test.data)


def test_windows_equal_manual_slicing(synth_splits):
    sp = synth_splits(seq_len=48, pred_len=12)
    s = sp.test
    x, y = s.inputs(), s.targets()
    for i in (0, 7, s.n_windows - 1):
        np.testing.assert_array_equal(x[i], s.data[i : i + 48])
        np.testing.assert_array_equal(y[i], s.data[i + 48 : i + 60])
    w = s.windows()
    np.testing.assert_array_equal(w.x, x)
    assert w.n == s.n_windows and w.context.shape[0] == s.n_windows + 47
    # views, not copies
    assert np.shares_memory(x, s.data) and np.shares_memory(y, s.data)


def test_val_and_test_start_seq_len_early(synth_splits):
    sp = synth_splits(seq_len=96, pred_len=24, n=1000)
    (b1, b2) = sp.borders
    assert b1[1] == b2[0] - 96 and b1[2] == b2[1] - 96 and b2 == (700, 800, 1000)
    # first val target row is the first row after train
    assert sp.val.start + 96 == 700


def test_inverse_transform_roundtrip(synth_splits):
    sp = synth_splits()
    raw = sp.dataset.values[sp.test.start : sp.test.start + len(sp.test.data)]
    np.testing.assert_allclose(sp.scaler.inverse_transform(sp.test.data), raw, rtol=1e-10)


def test_features_s_and_ms(synth_csv):
    path = synth_csv(channels=3)
    s = load_dataset(data_path=path, features="S")
    assert s.columns == ["OT"] and s.values.shape[1] == 1
    ms = make_splits(load_dataset(data_path=path, features="MS", target="x0"), 48, 12)
    assert ms.dataset.columns[-1] == "x0" and ms.eval_channels == [2]


def test_sliding_is_a_read_only_view():
    a = np.arange(20.0).reshape(10, 2)
    v = sliding(a, 4)
    assert v.shape == (7, 4, 2) and np.shares_memory(v, a)
    with pytest.raises(ValueError):
        v[0, 0, 0] = 1


# ----------------------------------------------------------------- bad input


def _nan_at(df):
    df.loc[123, "x1"] = np.nan
    return df


@pytest.mark.parametrize(
    "edit,match",
    [
        (_nan_at, r"NaN in column 'x1' at row 124"),
        (
            lambda df: df.assign(x1=df["x1"].astype(object).where(df.index != 50, "oops")),
            r"column 'x1' is not numeric \(row 51",
        ),
        (lambda df: df.drop(columns=["date"]), r"no date column"),
        (
            lambda df: df.iloc[[*range(10), 12, 11, *range(13, len(df))]],
            r"timestamps go backwards at row 12 ",
        ),
        # Read as nanoseconds since 1970, an hourly series would look like a 1 ns one.
        (lambda df: df.assign(date=np.arange(len(df))), r"column 'date' holds numbers \(0, 1, 2"),
        (
            lambda df: df.assign(
                date=[
                    d.strftime("%d/%m/%Y %H:%M" if i >= 700 else "%Y-%m-%d %H:%M:%S")
                    for i, d in enumerate(df["date"])
                ]
            ),
            r"at row 701 \(line 702\); the rows before are written like '2020-01-01 00:00:00'",
        ),
    ],
)
def test_bad_csv_is_a_user_error(synth_csv, edit, match):
    with pytest.raises(UserError, match=match):
        load_dataset(data_path=synth_csv(edit=edit))


def test_inf_is_reported(synth_csv):
    def inf(df):
        df.loc[5, "OT"] = np.inf
        return df

    with pytest.raises(UserError, match=r"inf in column 'OT' at row 6"):
        load_dataset(data_path=synth_csv(edit=inf))


def test_ffill_is_an_explicit_opt_in(synth_csv):
    path = synth_csv(edit=_nan_at)
    ds = load_dataset(data_path=path, fill="ffill")
    assert np.isfinite(ds.values).all()
    assert ds.values[123, ds.columns.index("x1")] == ds.values[122, ds.columns.index("x1")]


def test_a_leading_nan_under_ffill_says_how_to_fix_it(synth_csv):
    def lead(df):
        df.loc[0, "OT"] = np.nan
        return df

    with pytest.raises(UserError, match=r"at row 1 .*delete the leading rows or fill them in"):
        load_dataset(data_path=synth_csv(edit=lead), fill="ffill")


def test_missing_file_and_unknown_dataset(tmp_path):
    with pytest.raises(UserError, match="data file not found"):
        load_dataset("ETTh1", data_dir=tmp_path)
    with pytest.raises(UserError, match="unknown dataset 'NoSuchSet'"):
        load_dataset("NoSuchSet")
    with pytest.raises(UserError, match="did you mean ETTh1"):
        load_dataset("etth1")


@pytest.mark.parametrize("windows", [True, False])
def test_the_download_command_of_a_missing_file_is_quoted_for_the_shell(
    windows, tmp_path, monkeypatch
):
    # a data folder with a space was two words of the command printed to copy
    import re

    monkeypatch.setattr("ensemble.shell._WINDOWS", windows)
    folder = tmp_path / "my data"
    q = f'"{folder}"' if windows else f"'{folder}'"
    with pytest.raises(
        UserError, match=re.escape(f"run `hybrid-forecast data download ETTh1 --data-dir {q}`")
    ):
        load_dataset("ETTh1", data_dir=folder)


def test_a_folder_or_a_file_on_the_way_is_named_as_such(data_dir, tmp_path, synth_csv):
    import re

    # both said "data file not found", and the download command's fix for a folder
    path = synth_csv(n=300)
    with pytest.raises(
        UserError,
        match=re.escape(f"{tmp_path} is a folder; --data-path needs a CSV file, such as {path}"),
    ):
        load_dataset(data_path=tmp_path)
    with pytest.raises(UserError, match=r"or pass --dataset ETTh1 --data-dir"):
        load_dataset(data_path=data_dir)
    with pytest.raises(
        UserError, match=re.escape(f"{path} is a file, not a folder; check --data-dir")
    ):
        load_dataset("ETTh1", data_dir=path)  # --data-dir given the CSV itself
    with pytest.raises(
        UserError, match=re.escape(f"{path} is a file, not a folder; check --data-path")
    ):
        load_dataset(data_path=path / "x.csv")


def test_a_file_without_a_header_is_one_line_from_the_cli(synth_csv, capsys):
    from experiments.cli import main

    path = synth_csv(n=600)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[1:]), encoding="utf-8")
    assert (
        main(["data", "info", "--data-path", str(path), "--seq-len", "24", "--pred-len", "4"]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the first line looks like data, not column names" in err
    assert "add a header line naming the 4 columns, such as date,x1,x2,x3" in err


def test_series_too_short(synth_csv):
    ds = load_dataset(data_path=synth_csv(n=300))
    with pytest.raises(UserError, match="too few for seq_len 96 \\+ pred_len 96"):
        make_splits(ds, 96, 96)


def test_duplicates_and_gaps_warn_not_fail(synth_csv, caplog):
    def dup_and_gap(df):
        df.loc[100, "date"] = df.loc[99, "date"]  # duplicate
        return df.drop(index=[500, 501])  # gap

    ds = load_dataset(data_path=synth_csv(edit=dup_and_gap))
    assert ds.n_rows == 1998
    text = caplog.text
    assert "duplicate timestamp" in text and "gap(s)" in text


def test_weather_file_warns_about_its_known_duplicate(data_dir, caplog):
    ds = load_dataset("weather", data_dir=data_dir)
    assert ds.n_rows == 52696 and ds.freq == "10min"
    assert "2020-05-12 06:00:00" in caplog.text


def test_percent_keeps_first_train_windows(synth_csv):
    ds = load_dataset(data_path=synth_csv())
    full, few = make_splits(ds, 96, 24), make_splits(ds, 96, 24, percent=10)
    assert few.train.n_windows == ((1400 - 96) * 10 // 100 + 96) - 96 - 24 + 1
    # the first windows, not any: the same inputs and targets as the full split's first
    n = few.train.n_windows
    np.testing.assert_array_equal(few.train.inputs(), full.train.inputs()[:n])
    np.testing.assert_array_equal(few.train.targets(), full.train.targets()[:n])
    np.testing.assert_array_equal(full.scaler.mean, few.scaler.mean)
    np.testing.assert_array_equal(few.val.targets(), full.val.targets())  # val/test untouched


def test_a_file_named_like_a_registered_dataset_gets_its_split(tmp_path):
    # The official repo's dataset/ETT-small/ETTh1.csv passed with --data-path is ETTh1: a
    # 70/10/20 split would put other numbers under the ETTh1 name.
    from ensemble.data import resolve_path

    assert resolve_path(None, tmp_path / "ETTh1.csv", None)[::2] == ("ETTh1", "ett_hour")
    assert resolve_path(None, tmp_path / "ETTm2.csv", None)[::2] == ("ETTm2", "ett_minute")
    assert resolve_path(None, tmp_path / "mine.csv", None)[::2] == ("mine", "ratio")
    # named after its file, not the registry key (Time-LLM's prompt describes "illness")
    assert resolve_path(None, tmp_path / "national_illness.csv", None)[0] == "illness"


def test_a_dataset_name_that_contradicts_the_file_is_refused(tmp_path):
    from ensemble.data import resolve_path

    with pytest.raises(UserError, match="ETTh2.csv, which is ETTh2's file: pass --dataset ETTh2"):
        resolve_path("ETTh1", tmp_path / "ETTh2.csv", None)
    assert resolve_path("ETTh1", tmp_path / "etth1.csv", None)[::2] == ("ETTh1", "ett_hour")


def test_each_load_names_its_bytes_and_whether_they_are_the_published_file(
    data_dir, tmp_path, caplog
):
    import hashlib
    import shutil

    real = load_dataset("ETTh1", data_dir=data_dir)
    sha = hashlib.sha256((data_dir / "ETT-small" / "ETTh1.csv").read_bytes()).hexdigest()
    assert (real.sha256, real.published) == (sha, True)
    # ETTh2's rows under the name ETTh1 (the file renamed): labelled as asked, but flagged
    other = tmp_path / "transformer.csv"
    shutil.copy(data_dir / "ETT-small" / "ETTh2.csv", other)
    with caplog.at_level("WARNING"):
        mislabelled = load_dataset("ETTh1", data_path=other)
        assert "not the published" not in caplog.text  # said once the split succeeds
        with pytest.raises(UserError, match="too few"):  # a refusal stays one line
            make_splits(mislabelled, 9000, 96)
        assert "not the published" not in caplog.text
        make_splits(mislabelled, 96, 96)
    assert mislabelled.name == "ETTh1" and mislabelled.published is False
    assert "not the published ETTh1 file" in caplog.text
    assert load_dataset(data_path=other).published is None  # no name, nothing to match


@pytest.mark.parametrize(
    "sep,decimal",
    [(";", ","), (";", "."), ("\t", ".")],
    ids=["semicolon-comma", "semicolon", "tab"],
)
def test_semicolon_and_tab_separated_files_read_like_comma_ones(synth_csv, sep, decimal):
    # What spreadsheets save in many locales; read as ','-separated it is one column.
    path = synth_csv()
    other = path.with_name("other.csv")
    pd.read_csv(path).to_csv(other, sep=sep, decimal=decimal, index=False)
    a, b = load_dataset(data_path=path), load_dataset(data_path=other)
    assert b.columns == a.columns and b.freq == a.freq
    np.testing.assert_allclose(b.values, a.values, rtol=1e-12)


@pytest.mark.parametrize(
    ("encoding", "sep"), [("gbk", ","), ("gbk", ";"), ("utf-8-sig", ","), ("utf-8", ",")]
)
def test_chinese_headers_read_from_gbk_and_utf8_files(synth_csv, encoding, sep):
    # Excel on a Chinese Windows saves "CSV (comma delimited)" in GBK; "CSV UTF-8" with a BOM
    path = synth_csv(n=600)
    df = pd.read_csv(path).rename(columns={"date": "日期", "x0": "负荷", "x1": "油温"})
    other = path.with_name(f"{encoding}.csv")
    df.to_csv(other, sep=sep, index=False, encoding=encoding)
    ds = load_dataset(data_path=other, target="油温", features="S")
    assert ds.columns == ["油温"]
    np.testing.assert_allclose(ds.values[:, 0], df["油温"].to_numpy(), rtol=1e-12)


def test_bytes_of_no_known_encoding_are_replaced_not_fatal(synth_csv):
    path = synth_csv(n=600)
    # invalid in UTF-8 and GB18030 (0x81 then 0xFF), and 0x81 is no cp1252 character
    text = path.read_bytes().replace(b"x0", b"x\x81\xff0", 1)
    path.write_bytes(text)
    assert load_dataset(data_path=path).columns[0] == "x\ufffd\ufffd0"


@pytest.mark.parametrize(
    ("names", "encoding", "sep"),
    [
        (["température", "humidité"], "latin-1", ","),  # read as GB18030: temp閞ature
        (["Umsatz €", "Temp °C"], "cp1252", ";"),  # € is no GB18030 byte: U+FFFD before
        (["Größe", "Wärme"], "cp1252", ","),  # ö and ß side by side: a GB2312-like pair
        (["负荷", "油温"], "gbk", ","),
        (["A相电压", "功率kW", "温度(°C)"], "gbk", ";"),  # Chinese beside ASCII letters
    ],
)
def test_western_european_and_gbk_headers_keep_their_names(synth_csv, caplog, names, encoding, sep):
    # Excel on a Western Windows saves cp1252 (latin-1 and €); most of its bytes also
    # decode as GB18030, which garbled the names silently
    path = synth_csv(n=400, channels=len(names))
    df = pd.read_csv(path)
    df.columns = ["date", *names]
    other = path.with_name("enc.csv")
    df.to_csv(other, sep=sep, index=False, encoding=encoding)
    caplog.set_level("INFO", logger="ensemble.data")
    ds = load_dataset(data_path=other)
    assert ds.columns == names
    np.testing.assert_allclose(ds.values, df[names].to_numpy(), rtol=1e-12)
    said = [r for r in caplog.records if "not UTF-8" in r.getMessage()]
    assert len(said) == 1 and ", ".join(names) in said[0].getMessage()  # the guess, shown
    # a warning where the guess is cp1252; GBK as the README promises it, quietly
    assert said[0].levelname == ("INFO" if encoding == "gbk" else "WARNING")


def test_business_day_file_warns_about_its_holidays(synth_csv, caplog):
    def business_days(df):
        df["date"] = pd.bdate_range("2015-01-01", periods=len(df)).astype(str)
        return df.drop(index=[300, 700])

    ds = load_dataset(data_path=synth_csv(edit=business_days))
    assert ds.freq == "B" and "2 gap(s) in the B timestamps" in caplog.text


def test_registered_file_name_in_another_case_keeps_its_split(data_dir, tmp_path):
    copy = tmp_path / "etth1.csv"
    copy.write_bytes((data_dir / "ETT-small" / "ETTh1.csv").read_bytes())
    ds = load_dataset(data_path=copy)
    assert ds.name == "ETTh1"
    assert make_splits(ds, 512, 96).window_counts() == {"train": 8033, "val": 2785, "test": 2785}


def test_constant_train_channel_is_not_scaled_by_rounding_noise():
    from ensemble.data import StandardScaler

    x = np.full((8640, 2), 0.1)
    x[:, 1] = np.arange(8640.0)
    scaler = StandardScaler().fit(x)  # 0.1's std comes out ~1e-17, not 0
    assert scaler.std[0] == 1.0 and scaler.transform(np.array([[0.2, 0.0]]))[0, 0] < 1


def test_a_constant_train_channel_and_a_value_far_out_warn_naming_the_column(synth_csv, caplog):
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df["x1"] = 0.1  # constant over the train rows, then a level shift
        df.loc[1500:, "x1"] = 1000.1
        df.loc[1900, "x0"] = 1e7  # a test row 1e6 train standard deviations out
        return df

    ds = load_dataset(data_path=synth_csv(edit=edit))
    make_splits(ds, 96, 24)
    make_splits(ds, 48, 24, warn=False)  # tune splits again per trial: said at its start
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 2, lines
    assert "column 'x1' is constant over the train rows (0.1)" in lines[0]
    assert "column 'x0' is" in lines[1] and "at row 1901 (line 1902, value 1e+07)" in lines[1]


def test_the_benchmark_files_are_not_warned_about_their_scale(data_dir, caplog):
    for name in ("ETTh1", "weather", "illness", "exchange_rate"):  # weather: -9999 readings
        make_splits(load_dataset(name, data_dir=data_dir), 36, 24)
    assert "train standard deviations" not in caplog.text
    assert "constant over the train rows" not in caplog.text


def test_csv_quirks_spreadsheets_and_pandas_leave(synth_csv, tmp_path, caplog):
    base = pd.read_csv(synth_csv(n=400))
    ref = load_dataset(data_path=synth_csv(n=400))
    # a pandas index saved without a header, and spaces after the commas
    path = tmp_path / "index.csv"
    base.to_csv(path)  # index kept: "Unnamed: 0"
    ds = load_dataset(data_path=path)
    assert ds.columns == ref.columns and "without a header dropped" in caplog.text
    path.write_text(base.to_csv(index=False).replace(",", ", "), encoding="utf-8")
    assert load_dataset(data_path=path).columns == ref.columns  # OT still the target
    # a first column named otherwise (pandas 3 reads text as str, not object)
    path.write_text(base.rename(columns={"date": "Datum"}).to_csv(index=False), encoding="utf-8")
    assert load_dataset(data_path=path).n_rows == 400
    # ';' files with a comma in a header, and decimal commas after whole numbers
    semi = base.rename(columns={"x0": "temp, C"})
    semi.iloc[:3, 1:] = semi.iloc[:3, 1:].round()
    path.write_text(semi.to_csv(index=False, sep=";", decimal=","), encoding="utf-8")
    ds = load_dataset(data_path=path)
    assert ds.columns[0] == "temp, C"
    np.testing.assert_allclose(ds.values[3:], ref.values[3:], rtol=1e-12)


def test_a_first_column_of_day_first_dates_under_any_name(tmp_path):
    hours = pd.date_range("2015-01-01", periods=600, freq="h")
    x = np.sin(2 * np.pi * np.arange(600) / 24).round(3)
    df = pd.DataFrame({"日期": hours.strftime("%d.%m.%Y %H:%M"), "负荷": x, "油温": x + 1})
    path = tmp_path / "cn.csv"  # as Excel saves it on a Chinese Windows: GBK, ';', ','
    df.to_csv(path, sep=";", decimal=",", index=False, encoding="gb18030")
    ds = load_dataset(data_path=path)
    assert (ds.dates == hours).all() and ds.target == "油温" and ds.freq == "h"
    df.iloc[3, 0] = "sensor 7"  # the first column is no date after all: named, with its value
    df.to_csv(path, index=False)
    with pytest.raises(UserError, match=r"first column '日期' holds 'sensor 7' \(line 5\)"):
        load_dataset(data_path=path)
    df.iloc[3, 0] = None
    df.to_csv(path, index=False)
    with pytest.raises(UserError, match=r"the date column '日期' is empty at line 5; fill in"):
        load_dataset(data_path=path)


def _huge(df: pd.DataFrame) -> pd.DataFrame:
    df["x1"] = df["x1"] * 1e306  # ~1e307: finite, but its mean and spread overflow
    return df


def test_huge_finite_values_are_refused_with_the_column(synth_csv):
    import warnings

    path = synth_csv(n=2000, edit=_huge)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy overflow warnings either
        with pytest.raises(UserError, match=r"column 'x1' holds values too large.*rescale"):
            load_dataset(data_path=path)
    from ensemble.data import StandardScaler  # make_splits' own check, for other loaders

    x = load_dataset(data_path=synth_csv(n=2000)).values.copy()
    x[:, 1] *= 1e306
    with pytest.raises(UserError, match="column 'x1' holds values too large"):
        StandardScaler().fit(x, ["x0", "x1", "OT"])


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "info"],
        ["periods"],
        ["run", "--seq-len", "96", "--pred-len", "24", "--members", "naive", "--quiet"],
        ["run", "--seq-len", "96", "--pred-len", "24", "--members", "naive", "--periods", "24"],
    ],
)
def test_huge_values_are_one_line_for_every_command(synth_csv, tmp_path, capsys, argv):
    import warnings

    from experiments.cli import main

    out = tmp_path / "r"
    argv = [*argv, "--data-path", str(synth_csv(n=2000, edit=_huge))]
    if argv[0] == "run":
        argv += ["--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "column 'x1' holds values too large" in err[0], err
    assert not out.exists()


def test_scaled_values_beyond_float32_are_refused(synth_csv):
    def spike(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[1900, "x0"] = 1e40  # a test row; the whole column's statistics stay finite
        return df

    ds = load_dataset(data_path=synth_csv(n=2000, edit=spike))
    with pytest.raises(UserError, match=r"column 'x0' at row 1901 \(line 1902\).*rescale"):
        make_splits(ds, 96, 24)


@pytest.mark.parametrize("header", ["date,x0,x1,x1", "date,x0,x1, x1"])
def test_a_column_named_twice_is_refused_not_renamed(synth_csv, header):
    # pandas kept both as x1 and x1.1: with --target x1 the other column could be forecast
    path = synth_csv(n=600)
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([header, *lines[1:]]) + "\n", encoding="utf-8")
    with pytest.raises(
        UserError, match=r"column 'x1' appears twice in the header \(columns 3 and 4\)"
    ):
        load_dataset(data_path=path)


@pytest.mark.parametrize("keep", [7, 24], ids=["mid-date", "mid-row"])
def test_a_file_cut_off_mid_row_is_refused(synth_csv, keep):
    # its last value passed as data, or --fill ffill filled the fields cut away
    path = synth_csv(n=600)
    text = path.read_text(encoding="utf-8").rstrip("\n")
    last = text.rsplit("\n", 1)[1]
    path.write_text(text[: len(text) - len(last) + keep], encoding="utf-8")
    with pytest.raises(
        UserError, match=r"the last line \(601: .*\) has \d of 4 fields and no line end"
    ):
        load_dataset(data_path=path, fill="ffill")
    path.write_text(text, encoding="utf-8")  # whole, with no line end: fine
    assert load_dataset(data_path=path).n_rows == 600


def test_a_decimal_comma_after_many_whole_numbers_is_read(synth_csv):
    # the dialect probe read 50 rows: 60 whole numbers, then 12,363, was refused
    path = synth_csv(n=600)
    df = pd.read_csv(path)
    df.iloc[:300, 1:] = df.iloc[:300, 1:].round()
    df.to_csv(path, sep=";", decimal=",", index=False)
    ds = load_dataset(data_path=path)
    np.testing.assert_allclose(ds.values[:, 0], df["x0"].to_numpy(), rtol=1e-12)
    df.to_csv(path, sep="\t", decimal=",", index=False)  # only ';' files may: said so
    with pytest.raises(UserError, match="a decimal comma\\? Only ';'-separated files"):
        load_dataset(data_path=path)


def test_utf16_files_from_excel_are_read(synth_csv):
    # Excel's "Unicode text": read as UTF-8 the header was garbage and the error said so
    path = synth_csv(n=600)
    df = pd.read_csv(path)
    other = path.with_name("u16.csv")
    df.to_csv(other, sep="\t", index=False, encoding="utf-16")
    np.testing.assert_allclose(
        load_dataset(data_path=other).values, load_dataset(data_path=path).values, rtol=1e-12
    )


def test_excel_serial_dates_get_excels_conversion(synth_csv):
    path = synth_csv(n=600)
    df = pd.read_csv(path)
    df["date"] = 42552.0 + np.arange(600) / 24  # 2016-07-01 on, as Excel counts days
    df.to_csv(path, index=False)
    with pytest.raises(UserError, match=r"unit='D', origin='1899-12-30'"):
        load_dataset(data_path=path)


def test_binary_bytes_are_refused_in_one_line_not_a_csv_error(tmp_path):
    # the header and last-line checks' csv module raised "new-line character seen in
    # unquoted field" (a traceback) on bytes no CSV writer makes
    path = tmp_path / "bin.csv"
    path.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(UserError):
        load_dataset(data_path=path)


@pytest.mark.parametrize("tail", ["header-sep", "blank"])
def test_files_without_a_last_line_end_that_are_whole_are_read(synth_csv, tail):
    # the cut-off check refused a header ending in a separator and a last line of
    # spaces: files 34026f1 read
    path = synth_csv(n=600)
    text = path.read_text(encoding="utf-8").rstrip("\n")
    if tail == "header-sep":
        head, rest = text.split("\n", 1)
        text = head + ",\n" + rest
    else:
        text += "\n   "
    path.write_text(text, encoding="utf-8")
    assert load_dataset(data_path=path).n_rows == 600


def test_a_last_line_wider_than_the_tail_read_is_not_judged(tmp_path):
    # 12,000 channels: the last 64 KiB started mid-line, and the line looked cut off
    n, c = 300, 12000
    cols = [f"c{i}" for i in range(c)]
    rows = np.round(np.random.default_rng(0).random((n, c)), 3)
    df = pd.DataFrame(rows, columns=cols)
    df.insert(0, "date", pd.date_range("2020-01-01", periods=n, freq="h").astype(str))
    path = tmp_path / "wide.csv"
    path.write_text(df.to_csv(index=False).rstrip("\n"), encoding="utf-8")
    assert load_dataset(data_path=path).n_channels == c


def test_a_time_of_day_column_beside_the_date_is_joined_to_it(synth_csv, tmp_path):
    # Date;Time in two columns (UCI's household power file, spreadsheet exports): was
    # refused as "'Time' is not numeric"; now read as the one-column file is
    path = synth_csv(n=600)
    whole = load_dataset(data_path=path)
    df = pd.read_csv(path)
    stamps = pd.to_datetime(df["date"])
    df.insert(1, "Time", stamps.dt.strftime("%H:%M:%S"))
    df["date"] = stamps.dt.strftime("%d/%m/%Y")  # day first, as UCI writes them
    split = tmp_path / "split.csv"
    df.to_csv(split, index=False, sep=";")
    got = load_dataset(data_path=split)
    assert got.columns == whole.columns
    np.testing.assert_array_equal(got.values, whole.values)
    assert (got.dates == whole.dates).all() and got.freq == whole.freq


def test_a_daily_file_measuring_a_time_keeps_it_as_a_column(tmp_path):
    # a sunrise time beside each day's date was joined into the dates: an irregular
    # 1441-minute "step" and the column lost as data; not joined, it is refused by name
    days = pd.date_range("2020-01-01", periods=400, freq="D")
    rise = [f"{6 + (i % 60) // 30}:{i % 60:02d}" for i in range(400)]
    df = pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "sunrise": rise, "OT": 1.0})
    df["OT"] += np.arange(400) % 7
    path = tmp_path / "daily.csv"
    df.to_csv(path, index=False)
    with pytest.raises(UserError, match="column 'sunrise' is not numeric.*a time of day"):
        load_dataset(data_path=path)


def test_a_time_of_day_column_away_from_the_date_is_told_to_join_it(synth_csv):
    # not beside the date column: not guessed at, named with the fix
    path = synth_csv(n=600)
    df = pd.read_csv(path)
    stamps = pd.to_datetime(df["date"])
    df["time"] = stamps.dt.strftime("%H:%M")
    df["date"] = stamps.dt.strftime("%Y-%m-%d")
    df.to_csv(path, index=False)
    with pytest.raises(
        UserError,
        match="a time of day: if it is each reading's time, join it with the date column 'date'",
    ):
        load_dataset(data_path=path)
