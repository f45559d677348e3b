"""experiments.cmd_doctor: `hybrid-forecast doctor`, the machine's readiness report."""

from __future__ import annotations

import shutil
from importlib import metadata

import pytest

from experiments import cmd_doctor
from experiments.cli import main


def _lines(text: str) -> dict[str, str]:
    """check name -> its report line."""
    return {line.split()[1]: line for line in text.splitlines()[1:-1]}


def test_doctor_reports_every_check_and_writes_the_report(data_dir, tmp_path, capsys):
    out = tmp_path / "doctor.txt"
    assert main(["doctor", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = _lines(out.read_text(encoding="utf-8"))
    assert out.read_text(encoding="utf-8") in text
    assert list(lines) == [
        "python",
        "packages",
        "gpu",
        "4-bit",
        "data",
        "figures",
        "backbone",
        "run",
        "timellm",
    ]
    assert lines["data"].split()[0] == "ok" and "7 of 7 published files" in lines["data"]
    assert "ETTh1's first 3000 rows: test MSE" in lines["run"]
    assert "one training step (MiniLM, 1 layer, 8 series)" in lines["timellm"]
    assert text.splitlines()[-2].endswith("0 failed")


def test_a_missing_package_and_no_data_are_named_with_their_fix(tmp_path, capsys, monkeypatch):
    version = metadata.version

    def without_lightgbm(name: str) -> str:
        if name == "lightgbm":
            raise metadata.PackageNotFoundError(name)
        return version(name)

    monkeypatch.setattr(cmd_doctor.metadata, "version", without_lightgbm)
    monkeypatch.setattr(cmd_doctor, "_timellm_step", lambda: cmd_doctor.Check("timellm", "ok", ""))
    assert main(["doctor", "--data-dir", str(tmp_path / "empty")]) == 1
    lines = _lines(capsys.readouterr().out)
    assert (
        lines["packages"].split()[0] == "FAIL"
        and "missing lightgbm: pip install lightgbm" in lines["packages"]
    )
    assert lines["data"].split()[0] == "warn" and "data download all" in lines["data"]
    assert "a synthetic hourly series (no ETTh1 found)" in lines["run"]  # it still runs


def test_a_package_older_than_the_declared_floor_is_named(monkeypatch):
    # the official Time-LLM requirements installed over this environment, say
    version = metadata.version
    monkeypatch.setattr(
        cmd_doctor.metadata,
        "requires",
        lambda dist: ["bitsandbytes>=0.46.1", "torch", 'pytest>=99; extra == "dev"'],
    )
    monkeypatch.setattr(
        cmd_doctor.metadata,
        "version",
        lambda name: "0.43.0" if name == "bitsandbytes" else version(name),
    )
    check = cmd_doctor._packages()
    assert check.status == "FAIL"
    assert check.detail == (
        "too old: bitsandbytes 0.43.0 (needs >=0.46.1): pip install -U bitsandbytes"
    )
    monkeypatch.setattr(
        cmd_doctor.metadata,
        "version",
        lambda name: "0.46.1" if name == "bitsandbytes" else version(name),
    )
    assert cmd_doctor._packages().status == "ok"  # the dev extra's pytest>=99 is no floor


def test_a_check_that_breaks_is_reported_and_the_others_still_run(tmp_path, capsys, monkeypatch):
    def broken() -> cmd_doctor.Check:
        raise RuntimeError("CUDA error: no kernel image is available\nmore lines")

    monkeypatch.setattr(cmd_doctor, "_four_bit", broken)
    monkeypatch.setattr(cmd_doctor, "_timellm_step", lambda: cmd_doctor.Check("timellm", "ok", ""))
    assert main(["doctor", "--data-dir", str(tmp_path)]) == 1
    lines = _lines(capsys.readouterr().out)
    assert lines["4-bit"].split()[0] == "FAIL"
    assert (
        "RuntimeError: CUDA error: no kernel image is available (test_cmd_doctor.py:"
        in lines["4-bit"]
    )
    assert lines["run"].split()[0] == "ok" and lines["data"].split()[0] == "warn"


def test_out_naming_a_folder_exits_2_before_any_check(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cmd_doctor, "run_checks", lambda d: pytest.fail("checks ran"))
    assert main(["doctor", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "file").write_text("", encoding="utf-8")
    assert main(["doctor", "--out", str(tmp_path / "file" / "doctor.txt")]) == 2
    assert "cannot write there" in capsys.readouterr().err


def test_a_bad_figures_variable_is_a_failed_check_not_a_refusal(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYBRID_FORECAST_FIGURES", "jpg")
    for name in ("_backbone", "_timellm_step", "_four_bit"):
        monkeypatch.setattr(cmd_doctor, name, lambda: cmd_doctor.Check("fine", "ok", ""))
    monkeypatch.setattr(cmd_doctor, "_small_run", lambda d, t: cmd_doctor.Check("run", "ok", ""))
    assert main(["doctor", "--data-dir", str(tmp_path)]) == 1
    lines = _lines(capsys.readouterr().out)
    assert (
        lines["figures"].split()[0] == "FAIL" and "'jpg' is not a figure format" in lines["figures"]
    )
    assert "point --data-dir at the folder" in lines["data"]
    assert main(["members"]) == 0  # a command that draws nothing does not care


def test_no_data_is_worded_for_each_way_the_folder_was_chosen(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./dataset, the default, is absent here
    monkeypatch.setenv("HYBRID_FORECAST_DATA", str(tmp_path / "env"))
    detail = cmd_doctor._data(None).detail
    # the variable is set: say where it points, never tell to set it
    assert f"point $HYBRID_FORECAST_DATA (now {tmp_path / 'env'}) at the folder" in detail
    assert "set $HYBRID_FORECAST_DATA" not in detail and "point set" not in detail
    monkeypatch.delenv("HYBRID_FORECAST_DATA")
    detail = cmd_doctor._data(None).detail
    assert "set $HYBRID_FORECAST_DATA (or pass --data-dir) to the folder" in detail
    detail = cmd_doctor._data(str(tmp_path / "given")).detail
    # download into the folder asked for, not $HYBRID_FORECAST_DATA's
    assert f"data download all --data-dir {tmp_path / 'given'} (needs" in detail
    assert "point --data-dir at the folder" in detail and "HYBRID_FORECAST_DATA" not in detail


def test_a_file_that_is_not_a_csv_is_a_data_problem_not_the_machines(tmp_path):
    ett = tmp_path / "data" / "ETT-small"
    ett.mkdir(parents=True)
    (ett / "ETTh1.csv").write_bytes(bytes(range(256)) * 20)  # a binary, not a CSV
    data = cmd_doctor._data(str(tmp_path / "data"))
    assert data.status == "FAIL" and "unusable, every --dataset command refuses it: ETTh1 (" in (
        data.detail
    )
    assert "data download ETTh1 --force --data-dir" in data.detail
    (tmp_path / "run").mkdir()
    run = cmd_doctor._small_run(str(tmp_path / "data"), tmp_path / "run")
    assert run.status == "ok", run.detail  # the synthetic series instead, saying why
    assert "a synthetic hourly series (ETTh1 is unusable, a data problem" in run.detail


def test_a_truncated_etth1_is_unusable_and_the_run_names_its_rows(data_dir, tmp_path):
    ett = tmp_path / "data" / "ETT-small"
    ett.mkdir(parents=True)
    with open(data_dir / "ETT-small" / "ETTh1.csv", encoding="utf-8") as src:
        head = [next(src) for _ in range(1001)]  # the header and 1000 rows
    (ett / "ETTh1.csv").write_text("".join(head), encoding="utf-8")
    data = cmd_doctor._data(str(tmp_path / "data"))
    assert data.status == "FAIL"
    assert "ETTh1 (the ETT split needs 14400 rows but the file has 1000)" in data.detail
    (tmp_path / "run").mkdir()
    run = cmd_doctor._small_run(str(tmp_path / "data"), tmp_path / "run")
    assert run.status == "ok" and "ETTh1's first 1000 rows" in run.detail


def test_the_small_runs_one_epoch_advice_is_not_printed_before_the_report(
    tmp_path, caplog, monkeypatch
):
    # its one epoch is the check's own choice: "trained one epoch only" is noise there
    import logging

    import experiments.run

    def run(cfg, progress=None):
        logging.getLogger("hybrid_forecast.run").warning(
            "dlinear@epochs=1: trained one epoch only: whether more would help is not known"
        )
        return {"test": {"dlinear@epochs=1": {"mse": 0.5}}}

    monkeypatch.setattr(experiments.run, "run", run)
    logger = logging.getLogger("hybrid_forecast.run")
    before = logger.level
    with caplog.at_level(logging.WARNING):
        check = cmd_doctor._small_run(str(tmp_path / "none"), tmp_path)
    assert check.status == "ok" and "test MSE 0.500" in check.detail
    assert "trained one epoch only" not in caplog.text
    assert logger.level == before  # only inside the check
    experiments.run.log.warning("after: still said")
    assert "after: still said" in caplog.text


def test_the_data_hints_keep_data_dir_and_name_what_is_in_the_way(data_dir, tmp_path):
    # "data download NAME" without --data-dir D fills another folder; a file as the folder,
    # or a folder where ETTh1.csv goes, was "no dataset found" and a refused download
    given = tmp_path / "data"
    (given / "illness").mkdir(parents=True)
    shutil.copy(data_dir / "illness" / "national_illness.csv", given / "illness")
    (given / "ETT-small" / "ETTh1.csv").mkdir(parents=True)
    data = cmd_doctor._data(str(given))
    assert f"(hybrid-forecast data download NAME --data-dir {given})" in data.detail
    assert f"ETTh1 ({given / 'ETT-small' / 'ETTh1.csv'} is a folder; move it away)" in (data.detail)
    assert "missing: ETTh2" in data.detail and "ETTh1," not in data.detail
    afile = tmp_path / "data.csv"
    afile.write_text("date,OT\n", encoding="utf-8")
    data = cmd_doctor._data(str(afile))
    assert data.status == "FAIL" and f"the data folder {afile} is a file" in data.detail
    assert "no dataset found" not in data.detail


@pytest.mark.parametrize("windows", [True, False])
def test_the_data_hints_quote_the_folder_for_the_users_shell(windows, tmp_path, monkeypatch):
    # shlex.quote's single quotes are kept as part of the path by cmd.exe, and an
    # unquoted folder with a space is two words in either shell
    monkeypatch.setattr("ensemble.shell._WINDOWS", windows)
    given = tmp_path / "my data"
    (given / "ETT-small").mkdir(parents=True)
    (given / "ETT-small" / "ETTh1.csv").write_bytes(bytes(range(256)) * 20)  # unusable
    q = f'"{given}"' if windows else f"'{given}'"
    data = cmd_doctor._data(str(given))
    assert f"(hybrid-forecast data download NAME --data-dir {q})" in data.detail
    assert f"hybrid-forecast data download ETTh1 --force --data-dir {q}" in data.detail
    shutil.rmtree(given / "ETT-small")
    detail = cmd_doctor._data(str(given)).detail
    assert f"hybrid-forecast data download all --data-dir {q} (needs" in detail
