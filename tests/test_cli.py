"""experiments.cli: exit codes and one-line errors for bad input."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from experiments.cli import main


def _err_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_data_info_json(data_dir, capsys):
    assert (
        main(
            [
                "data",
                "info",
                "--dataset",
                "ETTh1",
                "--data-dir",
                str(data_dir),
                "--seq-len",
                "512",
                "--pred-len",
                "96",
                "--json",
            ]
        )
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    assert d["windows"] == {"train": 8033, "val": 2785, "test": 2785}
    assert d["freq"] == "h" and d["channels"] == 7


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["data", "info", "--dataset", "NoSuchSet"], "unknown dataset 'NoSuchSet'"),
        (
            ["run", "--dataset", "ETTh1", "--members", "nosuchmember"],
            "unknown member 'nosuchmember'",
        ),
        (
            ["run", "--dataset", "ETTh1", "--router", "nosuchrouter"],
            "unknown --router 'nosuchrouter'",
        ),
        (["data", "info", "--data-path", "/nonexistent/x.csv"], "data file not found"),
        (
            ["run", "--dataset", "ETTh1", "--members", "naive,snaive@period=abc"],
            "snaive@period=abc: a setting has the wrong type or value",
        ),
        (
            ["run", "--dataset", "ETTh1", "--members", "naive,dlinear@kernal=49"],
            "unknown dlinear setting(s) kernal; valid: batch_size",
        ),
        (
            ["run", "--dataset", "ETTh1", "--members", "naive,snaive@period=600"],
            "period 600 exceeds the lookback 512",
        ),
        (
            ["run", "--dataset", "ETTh1", "--members", "naive,dlinear@kernel=24"],
            "kernel must be odd and positive (got 24)",
        ),
        (
            ["run", "--dataset", "ETTh1", "--members", "naive,nlinear@batch_size=0"],
            "batch_size must be > 0",
        ),
        (["run", "--dataset", "ETTh1", "--members", "naive,snaive", "--seed", "-1"], "seed -1"),
        (
            ["run", "--dataset", "ETTh1", "--members", "naive,snaive@period=24"]
            + ["--set", "timellm.llm_layers=2"],
            "'timellm' is not among the members (naive, snaive@period=24)",
        ),
        (
            ["bench", "--datasets", "ETTh1", "--members", "naive,snaive", "--set", "arima.d=1"],
            "'arima' is not among the members",
        ),
        (
            ["run", "--dataset", "ETTh1", "--members", "naive", "--router", "learned"],
            "give at least two",
        ),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, needle, capsys, data_dir, tmp_path):
    argv = (
        [*argv, "--data-dir", str(data_dir)] if argv[0] != "data" or "--dataset" in argv else argv
    )
    if argv[0] in ("run", "bench"):
        argv += ["--out", str(tmp_path / "r")]
    assert main(argv) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and needle in lines[0], lines


def test_nan_csv_exit_2_names_column_and_row(synth_csv, capsys):
    def nan(df):
        df.loc[41, "x0"] = np.nan
        return df

    argv = [
        "data",
        "info",
        "--data-path",
        str(synth_csv(edit=nan)),
        "--seq-len",
        "96",
        "--pred-len",
        "24",
    ]
    assert main(argv) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "'x0'" in lines[0] and "row 42" in lines[0]
    assert "--fill ffill" in lines[0]
    assert main([*argv, "--fill", "ffill"]) == 0


def test_console_script_no_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("date,a\n2020-01-01,1\n2020-01-02,x\n")
    p = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "data", "info", "--data-path", str(bad)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stderr.strip().count("\n") == 0


def test_help_states_each_default_once():
    """An option whose help names its default ("default 512") gets no second,
    argparse-made "(default: None)"; no option shows an empty default; options with a
    real default still show it."""
    from experiments.cli import HelpFormatter, build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    shown = 0
    for name, sub in subparsers.choices.items():
        if sub.formatter_class is not HelpFormatter:
            continue
        formatter = HelpFormatter(name)
        for action in sub._actions:
            if not action.help:
                continue
            text = formatter._get_help_string(action) % {"default": action.default}
            assert text.lower().count("default") <= 1, (name, action.dest, text)
            assert "(default: None)" not in text and "(default: [])" not in text, text
            shown += "(default: " in text
    assert shown >= 10
