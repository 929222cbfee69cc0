"""The CLI's http.client wrapper against a real loopback server that misbehaves on cue."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from atelier_io.http import BodyCutShort, Client, ConnectionFailed, Connections


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: list[int] = []
    slow_done = threading.Event()

    def log_message(self, *args: object) -> None:
        return None

    def setup(self) -> None:
        super().setup()
        Handler.connections.append(id(self.connection))

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.startswith("/slow"):  # headers, then a body that never comes
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.flush()
            time.sleep(3)
            Handler.slow_done.set()
            self.close_connection = True
            return
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


# ---- Connections: any URL, one keep-alive connection per origin ------------------------

def test_connections_keep_one_connection_per_origin(server: str) -> None:
    other = server.replace("127.0.0.1", "localhost")  # same server, another origin
    with Connections() as c:
        for url in (f"{server}/a", f"{server}/b", f"{other}/c", f"{server}/d"):
            r = c.request("GET", url, {"X-Token": "t"})
            assert r.status == 200 and r.json()["path"] == "/" + url[-1]
    assert len(Handler.connections) == 2


def test_a_body_left_half_read_is_not_reused(server: str) -> None:
    with Connections() as c:
        r = c.request("GET", f"{server}/cut", {})
        with pytest.raises(BodyCutShort) as cut:
            buf = memoryview(bytearray(100))
            while r.readinto(buf):
                pass
        assert cut.value.missing == 990
        r = c.request("GET", f"{server}/x", {})
        r.raw.read(5)  # left unread: the next request opens a new connection
        assert c.request("GET", f"{server}/y", {}).json()["path"] == "/y"
    assert len(Handler.connections) == 3


def test_abort_wakes_a_reader_blocked_in_another_thread(server: str) -> None:
    with Connections(read_timeout=30) as c:
        r = c.request("GET", f"{server}/slow", {})
        Handler.slow_done.clear()
        threading.Timer(0.2, r.abort).start()
        with pytest.raises(ConnectionFailed):
            r.readinto(memoryview(bytearray(1000)))
        assert not Handler.slow_done.is_set()  # woken by the abort, not by the server


def test_plain_http_goes_to_a_proxy_in_absolute_form(server: str) -> None:
    with Connections() as c:  # the test server answers with the request line's target
        r = c.request("GET", "http://files.invalid:8080/m?x=1", {},
                      proxy=server.replace("http://", "http://u:p%40ss@"))
        assert r.json()["path"] == "http://files.invalid:8080/m?x=1"
    with pytest.raises(ValueError, match="only http://"):
        Connections().request("GET", "http://files.invalid/m", {}, proxy="socks5://h:1")
