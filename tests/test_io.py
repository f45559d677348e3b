"""ensemble.io: atomic writes and strict JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ensemble.io import write_json


def test_json_has_no_bare_nan(tmp_path):
    # Bare NaN / Infinity tokens are not JSON: jq and JavaScript reject the whole file.
    path = tmp_path / "r.json"
    write_json(
        path, {"a": float("nan"), "b": [np.float32("inf"), 1.5], "c": np.array([2.0, np.nan])}
    )
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: 1 / 0) == {
        "a": None,
        "b": [None, 1.5],
        "c": [2.0, None],
    }
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


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
