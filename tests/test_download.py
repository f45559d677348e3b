"""ensemble.download: from a loopback HTTP server, checksum-checked, atomic."""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ensemble import download as dl
from ensemble.errors import UserError


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """The loopback server directly: urllib sends requests through $http_proxy, which a
    CI runner may set without listing 127.0.0.1 in $no_proxy."""
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@contextlib.contextmanager
def _serving(handler) -> Iterator[str]:
    """A loopback HTTP server of ``handler`` in a thread; yields its URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    with _serving(functools.partial(_QuietHandler, directory=str(root))) as url:
        yield root, url


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _QuietHandler(_Quiet, http.server.SimpleHTTPRequestHandler):
    pass


def test_download_checks_sum_and_skips_present(server, data_dir, tmp_path, monkeypatch):
    root, url = server
    (root / "illness").mkdir()
    shutil.copy(
        data_dir / "illness" / "national_illness.csv", root / "illness" / "national_illness.csv"
    )
    monkeypatch.setenv(dl.URL_ENV, url)
    out = tmp_path / "data"
    path, state = dl.download("illness", out)
    assert (
        state == "downloaded" and dl.sha256_file(path) == dl.SHA256["illness/national_illness.csv"]
    )
    assert dl.download("illness", out)[1] == "present"


def test_checksum_mismatch_leaves_nothing(server, tmp_path, monkeypatch):
    root, url = server
    (root / "illness").mkdir()
    (root / "illness" / "national_illness.csv").write_text(
        "date,OT\n2020-01-01,1\n", encoding="utf-8"
    )
    monkeypatch.setenv(dl.URL_ENV, url)
    out = tmp_path / "data"
    with pytest.raises(UserError, match="checksum mismatch"):
        dl.download("illness", out)
    assert not any(p.is_file() for p in out.rglob("*")) if out.exists() else True


def test_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv(dl.URL_ENV, "http://127.0.0.1:9")  # discard port: connection refused
    with pytest.raises(UserError, match="cannot reach .* offline"):
        dl.download("ETTh1", tmp_path)


def test_a_mirror_that_is_not_a_url_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv(dl.URL_ENV, "garbage")
    with pytest.raises(UserError, match=r"not a URL nor a folder; set \$HYBRID_FORECAST_DATA_URL"):
        dl.download("illness", tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://[::1", "not a URL nor a folder (Invalid IPv6 URL)"),
        ("http://[zz]/m", "not a URL nor a folder ('zz' does not appear to be an IPv4"),
        ("http://127.0.0.1:port/m", "not a URL (nonnumeric port: 'port')"),
    ],
)
def test_a_mirror_url_that_does_not_parse_is_one_clear_line(url, why, tmp_path, monkeypatch):
    # urlsplit's ValueError was a traceback; urlopen's InvalidURL was called a server
    # that "hung up before answering"
    monkeypatch.setenv(dl.URL_ENV, url)
    with pytest.raises(UserError) as err:
        dl.download("illness", tmp_path)
    msg = str(err.value)
    assert msg.startswith("cannot download http://") and why in msg, msg
    assert msg.endswith(
        "; set $HYBRID_FORECAST_DATA_URL to one such as https://host/path, "
        "file:///folder or a folder path"
    ), msg
    assert not any(tmp_path.iterdir())


def test_http_error(server, tmp_path, monkeypatch):
    _, url = server
    monkeypatch.setenv(dl.URL_ENV, url)
    with pytest.raises(UserError, match="HTTP 404"):
        dl.download("ETTh2", Path(tmp_path))


def test_sums_match_shared_file(data_dir):
    sums = dict(
        line.split()[::-1]
        for line in (data_dir / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
        if line.strip()
    )
    for rel, want in dl.SHA256.items():
        assert sums[rel] == want


def test_a_download_cut_short_is_one_clear_line(tmp_path, monkeypatch):
    # the server promises 5000 bytes and hangs up after 8: IncompleteRead is no OSError
    class Short(_Quiet):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(b"date,OT\n")

    with _serving(Short) as url:
        monkeypatch.setenv(dl.URL_ENV, url)
        with pytest.raises(UserError, match="broke off .*run the command again"):
            dl.download("ETTh1", tmp_path)
    assert not any(tmp_path.rglob("*.csv"))


def _mirror_with_illness(tmp_path: Path, data_dir: Path) -> Path:
    """A file:// mirror, laid out as the data folder, holding the published illness file."""
    mirror = tmp_path / "mirror"
    (mirror / "illness").mkdir(parents=True)
    shutil.copy(data_dir / "illness" / "national_illness.csv", mirror / "illness")
    return mirror


def test_a_mirror_given_as_a_folder_path_is_read_as_its_file_url(data_dir, tmp_path, monkeypatch):
    # a plain path was "not a URL", and a "#" in a hand-written file:// URL cut the path
    mirror = _mirror_with_illness(tmp_path / "a #1", data_dir)
    monkeypatch.setenv(dl.URL_ENV, str(mirror))
    dest, status = dl.download("illness", tmp_path / "data")
    assert status == "downloaded" and dest.is_file()
    monkeypatch.setenv(dl.URL_ENV, "gopher://host/x")
    with pytest.raises(UserError, match=r"the scheme gopher:// is not supported"):
        dl.download("ETTh1", tmp_path / "data")


def test_an_edited_file_is_kept_unless_force(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(dl.URL_ENV, _mirror_with_illness(tmp_path, data_dir).as_uri())
    dest = tmp_path / "data" / "illness" / "national_illness.csv"
    dest.parent.mkdir(parents=True)
    edited = (data_dir / "illness" / "national_illness.csv").read_bytes() + b"x"
    dest.write_bytes(edited)
    with pytest.raises(UserError, match=r"national_illness.csv is present but its SHA-256 differs"):
        dl.download("illness", tmp_path / "data")
    assert dest.read_bytes() == edited  # the user's edits are not lost
    # --force offline: the error says the file there fails the check, and keeps it
    monkeypatch.setenv(dl.URL_ENV, "http://127.0.0.1:9")
    with pytest.raises(UserError, match=r"present but fails the SHA-256 check.*offline"):
        dl.download("illness", tmp_path / "data", force=True)
    assert dest.read_bytes() == edited
    monkeypatch.setenv(dl.URL_ENV, (tmp_path / "mirror").as_uri())
    assert dl.download("illness", tmp_path / "data", force=True) == (dest, "replaced")
    assert dl.sha256_file(dest) == dl.SHA256["illness/national_illness.csv"]


def test_a_local_mirror_that_does_not_exist_is_not_called_offline(tmp_path, monkeypatch):
    monkeypatch.setenv(dl.URL_ENV, (tmp_path / "nonexistent").as_uri())
    with pytest.raises(UserError, match=r"the local mirror .*nonexistent .* does not exist") as e:
        dl.download("ETTh1", tmp_path / "data")
    assert "offline" not in str(e.value)
    (tmp_path / "nonexistent").mkdir()
    with pytest.raises(UserError, match=r"has no ETT-small/ETTh1.csv"):
        dl.download("ETTh1", tmp_path / "data")


def test_a_mirror_on_a_windows_network_share_is_read_from_the_share(
    data_dir, tmp_path, monkeypatch
):
    # \\nas\share\mirror became file://nas/share/mirror: the host was dropped (\share\mirror
    # "does not exist") or refused by urllib (file:// on this machine only)
    from pathlib import PureWindowsPath

    unc = r"\\nas\share\mirror"
    url = PureWindowsPath(unc).as_uri()
    assert url == "file://nas/share/mirror"
    monkeypatch.setattr(dl, "_WINDOWS", True)
    assert PureWindowsPath(dl._file_url_path(url)) == PureWindowsPath(unc)
    # Windows, simulated: the share \\nas\share is a folder of that name here (copied
    # into before the chdir: CI's data folder is a relative path)
    share = tmp_path / r"\\nas\share"
    (share / "mirror" / "illness").mkdir(parents=True)
    shutil.copy(data_dir / "illness" / "national_illness.csv", share / "mirror" / "illness")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(dl.URL_ENV, url)
    dest, status = dl.download("illness", tmp_path / "data")
    assert (
        status == "downloaded" and dl.sha256_file(dest) == dl.SHA256["illness/national_illness.csv"]
    )
    monkeypatch.setenv(dl.URL_ENV, "file://nas/share/other")
    with pytest.raises(UserError, match=r"the local mirror \\\\nas\\share[\\/]other \(\$"):
        dl.download("ETTh1", tmp_path / "data")
    # elsewhere no UNC path reaches the share: said so, not "offline"
    monkeypatch.setattr(dl, "_WINDOWS", False)
    monkeypatch.setenv(dl.URL_ENV, url)
    with pytest.raises(UserError, match=r"with a host \(nas\) names a Windows network share"):
        dl.download("ETTh1", tmp_path / "data")


def test_the_cli_checks_every_name_before_fetching_and_says_replaced(
    data_dir, tmp_path, monkeypatch, capsys
):
    from experiments.cli import main

    monkeypatch.setenv(dl.URL_ENV, _mirror_with_illness(tmp_path, data_dir).as_uri())
    out = tmp_path / "data"
    assert main(["data", "download", "illness", "foo", "--data-dir", str(out)]) == 2
    assert "unknown dataset 'foo'" in capsys.readouterr().err
    assert not out.exists()  # illness was not fetched first
    assert main(["data", "download", "Illness", "--data-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'Illness' (did you mean illness?)" in err
    dest = out / "illness" / "national_illness.csv"
    dest.parent.mkdir(parents=True)
    dest.write_text("date,OT\n2020-01-01,1\n", encoding="utf-8")
    (tmp_path / "mirror" / "ETT-small").mkdir()
    shutil.copy(data_dir / "ETT-small" / "ETTh1.csv", tmp_path / "mirror" / "ETT-small")
    # the edited illness file stops the command before ETTh1, listed first, is fetched
    assert main(["data", "download", "ETTh1", "illness", "--data-dir", str(out)]) == 2
    assert "pass --force to replace it" in capsys.readouterr().err
    assert not (out / "ETT-small").exists()
    assert main(["data", "download", "illness", "--data-dir", str(out), "--force"]) == 0
    assert capsys.readouterr().out.startswith(f"illness: replaced {dest}")


def test_a_data_folder_that_is_a_file_is_named_before_fetching(tmp_path, monkeypatch, capsys):
    import re

    # the download ran, then failed making the folder: "the file must exist and be readable"
    from experiments.cli import main

    monkeypatch.setenv(dl.URL_ENV, "http://127.0.0.1:9")  # never reached
    afile = tmp_path / "data.csv"
    afile.write_text("date,OT\n", encoding="utf-8")
    assert main(["data", "download", "ETTh1", "--data-dir", str(afile)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the data folder {afile} is a file, where a folder" in err
    with pytest.raises(UserError, match=re.escape(f"{afile / 'sub'} is under {afile}, a file")):
        dl.download("ETTh1", afile / "sub")


def test_an_unwritable_destination_is_refused_before_fetching(
    data_dir, tmp_path, monkeypatch, capsys
):
    # the whole file was fetched, then "check --data-dir: the file must exist and be readable"
    import tempfile

    from experiments.cli import main

    monkeypatch.setenv(dl.URL_ENV, _mirror_with_illness(tmp_path, data_dir).as_uri())
    fetched = []
    monkeypatch.setattr(dl, "_fetch", lambda *a: fetched.append(a) or b"")
    out = tmp_path / "data"
    folder = out / "illness" / "national_illness.csv"
    folder.mkdir(parents=True)
    with pytest.raises(UserError, match=r"national_illness.csv is a folder, .*move it away"):
        dl.check_before_fetching(["illness"], out)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    assert main(["data", "download", "illness", "--data-dir", str(tmp_path / "new")]) == 2
    assert f"cannot write into {tmp_path} (Permission denied)" in capsys.readouterr().err
    assert not fetched


def test_a_failing_mkdir_is_one_clear_line(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(dl.URL_ENV, _mirror_with_illness(tmp_path, data_dir).as_uri())

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(UserError, match=r"cannot create the data folder .*illness: Permission"):
        dl.download("illness", tmp_path / "data")


def test_a_transfer_that_stalls_after_the_headers_is_not_called_offline(tmp_path, monkeypatch):
    import time

    release = threading.Event()

    class Stall(_Quiet):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(b"date,OT\n")
            self.wfile.flush()
            release.wait(5)

    with _serving(Stall) as url:
        monkeypatch.setenv(dl.URL_ENV, url)
        start = time.monotonic()
        try:
            with pytest.raises(UserError, match=r"stalled after 8 bytes; nothing was written") as e:
                dl.download("ETTh1", tmp_path, timeout=0.5)
        finally:
            release.set()  # before the server shuts down
        assert "offline" not in str(e.value) and time.monotonic() - start < 4
    assert not any(tmp_path.rglob("*.csv"))
