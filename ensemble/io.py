"""Atomic file writes (a reader sees the old file or the new one, never half of one) and
the lock a run holds on its folder."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


def cannot_create_in(folder: Path) -> tuple[Path, str | None]:
    """The nearest existing folder at or above ``folder`` (which the writer's mkdir would
    create files under), and why no file can be made there: "is a file", the OS's
    reason, or None when it can. A trial file, not ``os.access``: root passes that even
    on /proc."""
    near = Path(folder).absolute()
    while not near.exists() and near != near.parent:
        near = near.parent
    if not near.is_dir():
        return near, "is a file"
    try:
        with tempfile.TemporaryFile(dir=near, prefix=".write-check-"):
            pass
    except OSError as exc:
        return near, exc.strerror or str(exc)
    return near, None


def _atomic(path: Path, write) -> None:
    path = Path(path)
    if path.is_dir():  # else os.replace fails naming the temp file, not the user's path
        raise IsADirectoryError(errno.EISDIR, "a folder, where a file is to be written", str(path))
    if path.exists() and not path.is_file():  # /dev/stdout, a named pipe: no file to swap
        with open(path, "wb") as fh:
            write(fh)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # name the user's file, not the hidden temp file
        raise _renamed(exc, path) from None
    if hasattr(os, "fchmod"):  # not on Windows before Python 3.13 (no such modes there)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for sharing
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        # a full disk while writing names no file at all: name the user's
        if isinstance(exc, OSError) and exc.filename in (tmp, None):
            raise _renamed(exc, path) from None
        raise


# On Windows a file another program has open cannot be replaced: a virus scanner, the
# search indexer or OneDrive holds a new file for a moment (Documents is often synced).
_RETRY_REPLACE = os.name == "nt"
_REPLACE_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)


def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """``os.replace`` (of a file, or of a folder onto a name not taken), retried for
    about six seconds where Windows refuses it with a PermissionError (another program
    holding ``dst``, or a file in the folder moved); the last refusal is raised."""
    if not _RETRY_REPLACE:
        os.replace(src, dst)
        return
    for delay in _REPLACE_DELAYS:
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            time.sleep(delay)
    os.replace(src, dst)


def _renamed(exc: OSError, path: Path) -> OSError:
    """The same error (type, errno, message) about ``path`` instead of a temp file."""
    if exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def write_text(path: str | Path, text: str) -> None:
    _atomic(Path(path), lambda fh: fh.write(text.encode()))


def write_csv(path: str | Path, text: str) -> None:
    """A CSV for people as well as programs: UTF-8 with a byte-order mark, which Excel
    needs to read it as UTF-8 (without it, Excel on a Chinese Windows reads GBK and a
    path or channel name in Chinese turns to mojibake); pandas skips the mark."""
    _atomic(Path(path), lambda fh: fh.write(("\ufeff" + text).encode()))


def write_json(path: str | Path, obj: Any) -> None:
    """Strict JSON: NaN and infinities become null (bare NaN breaks jq, JavaScript, ...)."""
    text = json.dumps(_finite(obj), indent=2, default=_jsonable, allow_nan=False)
    write_text(path, text + "\n")


def stored_score(v: Any) -> float:
    """A score as ``write_json`` stored it: null is an error that overflowed (a run refuses
    non-finite forecasts, so not NaN), read back as inf, never dropped from a mean."""
    return np.inf if v is None else float(v)


def _finite(o: Any) -> Any:
    """``o`` with every non-finite float (numpy ones included) replaced by None."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    if isinstance(o, float | np.floating):
        return float(o) if np.isfinite(o) else None
    return o


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    # Not compressed: float32 forecasts shrink only ~16 % and zlib costs 20x the write
    # time (ETTm1's 338 MB of run forecasts: 13.3 s vs 0.65 s) and 5x the load time.
    _atomic(Path(path), lambda fh: np.savez(fh, **arrays))


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class FolderLock:
    """A lock on ``folder/.lock``: exclusive while one process writes the folder, shared
    while processes read it.

    Two runs writing one folder at once would leave one run's config beside the other's
    results, and a reader (`analyse`, `forecast`, a run copying members out) must not
    see a rerun replace the files it reads; readers do not exclude each other. The
    operating system drops the lock when its holder exits, however it ends, so a killed
    run leaves no stale lock. POSIX ``flock``; ``msvcrt.locking`` on Windows, which has
    no shared locks (readers exclude each other there). On a file system that cannot
    lock at all (Lustre mounted ``noflock``, NFS without lockd) the folder is used
    without a lock, with a warning.

    Args:
        folder: the folder (made if missing, unless ``shared``).
        shared: a reader's lock. A folder that does not exist or cannot be written
            (a read-only copy of a run: nobody writes it) is read without one.
        name: the lock file (another name locks another part of the work: `analyse`
            writing its report into a run folder it reads under the run's lock).

    Raises:
        BlockingIOError: another process holds the lock (callers know what to tell the
            user).
    """

    def __init__(self, folder: str | Path, shared: bool = False, name: str = ".lock") -> None:
        folder = Path(folder)
        self._locked = False
        self._exclusive = not shared  # the holder that names itself in the lock file
        if shared:
            try:
                self._fh = open(folder / name, "a+b")
            except OSError as exc:
                if isinstance(exc, PermissionError | FileNotFoundError) or exc.errno == errno.EROFS:
                    self._fh = open(os.devnull, "rb")  # nothing to lock: release() closes it
                    return
                raise
        else:
            folder.mkdir(parents=True, exist_ok=True)
            self._fh = open(folder / name, "a+b")  # held open: closing it unlocks
        try:
            _lock(self._fh, True, shared)
        except OSError as exc:
            if exc.errno in _HELD:
                self._fh.close()
                raise BlockingIOError(
                    errno.EAGAIN, "locked by another process", str(folder)
                ) from None
            logging.getLogger(__name__).warning(
                "cannot lock %s (%s): %s",
                folder,
                exc.strerror or exc,
                "a run rewriting it meanwhile would change what is read"
                if shared
                else "two runs writing it at once would mix their files",
            )
        else:
            self._locked = True
            if self._exclusive:  # who holds it, for the refusal of the next command
                self._stamp(_identity())
            elif os.fstat(self._fh.fileno()).st_size:
                # no writer holds it now: the text is a killed writer's, and its pid may
                # be another process's by the time a refusal would name it
                self._stamp("")

    def _stamp(self, text: str) -> None:
        """Replace the lock file's text. After a first newline: the byte Windows locks
        cannot be read by others. In a file opened for appending, writes go to the end."""
        try:
            self._fh.truncate(0)
            if text:
                self._fh.write(b"\n" + text.encode("utf-8", "replace"))
            self._fh.flush()
        except OSError:  # a full disk: the lock holds all the same
            pass

    def release(self) -> None:
        """Unlock and close; a second call does nothing."""
        if self._fh.closed:
            return
        try:
            if self._locked:
                if self._exclusive:
                    self._stamp("")  # a killed holder's text stays; `who_holds` checks its pid
                _lock(self._fh, False)  # explicitly: Windows unlocks a closed file only lazily
        finally:
            self._fh.close()


def _identity() -> str:
    """``pid N since HH:MM: command`` of this process, for a lock file."""
    import sys

    from ensemble import shell

    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []
    command = shell.join(argv)
    if len(command) > 200:
        command = command[:197] + "..."
    return f"pid {os.getpid()} since {time.strftime('%H:%M')}: {command}".rstrip(": ")


def who_holds(folder: str | Path, name: str = ".lock") -> str:
    """`` (pid N since HH:MM: command)`` of the process that wrote ``folder/name`` while
    holding it exclusively, if that process still runs; else ''."""
    try:
        with open(os.path.join(folder, name), "rb") as fh:
            fh.seek(1)  # Windows: byte 0 is the locked one
            text = fh.read(1024).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    parts = text.split()
    if len(parts) < 2 or parts[0] != "pid" or not parts[1].isdigit():
        return ""
    if os.name != "nt":  # os.kill(pid, 0) would end the process on Windows
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            return ""  # killed while holding it: the text outlived the lock
        except OSError:
            pass  # another user's process: alive
    return f" ({text})"


def read_lock(folder: str | Path, then: str) -> FolderLock | None:
    """A reader's lock on a run folder, taken before anything in it is read (a rerun
    replacing the files between two reads would mix two runs); None where no lock file
    can be had (a read-only copy, not a folder: nobody writes such a folder).

    Raises:
        UserError: a run is writing it: "<who holds it>; <then>".
    """
    from ensemble.errors import UserError

    try:
        return FolderLock(folder, shared=True)
    except BlockingIOError:
        raise UserError(f"{holder(folder)}; {then}") from None
    except OSError:
        return None


def holder(folder: str | Path) -> str:
    """Who holds a folder's lock against a reader: a run writing it, or on Windows, whose
    locks are all exclusive, any other command using it too."""
    if os.name == "nt":
        return f"another command (a run, analyse or forecast) is using {folder}{who_holds(folder)}"
    return f"a run is writing to {folder}{who_holds(folder)}"


def held(folder: str | Path) -> bool:
    """Whether another process holds ``folder``'s lock (shared or exclusive) right now;
    creates nothing. For refusing early; the work itself takes a `FolderLock`."""
    try:  # for writing: an exclusive flock over NFS needs a file open for writing
        fh = open(Path(folder) / ".lock", "r+b")
    except OSError:  # no lock file, or none to be had: nobody holds one
        return False
    with fh:
        try:
            _lock(fh, True)
        except OSError as exc:
            return exc.errno in _HELD
        _lock(fh, False)
        return False


@contextlib.contextmanager
def waiting_lock(path: str | Path, poll_s: float = 0.02) -> Iterator[None]:
    """An exclusive lock on the file ``path`` (made if missing) for the block, waited for
    by polling (``msvcrt`` has no blocking lock that a signal can interrupt). Where the
    file cannot be made or the file system cannot lock, the block runs without one, as
    `FolderLock` goes on without."""
    try:
        fh = open(path, "a+b")
    except OSError:  # a read-only folder, another user's file
        fh = None
    locked = False
    try:  # closed however it ends, a Ctrl-C during the wait included
        while fh is not None and not locked:
            try:
                _lock(fh, True)
                locked = True
            except OSError as exc:
                if exc.errno not in _HELD:
                    break  # no locking here
                time.sleep(poll_s)
        yield
    finally:
        if fh is not None:
            if locked:
                _lock(fh, False)
            fh.close()


# errno values that mean "someone else holds it" (others: this file system cannot lock)
_HELD = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)}


def _lock(fh: Any, on: bool, shared: bool = False) -> None:
    """Take (non-blocking) or drop the lock on an open file: its first byte on Windows
    (``msvcrt``, exclusive either way), the whole file elsewhere (``flock``)."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        fh.seek(0)  # the same byte whatever the file's size
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK if on else msvcrt.LK_UNLCK, 1)
    else:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        fcntl.flock(fh.fileno(), (mode | fcntl.LOCK_NB) if on else fcntl.LOCK_UN)
