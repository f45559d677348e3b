"""`hybrid-forecast tune`'s default folder: the study's name, as a folder name."""

from __future__ import annotations

import pytest

from experiments.cmd_tune import default_out


@pytest.mark.parametrize(
    "study",
    [
        "ETTh1_96_dlinear+arima",
        "x_96_dlinear@kernel=25,arima",
        "油温_96_dlinear",
        "my data_12_dlinear",  # the data file's name: "my data.csv"
        "ETTh1 (1)_96_dlinear",  # a browser's second download
    ],
)
def test_study_names_that_are_folder_names_keep_their_folder(study):
    assert default_out(study) == f"tune/{study}"  # earlier studies resume where they are


def test_a_study_already_in_its_folder_stays_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = "zh_24_timellm@backbone=mlink."  # not a Windows folder name, but made here
    (tmp_path / "tune" / study).mkdir(parents=True)
    (tmp_path / "tune" / study / "study.db").write_bytes(b"")
    assert default_out(study) == f"tune/{study}"


@pytest.mark.parametrize(
    "study",
    [
        "zh_24_timellm@backbone=./mlink",  # made tune/zh_24_timellm@backbone=. and mlink/ in it
        "ETTh1_96_timellm@backbone=C:\\models\\qwen",  # ':' and '\\' on Windows
        "x_96_" + "dlinear@kernel=25+" * 20,  # past a file name's length
        "zh_24_timellm@backbone=mlink.",  # Windows drops a final dot
    ],
)
def test_a_study_name_holding_a_path_is_one_folder(study):
    out = default_out(study)
    folder = out.removeprefix("tune/")
    assert "/" not in folder and "\\" not in folder and ":" not in folder
    assert len(folder) <= 64 and not folder.endswith(".")
