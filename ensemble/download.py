"""Fetch the standard benchmark files from their public sources, sha256-checked.

ETT comes from the ETDataset GitHub repository (zhouhaoyi/ETDataset); weather, illness
and exchange_rate from the zip archives the Autoformer authors' files are redistributed
in (aspire-zero/long_term_forecast_data). Each file is checked against the sha256 sums
below (the same as ../shared/data/SHA256SUMS) and written atomically: a failed or
mismatching download leaves nothing behind.

``$HYBRID_FORECAST_DATA_URL`` replaces every source with ``<URL>/<relative path>`` (a
plain file, no zip): for mirrors, and for tests that serve files from a loopback server.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from ensemble.data import DATA_ENV, DATASETS
from ensemble.errors import UserError
from ensemble.io import _atomic, cannot_create_in

URL_ENV = "HYBRID_FORECAST_DATA_URL"

_WINDOWS = os.name == "nt"

SHA256 = {
    "ETT-small/ETTh1.csv": "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
    "ETT-small/ETTh2.csv": "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
    "ETT-small/ETTm1.csv": "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e",
    "ETT-small/ETTm2.csv": "db973ca252c6410a30d0469b13d696cf919648d0f3fd588c60f03fdbdbadd1fd",
    "weather/weather.csv": "34ee981d07313e51da2a50bb600072c8ae4a69cb4b0651f4cb93a069d7a2ba63",
    "illness/national_illness.csv": "93601f64d2566dc796ca4305adad8b8560c2db1a1ff04543c3bd813a7263570a",
    "exchange_rate/exchange_rate.csv": "48b4d9d3d508f5104162e85b9a6042e3557fde11aa9f2944eba8c0d0efc89842",
}

_ETT = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/"
_ZIPS = "https://raw.githubusercontent.com/aspire-zero/long_term_forecast_data/main/"
# relative path -> (url, member inside a zip or None)
SOURCES = {
    "ETT-small/ETTh1.csv": (_ETT + "ETT-small/ETTh1.csv", None),
    "ETT-small/ETTh2.csv": (_ETT + "ETT-small/ETTh2.csv", None),
    "ETT-small/ETTm1.csv": (_ETT + "ETT-small/ETTm1.csv", None),
    "ETT-small/ETTm2.csv": (_ETT + "ETT-small/ETTm2.csv", None),
    "weather/weather.csv": (_ZIPS + "weather.zip", "weather/weather.csv"),
    "illness/national_illness.csv": (_ZIPS + "illness.zip", "illness/national_illness.csv"),
    "exchange_rate/exchange_rate.csv": (
        _ZIPS + "exchange_rate.zip",
        "exchange_rate/exchange_rate.csv",
    ),
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _not_a_url(url: str, what: str = "not a URL nor a folder") -> UserError:
    return UserError(
        f"cannot download {url}: {what}; set ${URL_ENV} to one such as "
        "https://host/path, file:///folder or a folder path"
    )


def _fetch(url: str, timeout: float) -> bytes:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file", "ftp"):
        raise _not_a_url(
            url, f"the scheme {scheme}:// is not supported" if scheme else "not a URL nor a folder"
        )
    if scheme == "file":  # urlopen refuses a file:// URL of a network share
        path = _file_url_path(url)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise UserError(
                f"cannot read {path} ({exc.strerror or exc}); check ${URL_ENV}"
            ) from None
    try:
        resp = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise UserError(
            f"download failed: {url} answered HTTP {exc.code}; check the URL or ${URL_ENV}"
        ) from None
    except http.client.InvalidURL as exc:  # a port that is no number, a space in the host
        raise _not_a_url(url, f"not a URL ({exc})") from None
    except http.client.HTTPException as exc:  # RemoteDisconnected, BadStatusLine
        raise UserError(
            f"{url} hung up before answering ({type(exc).__name__}); nothing was written, "
            "run the command again"
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"cannot reach {url} ({reason}); are you offline? Copy the files into the data "
            f"folder by hand or set ${URL_ENV} to a reachable mirror"
        ) from None
    # The server answered: a failure from here on is the transfer, not being offline.
    chunks: list[bytes] = []
    got = 0
    why = ""
    try:
        # read1: whatever has arrived, so a stall reports the bytes that did
        read = getattr(resp, "read1", resp.read)
        with resp:
            while chunk := read(1 << 16):
                chunks.append(chunk)
                got += len(chunk)
            # read(n) ends quietly at a hang-up: the promised length tells it from the end
            promised = resp.headers.get("Content-Length", "")
            if promised.isdigit() and got < int(promised):
                why = f"broke off after {got} of {promised} bytes"
    except TimeoutError:
        why = f"stalled after {got} bytes"
    except (http.client.HTTPException, OSError) as exc:  # a reset, IncompleteRead
        why = f"broke off after {got} bytes ({type(exc).__name__})"
    if why:
        raise UserError(f"the transfer of {url} {why}; nothing was written, run the command again")
    return b"".join(chunks)


def check_names(names: list[str]) -> None:
    """Refuse an unknown name before anything is fetched, with the loader's hint for a
    name in the wrong case."""
    for name in names:
        if name in DATASETS:
            continue
        close = [k for k in (*DATASETS, "all") if k.lower() == name.lower()]
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(
            f"unknown dataset {name!r}{hint}: choose one of {', '.join(DATASETS)}, or all"
        )


_EDITED = (
    "{dest} is present but its SHA-256 differs from the published {name} file (edited or "
    "damaged); move it away to keep it, or pass --force to replace it"
)


def check_data_folder(data_dir: Path) -> None:
    """Refuse a data folder that is a file, or lies under one, before anything is fetched
    (else the download ran, then failed making the folder).

    Raises:
        UserError: ``data_dir`` or a folder above it is a file.
    """
    data_dir = Path(data_dir)
    for path in (data_dir, *data_dir.parents):
        if path.exists():
            if path.is_dir():
                return
            where = "is a file" if path == data_dir else f"is under {path}, a file"
            raise UserError(
                f"the data folder {data_dir} {where}, where a folder is needed; give "
                f"--data-dir (or ${DATA_ENV}) a folder to download into (it is made if "
                "missing)"
            )


def check_before_fetching(names: list[str], data_dir: Path, *, force: bool = False) -> None:
    """What `download` would refuse for any of ``names`` (an unknown name, a file present
    that is not the published one), refused before the first fetch: `data download all`
    then stops on ETTm2 before, not after, fetching ETTh1 to ETTm1."""
    check_names(names)
    check_data_folder(data_dir)
    for name in names:
        rel = DATASETS[name][0]
        dest = Path(data_dir) / rel
        if dest.exists() and not dest.is_file():
            raise UserError(
                f"{dest} is a folder, where the {name} file goes; move it away and run "
                "the command again"
            )
        if dest.is_file():
            if sha256_file(dest) == SHA256[rel]:
                continue  # "present": nothing to write, a read-only folder is fine
            if not force:
                raise UserError(_EDITED.format(dest=dest, name=name))
        _check_writable(dest.parent)


def _check_writable(folder: Path) -> None:
    """Refuse a folder that cannot be made or take a new file (``/proc/xx``) before the
    fetch, not after it.

    Raises:
        UserError: a file on the way, or a folder that refuses a new file.
    """
    near, why = cannot_create_in(folder)
    if why == "is a file":
        raise UserError(
            f"cannot create the data folder {folder}: {near} is a file; move it away or "
            "give --data-dir another folder"
        )
    if why:
        raise UserError(
            f"cannot write into {near} ({why}); give --data-dir a folder you can write to"
        )


def _mirror_url(base: str | None) -> str | None:
    """``$HYBRID_FORECAST_DATA_URL`` as a URL: a folder path (``/srv/mirror``,
    ``C:\\mirror``, or a relative one that exists) is its file:// URL, with characters
    such as ``#`` quoted (in a file:// URL written by hand it starts a fragment); a
    network share ``\\\\nas\\share`` is ``file://nas/share``."""
    if not base:
        return base
    try:
        scheme = urllib.parse.urlsplit(base).scheme
    except ValueError as exc:  # "http://[::1": an unclosed IPv6 host
        raise _not_a_url(base, f"not a URL nor a folder ({exc})") from None
    path = Path(base).expanduser()
    if len(scheme) <= 1 and (scheme or path.is_absolute() or path.exists()):
        return path.absolute().as_uri()
    return base


def _file_url_path(url: str) -> Path:
    """The file or folder a file:// URL names. One with a host (``file://nas/share/m``,
    the URL of the Windows network share ``\\\\nas\\share\\m``) is that share's UNC path:
    urllib opens file:// URLs of this machine only, and the host must not be dropped.

    Raises:
        UserError: a host outside Windows, where no UNC path reaches it.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc
    if not host or host.lower() == "localhost":
        return Path(urllib.request.url2pathname(parts.path))
    if not _WINDOWS:
        raise UserError(
            f"cannot read {url}: a file:// URL with a host ({host}) names a Windows network "
            f"share; mount the share and set ${URL_ENV} to its folder here"
        )
    share, *rest = [p for p in urllib.parse.unquote(parts.path).split("/") if p] or [""]
    return Path(f"\\\\{host}\\{share}", *rest)


def _local_mirror_missing(base: str, rel: str) -> str | None:
    """For a file:// mirror, what is absent (the mirror, or one file in it), or None: a
    local path (or network share) that does not exist is no sign of being offline."""
    if urllib.parse.urlsplit(base).scheme != "file":
        return None
    mirror = _file_url_path(base)
    if not mirror.is_dir():
        return f"the local mirror {mirror} (${URL_ENV}) does not exist; check the path"
    if not (mirror / rel).is_file():
        return (
            f"the local mirror {mirror} (${URL_ENV}) has no {rel}; copy the file there "
            "(the mirror is laid out as the data folder)"
        )
    return None


def download(
    name: str, data_dir: Path, *, timeout: float = 60.0, force: bool = False
) -> tuple[Path, str]:
    """Download one dataset into ``data_dir``; returns (path, 'downloaded' | 'present' |
    'replaced').

    A file already there whose SHA-256 is not the published one (an edited copy, say) is
    the user's data: it is refused unless ``force``, and then only replaced once the
    download has passed its check.
    """
    check_names([name])
    check_data_folder(data_dir)
    rel = DATASETS[name][0]
    dest = Path(data_dir) / rel
    want = SHA256[rel]
    stale = dest.is_file()
    if stale and sha256_file(dest) == want:
        return dest, "present"
    if stale and not force:
        raise UserError(_EDITED.format(dest=dest, name=name))
    base = _mirror_url(os.environ.get(URL_ENV))
    url, member = (base.rstrip("/") + "/" + rel, None) if base else SOURCES[rel]
    try:
        if base and (missing := _local_mirror_missing(base, rel)):
            raise UserError(missing)
        blob = _fetch(url, timeout)
        if member is not None:
            try:
                with zipfile.ZipFile(io.BytesIO(blob)) as zf:
                    blob = zf.read(member)
            except (zipfile.BadZipFile, KeyError):
                raise UserError(
                    f"{url} is not the expected archive (no {member} inside); try again or "
                    "use a mirror"
                ) from None
        got = hashlib.sha256(blob).hexdigest()
        if got != want:
            raise UserError(
                f"checksum mismatch for {rel} from {url}: got {got[:12]}..., expected "
                f"{want[:12]}...; nothing was written"
            )
    except UserError as exc:
        if stale:  # the file that made --force necessary is still there, still failing
            raise UserError(
                f"{dest} is present but fails the SHA-256 check, and no replacement could be "
                f"fetched (the file was left as it is): {exc}"
            ) from None
        raise
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the data folder {dest.parent}: {exc.strerror or exc}"
        ) from None
    _atomic(dest, lambda fh: fh.write(blob))
    return dest, "replaced" if stale else "downloaded"
