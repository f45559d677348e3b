"""experiments.cmd_run: `run`'s flags and config file into a RunConfig, refusals first."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ensemble.errors import UserError
from experiments.cli import build_parser, main
from experiments.cmd_run import config_from_args
from experiments.config import RunConfig


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """A refusal that regressed runs: into tmp_path/runs, not the clone's runs/."""
    monkeypatch.chdir(tmp_path)


def _cfg(*argv: str) -> RunConfig:
    return config_from_args(build_parser().parse_args(["run", *argv]))


def _finished_run(folder: Path, **settings) -> Path:
    """A folder that looks like a finished run of ``settings`` (what the refusals read)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig(out=str(folder), **settings)
    (folder / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    (folder / "run.log").write_text("", encoding="utf-8")
    (folder / "results.json").write_text("{}", encoding="utf-8")
    return folder / "config.yaml"


@pytest.mark.parametrize("flag", ["--out", "--data-path", "--data-dir", "--periods", "--config"])
def test_an_empty_value_is_refused_not_taken_for_the_default(flag, capsys):
    # --out "" wrote runs/<name>, --data-path "" ran ETTh1, --periods "" detected them
    assert main(["run", "--dataset", "ETTh1", "--members", "naive", flag, ""]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{flag} is empty: give a value, or drop {flag} for its default" in line


@pytest.mark.parametrize(
    "flag,values,hint",
    [
        ("--seed", ("0", "1"), "bench --seeds"),
        ("--members", ("naive", "snaive"), "--members naive,dlinear"),
        ("--dataset", ("ETTh1", "ETTh2"), "bench --datasets"),
        ("--data-path", ("a.csv", "b.csv"), "bench --datasets"),
    ],
)
def test_a_repeated_seed_or_members_is_refused(flag, values, hint, capsys):
    # argparse kept the last: `--seed 0 --seed 1` was one run of seed 1
    argv = ["run", flag, values[0], flag, values[1]]  # refused as the flags are read
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{flag} is given twice ({values[0]} and {values[1]})" in line and hint in line


def test_a_spec_setting_that_hides_a_set_is_named_once(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = _cfg("--members", "dlinear@epochs=1,dlinear@kernel=49", "--set", "dlinear.epochs=5")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1, said
    assert "dlinear@epochs=1 keeps epochs=1 (not 5)" in said[0]
    assert "kernel=49" not in said[0]  # that spec does take epochs=5
    assert cfg.member_params == {"dlinear": {"epochs": 5}}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _cfg("--members", "dlinear@epochs=5", "--set", "dlinear.epochs=5")  # no difference
    assert caplog.records == []


def test_member_params_of_a_member_not_in_the_config_are_said_and_dropped(tmp_path, caplog):
    # older versions wrote such files when --members left a member out: they rerun
    f = tmp_path / "c.yaml"
    f.write_text("members: [naive]\nmember_params: {dlinear: {epochs: 2}}\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert _cfg("--config", str(f)).member_params == {}
    assert "member_params has settings for 'dlinear', not among its members (naive)" in (
        caplog.text
    )
    # --members leaving dlinear out of a consistent config drops its settings, which would
    # otherwise make the config.yaml this run writes one that is refused
    f.write_text(
        "members: [naive, dlinear]\nmember_params: {dlinear: {epochs: 2}}\n", encoding="utf-8"
    )
    assert _cfg("--config", str(f), "--members", "naive").member_params == {}


def test_given_periods_are_a_data_setting_of_a_finished_run(tmp_path, capsys):
    # `--config F --periods 168` replaced F's finished run with a warning only, while
    # --seed was refused: the periods change every member's forecasts
    config = _finished_run(tmp_path / "r", periods=[24])
    assert main(["run", "--config", str(config), "--periods", "168"]) == 2
    err = capsys.readouterr().err
    assert "--periods 168 differs from" in err and "(24)" in err and "give --out" in err
    assert _cfg("--config", str(config), "--periods", "24").periods == [24]  # the same: fine


def test_the_data_folder_the_environment_names_is_no_other_data_dir(tmp_path, monkeypatch):
    # data_dir: null is the folder $HYBRID_FORECAST_DATA names: naming it with --data-dir
    # was refused as "--data-dir ... differs from F (None)"
    monkeypatch.setenv("HYBRID_FORECAST_DATA", str(tmp_path / "data"))
    config = _finished_run(tmp_path / "r")
    cfg = _cfg("--config", str(config), "--data-dir", str(tmp_path / "data"))
    assert cfg.data_dir == str((tmp_path / "data").resolve())
    with pytest.raises(UserError, match="--data-dir .* differs from"):
        _cfg("--config", str(config), "--data-dir", str(tmp_path / "other"))


def test_a_config_outside_its_run_folder_does_not_choose_the_folder(tmp_path, caplog):
    # a config copied out of its run folder kept `out:` and wrote back into that run
    config = _finished_run(tmp_path / "r")
    copy = tmp_path / "copy.yaml"
    copy.write_text(config.read_text(encoding="utf-8"), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert _cfg("--config", str(copy)).out is None  # run() gives the default folder
    assert f"names out: {tmp_path / 'r'}" in caplog.text
    assert _cfg("--config", str(copy), "--out", str(tmp_path / "r")).out == str(tmp_path / "r")
    assert _cfg("--config", str(config)).out == str(tmp_path / "r")  # its own folder
    assert "a config copied out of its run folder never writes back" in " ".join(
        build_parser()._subparsers._group_actions[0].choices["run"].format_help().split()
    )


@pytest.mark.parametrize("value", ["maybe", "1"])
def test_a_progress_setting_that_is_no_bool_is_refused(value, synth_csv, tmp_path, capsys):
    # naive@progress=maybe ran: progress is every member's setting, so no registered list
    # names it, and members that draw no bars never read it
    argv = ["run", "--data-path", str(synth_csv(n=1200)), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--out", str(tmp_path / "r")]
    assert main([*argv, "--members", f"naive@progress={value}"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"naive@progress={value}: a setting has the wrong type" in line
    assert "progress must be true or false" in line


def test_run_help_states_the_percent_default():
    text = " ".join(
        build_parser()._subparsers._group_actions[0].choices["run"].format_help().split()
    )
    assert "keep the first PERCENT % of train windows (default 100: all)" in text


def test_the_console_marks_the_best_member_on_val_never_a_lowest_test(monkeypatch, capsys):
    # "<- lowest test MSE" chose on test: a thesis table copied from it carried that choice
    import experiments.run

    res = {
        "dataset": "ETTh1",
        "seq_len": 96,
        "pred_len": 24,
        "windows": {"test": 10},
        "members": ["a", "b", "c"],
        # b is lowest on val; a lowest of the members on test; the ensemble lowest of all
        "val": {
            "a": {"mse": 0.52},
            "b": {"mse": 0.5},
            "c": {"mse": None},  # diverged: no choice
            "ensemble": {"mse": 0.4},
            "oracle": {"mse": 0.1},
        },
        "test": {
            n: {"mse": m, "mae": m}
            for n, m in {"a": 0.3, "b": 0.4, "c": 0.5, "ensemble": 0.2, "oracle": 0.1}.items()
        },
    }
    monkeypatch.setattr(experiments.run, "run", lambda cfg, **kw: res)
    assert main(["run", "--dataset", "ETTh1", "--members", "a,b,c", "--quiet"]) == 0
    out = capsys.readouterr().out
    marked = [line.split()[0] for line in out.splitlines() if "<- " in line]
    assert marked == ["b"] and "<- best member on val" in out and "lowest test" not in out


@pytest.mark.parametrize("signum,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_ctrl_c_a_finalizer_swallowed_still_ends_the_run(
    signum, code, monkeypatch, capsys, terminal_ctrl_c
):
    # a Ctrl-C landing while the garbage collector ran a callback was printed as
    # "Exception ignored in ..." and the run went on to exit 0 as if never interrupted
    import signal
    import sys

    from experiments import run as run_module

    class Finalised:  # freed at once: the signal lands in its __del__
        def __del__(self):
            signal.raise_signal(getattr(signal, signum))

    def run(cfg, **_):
        Finalised()
        scores = {"mse": 0.5, "mae": 0.5}
        return {
            **{k: getattr(cfg, k) for k in ("dataset", "seq_len", "pred_len", "members")},
            "windows": {"test": 1},
            "test": {"naive": scores, "ensemble": scores},
            "val": {"naive": scores, "ensemble": scores},
        }

    printed: list[type] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: printed.append(u.exc_type))
    monkeypatch.setattr(run_module, "run", run)
    argv = ["run", "--dataset", "ETTh1", "--members", "naive", "--seq-len", "96", "--out", "r"]
    assert main([*argv, "--pred-len", "24", "--quiet"]) == code
    out, err = capsys.readouterr()
    assert "interrupted" in err and "test MSE" not in out and printed == []


@pytest.mark.parametrize(
    "periods,said",
    [
        ("24,,12", "has an empty item"),  # was [24, 12]
        ("24,", "has an empty item"),
        ("24,24", "lists 24 twice; give each period once"),  # was kept as [24, 24]
        ("168, 24,168", "lists 168 twice"),
        ("24,x", "give whole numbers separated by commas"),
        ("24,1", "each period is a whole number >= 2"),
    ],
)
def test_periods_with_an_empty_or_repeated_item_are_refused(periods, said):
    with pytest.raises(UserError, match=said):
        _cfg("--periods", periods)


def test_given_periods_keep_their_order():
    assert _cfg("--periods", " 168, 24 ").periods == [168, 24]


def test_a_folder_of_ones_own_named_cells_is_no_bench(tmp_path):
    # `mkdir proj/cells` made proj "a bench folder", refused as a run's --out, and every
    # folder named cells "the bench's cells/ folder" to summary --out
    from experiments.bench import is_bench_folder

    (tmp_path / "cells" / "notes").mkdir(parents=True)
    assert not is_bench_folder(tmp_path) and not is_bench_folder(tmp_path / "cells")
    (tmp_path / "bench_spec.json").write_text("{}", encoding="utf-8")
    assert is_bench_folder(tmp_path)


@pytest.mark.parametrize("holds", ["bench_spec.json", "cells"])
def test_a_run_into_a_bench_folder_is_refused(holds, tmp_path, capsys):
    # `run --out BENCH` wrote a run's files among a bench's tables and cells/
    bench = tmp_path / "bench"
    bench.mkdir()
    if holds == "cells":  # a bench from before bench_spec.json: cells/ with a run folder
        cell = bench / "cells" / "ETTh1_96_24_s0"
        cell.mkdir(parents=True)
        for name in ("config.yaml", "run.log"):
            (cell / name).write_text("", encoding="utf-8")
    else:
        (bench / holds).write_text("{}", encoding="utf-8")
    before = sorted(bench.iterdir())
    assert main(["run", "--dataset", "ETTh1", "--members", "naive", "--out", str(bench)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: --out {bench} is a bench folder") and "another --out" in line
    assert sorted(bench.iterdir()) == before
