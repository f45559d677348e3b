"""experiments.cli: exit codes and one-line errors for bad input."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.cli import build_parser, main, parse


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
            "unknown router 'nosuchrouter'",
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
        (
            ["run", "--dataset", "ETTh1", "--members", "naive,dlinear", "--set", "dlinear.=1"],
            "--set 'dlinear.=1': no setting named after 'dlinear'.; e.g. dlinear.lr=0.001",
        ),
        (["run", "--config", "."], "--config . is a folder: give the file, e.g. config.yaml"),
        (  # GBK bytes from a terminal Python decoded as UTF-8 (surrogate escapes)
            ["run", "--dataset", "ETTh1", "--members", "naive,timellm@description=\udcd6\udcd0"],
            "argument 'naive,timellm@description=\\udcd6\\udcd0' is not UTF-8 text",
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
    bad.write_text("date,a\n2020-01-01,1\n2020-01-02,x\n", encoding="utf-8")
    p = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "data", "info", "--data-path", str(bad)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stderr.strip().count("\n") == 0


def test_a_reader_that_stops_early_gets_no_traceback():
    # `hybrid-forecast members | head -3`: the read end closes before the listing is out
    read, write = os.pipe()
    os.close(read)
    try:
        p = subprocess.run(
            [sys.executable, "-m", "experiments.cli", "members"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write)
    assert (p.returncode, p.stderr) == (141, "")


def test_console_drops_the_offline_kernel_fallback_warning_only():
    # bitsandbytes warns at import on AVX-512 BF16 CPUs when its optional Hub kernel is
    # out of reach; 4-bit still works, so the console does not show it. Other warnings stay.
    code = (
        "import logging; from experiments.cli import _console_logging; _console_logging(); "
        "logging.getLogger('bitsandbytes.backends.cpu.ops').warning("
        "'Failed to load CPU gemm_4bit_forward from kernels-community: offline'); "
        "logging.getLogger('bitsandbytes.nn').warning('a real bitsandbytes warning'); "
        "logging.getLogger('hybrid_forecast.run').warning('ours')"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "gemm_4bit_forward" not in p.stderr
    assert "WARNING: a real bitsandbytes warning" in p.stderr and "WARNING: ours" in p.stderr


def test_characters_the_console_lacks_do_not_crash_a_redirected_gbk_console(synth_csv, tmp_path):
    # weather.csv's own header holds U+FFFD ("SWDR (W/m\ufffd)"); GBK has neither it nor "²"
    csv = synth_csv(edit=lambda df: df.rename(columns={"x0": "SWDR (W/m\ufffd)", "x1": "q²"}))
    env = {**os.environ, "PYTHONIOENCODING": "gbk", "PYTHONUTF8": "0"}
    p = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "periods", "--data-path", str(csv)],
        capture_output=True,
        env=env,
    )
    assert p.returncode == 0, p.stderr.decode("gbk", "replace")
    out = p.stdout.decode("gbk")
    assert "SWDR (W/m\\ufffd)" in out and "q\\xb2" in out


def test_the_c_locale_console_prints_every_character_escaped(synth_csv):
    # a server or container without a locale: Python opens stdout as ASCII with
    # surrogateescape, and "±" in --help or a Chinese column name raised there
    csv = synth_csv(edit=lambda df: df.rename(columns={"x0": "高压负荷"}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "LANG")}
    env |= {"LC_ALL": "C", "PYTHONUTF8": "0"}
    for argv in (["--help"], ["periods", "--data-path", str(csv)]):
        p = subprocess.run(
            [sys.executable, "-m", "experiments.cli", *argv], capture_output=True, env=env
        )
        assert p.returncode == 0, p.stderr.decode("ascii", "replace")
        assert b"Traceback" not in p.stderr
    assert b"\\u9ad8\\u538b" in p.stdout  # the column, escaped


def test_a_tilde_is_the_home_folder_where_no_shell_expands_it(synth_csv, tmp_path, monkeypatch):
    # --out=~/x (bash expands only a word that starts with ~), a quoted "~/x", a Windows
    # shell, a config.yaml value, $HYBRID_FORECAST_DATA: each made a folder named "~" here
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    (home / "data").mkdir(parents=True)
    cwd.mkdir()
    synth_csv(n=400).rename(home / "data" / "x.csv")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    argv = ["run", "--seq-len", "48", "--pred-len", "12", "--members", "naive", "--quiet"]
    assert main([*argv, "--data-path=~/data/x.csv", "--out=~/runs/a"]) == 0
    config = home / "runs" / "a" / "config.yaml"
    assert "data_path: " + str(home / "data" / "x.csv") in config.read_text(encoding="utf-8")
    edited = home / "c.yaml"
    edited.write_text("data_path: ~/data/x.csv\nseq_len: 48\npred_len: 12\n", encoding="utf-8")
    assert (
        main(["run", "--config", "~/c.yaml", "--members", "naive", "--out", "~/runs/b", "--quiet"])
        == 0
    )
    assert (home / "runs" / "b" / "results.json").is_file()
    monkeypatch.setenv("HYBRID_FORECAST_DATA", "~/data")
    from ensemble.data import data_dir_from

    assert data_dir_from(None) == home / "data"
    assert list(cwd.iterdir()) == []


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
            assert "(default: False)" not in text, text  # an on/off flag is off unless given
            shown += "(default: " in text
    assert shown >= 10


def _options(parser: argparse.ArgumentParser, path: str = ""):
    """(command path, action) of every option of every sub-command, nested ones too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}".strip())
        elif action.option_strings:
            yield path, action


# Official-argument mirrors keep run_main.py's argparse, where the last value wins.
_OFFICIAL_ARGS = {"timellm", "explain timellm", "bench-step"}
_ONE_VALUE = {
    "dataset",
    "data_path",
    "data_dir",
    "features",
    "target",
    "out",
    "config",
    "run_data",
    "backbone",
    "members",
    "router",
    "seed",
}


def test_every_command_takes_its_data_and_output_flags_once():
    """A data, output, member, router or seed flag given twice is refused in every
    command: argparse kept the last without a word (`tune --dataset ETTh1 --dataset
    ETTh2` tuned ETTh2, `bench --features S --features M` benched M)."""
    from ensemble.cliargs import Once

    seen = 0
    for path, action in _options(build_parser()):
        if action.dest in _ONE_VALUE and path not in _OFFICIAL_ARGS:
            seen += 1
            assert isinstance(action, Once), (path, action.option_strings)
            assert action.default is None, (path, action.option_strings)  # else always "twice"
    assert seen >= 40


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["tune", "--dataset", "ETTh1", "--dataset", "ETTh2"], "a study tunes one dataset"),
        (["tune", "--seed", "0", "--seed", "1"], "a study takes one seed"),
        (["bench", "--features", "S", "--features", "M"], "a bench has one feature setting"),
        (["forecast", "r", "--data-path", "a.csv", "--data-path", "b.csv"], "reads one file"),
        (["run", "--router", "mean", "--router", "median"], "a run has one router"),
    ],
)
def test_a_repeated_flag_is_one_line_before_any_work(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is given twice" in line and needle in line
    assert not any(tmp_path.iterdir())  # no study, bench or run folder started


@pytest.mark.parametrize("command", ["run", "tune"])
@pytest.mark.parametrize("members", ["naive,,snaive", "naive,snaive,", ",naive"])
def test_an_empty_member_item_is_refused_not_dropped(
    command, members, tmp_path, monkeypatch, capsys
):
    # `--members naive,$M,snaive` with M unset ran two members without a word
    monkeypatch.chdir(tmp_path)
    assert main([command, "--members", members]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"--members {members!r} has an empty item: drop the extra comma" in line
    assert not any(tmp_path.iterdir())


def test_an_empty_member_item_is_refused_by_the_api():
    from ensemble.errors import UserError
    from experiments.api import HybridForecaster

    with pytest.raises(UserError, match=r"members 'naive,,snaive' has an empty item"):
        HybridForecaster(members="naive,,snaive")
    assert HybridForecaster(members=" naive , snaive ").members == ["naive", "snaive"]


def test_tune_defaults_hold_without_the_flags(monkeypatch):
    # --members, --router and --seed lost their argparse defaults to be taken once
    from experiments import cmd_tune

    class Stop(Exception):
        pass

    def stub(spec, **kw):
        raise Stop(spec)

    monkeypatch.setattr("experiments.tune.run_tune", stub)
    with pytest.raises(Stop) as got:
        cmd_tune.handle(parse(build_parser(), ["tune", "--trials", "1"]))
    spec = got.value.args[0]
    assert (spec.members, spec.router, spec.seed, spec.features) == (["dlinear"], "mean", 0, "M")


@pytest.mark.parametrize(
    "argv,command",
    [
        (["timellm", "--learning_rate", "abc"], "timellm"),  # 42 lines of usage before
        (["run", "--no-such-flag"], "run"),  # was reported by the top-level parser
        (["data", "info", "--no-such-flag"], "data info"),
    ],
)
def test_usage_errors_are_one_line_naming_the_command_help(argv, command, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert lines[0].endswith(f"see 'hybrid-forecast {command} --help'")


def test_folders_may_follow_an_option_between_them(capsys):
    """`summary r0 --finished-only r1` lists both folders; a stray word elsewhere is
    still refused."""
    args = parse(build_parser(), ["summary", "r0", "--finished-only", "r1", "r2"])
    assert args.run_dirs == ["r0", "r1", "r2"] and args.finished_only
    with pytest.raises(SystemExit) as exc:
        parse(build_parser(), ["summary", "r0", "--finished-only", "r1", "--bogus"])
    assert exc.value.code == 2 and "--bogus" in _err_lines(capsys)[0]
    with pytest.raises(SystemExit) as exc:
        parse(build_parser(), ["analyse", "r0", "--prompt-probe", "r1"])
    assert exc.value.code == 2 and "r1" in _err_lines(capsys)[0]


def test_download_all_with_other_names_is_refused(tmp_path, capsys):
    argv = ["data", "download", "all", "ETTh1", "--data-dir", str(tmp_path / "d")]
    assert main(argv) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "'all'" in lines[0] and "alone" in lines[0], lines
    assert not (tmp_path / "d").exists()


def test_interrupt_message_says_how_time_llm_resumes(monkeypatch, capsys):
    # Finished members are reused; Time-LLM continues from its last checkpoint.
    import experiments.cmd_run as cmd_run

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cmd_run, "handle", interrupted)
    assert main(["run", "--dataset", "ETTh1"]) == 130
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "Time-LLM continues from its last checkpoint" in lines[0]
    assert "resume where it stopped" not in lines[0]


def test_error_starts_on_its_own_line_after_a_progress_bar(monkeypatch, capsys):
    import experiments.cmd_run as cmd_run
    from ensemble.errors import UserError

    def fails_mid_bar(args):
        from tqdm.auto import tqdm

        bar = tqdm(total=3, desc="members", file=sys.stderr)
        bar.update(1)
        raise UserError("a member refused")

    monkeypatch.setattr(cmd_run, "handle", fails_mid_bar)
    assert main(["run", "--dataset", "ETTh1"]) == 2
    err = capsys.readouterr().err
    assert "\nerror: a member refused\n" in err, repr(err)


def test_path_error_names_the_flag_of_the_path(monkeypatch, tmp_path, capsys):
    import ensemble.data

    data = tmp_path / "data"

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(data / "ETT-small" / "ETTh1.csv"))

    monkeypatch.setattr(ensemble.data, "load_dataset", unreadable)
    assert main(["data", "info", "--dataset", "ETTh1", "--data-dir", str(data)]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "check --data-dir" in lines[0] and "--out" not in lines[0], lines


@pytest.mark.parametrize("command", ["analyse", "forecast"])
def test_a_read_only_run_folder_points_at_out(command, monkeypatch, tmp_path, capsys):
    # both write into the run folder by default; --out writes elsewhere
    run = tmp_path / "run"

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(run / ".routing_report.md.x.tmp"))

    monkeypatch.setattr("experiments.analyse._analyse", read_only)
    monkeypatch.setattr("experiments.forecast.forecast_run", read_only)
    assert main([command, str(run)]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "RUN_DIR cannot be written to" in lines[0], lines
    assert lines[0].endswith("write the outputs elsewhere with --out")
    run.mkdir()  # a folder it can write, and a file in it that it cannot read: no --out
    assert main([command, str(run)]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and lines[0].endswith("check RUN_DIR: its files must be readable by you")


@pytest.mark.parametrize(
    "err,needle",
    [
        (OSError(28, "No space left on device", "runs/x/forecasts.npz"), "free some disk space"),
        (OSError(36, "File name too long", "a" * 300), "give a shorter path"),
        (FileNotFoundError(2, "No such file or directory", "/proc/foo"), "check --out"),
    ],
)
def test_disk_and_path_errors_are_one_line(err, needle, monkeypatch, capsys):
    import errno

    import experiments.cmd_run as cmd_run

    if err.errno == 36:
        err.errno = errno.ENAMETOOLONG  # its number differs between systems
    if err.errno == 28:
        err.errno = errno.ENOSPC

    def fails(args):
        raise err

    monkeypatch.setattr(cmd_run, "handle", fails)
    assert main(["run", "--dataset", "ETTh1", "--out", "/proc/foo"]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and needle in lines[0], lines


@pytest.mark.parametrize("windows", [True, False])
def test_a_path_over_windows_limit_says_so_there(windows, monkeypatch, tmp_path, capsys):
    # Windows reports a path over 260 characters as "not found" (WinError 3 or 206)
    import experiments.cli as cli
    import experiments.cmd_run as cmd_run

    deep = tmp_path / ("d" * 120) / ("e" * 120) / "forecasts.npz"

    def fails(args):
        raise FileNotFoundError(2, "No such file or directory", str(deep))

    monkeypatch.setattr(cli, "_WINDOWS", windows)
    monkeypatch.setattr(cmd_run, "handle", fails)
    assert main(["run", "--dataset", "ETTh1", "--out", str(tmp_path / ("d" * 120))]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1, lines
    assert ("over Windows' limit of 260" in lines[0]) == windows, lines
    assert ("shorter --out" in lines[0]) == windows and ("check --out" in lines[0]) != windows


def test_other_os_errors_still_surface(monkeypatch):
    import experiments.cmd_run as cmd_run

    def fails(args):
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(cmd_run, "handle", fails)
    with pytest.raises(ConnectionResetError):
        main(["run", "--dataset", "ETTh1"])


_SIGTERM_RUN = """
import os, signal, sys, time
from experiments import registry
from experiments.cli import build_parser, main, parse

build = registry.build

def build_then_kill(spec, ctx):  # SIGTERM (a timeout, a scheduler) while a member fits
    member = build(spec, ctx)
    def fit(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    member.fit = fit
    return member

registry.build = build_then_kill
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_is_an_interrupt_with_a_message_and_a_log(synth_csv, tmp_path):
    out = tmp_path / "r"
    argv = ["run", "--data-path", str(synth_csv(n=1200)), "--seq-len", "48", "--pred-len"]
    argv += ["12", "--members", "naive", "--out", str(out), "--quiet"]
    p = subprocess.run(
        [sys.executable, "-c", _SIGTERM_RUN, *argv], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 143, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), lines
    assert "interrupted" in (out / "run.log").read_text(encoding="utf-8")


def test_members_lists_every_member_with_its_settings_and_every_router(capsys):
    from experiments import registry
    from experiments.cli import main
    from router import COMBINERS

    assert main(["members"]) == 0
    out = capsys.readouterr().out
    registry._load_builtin()
    for name in [*registry._REGISTRY, *COMBINERS]:
        assert f"\n  {name}: " in out, name
    timellm = out.split("\n  timellm: ")[1].split("\n  arima: ")[0]
    assert "llm_layers" in timellm and "seq_len" not in timellm  # seq_len is --seq-len's
    dlinear = " ".join(out.split("\n  dlinear: ")[1].split("\n  nlinear: ")[0].split())
    # each setting with the default a member built without it has; (run): set by the run
    assert "settings: kernel=25, individual=false, seed=(run), lr=0.005," in dlinear
    lightgbm = " ".join(out.split("\n  lightgbm: ")[1].split("\n\nrouters")[0].split())
    assert "lr=0.05," in lightgbm and "rounds=1000," in lightgbm  # attributes named otherwise
    # min(16, H) and min(24, L): "components=16" read as 16 at --pred-len 12 too
    assert "components=16 (capped by the run)," in lightgbm
    assert "n_lags=24 (capped by the run)," in lightgbm
    assert "seasonal=(run)" in out and "period=(run)" in out
    # the examples show the defaults (it said @d=1 where d is 0), and the setting every
    # member takes is said once
    ctx = registry.MemberContext(96, 24, 3, "h", [24], 0, "x")
    arima = registry.build("arima", ctx)
    described = registry.available()["arima"]
    assert f"@d={arima.d}," in described and f"@fit_rows={arima.fit_rows})" in described
    assert "every member also takes progress=false" in out
    for name in registry.available():
        registry.build(f"{name}@progress=false", ctx)


def test_a_timellm_setting_the_run_owns_is_refused_by_name():
    from ensemble.errors import UserError
    from experiments import registry

    ctx = registry.MemberContext(96, 24, 3, "h", [24], 0, "synth", params={"seq_len": 48})
    with pytest.raises(UserError, match=r"unknown timellm setting\(s\) seq_len; valid: "):
        registry.build("timellm", ctx)


# Sample values for the shell variables the documented commands use; a command with any
# other variable (e.g. a whole argument list in $ARGS) is not checked.
_DOC_VARS = {"s": "0", "L": "512", "h": "96", "d": "ETTh1", "m": "dlinear", "r": "mean"}
_DOC_VARS |= {"f": "runs/x", "name": "x", "HYBRID_FORECAST_DATA": "data"}
_DOCS = ["README.md", "BENCHMARKS.md", "docs", "benchmarks/router_preregistration.md"]


def _documented_commands(text: str) -> list[str]:
    """The argument strings of every ``hybrid-forecast`` command in fenced code blocks, and
    of inline ones with arguments (a bare ``hybrid-forecast analyse`` in prose is a name)."""
    import re

    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r";|&&|\|\||&|\bdo\b|\bthen\b", line.split("  #")[0]):
                hit = re.search(r"(?:^|\s)hybrid-forecast\s+(.*)$", part.split(" # ")[0])
                if hit:
                    found.append(hit.group(1).strip())
    found += re.findall(r"`hybrid-forecast ([^`\s]+ [^`]+)`", text)
    return found


def test_every_command_in_the_docs_parses(capsys):
    """A renamed or removed flag breaks the README's and BENCHMARKS' commands silently
    otherwise; here each one goes through the real parser (nothing is run)."""
    import re
    import shlex
    from pathlib import Path

    from experiments.cli import build_parser

    root = Path(__file__).resolve().parents[1]
    files = [p for d in _DOCS for p in sorted((root / d).glob("*.md")) or [root / d]]
    parser, checked, bad = build_parser(), 0, []
    for path in files:
        for cmd in _documented_commands(path.read_text(encoding="utf-8")):
            names = set(re.findall(r"\$\{?(\w+)\}?", cmd))
            if (
                "[" in cmd
                or "..." in cmd
                or names - set(_DOC_VARS) - {"SETS", "SETS_H1", "SETS_M1"}
            ):
                continue  # a placeholder, not a command
            cmd = re.sub(r"\$\{?(\w+)\}?", lambda m: _DOC_VARS.get(m.group(1), ""), cmd)
            checked += 1
            try:
                parser.parse_args(shlex.split(cmd))
            except SystemExit:
                bad.append(f"{path.name}: hybrid-forecast {cmd}")
    capsys.readouterr()
    assert checked > 100 and not bad, f"{checked} checked:\n" + "\n".join(bad)


def test_analyse_writes_the_routing_report_of_a_run_where_out_says(synth_csv, tmp_path, capsys):
    # the command users run after `run`: a report in --out, the run folder left as it was
    run_dir, out = tmp_path / "r", tmp_path / "report"
    argv = ["run", "--data-path", str(synth_csv(n=1200)), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--members", "naive,snaive", "--quiet", "--out", str(run_dir)]
    assert main(argv) == 0
    before = sorted(p.name for p in run_dir.iterdir())
    capsys.readouterr()
    assert main(["analyse", str(run_dir), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"routing report: {out / 'routing_report.md'}\n"
    assert captured.err == ""  # no bar drawn into a stream that is not a terminal
    an = json.loads((out / "routing_analysis.json").read_text(encoding="utf-8"))
    assert an["members"] == ["naive", "snaive"]
    assert sum(an["win_rate"].values()) == pytest.approx(1.0)
    assert "Win rates per regime" in (out / "routing_report.md").read_text(encoding="utf-8")
    assert (out / "win_rates.png").is_file()
    assert sorted(p.name for p in run_dir.iterdir()) == before


_RUN = ["run", "--seq-len", "96", "--pred-len", "24", "--members", "naive", "--quiet"]
_TUNE = ["tune", "--pred-len", "24", "--members", "snaive", "--trials", "1", "--quiet"]
_TUNE += ["--min-seq-len", "48", "--max-seq-len", "96"]
_BENCH = ["bench", "--seq-len", "96", "--quiet", "--members", "naive,snaive"]


@pytest.mark.parametrize(
    "argv,needle",
    [
        ([*_RUN, "--target", "nope"], "target column 'nope' not found"),
        ([*_RUN, "--seq-len", "0"], "--seq-len and --pred-len must be positive (got 0, 24)"),
        ([*_RUN, "--percent", "0"], "--percent must be in (0, 100] (got 0)"),
        ([*_RUN, "--percent", "1"], "--percent 1 leaves no training window"),
        ([*_RUN, "--set", "foo"], "--set 'foo': expected MEMBER.KEY=VALUE"),
        (["run", "--config", "{bad}"], "bad.yaml: not valid YAML"),
        (["run", "--config", "{lst}"], "list.yaml: expected a mapping of config keys"),
        ([*_TUNE, "--jobs", "0"], "--jobs must be at least 1 (got 0)"),
        (
            [*_TUNE, "--min-seq-len", "200", "--max-seq-len", "100"],
            "--min-seq-len <= --max-seq-len",
        ),
        ([*_BENCH, "--horizons", ""], "--horizons is empty"),
        ([*_BENCH, "--horizons", "0"], "every --horizons value must be positive"),
        ([*_BENCH, "--seeds", "-1"], "--seeds must lie in 0 .. 4294967295 (got [-1])"),
        (["data", "download", "nope"], "unknown dataset 'nope': choose one of ETTh1"),
        (["forecast", "{lst}"], "list.yaml is not a folder: give a run folder"),
    ],
    ids=lambda v: None if isinstance(v, list) else v.split(":")[0][:40],
)
def test_bad_values_exit_2_with_one_line_and_leave_no_folder(
    argv, needle, synth_csv, tmp_path, capsys
):
    # each is refused before anything is written: a typo must not leave a half-made run,
    # study, bench or data folder behind (nor a traceback)
    bad, lst = tmp_path / "bad.yaml", tmp_path / "list.yaml"
    bad.write_text("seq_len: [96\n", encoding="utf-8")  # an unclosed list
    lst.write_text("- seq_len\n", encoding="utf-8")  # YAML, but no mapping
    argv = [a.format(bad=bad, lst=lst) for a in argv]
    out = tmp_path / "out"
    if argv[0] in ("run", "tune"):
        argv += ["--data-path", str(synth_csv(n=1200)), "--out", str(out)]
    elif argv[0] == "bench":  # each grid flag once: a second is refused as such
        for flag, default in (("--horizons", "24"), ("--seeds", "0")):
            argv += [] if flag in argv else [flag, default]
        argv += ["--datasets", str(synth_csv(n=1200)), "--out", str(out)]
    elif argv[0] == "data":
        argv += ["--data-dir", str(out)]  # fails before any download
    else:
        argv += ["--out", str(out / "f.csv")]
    assert main(argv) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize("command", ["data", "bench", "periods", "tune"])
def test_a_refused_file_is_one_line_not_its_warnings_first(command, synth_csv, tmp_path):
    # the file's warnings (a column without a header dropped) came before the refusal
    path = synth_csv(n=300 if command != "periods" else 12, edit=lambda df: df.assign(**{"": 1.0}))
    argv = {
        "data": ["data", "info", "--data-path", str(path)],
        "bench": ["bench", "--datasets", str(path), "--members", "naive"],
        "periods": ["periods", "--data-path", str(path)],
        "tune": ["tune", "--data-path", str(path), "--members", "naive", "--trials", "1"],
    }[command] + (["--out", str(tmp_path / "o")] if command in ("bench", "tune") else [])
    # a process of its own: in this one pytest's log handler keeps the CLI's console away
    p = subprocess.run(
        [sys.executable, "-m", "experiments.cli", *argv], capture_output=True, text=True
    )
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "too few" in lines[0], lines


def _windows_bad_name(path: str) -> OSError:
    """Windows' answer to a name with one of <>:"|?* (or ending in a space or dot):
    OSError EINVAL (WinError 123) naming the path."""
    return OSError(22, "The filename, directory name, or volume label syntax is incorrect", path)


@pytest.mark.parametrize(
    "out",
    [r"runs\2024-01-01T10:00", 'C:\\my runs"'],  # a colon; cmd's \" before the closing quote
)
def test_a_name_windows_refuses_is_one_line_saying_why(out, monkeypatch, capsys):
    import experiments.cmd_run as cmd_run

    def fails(args):
        raise _windows_bad_name(args.out)

    monkeypatch.setattr(cmd_run, "handle", fails)
    assert main(["run", "--dataset", "ETTh1", "--out", out]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: cannot use {out}: a Windows file name cannot contain")
    assert '< > : " | ? *' in lines[0] and "trailing backslash" in lines[0]
    assert lines[0].endswith("; check --out"), lines


def test_an_einval_about_a_name_windows_takes_is_not_called_a_bad_name(monkeypatch, capsys):
    # Linux's EINVAL of a folder renamed into itself read "a Windows file name cannot contain"
    import experiments.cmd_run as cmd_run

    def fails(args):
        raise OSError(22, "Invalid argument", "runs/a")

    monkeypatch.setattr(cmd_run, "handle", fails)
    with pytest.raises(OSError, match="Invalid argument"):  # surfaces, as other OS errors do
        main(["run", "--dataset", "ETTh1", "--out", "runs/a"])
    assert "Windows file name" not in capsys.readouterr().err


def test_winerror_267_about_a_bad_name_is_one_line_and_a_broken_pipe_is_not(monkeypatch, capsys):
    import experiments.cmd_run as cmd_run

    errors = []

    def fails(args):
        raise errors.pop()

    monkeypatch.setattr(cmd_run, "handle", fails)
    # ERROR_DIRECTORY ("The directory name is invalid") of a folder ending in a dot
    err = NotADirectoryError(20, "The directory name is invalid", "runs\\v1.")
    err.winerror = 267  # set by Windows only
    errors.append(err)
    assert main(["run", "--dataset", "ETTh1", "--out", "runs\\v1."]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "a Windows file name cannot contain" in lines[0], lines
    # the same error of a name Windows takes is a folder that is a file: not this message
    err = NotADirectoryError(20, "The directory name is invalid", "runs")
    err.winerror = 267
    errors.append(err)
    assert main(["run", "--dataset", "ETTh1", "--out", "runs"]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "cannot contain" not in lines[0] and "check --out" in lines[0]
    # Windows' broken pipe is EINVAL too, but names no file: not a path error
    errors.append(OSError(22, "Invalid argument"))
    with pytest.raises(OSError):
        main(["run", "--dataset", "ETTh1"])


@pytest.mark.parametrize("windows", [True, False])
def test_a_csv_open_in_excel_says_close_it(windows, monkeypatch, tmp_path, capsys):
    # Windows refuses to replace a file another program has open (Excel locks its CSVs)
    import experiments.cli as cli
    import experiments.cmd_bench as cmd_bench
    import experiments.cmd_run as cmd_run

    out = tmp_path / "my bench"
    out.mkdir()
    (out / "bench.csv").write_text("a\n", encoding="utf-8")

    def held(args):
        raise PermissionError(13, "Permission denied", str(out / "bench.csv"))

    monkeypatch.setattr(cli, "_WINDOWS", windows)
    monkeypatch.setattr("ensemble.shell._WINDOWS", windows)
    monkeypatch.setattr(cmd_bench, "handle", held)
    monkeypatch.setattr(cmd_run, "handle", held)
    assert main(["bench", "--report-only", "--out", str(out)]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1, lines
    if not windows:
        assert "check --out: give a path you can write to" in lines[0], lines
        return
    assert lines[0] == (
        f"error: {out / 'bench.csv'} is open in another program (Excel locks the CSVs it "
        f'shows): close it and rerun, or `hybrid-forecast bench --report-only --out "{out}"`'
    )
    assert main(["run", "--dataset", "ETTh1", "--out", str(out)]) == 2
    lines = _err_lines(capsys)
    assert lines[0].endswith("close it and rerun"), lines
    # a folder refused is not a file held open
    (out / "bench.csv").unlink()
    assert main(["run", "--dataset", "ETTh1", "--out", str(out)]) == 2
    assert "check --out: give a path you can write to" in _err_lines(capsys)[0]


def test_ctrl_break_is_an_interrupt_like_sigterm(monkeypatch, capsys):
    # Windows' console sends SIGBREAK for Ctrl-Break, not SIGTERM; stood in for by SIGUSR1
    import signal

    import experiments.cmd_run as cmd_run

    monkeypatch.setattr(signal, "SIGBREAK", signal.SIGUSR1, raising=False)
    before = signal.getsignal(signal.SIGUSR1)

    def ctrl_break(args):
        handler = signal.getsignal(signal.SIGBREAK)
        assert callable(handler), "no handler for Ctrl-Break"
        handler(signal.SIGBREAK, None)

    monkeypatch.setattr(cmd_run, "handle", ctrl_break)
    assert main(["run", "--dataset", "ETTh1"]) == 143
    lines = _err_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("interrupted: rerun the same command"), lines
    assert signal.getsignal(signal.SIGUSR1) == before  # put back


@pytest.mark.parametrize("there", [False, True])
def test_forecast_out_naming_a_folder_is_refused_in_one_line(there, tmp_path, capsys):
    # --out new/ wrote a file named new (an existing folder was refused already)
    folder = tmp_path / "new"
    if there:
        folder.mkdir()
    out = str(folder) + ("" if there else "/")
    assert main(["forecast", str(tmp_path / "run"), "--out", out]) == 2
    assert _err_lines(capsys) == [
        f"error: --out {out} is a folder; give a file name, e.g. {folder / 'forecast.csv'}"
    ]
    assert folder.is_dir() == there
