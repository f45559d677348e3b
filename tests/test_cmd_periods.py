"""Tests of `hybrid-forecast periods` through the CLI entry point."""

from __future__ import annotations

import json

import pytest

from experiments.cli import main


def test_periods_json_on_synthetic_csv(synth_csv, capsys):
    path = synth_csv(n=2400, channels=3, period=24)
    assert main(["periods", "--data-path", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == "train" and out["n_rows"] == int(2400 * 0.7)
    assert out["overall"][0]["period"] == 24
    keys = {"period", "power", "acf", "strength", "trend_strength", "cycles", "seasonal"}
    assert set(out["overall"][0]) >= keys
    # 1680 train rows hold 70 cycles of 24 steps; 0.3 is the threshold there
    assert out["overall"][0]["cycles"] == 1680 / 24 and out["overall"][0]["seasonal"] is True
    assert set(out["channels"]) == {"x0", "x1", "OT"}
    assert out["seasonal"] is True


def test_periods_table_and_plot(synth_csv, tmp_path, capsys):
    path = synth_csv(n=2400, channels=2, period=24)
    png = tmp_path / "periods.png"
    assert main(["periods", "--data-path", str(path), "--plot", str(png), "--all-rows"]) == 0
    text = capsys.readouterr().out
    assert "overall: seasonal" in text and "channel OT" in text
    head, first = text.splitlines()[2:4]
    assert head.split()[-2:] == ["cycles", "seasonal"] and first.split()[-1] == "yes"
    assert png.is_file() and png.stat().st_size > 10_000


def test_a_constant_channel_is_said_constant_not_found_without_periods(synth_csv, capsys):
    # "(no period found)" under a flat column read as a finding about it
    def flatten(df):
        df.iloc[:, 1] = 3.0
        return df

    path = synth_csv(n=2400, channels=2, period=24, edit=flatten)
    assert main(["periods", "--data-path", str(path)]) == 0
    titles = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("channel ")]
    assert len(titles) == 2
    assert titles[0].endswith("(constant in the train rows: nothing to analyse)"), titles
    assert "constant" not in titles[1]


def test_plot_path_printed_is_the_file_written(synth_csv, tmp_path, capsys):
    path = synth_csv(n=2400, channels=2, period=24)
    argv = ["periods", "--data-path", str(path), "--all-rows", "--plot"]
    assert main([*argv, str(tmp_path / "noext")]) == 0
    assert f"plot: {tmp_path / 'noext.png'}" in capsys.readouterr().out
    assert (tmp_path / "noext.png").is_file()
    assert main([*argv, str(tmp_path)]) == 2  # a folder: not a sibling "<folder>.png"
    assert "is a folder" in capsys.readouterr().err


def test_periods_real_etth1(data_dir, capsys):
    assert main(["periods", "--dataset", "ETTh1", "--data-dir", str(data_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    periods = [c["period"] for c in out["overall"]]
    assert periods[0] == 24 and 168 in periods[:3]
    # the week's F_S is mostly the day's: net of it, near white noise's 0.2
    net = out["net_strength"]["168"]
    assert net["of"] == 24 and 0.1 < net["strength"] < 0.3


def test_periods_user_errors(tmp_path, capsys, synth_csv):
    assert main(["periods", "--dataset", "nope", "--data-dir", str(tmp_path)]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    # on a readable file, so that the exit code is the flag's, not "data file not found"
    csv = synth_csv()
    assert main(["periods", "--data-path", str(csv), "--max-candidates", "0"]) == 2
    assert "--max-candidates must be at least 1" in capsys.readouterr().err


def test_too_few_cycles_say_which_periods_were_not_tested(tmp_path, capsys):
    import numpy as np
    import pandas as pd

    # a clean yearly cycle of weekly data, 8 years: 420 train rows hold 8 cycles of 52
    weeks = pd.date_range("2010-01-03", periods=600, freq="W-SUN")
    y = 10 + np.sin(2 * np.pi * np.arange(600) / 52)
    pd.DataFrame({"date": weeks, "OT": y}).to_csv(tmp_path / "weekly.csv", index=False)
    assert main(["periods", "--data-path", str(tmp_path / "weekly.csv")]) == 0
    out = capsys.readouterr().out
    assert "no seasonality" in out and "repeat 10 times in the 420 rows" in out
    assert "nothing above 42 is" in out


@pytest.fixture
def no_analysis(monkeypatch):
    """The analysis made to fail: a check said before it must not reach it."""
    import periodicity

    def refuse(*a, **kw):
        raise AssertionError("analysed before the --plot check")

    monkeypatch.setattr(periodicity, "analyse", refuse)


def test_a_plot_format_matplotlib_cannot_write_is_refused_before_the_analysis(
    synth_csv, tmp_path, capsys, no_analysis
):
    path = synth_csv(n=600, channels=1, period=24)
    assert main(["periods", "--data-path", str(path), "--plot", str(tmp_path / "x.xyz")]) == 2
    err = capsys.readouterr().err
    assert "'xyz' is not a figure format" in err and "png" in err
    assert main(["periods", "--data-path", str(path), "--plot", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_a_plot_place_that_cannot_be_written_is_refused_before_the_analysis(
    synth_csv, tmp_path, capsys, monkeypatch, no_analysis
):
    import os
    import tempfile

    from experiments.cmd_periods import _plot_path

    path = synth_csv(n=600, channels=1, period=24)
    argv = ["periods", "--data-path", str(path), "--plot"]
    (tmp_path / "f.txt").write_text("x", encoding="utf-8")
    assert main([*argv, str(tmp_path / "f.txt" / "sub" / "p.png")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'f.txt'} is a file, not a folder" in err and len(err.splitlines()) == 1
    if os.path.isdir("/proc/self"):  # no new file there, not even for root
        assert main([*argv, "/proc/p.png"]) == 2
        assert "cannot create files in /proc" in capsys.readouterr().err
    # folders still to be made are fine (the save makes them), and not made yet
    new = tmp_path / "new" / "sub" / "p.png"
    assert _plot_path(str(new)) == new and not (tmp_path / "new").exists()

    def refused(*a, **kw):  # a read-only folder (root ignores chmod, so simulated)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    assert main([*argv, str(tmp_path / "p.png")]) == 2
    assert f"cannot create files in {tmp_path} (Permission denied)" in capsys.readouterr().err


def test_plot_panel_title_says_what_is_drawn():
    import numpy as np

    from periodicity import analyse
    from periodicity.plot import periods_figure

    t = np.arange(2000)
    x = np.sin(2 * np.pi * t / 12) + 0.1 * np.random.default_rng(0).standard_normal(t.size)
    report = analyse(x[:, None])
    assert report.overall[0].period == 12
    fig = periods_figure(x[:, None], report)
    title = fig.axes[1].get_title()
    # at least 96 steps are drawn: 8 cycles of 12, not "the last 4 cycles"
    assert "(last 96 steps, 8 cycles)" in title, title


def test_plot_mean_leaves_constant_channels_out_as_the_table_does():
    # a stuck sensor beside a sine: the table's power is the sine's, the plot drew half
    import numpy as np

    from periodicity import analyse
    from periodicity.plot import periods_figure

    t = np.arange(2400)
    x = np.stack([np.full(t.size, 3.0), np.sin(2 * np.pi * t / 24)], 1)
    report = analyse(x)
    assert report.overall[0].period == 24 and report.overall[0].power > 0.95
    drawn = periods_figure(x, report).axes[0].lines[0]
    alone = periods_figure(x[:, 1:], analyse(x[:, 1:])).axes[0].lines[0]
    np.testing.assert_allclose(drawn.get_ydata(), alone.get_ydata())
    near = np.abs(drawn.get_xdata() - 24) < 1  # the Hann window spreads it over 3 bins
    assert drawn.get_ydata()[near].sum() > 0.95


def test_plot_title_names_the_dataset_and_keeps_channel_mean(synth_csv, tmp_path, monkeypatch):
    # the title with the dataset's name dropped what the default says: the channel mean
    import ensemble.figures

    titles = []
    real = ensemble.figures.save

    def save(fig, path, **kw):
        titles.append(fig.axes[0].get_title())
        return real(fig, path, **kw)

    monkeypatch.setattr(ensemble.figures, "save", save)
    path = synth_csv(n=2400, channels=2, period=24)
    argv = ["periods", "--data-path", str(path), "--all-rows", "--plot", str(tmp_path / "p.png")]
    assert main(argv) == 0
    assert titles == [f"{path.stem}: periodogram (channel mean) and candidate periods "
                      "(F_S: seasonal strength)"]  # fmt: skip


def test_too_few_train_rows_suggest_all_rows_only_where_they_are_enough(synth_csv, capsys):
    # 20 rows: 14 train rows are too few, all 20 are enough, with a warning about `run`
    path = synth_csv(n=20, channels=1, period=4)
    assert main(["periods", "--data-path", str(path)]) == 2
    err = capsys.readouterr().err
    assert "14 train rows are too few" in err and "pass --all-rows (it includes the val/test" in err
    # 10 rows: --all-rows is no fix either
    path = synth_csv(n=10, channels=1, period=4)
    assert main(["periods", "--data-path", str(path)]) == 2
    err = capsys.readouterr().err
    assert "--all-rows" not in err and "give a longer series" in err
    assert main(["periods", "--data-path", str(path), "--all-rows"]) == 2
    assert "10 all rows are too few" in capsys.readouterr().err


def test_periods_json_says_the_longest_period_tested(tmp_path, capsys):
    import numpy as np
    import pandas as pd

    # the text's "nothing above 42 is" tested, in the JSON too
    weeks = pd.date_range("2010-01-03", periods=600, freq="W-SUN")
    y = 10 + np.sin(2 * np.pi * np.arange(600) / 52)
    pd.DataFrame({"date": weeks, "OT": y}).to_csv(tmp_path / "weekly.csv", index=False)
    assert main(["periods", "--data-path", str(tmp_path / "weekly.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["min_cycles"] == 10 and out["max_period_tested"] == 42


@pytest.mark.parametrize(
    "argv,said",
    [
        (
            ["periods", "--dataset", "ETTh1", "--dataset", "ETTh2"],
            "--dataset is given twice (ETTh1 and ETTh2); this command reads one dataset",
        ),
        (
            ["data", "info", "--data-path", "a.csv", "--data-path", "b.csv"],
            "--data-path is given twice (a.csv and b.csv)",
        ),
        (
            ["data", "info", "--dataset", "ETTh1", "--features", "S", "--features", "M"],
            "--features is given twice (S and M); choose one of M, S, MS",
        ),
        (
            ["periods", "--dataset", "ETTh1", "--data-dir", ""],
            "--data-dir is empty: give a value, or drop --data-dir for its default",
        ),
        (
            ["data", "info", "--dataset", "ETTh1", "--features", "S", "--target", " "],
            "--target is empty",
        ),
    ],
)
def test_a_repeated_or_empty_data_flag_is_refused(argv, said, capsys):
    # argparse kept the last --dataset; --data-dir "" meant the default folder
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert said in line
