"""ensemble.io: atomic writes and strict JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from ensemble.io import waiting_lock, write_csv, write_json, write_text

PACKAGES = ("ensemble", "experiments", "timellm", "router", "classical", "periodicity")


def test_json_has_no_bare_nan(tmp_path):
    # Bare NaN / Infinity tokens are not JSON: jq and JavaScript reject the whole file.
    path = tmp_path / "r.json"
    write_json(
        path, {"a": float("nan"), "b": [np.float32("inf"), 1.5], "c": np.array([2.0, np.nan])}
    )
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: 1 / 0) == {
        "a": None,
        "b": [None, 1.5],
        "c": [2.0, None],
    }
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_json_takes_numpy_scalars_arrays_and_paths(tmp_path):
    # results dicts hold numpy integers and paths: written as plain JSON, not refused
    write_json(tmp_path / "n.json", {"n": np.int64(3), "ok": np.bool_(True), "p": tmp_path})
    got = json.loads((tmp_path / "n.json").read_text(encoding="utf-8"))
    assert got == {"n": 3, "ok": True, "p": str(tmp_path)}
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_json(tmp_path / "o.json", {"o": object()})
    assert not (tmp_path / "o.json").exists()


def test_writing_onto_a_folder_names_the_folder(tmp_path):
    with pytest.raises(IsADirectoryError) as info:
        write_json(tmp_path, {"a": 1})
    assert info.value.filename == str(tmp_path)


def test_a_folder_refusing_the_temp_file_names_the_users_file(tmp_path, monkeypatch):
    # "cannot use .../.s.md.yfxurfuw.tmp: Permission denied" named a file nobody asked for.
    import tempfile

    def denied(dir, prefix, suffix):
        raise PermissionError(13, "Permission denied", f"{dir}/{prefix}x1y2z3{suffix}")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError) as info:
        write_json(tmp_path / "s.json", {"a": 1})
    assert info.value.filename == str(tmp_path / "s.json")
    assert info.value.strerror == "Permission denied"


def test_a_write_failing_halfway_leaves_the_old_file_whole(tmp_path):
    from ensemble.io import write_npz

    path = tmp_path / "f.npz"
    write_npz(path, a=np.arange(3.0))
    before = path.read_bytes()

    class Broken:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):  # the second array fails after the first was written
        write_npz(path, a=np.zeros(100_000), b=Broken())
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_atomic_writes_work_without_fchmod(tmp_path, monkeypatch):
    # Windows' os has no fchmod before Python 3.13: every result file would fail.
    import os

    monkeypatch.delattr(os, "fchmod")
    write_text(tmp_path / "a.txt", "周期 24\n")
    assert (tmp_path / "a.txt").read_bytes() == "周期 24\n".encode()


def test_every_text_file_the_library_opens_names_its_encoding():
    # Without encoding=, Python uses the locale's (GBK on a Chinese Windows), so a file
    # written here as UTF-8 fails to read there, or reads wrong. The tests and benchmark
    # scripts too: a user running them on Windows would think the install broken.
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text_io = {"open", "read_text", "write_text", "fdopen", "FileHandler"}
    missing = []
    for path in sorted(
        p for pkg in (*PACKAGES, "tests", "benchmarks") for p in (root / pkg).rglob("*.py")
    ):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in text_io or any(k.arg == "encoding" for k in node.keywords):
                continue
            if name == "write_text" and isinstance(func, ast.Name):
                continue  # ensemble.io.write_text, which writes UTF-8
            mode = next((k.value for k in node.keywords if k.arg == "mode"), None)
            if name in ("open", "fdopen") and len(node.args) > 1:
                mode = node.args[1]
            if isinstance(mode, ast.Constant) and "b" in str(mode.value):
                continue
            missing.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert not missing, "\n".join(missing)


def test_a_file_system_that_cannot_lock_is_used_without_a_lock(tmp_path, monkeypatch, caplog):
    import errno

    import ensemble.io as io_mod

    def no_locks(fh, on, shared=False):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(io_mod, "_lock", no_locks)
    lock = io_mod.FolderLock(tmp_path / "run")  # not "another run is writing"
    lock.release()
    assert "cannot lock" in caplog.text


def test_a_held_folder_lock_is_refused_and_released_locks_are_free(tmp_path):
    from ensemble.io import FolderLock

    first = FolderLock(tmp_path)
    with pytest.raises(BlockingIOError):
        FolderLock(tmp_path)
    first.release()
    first.release()  # twice is harmless
    FolderLock(tmp_path).release()


def test_a_reader_refused_is_told_who_holds_the_folder(monkeypatch):
    # Windows locks are exclusive: there a reader is refused by other readers too
    from ensemble.io import holder

    if os.name != "nt":  # readers share the lock: only a writer refuses one
        assert holder("r") == "a run is writing to r"
    monkeypatch.setattr(os, "name", "nt")
    assert holder("r") == "another command (a run, analyse or forecast) is using r"


@pytest.mark.skipif(os.name == "nt", reason="Windows locks are exclusive: readers queue")
def test_readers_share_a_folder_lock_and_exclude_a_writer(tmp_path):
    # a run copying members out, analyse and forecast read a run folder at once; a rerun
    # must wait for all of them, and they for it
    from ensemble.io import FolderLock, held

    assert not held(tmp_path / "run")
    FolderLock(tmp_path / "run", shared=True).release()
    assert not (tmp_path / "run").exists()  # a reader makes no folder
    (tmp_path / "run").mkdir()
    readers = [FolderLock(tmp_path / "run", shared=True) for _ in range(2)]
    assert held(tmp_path / "run")
    with pytest.raises(BlockingIOError):
        FolderLock(tmp_path / "run")
    for r in readers:
        r.release()
    assert not held(tmp_path / "run")
    writer = FolderLock(tmp_path / "run")
    assert held(tmp_path / "run")
    with pytest.raises(BlockingIOError):
        FolderLock(tmp_path / "run", shared=True)
    writer.release()
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)  # a read-only copy of a run: read without a lock
    try:
        if not os.access(tmp_path / "ro", os.W_OK):  # root writes anywhere
            FolderLock(tmp_path / "ro", shared=True).release()
            assert not (tmp_path / "ro" / ".lock").exists()
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_a_replace_windows_refuses_for_a_moment_is_retried(tmp_path, monkeypatch):
    # A virus scanner or OneDrive holding the target makes os.replace fail on Windows
    import os

    from ensemble import io

    real, calls = os.replace, []

    def held_twice(src, dst):
        calls.append(dst)
        if len(calls) < 3:
            raise PermissionError(13, "The process cannot access the file", str(src))
        real(src, dst)

    monkeypatch.setattr(io, "_RETRY_REPLACE", True)
    monkeypatch.setattr(io, "_REPLACE_DELAYS", (0.0,) * 4)
    monkeypatch.setattr(os, "replace", held_twice)
    write_text(tmp_path / "results.json", "{}")
    assert (tmp_path / "results.json").read_text(encoding="utf-8") == "{}"
    assert len(calls) == 3

    def held(src, dst):
        raise PermissionError(13, "The process cannot access the file", str(src))

    monkeypatch.setattr(os, "replace", held)
    with pytest.raises(PermissionError) as info:
        write_text(tmp_path / "results.json", "{1}")
    assert info.value.filename == str(tmp_path / "results.json")  # the user's file, named
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temp file left


def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch):
    # the write or fsync of a full disk raises ENOSPC with no file name at all
    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        write_text(tmp_path / "forecasts.npz", "x")
    assert (info.value.errno, info.value.filename) == (28, str(tmp_path / "forecasts.npz"))
    assert list(tmp_path.iterdir()) == []  # no temp file left


def test_csv_files_carry_the_mark_excel_needs_and_pandas_skips(tmp_path):
    import pandas as pd

    write_csv(tmp_path / "t.csv", "folder,mse\nC:/张三/runs,0.37\n")
    raw = (tmp_path / "t.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and "张三".encode() in raw
    df = pd.read_csv(tmp_path / "t.csv")
    assert list(df.columns) == ["folder", "mse"] and df.loc[0, "folder"] == "C:/张三/runs"


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no named pipes here")
def test_a_target_that_is_not_a_file_is_written_not_replaced(tmp_path):
    # `--out /dev/stdout` as root: swapping in a temp file replaced the device link
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_text(fifo, "date,mse\n")
    reader.join(timeout=10)
    assert got == [b"date,mse\n"] and not fifo.is_file() and fifo.exists()


def test_a_refusal_names_the_process_writing_the_folder_while_it_runs(tmp_path):
    # "a run is writing to X" left the user guessing which of their terminals it was
    import subprocess
    import sys

    from ensemble.io import FolderLock, holder

    code = (
        "import sys, time; from ensemble.io import FolderLock; "
        "FolderLock(sys.argv[1]); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "run"), "--out", "my run"],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert proc.stdout.readline().strip() == b"held"
        text = holder(tmp_path / "run")
        assert f"(pid {proc.pid} since " in text and "--out 'my run')" in text, text
    finally:
        proc.kill()
        proc.wait()
    assert holder(tmp_path / "run") == f"a run is writing to {tmp_path / 'run'}"  # killed
    # its text outlived it; its pid reused by a live process, a reader holding the lock
    # would be reported as that process: the reader clears it
    lock_file = tmp_path / "run" / ".lock"
    lock_file.write_bytes(f"\npid {os.getppid()} since 00:00: old run".encode())
    reader = FolderLock(tmp_path / "run", shared=True)
    assert lock_file.read_bytes() == b""
    reader.release()
    FolderLock(tmp_path / "run").release()  # a clean release leaves no name behind
    assert (tmp_path / "run" / ".lock").read_bytes() == b""


def test_waiting_lock_waits_for_its_holder_and_runs_unlocked_where_it_cannot_lock(tmp_path):
    # tune's workers ask Optuna for trials one at a time through it
    import threading
    import time

    path, order = tmp_path / "study.db.ask.lock", []

    def second():
        with waiting_lock(path):
            order.append("second")

    with waiting_lock(path):
        other = threading.Thread(target=second)
        other.start()
        time.sleep(0.3)  # the other thread waits meanwhile
        order.append("first")
    other.join(timeout=10)
    assert order == ["first", "second"]
    with waiting_lock(tmp_path / "no" / "such" / "x.lock"):  # cannot be made: no lock
        order.append("unlocked")
    assert order[-1] == "unlocked"
