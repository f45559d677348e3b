"""Commands printed for the user to copy, quoted for the shell they will be pasted into.

Here, not in ``experiments``, so that ``ensemble`` and ``timellm`` messages can quote
their commands too (``experiments.shell`` re-exports it)."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence

# Read at each call (tests set it to print Windows' commands on Linux)
_WINDOWS = os.name == "nt"


def join(words: Sequence[object], windows: bool | None = None) -> str:
    """``words`` as one command line: cmd.exe's quoting on Windows (double quotes, only
    where needed: POSIX single quotes are not quotes there), POSIX quoting elsewhere.

    Args:
        words: the command's words (paths are turned into text).
        windows: quote for cmd.exe; None: when running on Windows.
    """
    words = [str(w) for w in words]
    if _WINDOWS if windows is None else windows:
        return " ".join(_cmd_quote(w) for w in words)
    return shlex.join(words)


# cmd.exe acts on these outside double quotes (C:\\R&D would run "D" as a command)
_CMD_SPECIAL = set("&|<>^()%!")


def _cmd_quote(word: str) -> str:
    """One word for cmd.exe: list2cmdline's quoting (spaces, tabs, quotes), and double
    quotes around a word with a character cmd acts on."""
    quoted = subprocess.list2cmdline([word])
    if quoted.startswith('"') or not _CMD_SPECIAL & set(word):
        return quoted
    # inside quotes, backslashes before the closing quote must be doubled
    tail = len(quoted) - len(quoted.rstrip("\\"))
    return '"' + quoted + "\\" * tail + '"'
