"""Streamed request bodies through the CLI's client, against a real loopback socket."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from atelier_io.http import Client, ConnectionFailed

MiB = 1024 * 1024


def serve_once(answer: bytes, read_body: bool) -> tuple[str, list[int]]:
    """A server for one request: reads the headers (and the body if ``read_body``),
    sends ``answer`` and closes. The list gets the body bytes it read."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got: list[int] = []

    def run() -> None:
        conn, _ = srv.accept()
        with conn, srv:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            n = len(rest)
            while read_body and n < length:
                n += len(conn.recv(1 << 20))
            got.append(n)
            conn.sendall(answer)

    threading.Thread(target=run, daemon=True).start()
    return f"http://127.0.0.1:{srv.getsockname()[1]}", got


def pieces(n: int) -> Iterator[bytes]:
    for _ in range(n):
        yield b"x" * MiB


def test_an_iterable_body_is_streamed_whole() -> None:
    url, got = serve_once(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", True)
    r = Client(url).request("PATCH", "/u", body=pieces(8),
                            headers={"Content-Length": str(8 * MiB)})
    assert r.status == 204 and got == [8 * MiB]


def test_an_answer_sent_before_the_body_was_read_is_returned() -> None:
    """A server that refuses an upload (413, 409) may answer and close without reading a
    long body: the client reports that answer, not a broken pipe."""
    body = json.dumps({"error": "quota_exceeded", "message": "no room"}).encode()
    answer = (b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
              b"Connection: close\r\nContent-Length: " + str(len(body)).encode() +
              b"\r\n\r\n" + body)
    url, got = serve_once(answer, False)
    c = Client(url)
    r = c.request("PATCH", "/u", body=pieces(256), headers={"Content-Length": str(256 * MiB)})
    assert r.status == 413 and r.message() == "no room"
    assert got[0] < 256 * MiB


def test_a_failing_body_iterable_drops_the_connection() -> None:
    url, _ = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n", True)

    def broken() -> Iterator[bytes]:
        yield b"x" * 1000
        raise OSError("the local file went away")

    c = Client(url)
    with pytest.raises((OSError, ConnectionFailed)):
        c.request("PATCH", "/u", body=broken(), headers={"Content-Length": "2000"})
    assert getattr(c._local, "conn", None) is None
