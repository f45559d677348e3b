"""experiments.interrupts: a Ctrl-C or SIGTERM that a finalizer swallows is noted, kept
off the console, and raised again by ``check()``."""

from __future__ import annotations

import signal
import sys
import threading

import pytest

from experiments.interrupts import NotedInterrupts


class _Stopped(KeyboardInterrupt):
    """What the CLI's SIGTERM handler raises (``Terminated``: exit 143)."""


class _Finalised:
    """An object whose finalizer the signal lands in, as tqdm's does after a cell."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        signal.raise_signal(self.signum)  # its handler runs here, inside the finalizer


@pytest.fixture
def printed(monkeypatch) -> list[type]:
    """What Python would print as "Exception ignored in ..."."""
    seen: list[type] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_type))
    return seen


def test_a_ctrl_c_in_a_finalizer_is_lost_without_the_guard(terminal_ctrl_c, printed):
    # what the guard is for: Python prints it and carries on
    _Finalised(signal.SIGINT)
    assert printed == [KeyboardInterrupt]


def test_a_ctrl_c_a_finalizer_swallowed_is_raised_by_check(terminal_ctrl_c, printed):
    hook = sys.unraisablehook
    with NotedInterrupts() as interrupts:
        interrupts.check()  # nothing noted: nothing raised
        _Finalised(signal.SIGINT)  # freed at once: the Ctrl-C lands in its __del__
        assert printed == []  # not printed as "Exception ignored in ..."
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    assert sys.unraisablehook is hook


def test_other_exceptions_of_finalizers_are_still_printed(terminal_ctrl_c, printed):
    class Broken:
        def __del__(self) -> None:
            raise RuntimeError("a bug")

    with NotedInterrupts():
        Broken()
    assert printed == [RuntimeError]


def test_a_sigterm_is_raised_as_its_own_handler_raises_it(printed):
    def on_term(signum, frame):
        raise _Stopped

    before = signal.signal(signal.SIGTERM, on_term)
    try:
        with NotedInterrupts() as interrupts:
            _Finalised(signal.SIGTERM)
            with pytest.raises(_Stopped):
                interrupts.check()
        assert signal.getsignal(signal.SIGTERM) is on_term
    finally:
        signal.signal(signal.SIGTERM, before)
    assert printed == []


def test_a_handler_that_returns_is_still_an_interrupt(printed):
    calls = []
    before = signal.signal(signal.SIGTERM, lambda *a: calls.append(a[0]))
    try:
        with NotedInterrupts() as interrupts:
            signal.raise_signal(signal.SIGTERM)  # handled, and nothing raised
            with pytest.raises(KeyboardInterrupt):
                interrupts.check()
    finally:
        signal.signal(signal.SIGTERM, before)
    assert calls == [signal.SIGTERM, signal.SIGTERM]  # where it landed, then in check()


def test_inside_deferred_a_signal_is_only_noted(terminal_ctrl_c):
    with NotedInterrupts() as interrupts:
        with interrupts.deferred():
            signal.raise_signal(signal.SIGINT)  # would raise here without deferred()
            with interrupts.live(), pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        assert [s for s, _ in interrupts.noted] == [signal.SIGINT, signal.SIGINT]
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()


def test_off_the_main_thread_nothing_is_installed(terminal_ctrl_c):
    hook, seen = sys.unraisablehook, []

    def enter() -> None:
        with NotedInterrupts() as interrupts:
            seen.append((signal.getsignal(signal.SIGINT), sys.unraisablehook, interrupts.noted))

    t = threading.Thread(target=enter)
    t.start()
    t.join()
    assert seen == [(signal.default_int_handler, hook, [])]
