"""splice(2) of a response body into a file, against a real loopback HTTP server."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from atelier_io import splice
from atelier_io.http import Client, ConnectionFailed

BODY = os.urandom(3 * 1024 * 1024 + 4321)

pytestmark = pytest.mark.skipif(not splice.available(), reason="splice(2) is Linux-only")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        return None

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        cut = self.path.startswith("/cut")
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        # headers and the first bytes in one write: http.client buffers some of the body
        self.wfile.write(BODY[:2 * 1024 * 1024] if cut else BODY)
        self.wfile.flush()
        if cut:  # announce it all, send two thirds, hang up
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True


@pytest.fixture
def base() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_whole_body_lands_in_the_file_at_its_position(base: str, tmp_path: Path) -> None:
    c = Client(base)
    out = tmp_path / "out"
    out.write_bytes(b"HEAD")
    steps: list[int] = []
    fd = os.open(out, os.O_WRONLY)
    try:
        os.lseek(fd, 4, os.SEEK_SET)
        with c.get("/file", stream=True) as r:
            assert splice.body_into(r, fd, steps.append, 10) == len(BODY)
    finally:
        os.close(fd)
    assert out.read_bytes() == b"HEAD" + BODY
    assert sum(steps) == len(BODY)
    # the connection was closed, not left with a half-consumed http.client state
    assert c.get("/again").status == 200


def test_a_body_cut_short_is_a_connection_failure(base: str, tmp_path: Path) -> None:
    c = Client(base)
    out = tmp_path / "out"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    try:
        with c.get("/cut", stream=True) as r, pytest.raises(ConnectionFailed, match="early"):
            splice.body_into(r, fd, lambda n: None, 10)
    finally:
        os.close(fd)
    assert out.read_bytes() == BODY[:2 * 1024 * 1024]  # what came is kept, for a Range resume


def test_a_chunked_body_is_refused(tmp_path: Path) -> None:
    class Chunked(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            return None

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"3\r\nabc\r\n0\r\n\r\n")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Chunked)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        c = Client(f"http://127.0.0.1:{httpd.server_address[1]}")
        with c.get("/", stream=True) as r, pytest.raises(ValueError):
            splice.body_into(r, 1, lambda n: None, 10)
    finally:
        httpd.shutdown()
        httpd.server_close()
