"""Real servers on loopback for the fetch engine tests.

``server``: a threaded stdlib HTTP/1.1 server whose behaviour is set by knobs (throttle per
connection, latency, Range ignored, drop after N bytes, corrupted bytes, 429/503 with
Retry-After, a redirect to a signed URL on another host name that expires, wrong
Content-Length, chunked bodies, HTML pages, stalls). It counts the bytes it sends and logs
every request. ``nginx``: Debian's nginx serving a folder, optionally with ``limit_rate``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelzoo.fetch import FetchSettings

ROOT = Path(__file__).resolve().parents[3]
LOGIN_PAGE = (b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>"
              b"<form action='/login'>Log in to download</form></body></html>")


def make_safetensors(nbytes: int, seed: int = 0) -> bytes:
    """A valid safetensors file of about ``nbytes``: one U8 tensor of random bytes."""
    n = max(16, nbytes - 128)
    header = json.dumps({"__metadata__": {"seed": str(seed)},
                         "w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
    header += b" " * (-len(header) % 8)
    body = hashlib.shake_256(str(seed).encode()).digest(n)
    return struct.pack("<Q", len(header)) + header + body


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Knobs:
    throttle: int = 0                  # bytes/s per response (0 = unlimited)
    slow: int = 0                      # the next N responses get ...
    slow_rate: int = 0                 # ... this rate instead (one slow connection)
    latency: float = 0.0               # seconds before each response
    ignore_range: bool = False         # answer 200 with the whole body
    drop_after: int | None = None      # close the connection after N body bytes ...
    drops: int = 1 << 30               # ... for this many responses
    corrupt_at: int | None = None      # flip the byte at this file offset
    fail: list[tuple[int, float | None]] = field(default_factory=list)  # (status, retry_after)
    fail_forever: tuple[int, float | None] | None = None
    signed_ttl: float = 3600.0         # lifetime of the signed URLs /redirect hands out
    length_delta: int = 0              # added to Content-Length (a lie)
    chunked: bool = False              # no Content-Length, chunked encoding
    html: bool = False                 # a login page instead of the file
    content_type: str = "application/octet-stream"
    stall_after: int | None = None     # stop sending (but keep the socket) after N bytes ...
    stalls: int = 0                    # ... for this many responses
    dead: bool = False                 # reset every connection
    page: tuple[str, bytes] | None = None  # (Content-Type, body): a 200 page, not the file
    redirect_to: str | None = None     # /redirect/ sends here (another server) ...
    set_cookie: str | None = None      # ... with this Set-Cookie on the redirect
    ranges_from_zero_only: bool = False  # 206 for bytes=0-..., the whole file (200) otherwise
    range_length_delta: int = 0        # added to a 206's Content-Length (disagrees with
                                       # its Content-Range)
    total_rate: int = 0                # bytes/s shared by all responses (a full uplink)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients dropping connections on purpose is the point of these tests


class FileServer:
    """Serves ``data`` at ``/f/NAME``; ``/redirect/NAME`` sends you to a signed URL."""

    def __init__(self, data: bytes, name: str = "model.safetensors",
                 tls: tuple[Path, Path] | None = None) -> None:
        self.data = data
        self.name = name
        self.knobs = Knobs()
        self.etag = f'"{sha(data)[:16]}"'
        self.log: list[dict[str, Any]] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._bucket = time.monotonic()  # total_rate: when the shared uplink is free again
        handler = type("H", (_Handler,), {"srv": self})
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.scheme = "http"
        if tls is not None:  # https with a certificate from a CA of our own
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str | None = None, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path or '/f/' + self.name}"

    @property
    def redirect_url(self) -> str:
        return self.url(f"/redirect/{self.name}")

    def set_data(self, data: bytes) -> None:
        self.data = data
        self.etag = f'"{sha(data)[:16]}"'

    def requests(self, prefix: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.log if r["path"].startswith(prefix)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    srv: FileServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        srv, k = self.srv, self.srv.knobs
        proxied = self.path.startswith("http://")  # absolute form: we are used as a proxy
        if proxied:
            self.path = "/" + self.path.split("/", 3)[3]
        with srv._lock:
            srv.log.append({"path": self.path, "headers": dict(self.headers),
                            "proxied": proxied,
                            "client": self.client_address[1], "t": time.monotonic()})
            failing = k.fail.pop(0) if k.fail else k.fail_forever
            dropping = k.drop_after is not None and k.drops > 0
            if dropping:
                k.drops -= 1
            stalling = k.stall_after is not None and k.stalls > 0
            if stalling:
                k.stalls -= 1
            rate = k.throttle
            if k.slow > 0 and self.path.startswith(("/f/", "/signed/")):
                k.slow -= 1
                rate = k.slow_rate
        if k.dead:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if k.latency:
            time.sleep(k.latency)
        path = self.path.split("?", 1)[0]
        if path.startswith("/redirect/"):
            exp = time.time() + k.signed_ttl
            base = k.redirect_to or f"http://localhost:{srv.port}"
            loc = f"{base}/signed/{srv.name}?exp={exp}"
            extra = {"Set-Cookie": k.set_cookie} if k.set_cookie else {}
            return self._small(302, b"", {"Location": loc, **extra})
        if path.startswith("/signed/"):
            exp = float(self.path.split("exp=", 1)[1])
            if time.time() > exp:
                return self._small(403, b"<Error>Request has expired</Error>",
                                   {"Content-Type": "application/xml"})
        elif not path.startswith("/f/"):
            return self._small(404, b'{"error":"File not found"}',
                               {"Content-Type": "application/json"})
        if failing:
            status, after = failing
            extra = {"Retry-After": str(after)} if after is not None else {}
            return self._small(status, b'{"error":"slow down"}', extra)
        if k.html:
            return self._small(200, LOGIN_PAGE, {"Content-Type": "text/html; charset=utf-8"})
        if k.page:
            return self._small(200, k.page[1], {"Content-Type": k.page[0]})
        self._file(dropping, stalling, rate)

    def _small(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self, dropping: bool, stalling: bool, rate: int) -> None:
        srv, k = self.srv, self.srv.knobs
        data = srv.data
        size = len(data)
        start, end = 0, size
        status = 200
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if rng and not k.ignore_range and (if_range is None or if_range == srv.etag) \
                and not (k.ranges_from_zero_only and not rng.startswith("bytes=0-")):
            lo, _, hi = rng.removeprefix("bytes=").partition("-")
            start = int(lo)
            end = min(size, int(hi) + 1) if hi else size
            if start >= size:
                return self._small(416, b"", {"Content-Range": f"bytes */{size}"})
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", k.content_type)
        self.send_header("ETag", srv.etag)
        self.send_header("Content-Disposition", f'attachment; filename="{srv.name}"')
        if not k.ignore_range:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        if k.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            delta = k.length_delta + (k.range_length_delta if status == 206 else 0)
            self.send_header("Content-Length", str(end - start + delta))
        self.end_headers()
        limit = end - start
        if dropping and k.drop_after is not None:
            limit = min(limit, k.drop_after)
        if stalling and k.stall_after is not None:
            limit = min(limit, k.stall_after)
        t0 = time.monotonic()
        pos, sent = start, 0
        try:
            while sent < limit:
                if k.dead:  # the server died mid-body: reset the connection
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                n = min(64 * 1024, limit - sent)
                chunk = bytearray(data[pos:pos + n])
                if k.corrupt_at is not None and pos <= k.corrupt_at < pos + n:
                    chunk[k.corrupt_at - pos] ^= 0xFF
                if k.chunked:
                    self.wfile.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                else:
                    self.wfile.write(chunk)
                with srv._lock:
                    srv.sent += n
                    if k.total_rate:  # the shared uplink: wait for this chunk's turn
                        srv._bucket = max(srv._bucket, time.monotonic()) + n / k.total_rate
                        free_at = srv._bucket
                pos += n
                sent += n
                if k.total_rate:
                    time.sleep(max(0.0, free_at - time.monotonic()))
                if rate:
                    ahead = sent / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
            if stalling and sent < end - start:
                time.sleep(30)  # hold the connection open, send nothing
            if k.chunked and sent == end - start:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if sent < end - start or k.length_delta or k.range_length_delta:
            self.close_connection = True  # the drop: close mid-body


@pytest.fixture
def make_server() -> Iterator[Callable[..., FileServer]]:
    servers: list[FileServer] = []

    def make(data: bytes, name: str = "model.safetensors",
             tls: tuple[Path, Path] | None = None) -> FileServer:
        s = FileServer(data, name, tls)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True,
                   capture_output=True)
    return cert, key


@pytest.fixture
def settings() -> FetchSettings:
    """Small pieces and quick retries, so faults show up in small files."""
    return FetchSettings(connections=4, piece_size=64 * 1024, buffer_size=64 * 1024,
                         backoff_initial=0.05, backoff_max=0.5, stall_timeout=5,
                         retries=6, lock_heartbeat=0.5, reserve_bytes=0, sync_interval=0.5)


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ATELIER_FETCH_") or key.lower().endswith("_proxy") or key in (
                "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
            monkeypatch.delenv(key)


# ---- a SOCKS5 proxy (RFC 1928: no authentication, CONNECT only) --------------------------

class Socks5:
    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            _ver, n = client.recv(2)
            client.recv(n)
            client.sendall(b"\x05\x00")  # no authentication
            _ver, _cmd, _rsv, atyp = client.recv(4)
            if atyp == 3:
                host = client.recv(client.recv(1)[0]).decode()
            else:
                host = socket.inet_ntoa(client.recv(4))
            port = struct.unpack(">H", client.recv(2))[0]
            self.connects.append((host, port))
            # files.invalid resolves only here: only requests through the proxy get there
            upstream = socket.create_connection(
                ("127.0.0.1" if host == "files.invalid" else host, port))
            client.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + b"\x00\x00")
        except (OSError, ValueError):
            client.close()
            return
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def socks_proxy() -> Iterator[Socks5]:
    proxy = Socks5()
    yield proxy
    proxy.close()


# ---- nginx -------------------------------------------------------------------------------

class Nginx:
    def __init__(self, root: Path, prefix: Path, limit_rate: str | None = None) -> None:
        self.root = root
        self.prefix = prefix
        self.log_path = prefix / "access.log"
        self.port = free_port()
        for d in ("tmp", "logs"):
            (prefix / d).mkdir(parents=True, exist_ok=True)
        limit = f"limit_rate {limit_rate};" if limit_rate else ""
        user = "user root;" if os.geteuid() == 0 else ""
        conf = f"""
{user}
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format bytes '$status $body_bytes_sent $http_range';
    access_log {self.log_path} bytes;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    types {{ application/octet-stream safetensors; }}
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 10000;
    server {{
        listen 127.0.0.1:{self.port};
        root {root};
        location / {{ {limit} }}
    }}
}}
"""
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([nginx, "-c", str(self.conf), "-p", str(prefix)],
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"nginx did not start: {err}") from None
                time.sleep(0.05)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def bytes_sent(self) -> int:
        """Body bytes nginx sent, from its access log (aborted requests included)."""
        self.proc.send_signal(signal.SIGUSR1)  # reopen logs = flush nothing buffered
        total = 0
        if self.log_path.exists():
            for line in self.log_path.read_text().splitlines():
                total += int(line.split()[1])
        return total

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[..., Nginx]]:
    started: list[Nginx] = []

    def start(root: Path, limit_rate: str | None = None) -> Nginx:
        n = Nginx(root, tmp_path / f"nginx{len(started)}", limit_rate)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


def fetch_cmd(*args: str) -> list[str]:
    """``python -m modelzoo.fetch ARGS``: the ``atelier fetch`` command."""
    return [sys.executable, "-m", "modelzoo.fetch", *args]


@pytest.fixture
def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Tools:
    make_safetensors = staticmethod(make_safetensors)
    sha = staticmethod(sha)
    fetch_cmd = staticmethod(fetch_cmd)
    login_page = LOGIN_PAGE


@pytest.fixture
def tools() -> type[Tools]:
    return Tools
