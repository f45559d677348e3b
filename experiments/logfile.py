"""A command's log file: INFO and up of the whole program go into its folder while it
runs, the console is quieted to warnings meanwhile, and closing it puts back what it
changed (the root logger's level, the console handlers' levels). Left changed, a `run`
from a notebook or a test kept the caller's own console handlers at WARNING for good."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path


def plain_stream(h: logging.Handler) -> bool:
    """A console handler as `logging.basicConfig` and the CLI make it."""
    return type(h) is logging.StreamHandler


def any_stream(h: logging.Handler) -> bool:
    """Any handler that writes to a stream other than a file."""
    return isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)


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
        quieted = [(h, h.level) for h in root.handlers if console(h)]
        self._saved: tuple[int, list[tuple[logging.Handler, int]]] | None = (root.level, quieted)
        root.addHandler(self)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        for h, level in quieted:  # INFO goes to the file only
            h.setLevel(max(level, logging.WARNING))

    def close(self) -> None:
        """Detach from the root logger and put back the levels changed (once)."""
        root = logging.getLogger()
        root.removeHandler(self)
        saved, self._saved = self._saved, None
        if saved is not None:
            root.setLevel(saved[0])
            for h, level in saved[1]:
                h.setLevel(level)
        super().close()
