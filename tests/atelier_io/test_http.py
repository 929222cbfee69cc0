"""The CLI's http.client wrapper against a real loopback server that misbehaves on cue."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from atelier_io.http import Client, ConnectionFailed


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: list[int] = []

    def log_message(self, *args: object) -> None:
        return None

    def setup(self) -> None:
        super().setup()
        Handler.connections.append(id(self.connection))

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.startswith("/cut"):  # announce 1000 bytes, send 10, hang up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        body = f'{{"path": "{self.path}", "auth": "{self.headers.get("Authorization")}"}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())
        if self.path.startswith("/drop"):
            # keep-alive promised, then the server closes the idle connection anyway
            self.close_connection = True


@pytest.fixture
def server() -> Iterator[str]:
    Handler.connections = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join()


def test_one_connection_is_kept_and_headers_and_params_are_sent(server: str) -> None:
    c = Client(server + "/base", headers={"Authorization": "Bearer t"})
    first = c.get("/api/x", params={"path": "a b/é"}).json()
    second = c.get("/api/y").json()
    assert first == {"path": "/base/api/x?path=a+b%2F%C3%A9", "auth": "Bearer t"}
    assert second["path"] == "/base/api/y"
    assert len(Handler.connections) == 1


def test_a_connection_the_server_closed_is_replaced_not_failed(server: str) -> None:
    c = Client(server)
    assert c.get("/drop").status == 200
    assert c.get("/after").json()["path"] == "/after"
    assert len(Handler.connections) == 2


def test_a_body_cut_short_raises_connection_failed(server: str) -> None:
    c = Client(server)
    with c.get("/cut", stream=True) as r:
        buf = memoryview(bytearray(4096))
        with pytest.raises(ConnectionFailed):
            while r.readinto(buf):
                pass
    with pytest.raises(ConnectionFailed):
        c.get("/cut")  # read whole: same error, not a short body
    assert c.get("/fine").status == 200  # and the client recovers


def test_refused_and_foreign_urls() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = Client(f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(ConnectionFailed):
        c.get("/api/x")
    with pytest.raises(ValueError):
        c.get("http://elsewhere.example/api/x")  # a tus Location on another host
    with pytest.raises(ValueError):
        Client("ftp://host/")


def test_basic_auth_is_added_to_a_copy(server: str) -> None:
    c = Client(server, headers={"X-A": "1"})
    basic = c.with_basic_auth("ann", "pw:with:colons")
    assert basic.get("/x").json()["auth"] == "Basic YW5uOnB3OndpdGg6Y29sb25z"
    assert c.get("/x").json()["auth"] == "None"
