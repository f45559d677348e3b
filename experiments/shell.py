"""Commands printed for the user to copy, quoted for the shell they will be pasted into."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence


def join(words: Sequence[str], windows: bool | None = None) -> str:
    """``words`` as one command line: cmd.exe's quoting on Windows (double quotes, only
    where needed: POSIX single quotes are not quotes there), POSIX quoting elsewhere.

    Args:
        words: the command's words.
        windows: quote for cmd.exe; None: when running on Windows.
    """
    words = [str(w) for w in words]
    if os.name == "nt" if windows is None else windows:
        return subprocess.list2cmdline(words)
    return shlex.join(words)
