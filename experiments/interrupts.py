"""Ctrl-C and SIGTERM that Python would lose: noted as they arrive, raised again between
steps of a long command (`tune`'s trials, `bench`'s cells, `run`'s results).

Python swallows an exception raised in a finalizer: a Ctrl-C that lands while the garbage
collector runs a ``__del__`` or a weakref callback (tqdm's, a ``WeakKeyDictionary``'s) is
printed as "Exception ignored in ..." and the command runs on to its end.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any


class NotedInterrupts:
    """Note each SIGINT / SIGTERM as it arrives, the handler before still raising it.

    ``check()`` at a point where stopping is safe (between trials, between a bench's
    cells) raises a noted interrupt again, whether or not a finalizer swallowed it.
    Installed from the main thread only (elsewhere signals cannot be handled).

    Inside ``deferred()`` a signal is only noted, for ``check()`` to raise: bookkeeping
    that must not be cut short (Optuna storing a trial as started, then as finished)
    runs to its end.
    """

    def __init__(self) -> None:
        self.noted: list[tuple[int, Callable]] = []
        self._installed: dict[int, tuple[Callable, Callable]] = {}
        self._deferring = False
        self._hook: Callable[[Any], Any] | None = None

    def __enter__(self) -> NotedInterrupts:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            before = signal.getsignal(sig)
            if not callable(before):  # ignored, or the system default: nothing swallowed
                continue

            def note(signum: int, frame: Any, before: Callable = before) -> None:
                self.noted.append((signum, before))
                if not self._deferring:
                    before(signum, frame)

            signal.signal(sig, note)
            self._installed[sig] = (note, before)
        # ... and not printed as "Exception ignored in ...", with a traceback, when it was:
        # `check()` raises it again
        self._hook = sys.unraisablehook

        def hook(unraisable: Any, before: Callable = self._hook) -> None:
            if not isinstance(unraisable.exc_value, KeyboardInterrupt):
                before(unraisable)

        sys.unraisablehook = hook
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, (note, before) in self._installed.items():
            if signal.getsignal(sig) is note:  # not replaced since (a worker's "once only")
                signal.signal(sig, before)
        if self._hook is not None:
            sys.unraisablehook = self._hook

    @contextlib.contextmanager
    def deferred(self, defer: bool = True) -> Iterator[None]:
        """Signals only noted inside (``defer=False``: raised where they land again)."""
        before, self._deferring = self._deferring, defer
        try:
            yield
        finally:
            self._deferring = before

    def live(self) -> contextlib.AbstractContextManager:
        """Inside ``deferred()``, a stretch where signals are raised where they land."""
        return self.deferred(False)

    def check(self) -> None:
        """Raise the first noted interrupt (again), as its handler raises it (SIGTERM:
        the CLI's ``Terminated``, exit 143; Ctrl-C: ``KeyboardInterrupt``, exit 130)."""
        if self.noted:
            signum, before = self.noted[0]
            before(signum, None)
            raise KeyboardInterrupt  # a handler that returned: still an interrupt
