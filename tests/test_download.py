"""ensemble.download: from a loopback HTTP server, checksum-checked, atomic."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
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


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
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
    with pytest.raises(UserError, match=r"not a URL; set \$HYBRID_FORECAST_DATA_URL"):
        dl.download("illness", tmp_path)
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
    class Short(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(b"date,OT\n")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Short)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(dl.URL_ENV, f"http://127.0.0.1:{httpd.server_address[1]}")
        with pytest.raises(UserError, match="broke off .*run the command again"):
            dl.download("ETTh1", tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not any(tmp_path.rglob("*.csv"))
