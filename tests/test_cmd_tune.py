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


def _spec(**kw):
    from experiments.tune import TuneSpec

    return TuneSpec(
        **{"dataset": "ETTh1", "pred_len": 96, "members": ["dlinear"], "trials": 1, **kw}
    )


@pytest.mark.parametrize(
    "kw,study",
    [
        ({}, "ETTh1_96_dlinear"),  # the name studies had: they resume where they are
        ({"features": "S"}, "ETTh1_S_96_dlinear"),
        ({"features": "MS", "target": "HUFL"}, "ETTh1_MS-HUFL_96_dlinear"),
        ({"features": "S", "target": "OT"}, "ETTh1_S_96_dlinear"),
        ({"percent": 10, "seed": 2}, "ETTh1_p10_s2_96_dlinear"),
    ],
)
def test_the_default_study_names_what_makes_it_another_study(kw, study):
    assert _spec(**kw).resolved().study == study


def test_a_study_under_the_old_default_name_is_joined(tmp_path, monkeypatch):
    # made by earlier code for --features S --percent 50: its rerun, and another machine
    # on its shared storage, join it (its own folder's tune_spec.json may be damaged)
    import optuna

    from experiments.cmd_tune import legacy_study

    monkeypatch.chdir(tmp_path)
    spec = _spec(features="S", percent=50)
    assert legacy_study(spec, None) is None  # nothing there: the new name, nothing made
    assert not (tmp_path / "tune").exists()
    (tmp_path / "tune" / "ETTh1_96_dlinear").mkdir(parents=True)
    (tmp_path / "tune" / "ETTh1_96_dlinear" / "tune_spec.json").write_text("{", encoding="utf-8")
    for db in (tmp_path / "tune" / "ETTh1_96_dlinear" / "study.db", tmp_path / "shared.db"):
        study = optuna.create_study(study_name="ETTh1_96_dlinear", storage=f"sqlite:///{db}")
        for key, value in {"features": "S", "target": None, "percent": 50, "seed": 0}.items():
            study.set_user_attr(key, value)
    assert legacy_study(spec, None) == "ETTh1_96_dlinear"
    shared = _spec(features="S", percent=50, storage=str(tmp_path / "shared.db"))
    assert legacy_study(shared, str(tmp_path / "machine_b")) == "ETTh1_96_dlinear"
    assert legacy_study(_spec(features="MS", percent=50), None) is None  # another study
    assert legacy_study(_spec(features="S", percent=50, seed=1), None) is None
    assert legacy_study(_spec(), None) is None  # M: the name never changed
    assert legacy_study(_spec(features="S", percent=50), str(tmp_path / "empty")) is None


def test_tunes_of_other_features_do_not_share_a_default_folder(synth_csv, tmp_path, monkeypatch):
    # the second was refused: "was made for features='S', not 'M'"
    from experiments.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["tune", "--data-path", str(synth_csv(n=1200)), "--pred-len", "24", "--members"]
    argv += ["snaive", "--min-seq-len", "48", "--max-seq-len", "96", "--trials", "1", "--quiet"]
    assert main([*argv, "--features", "S"]) == 0
    assert main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "tune").iterdir()) == [
        "synth_24_snaive",
        "synth_S_24_snaive",
    ]


def test_a_folder_holds_its_study_in_the_storage_it_was_made_with(synth_csv, tmp_path, capsys):
    # a rerun without the first run's --storage began a new study in the folder's
    # study.db and replaced the reports of the one in shared.db, without a word
    import shutil

    from experiments.cli import main

    argv = ["tune", "--data-path", str(synth_csv(n=1200)), "--pred-len", "24", "--members"]
    argv += ["snaive", "--min-seq-len", "48", "--max-seq-len", "96", "--trials", "1", "--quiet"]
    out, shared = tmp_path / "t", tmp_path / "shared.db"
    assert main([*argv, "--out", str(out), "--storage", str(shared)]) == 0
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {out} holds the reports of study") and "shared.db" in err
    assert "\n" not in err and not (out / "study.db").exists()
    assert main([*argv, "--out", str(out), "--storage", str(shared)]) == 0
    # a folder with its own study.db, copied: still its own study
    own = tmp_path / "own"
    assert main([*argv, "--out", str(own)]) == 0
    shutil.copytree(own, tmp_path / "copy")
    assert main([*argv, "--out", str(tmp_path / "copy")]) == 0
    assert main([*argv, "--out", str(tmp_path / "copy"), "--storage", str(shared)]) == 2


def test_a_folder_made_with_a_relative_out_is_its_own_study_when_moved(
    synth_csv, tmp_path, monkeypatch
):
    # its tune_spec.json records "rel" and the study.db of the first working folder: from
    # another one the copy was refused as holding another storage's study
    import shutil

    from experiments.cli import main

    argv = ["tune", "--data-path", str(synth_csv(n=1200)), "--pred-len", "24", "--members"]
    argv += ["snaive", "--min-seq-len", "48", "--max-seq-len", "96", "--trials", "1", "--quiet"]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert main([*argv, "--out", "rel"]) == 0
    shutil.copytree(tmp_path / "a" / "rel", tmp_path / "b" / "rel")
    monkeypatch.chdir(tmp_path / "b")
    assert main([*argv, "--out", "rel"]) == 0
    assert main([*argv, "--out", "rel", "--storage", str(tmp_path / "a" / "rel" / "study.db")]) == 2
