"""Helpers for the transfer tests: raw tus requests and a socket-level PATCH in flight."""

from __future__ import annotations

import base64
import hashlib
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

TUS = {"Tus-Resumable": "1.0.0"}


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def metadata(**kv: str) -> str:
    return ",".join(f"{k} {b64(v)}" for k, v in kv.items())


def create(s: requests.Session, url: str, length: int | None, **meta: str) -> requests.Response:
    """POST a tus upload; ``folder`` defaults to the root ("", which these tests write to
    as admin): with no ``folder`` at all it goes to the caller's home
    (test_tus.py::test_no_folder_means_the_callers_home)."""
    meta.setdefault("folder", "")
    headers = {**TUS, "Upload-Metadata": metadata(**meta)}
    if length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(length)
    return s.post(f"{url}/api/tus/", headers=headers, timeout=30)


def upload_url(s: requests.Session, url: str, length: int | None, **meta: str) -> str:
    r = create(s, url, length, **meta)
    assert r.status_code == 201, r.text
    return url + r.headers["Location"]


def patch(s: requests.Session, upload: str, offset: int, data: bytes,
          checksum: str | None = None, **headers: str) -> requests.Response:
    h = {**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream",
         **headers}
    if checksum:
        digest = base64.b64encode(hashlib.new(checksum, data).digest()).decode()
        h["Upload-Checksum"] = f"{checksum} {digest}"
    return s.patch(upload, data=data, headers=h, timeout=60)


def head(s: requests.Session, upload: str) -> requests.Response:
    return s.head(upload, headers=TUS, timeout=30)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def open_patch(upload: str, token: str, offset: int, content_length: int,
               extra: dict[str, str] | None = None) -> socket.socket:
    """A PATCH whose headers are sent and whose body the caller sends (or cuts) by hand."""
    u = urlsplit(upload)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    lines = [f"PATCH {u.path} HTTP/1.1", f"Host: {u.netloc}", f"Authorization: {token}",
             "Tus-Resumable: 1.0.0", "Content-Type: application/offset+octet-stream",
             f"Upload-Offset: {offset}", f"Content-Length: {content_length}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def wait_offset(s: requests.Session, upload: str, expected: int, timeout: float = 20) -> int:
    """HEAD until the offset settles at ``expected`` (the server sees the cut a bit later)."""
    deadline = time.monotonic() + timeout
    offset = -1
    while time.monotonic() < deadline:
        r = head(s, upload)
        offset = int(r.headers.get("Upload-Offset", -1))
        if offset == expected:
            return offset
        time.sleep(0.05)
    return offset


@pytest.fixture
def server(make_server, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The service; ``@both_io`` runs a test with uploads through the page cache and past
    it (``upload_direct_io`` off and on), otherwise the default (auto)."""
    return make_server(upload_direct_io=getattr(request, "param", "auto"))


both_io = pytest.mark.parametrize("server", ["off", "on"], indirect=True,
                                  ids=["buffered", "direct"])
