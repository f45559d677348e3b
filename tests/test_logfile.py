"""A command's log file: INFO into the folder, the console quiet meanwhile, and every
level it changed put back when the command ends (a run from a notebook left the caller's
console handlers at WARNING for good)."""

from __future__ import annotations

import io
import logging

import pytest
from conftest import synth_run_argv

from ensemble.errors import UserError
from experiments.logfile import FolderLog, any_stream, said_after_checks


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(params=[True])
def console(request):
    """A caller's own console on the root logger, at INFO, the root at DEBUG: a terminal
    (param True) or a redirected stream (False)."""
    root = logging.getLogger()
    stream = _Terminal() if request.param else io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    before = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler, stream
    root.removeHandler(handler)
    root.setLevel(before)


def test_a_folder_log_quiets_the_console_and_puts_it_back(console, tmp_path):
    handler, stream = console
    log = logging.getLogger("hybrid_forecast.test")
    outer = FolderLog(tmp_path / "a" / "run.log", console=any_stream)
    inner = FolderLog(tmp_path / "b" / "bench.log")  # nested: a bench's run
    log.info("into both files")
    log.warning("to the console too")
    assert handler.level == logging.WARNING and logging.getLogger().level == logging.DEBUG
    inner.close()
    assert handler.level == logging.WARNING  # the outer log still runs
    outer.close()
    outer.close()  # twice (logging.shutdown): nothing more changes
    assert handler.level == logging.INFO and logging.getLogger().level == logging.DEBUG
    assert outer not in logging.getLogger().handlers and inner not in logging.getLogger().handlers
    assert stream.getvalue() == "WARNING to the console too\n"
    for f in (tmp_path / "a" / "run.log", tmp_path / "b" / "bench.log"):
        assert "INFO hybrid_forecast.test: into both files" in f.read_text(encoding="utf-8")


def test_logs_closed_out_of_order_put_everything_back_once_all_are_closed(console, tmp_path):
    # commands run in threads: the first log closed must not restore the levels the
    # second still needs (the root at INFO for its file), nor leave them changed for good
    handler, _ = console
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    a, b = FolderLog(tmp_path / "a.log"), FolderLog(tmp_path / "b.log")
    a.close()
    assert root.level == logging.INFO and handler.level == logging.WARNING  # b still runs
    logging.getLogger("hybrid_forecast.test").info("b's record")
    b.close()
    assert root.level == logging.WARNING and handler.level == logging.INFO
    assert "b's record" in (tmp_path / "b.log").read_text(encoding="utf-8")


def test_a_run_in_process_leaves_the_callers_logging_as_it_was(console, synth_csv, tmp_path):
    from experiments.cli import main

    handler, stream = console
    root = logging.getLogger()
    handlers = list(root.handlers)
    out = tmp_path / "r"
    assert main(synth_run_argv(synth_csv(), out)) == 0
    assert root.handlers == handlers and root.level == logging.DEBUG
    assert handler.level == logging.INFO
    assert "INFO" in (out / "run.log").read_text(encoding="utf-8")
    assert "INFO run " not in stream.getvalue()  # run.log's INFO stayed off the console


def test_what_is_said_during_checks_reaches_the_console_only_when_they_pass(console):
    _, stream = console
    log = logging.getLogger("ensemble.data")
    with pytest.raises(UserError), said_after_checks():
        log.warning("2 gap(s) in the file")
        raise UserError("refused")
    assert stream.getvalue() == ""  # the refusal alone, one line
    with said_after_checks():
        log.warning("first")
        log.info("second")
        assert stream.getvalue() == ""  # held meanwhile
    assert stream.getvalue() == "WARNING first\nINFO second\n"  # once each, in order
    log.warning("after")
    assert stream.getvalue().endswith("INFO second\nWARNING after\n")  # nothing left held


@pytest.mark.parametrize("console", [False], indirect=True)
def test_a_console_that_is_no_terminal_also_gets_the_progress_lines(console, tmp_path):
    # a batch job's redirected output stayed empty for minutes while an LLM forecast
    # (no bar is drawn there); the progress lines are echoed, other INFO lines are not
    from ensemble.progress import PROGRESS

    handler, stream = console
    handler.setLevel(logging.NOTSET)
    log = logging.getLogger("hybrid_forecast.test")
    outer = FolderLog(tmp_path / "a.log", console=any_stream)
    inner = FolderLog(tmp_path / "b.log")  # nested: a bench's run
    log.info("epoch 1: train 0.3", extra=PROGRESS)
    log.info("router: stacked")
    log.warning("a warning")
    inner.close()
    outer.close()
    log.info("after the command")
    assert stream.getvalue() == (
        "INFO epoch 1: train 0.3\nWARNING a warning\nINFO after the command\n"
    )
    assert handler.level == logging.NOTSET and not handler.filters  # put back
    assert "router: stacked" in (tmp_path / "a.log").read_text(encoding="utf-8")


@pytest.mark.parametrize("console", [False], indirect=True)
@pytest.mark.parametrize("level,echo", [(logging.ERROR, True), (logging.INFO, False)])
def test_a_quieter_console_or_quiet_stays_as_quiet(console, level, echo, tmp_path):
    # a console set above warnings, or --quiet (echo_progress=False): no progress lines
    from ensemble.progress import PROGRESS

    handler, stream = console
    handler.setLevel(level)
    log_file = FolderLog(tmp_path / "a.log", console=any_stream, echo_progress=echo)
    logging.getLogger("hybrid_forecast.test").info("epoch 1", extra=PROGRESS)
    log_file.close()
    assert stream.getvalue() == "" and handler.level == level
