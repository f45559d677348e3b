"""A command's log file: INFO and up of the whole program go into its folder while it
runs, the console is quieted to warnings meanwhile (and the progress lines, where it is
no terminal: `ensemble.progress`), and closing it puts back what it changed (the root logger's level, the console handlers' levels). Left changed, a `run`
from a notebook or a test kept the caller's own console handlers at WARNING for good."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ensemble.progress import is_progress


def plain_stream(h: logging.Handler) -> bool:
    """A console handler as `logging.basicConfig` and the CLI make it."""
    return type(h) is logging.StreamHandler


def any_stream(h: logging.Handler) -> bool:
    """Any handler that writes to a stream other than a file."""
    return isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)


def _no_terminal(h: logging.Handler) -> bool:
    """Whether a console handler writes somewhere other than a terminal (a redirected
    batch job): no progress bar is drawn there, so progress lines are echoed to it."""
    try:
        return not h.stream.isatty()  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # no stream, or a closed one
        return False


class _ProgressOrWarning(logging.Filter):
    """Warnings and up, and INFO lines marked ``extra=PROGRESS`` (ensemble.progress)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or is_progress(record)


_PROGRESS = _ProgressOrWarning()

# The levels before the first open FolderLog, put back when the last one closes (logs of
# commands run in threads may close in any order); guarded by a lock for those threads.
_OPEN: list[FolderLog] = []
_BEFORE: dict[int, tuple[logging.Logger | logging.Handler, int]] = {}
_GUARD = threading.Lock()


class FolderLog(logging.FileHandler):
    """The root logger's file handler for one command's log.

    Args:
        path: the log file (appended to; its folder is made).
        console: which of the root's handlers count as the console, quieted to WARNING.
        echo_progress: echo the progress lines to a console that is no terminal (False:
            the command's --quiet, which asks for no progress at all).
    """

    def __init__(
        self,
        path: Path,
        console: Callable[[logging.Handler], bool] = plain_stream,
        echo_progress: bool = True,
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, encoding="utf-8")
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.setLevel(logging.INFO)
        root = logging.getLogger()
        # bookkeeping under _GUARD, logging's own calls (its module lock) after it: a
        # basicConfig(force=True) in another thread closes handlers under that lock
        with _GUARD:
            changes: list[tuple[logging.Logger | logging.Handler, int]] = []
            filtered: list[logging.Handler] = []
            if root.level > logging.INFO or root.level == logging.NOTSET:
                changes.append((root, logging.INFO))
            for h in list(root.handlers):  # INFO goes to the file only
                if echo_progress and console(h) and h.level <= logging.WARNING and _no_terminal(h):
                    changes.append((h, max(h.level, logging.INFO)))  # progress lines too
                    filtered.append(h)
                elif console(h):
                    changes.append((h, max(h.level, logging.WARNING)))
            for obj, _ in changes:
                _BEFORE.setdefault(id(obj), (obj, obj.level))
            _OPEN.append(self)
        for obj, level in changes:
            obj.setLevel(level)
        for h in filtered:
            h.addFilter(_PROGRESS)  # once per handler: a filter already there is kept
        root.addHandler(self)

    def close(self) -> None:
        """Detach from the root logger; the last log open puts back the levels changed."""
        logging.getLogger().removeHandler(self)
        with _GUARD:
            last = self in _OPEN and len(_OPEN) == 1
            if self in _OPEN:
                _OPEN.remove(self)
            restore = list(_BEFORE.values()) if last else []
            if last:
                _BEFORE.clear()
        for obj, level in restore:
            obj.setLevel(level)
            if isinstance(obj, logging.Handler):
                obj.removeFilter(_PROGRESS)
        super().close()


@contextlib.contextmanager
def said_after_checks() -> Iterator[None]:
    """Hold what is logged inside (a data file's gaps, repeated timestamps...) and pass it
    on only when the block ends without an error: a refusal stays one line, the error,
    rather than the warnings of the input it refuses and then the error."""
    root = logging.getLogger()
    held: list[logging.LogRecord] = []

    class _Hold(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if not held or held[-1] is not record:  # each handler is offered the record
                held.append(record)
            return False

    hold, handlers = _Hold(), list(root.handlers)
    for h in handlers:
        h.addFilter(hold)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(hold)
    for record in held:  # reached only without an error
        root.handle(record)


@contextlib.contextmanager
def said_once(console: Callable[[logging.Handler], bool] = plain_stream) -> Iterator[None]:
    """Let the console say each warning once inside the block: a bench's cells load the
    same file and would each repeat its warning (its log files still get every one)."""
    seen: set[tuple[int, str, str]] = set()
    guard = threading.Lock()

    class _Once(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            key = (record.levelno, record.name, record.getMessage())
            with guard:
                if key in seen:
                    return False
                seen.add(key)
            return True

    once, handlers = _Once(), [h for h in logging.getLogger().handlers if console(h)]
    for h in handlers:
        h.addFilter(once)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(once)
