"""The desktop CLI's HTTP client: the standard library's ``http.client`` with a base URL,
default headers, query strings and one keep-alive connection per thread.

Why not requests: ``atelier pull`` of 1 GB on loopback moves its bytes in about 0.7 s,
and importing requests took 0.1 s of the command's 0.17 s start, which alone held pull
under 0.8x curl. The CLI needs little of what requests adds: no cookies, proxies,
redirects or content decoding (bodies are asked for as ``identity``; ranges address the
stored bytes). ``http.client`` does the protocol; this module only keeps connections.

Any failure to talk to the server (refused, reset, timed out, cut mid-body, a stale
keep-alive) raises :class:`ConnectionFailed`, which the transfers treat as retryable.

:class:`Client` talks to one server (a base URL). :class:`Connections` is the same reader
for any URL, as the model fetch engine needs it: one keep-alive connection per origin,
separate connect and read timeouts, an optional HTTP proxy, and no redirects (each hop is
the caller's request, so the caller decides which headers it gets).
"""

from __future__ import annotations

import base64
import http.client
import json
import select
import socket
import ssl  # http.client imports it anyway
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit


class ConnectionFailed(Exception):
    """The server could not be reached, or the connection broke."""


class CertificateRejected(ConnectionFailed):
    """The server's TLS certificate did not verify: trying again will not change that."""


class BodyCutShort(ConnectionFailed):
    """The server closed the connection cleanly before the Content-Length it announced
    (a reset or a timeout is a plain ConnectionFailed)."""

    def __init__(self, missing: int) -> None:
        super().__init__(f"the connection closed {missing} bytes early")
        self.missing = missing


class Response:
    """Status, headers (case-insensitive ``get``) and the body, read whole or streamed."""

    def __init__(self, raw: http.client.HTTPResponse, drop: Any,
                 sock: socket.socket | None = None) -> None:
        self.raw = raw
        self.status = raw.status
        self.reason = raw.reason
        self.headers = raw.headers
        self._drop = drop  # closes the connection when the body is left half read
        self._sock = sock
        self._content: bytes | None = None

    def read(self) -> bytes:
        if self._content is None:
            try:
                self._content = self.raw.read()
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise ConnectionFailed(f"the connection broke mid-answer: {exc!r}") from None
        return self._content

    def json(self) -> Any:
        return json.loads(self.read())

    def readinto(self, buf: memoryview) -> int:
        """Streamed body straight into ``buf`` (no bytes object per block); 0 at the end."""
        try:
            n = self.raw.readinto(buf)
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise ConnectionFailed(f"the connection broke mid-download: {exc!r}") from None
        if n == 0 and len(buf) and self.raw.length:
            # http.client ends a body cut short quietly; the Content-Length says otherwise
            missing = self.raw.length
            self._drop()
            raise BodyCutShort(missing)
        return n

    def message(self) -> str:
        """The server's error message (JSON ``message``), else the status line."""
        try:
            text = self.json().get("message")
        except (ValueError, AttributeError, ConnectionFailed):
            text = None
        return str(text or f"HTTP {self.status} {self.reason}")

    def close(self) -> None:
        if not self.raw.isclosed():
            self._drop()

    def queued(self) -> int:
        """Bytes received for this connection and not read yet (0 when unknown)."""
        if self._sock is None:
            return 0
        import fcntl
        import termios

        try:
            raw = fcntl.ioctl(self._sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except (OSError, ValueError):
            return 0
        return int.from_bytes(raw, "little")

    def abort(self) -> None:
        """From another thread: shut the socket down so a blocked ``readinto`` returns."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _early_answer(conn: http.client.HTTPConnection,
                  exc: BaseException) -> http.client.HTTPResponse | None:
    """A server that refuses an upload (413, 409, 423) may answer and close before it
    reads a long body, and the send then breaks: the answer, if it arrived, is the
    news. The connection is not reused after it (the stale check drops it)."""
    if not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
        return None
    try:
        raw = conn.getresponse()
    except (OSError, http.client.HTTPException):
        return None
    raw.will_close = True  # http.client closes its side once the answer is read
    return raw


class Client:
    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None,
                 timeout: float = 300.0) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port
        self.prefix = parts.path
        self.headers = {"User-Agent": "atelier-cli", **(headers or {})}
        self.timeout = timeout
        self._local = threading.local()

    def with_basic_auth(self, user: str, password: str) -> Client:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return Client(self.base_url, headers={**self.headers, "Authorization": f"Basic {token}"},
                      timeout=self.timeout)

    def path(self, url: str) -> str:
        """The request target for ``url``: a full URL on this server, or a path below
        the base URL (``/api/...``)."""
        if url.startswith(("http://", "https://")):
            parts = urlsplit(url)
            if (parts.scheme == "https", parts.hostname, parts.port) != \
                    (self.https, self.host, self.port):
                raise ValueError(f"{url} is not on {self.base_url}")
            return parts.path + (f"?{parts.query}" if parts.query else "")
        return self.prefix + url

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        # an idle keep-alive socket that reads as ready was closed by the server
        if conn is not None and conn.sock is not None and \
                select.select([conn.sock], [], [], 0)[0]:
            self._drop()
            conn = None
        if conn is None:
            if self.https:
                import ssl  # only for https: a tenth of the import time of the rest

                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                   context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def request(self, method: str, url: str, *, params: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None,
                body: bytes | memoryview | Iterable[bytes | memoryview] | None = None,
                json_body: Any = None, stream: bool = False) -> Response:
        """Send one request; the answer's body is read whole unless ``stream`` (then use
        ``with``). ``body`` may be an iterable of pieces, sent as they come (give a
        ``Content-Length``): an upload streams without being held in memory."""
        target = self.path(url)
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        sent = {**self.headers, **(headers or {})}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.request(method, target, body=body, headers=sent)
                raw = conn.getresponse()
                break
            except (OSError, http.client.HTTPException) as exc:
                early = _early_answer(conn, exc) if body is not None else None
                if early is not None:
                    raw = early
                    break
                self._drop()
                # A keep-alive connection the server closed just as it was reused: a
                # GET or HEAD is safe to send again once, on a new connection.
                if attempt == 1 and reused and method in ("GET", "HEAD") and isinstance(
                        exc, (http.client.RemoteDisconnected, ConnectionResetError,
                              BrokenPipeError)):
                    continue
                raise ConnectionFailed(f"{method} {self.base_url}: {exc!r}") from None
            except BaseException:
                self._drop()  # a body iterable that failed left the request half sent
                raise
        response = Response(raw, self._drop)
        if not stream:
            response.read()  # the connection is free again (http.client closes it if asked)
        return response

    def get(self, url: str, **kw: Any) -> Response:
        return self.request("GET", url, **kw)

    def head(self, url: str, **kw: Any) -> Response:
        return self.request("HEAD", url, **kw)

    def post(self, url: str, **kw: Any) -> Response:
        return self.request("POST", url, **kw)

    def patch(self, url: str, **kw: Any) -> Response:
        return self.request("PATCH", url, **kw)


_Key = tuple[str, str, int, str | None]  # scheme, host, port, proxy


class Connections:
    """Keep-alive connections to any origin, for one thread at a time.

    ``request`` takes an absolute URL and returns the answer unread (``readinto`` it, then
    ``close``): a body read to its end leaves the connection for the next request to the
    same origin. ``proxy`` is an ``http://[user:pass@]host:port`` proxy: plain-HTTP URLs
    are sent to it in absolute form, HTTPS ones through a CONNECT tunnel. The read
    timeout applies to every wait for bytes once connected (a stalled body).
    """

    def __init__(self, *, connect_timeout: float = 10.0, read_timeout: float = 300.0,
                 context: Any = None, connect: Callable[..., socket.socket] | None = None
                 ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        # opens the TCP connection to an origin (never to a proxy), as
        # socket.create_connection((host, port), timeout, source_address) does: one that
        # resolves the name once and checks the addresses it connects to. A
        # PermissionError it raises (a refusal by local policy) is raised as it is.
        self.connect = connect
        # an ssl.SSLContext, or a function making one when the first https connection
        # opens; the default context when None
        self.context = context
        self._conns: dict[_Key, http.client.HTTPConnection] = {}
        self._open: dict[_Key, Response] = {}

    def request(self, method: str, url: str, headers: dict[str, str], *,
                proxy: str | None = None) -> Response:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"bad port in {url!r}") from None
        key: _Key = (scheme, parts.hostname, port, proxy)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        sent = dict(headers)
        if proxy and scheme == "http":
            target = f"http://{parts.netloc.rpartition('@')[2]}{target}"
            sent.update(_proxy_auth(proxy))
        for attempt in (1, 2):
            conn = self._connection(key)
            reused = conn.sock is not None
            try:
                if not reused:
                    conn.connect()
                    if conn.sock is not None:
                        conn.sock.settimeout(self.read_timeout)
                conn.request(method, target, headers=sent)
                raw = conn.getresponse()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._drop(key)
                if isinstance(exc, PermissionError):
                    raise  # refused here, by policy: no retry will change that
                # a keep-alive connection the server closed as we reused it: once more
                if attempt == 1 and reused and method in ("GET", "HEAD") and isinstance(
                        exc, (http.client.RemoteDisconnected, ConnectionResetError,
                              BrokenPipeError)):
                    continue
                kind = (CertificateRejected if isinstance(exc, ssl.SSLCertVerificationError)
                        else ConnectionFailed)
                raise kind(f"{method} {parts.scheme}://{parts.netloc}: {exc!r}") from None
        response = Response(raw, lambda: self._drop(key), conn.sock)
        self._open[key] = response
        return response

    def _connection(self, key: _Key) -> http.client.HTTPConnection:
        conn = self._conns.get(key)
        previous = self._open.pop(key, None)
        if conn is not None and previous is not None and not previous.raw.isclosed():
            self._drop(key)  # the last answer was not read to its end: not reusable
            conn = None
        # an idle keep-alive socket that reads as ready was closed by the server
        if conn is not None and conn.sock is not None and \
                select.select([conn.sock], [], [], 0)[0]:
            self._drop(key)
            conn = None
        if conn is None:
            conn = self._new(key)
            self._conns[key] = conn
        return conn

    def _new(self, key: _Key) -> http.client.HTTPConnection:
        scheme, host, port, proxy = key
        conn: http.client.HTTPConnection
        if proxy:
            p = urlsplit(proxy)
            if p.scheme != "http" or not p.hostname:
                raise ValueError(f"only http:// proxies are supported here, got {proxy!r}")
            where = (p.hostname, p.port or 80)
        else:
            where = (host, port)
        if scheme == "https":
            context = self.context() if callable(self.context) else self.context
            context = context or ssl.create_default_context()
            conn = http.client.HTTPSConnection(*where, timeout=self.connect_timeout,
                                               context=context)
            if proxy:
                conn.set_tunnel(host, port, headers=_proxy_auth(proxy))
        else:
            conn = http.client.HTTPConnection(*where, timeout=self.connect_timeout)
        if self.connect is not None and not proxy:
            # http.client's own hook; HTTPS still verifies and sends SNI for ``host``
            conn._create_connection = self.connect  # type: ignore[attr-defined]
        return conn

    def _drop(self, key: _Key) -> None:
        conn = self._conns.pop(key, None)
        self._open.pop(key, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for key in list(self._conns):
            self._drop(key)

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _proxy_auth(proxy: str) -> dict[str, str]:
    p = urlsplit(proxy)
    if p.username is None:
        return {}
    raw = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(raw).decode()}
