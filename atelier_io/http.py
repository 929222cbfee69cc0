"""The desktop CLI's HTTP client: the standard library's ``http.client`` with a base URL,
default headers, query strings and one keep-alive connection per thread.

Why not requests: ``atelier pull`` of 1 GB on loopback moves its bytes in about 0.7 s,
and importing requests took 0.1 s of the command's 0.17 s start, which alone held pull
under 0.8x curl. The CLI needs little of what requests adds: no cookies, proxies,
redirects or content decoding (bodies are asked for as ``identity``; ranges address the
stored bytes). ``http.client`` does the protocol; this module only keeps connections.

Any failure to talk to the server (refused, reset, timed out, cut mid-body, a stale
keep-alive) raises :class:`ConnectionFailed`, which the transfers treat as retryable.
"""

from __future__ import annotations

import base64
import http.client
import json
import select
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode, urlsplit


class ConnectionFailed(Exception):
    """The server could not be reached, or the connection broke."""


class Response:
    """Status, headers (case-insensitive ``get``) and the body, read whole or streamed."""

    def __init__(self, raw: http.client.HTTPResponse, drop: Any) -> None:
        self.raw = raw
        self.status = raw.status
        self.reason = raw.reason
        self.headers = raw.headers
        self._drop = drop  # closes the connection when the body is left half read
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
            self._drop()
            raise ConnectionFailed(f"the connection closed {self.raw.length} bytes early")
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
