"""A command's log file: INFO and up of the whole program go into its folder while it
runs, the console is quieted to warnings meanwhile, and closing it puts back what it
changed (the root logger's level, the console handlers' levels). Left changed, a `run`
from a notebook or a test kept the caller's own console handlers at WARNING for good."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path


def plain_stream(h: logging.Handler) -> bool:
    """A console handler as `logging.basicConfig` and the CLI make it."""
    return type(h) is logging.StreamHandler


def any_stream(h: logging.Handler) -> bool:
    """Any handler that writes to a stream other than a file."""
    return isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)


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
    """

    def __init__(self, path: Path, console: Callable[[logging.Handler], bool] = plain_stream):
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, encoding="utf-8")
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.setLevel(logging.INFO)
        root = logging.getLogger()
        with _GUARD:
            if root.level > logging.INFO or root.level == logging.NOTSET:
                _set(root, logging.INFO)
            for h in root.handlers:  # INFO goes to the file only
                if console(h):
                    _set(h, max(h.level, logging.WARNING))
            root.addHandler(self)
            _OPEN.append(self)

    def close(self) -> None:
        """Detach from the root logger; the last log open puts back the levels changed."""
        with _GUARD:
            logging.getLogger().removeHandler(self)
            if self in _OPEN:
                _OPEN.remove(self)
                if not _OPEN:
                    for obj, level in _BEFORE.values():
                        obj.setLevel(level)
                    _BEFORE.clear()
        super().close()


def _set(obj: logging.Logger | logging.Handler, level: int) -> None:
    _BEFORE.setdefault(id(obj), (obj, obj.level))
    obj.setLevel(level)
