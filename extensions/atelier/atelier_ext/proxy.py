"""``/atelier/...`` on the WebUI's own origin, streamed to the service on loopback.

The browser (on another machine, behind ``--listen`` or a cloud gateway) reaches only
the WebUI's port; this route, added to the WebUI's FastAPI app in ``on_app_started``,
forwards every method (tus PATCH, WebDAV PROPFIND/PUT...) and streams both bodies: an
upload goes on as it arrives (uvicorn stops reading the socket while the service is slow,
so memory stays flat for a multi-GB PUT), a download or an event stream comes back chunk
by chunk, Range/ETag/Set-Cookie and the rest of the headers pass through.

Runs inside the WebUI, so it uses only what A1111 and Forge ship: starlette (0.26 on
A1111's fastapi 0.94, 0.27 on Forge's 0.104) and httpx (0.24.1 in both
requirements_versions.txt). Both WebUIs wrap the app in ``GZipMiddleware`` (minimum 1000
bytes, ``modules/initialize_util.py: setup_middleware``); it would buffer an event stream
inside zlib and re-encode a 206, so an outer middleware hides ``Accept-Encoding`` from it
for this prefix.

Who: the WebUI's credentials guard the route (``webui_auth``); the proxy then names the
WebUI user to the service in ``X-Forwarded-User`` with ``X-Atelier-Gateway: <secret>``,
after dropping whatever the browser sent in those headers. Cookie-borne credentials are
ambient, and gradio's login cookie is ``SameSite=None``: a state-changing request must
come from this origin (``Sec-Fetch-Site``, else ``Origin`` against ``Host``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .supervisor import GATEWAY_HEADER, USER_HEADER
from .webui_auth import Unauthenticated, WebUIAuth

log = logging.getLogger("atelier")

PREFIX = "/atelier"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND"})
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "proxy-connection"})
# Never from the browser: these name the user or the client to the service.
SPOOFABLE = frozenset({
    GATEWAY_HEADER.lower(), USER_HEADER.lower(), "x-forwarded-for", "x-forwarded-host",
    "x-forwarded-proto", "x-forwarded-prefix", "x-real-ip", "forwarded"})
# Set by us or by httpx, or meaningless upstream (100-continue is answered by uvicorn).
NOT_FORWARDED = frozenset({"host", "content-length", "expect", "accept-encoding"})
_COOKIE_PATH = re.compile(r"(?i)(;\s*path=)(/[^;]*)")

LocalRoute = Callable[[Request, Any], Awaitable[Response]]


def _in_prefix(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class GzipBypass:
    """Outermost middleware: the WebUI's GZipMiddleware must not see that the browser
    accepts gzip for ``/atelier`` (it would hold event streams back and re-encode 206s)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _in_prefix(scope.get("path", "")):
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]
            scope = dict(scope, headers=headers)
        await self.app(scope, receive, send)


def cross_site(request: Request, allowed_origins: Iterable[str] = ()) -> bool:
    """A state-changing request that a page of another site made the browser send."""
    if request.method in SAFE_METHODS:
        return False
    site = request.headers.get("sec-fetch-site")
    if site in ("same-origin", "none"):  # set by the browser itself: proxies cannot blur it
        return False
    origin = request.headers.get("origin")
    if origin is not None and origin.rstrip("/") in allowed_origins:
        return False  # --cors-allow-origins
    if site is not None:
        return True  # cross-site, or same-site (a sibling host)
    if origin is None:
        return False  # not a browser, or an old one on a same-origin request
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or ""
    return origin == "null" or \
        urlsplit(origin).netloc.lower() != host.split(",")[0].strip().lower()


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status,
                        headers=headers or None)


class _Relay(StreamingResponse):
    """The upstream response, streamed; the upstream connection is released however the
    client leaves (starlette's background tasks do not run after a disconnect)."""

    def __init__(self, upstream: httpx.Response, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(self._chunks(upstream), status_code=upstream.status_code)
        self.raw_headers = headers
        self.upstream = upstream

    @staticmethod
    async def _chunks(upstream: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:  # the service went away mid-body
            log.warning("Atelier proxy: %s cut short: %s", upstream.request.url, exc)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.upstream.aclose()


class AtelierProxy:
    """The route's handler (``handle``). ``secret()`` is the gateway secret when the service on the
    port proved it holds it (None otherwise: then no user is named); ``unavailable()`` is
    called when the service does not answer (the extension restarts it)."""

    def __init__(self, upstream: str, auth: WebUIAuth, *, secret: Callable[[], str | None],
                 unavailable: Callable[[], None] = lambda: None,
                 local: dict[str, LocalRoute] | None = None,
                 allowed_origins: Iterable[str] = (), log_file: str = "") -> None:
        self.upstream = upstream.rstrip("/")
        self.auth = auth
        self.secret = secret
        self.unavailable = unavailable
        self.local = dict(local or {})
        self.allowed_origins = frozenset(o.rstrip("/") for o in allowed_origins)
        self.log_file = log_file
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # made in the serving loop, on first use
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(connect=5.0, read=None, write=None, pool=30.0),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=20),
                trust_env=False, follow_redirects=False)
        return self._client

    # -- headers ------------------------------------------------------------------

    def request_headers(self, request: Request, user: str | None,
                        drop_authorization: bool) -> list[tuple[str, str]]:
        connection = {t.strip().lower() for t in request.headers.get("connection", "").split(",")}
        webui_cookies = set(self.auth.webui_cookies())
        out: list[tuple[str, str]] = []
        for key, value in request.headers.items():
            k = key.lower()
            if k in HOP_BY_HOP or k in connection or k in SPOOFABLE or k in NOT_FORWARDED:
                continue
            if k == "authorization" and drop_authorization:
                continue
            if k == "cookie":
                kept = [c for c in value.split(";")
                        if c.strip().split("=", 1)[0] not in webui_cookies]
                if not kept:
                    continue
                value = ";".join(kept).strip()
            out.append((key, value))
        length = request.headers.get("content-length")
        if length is not None:
            out.append(("Content-Length", length))
        client = request.client.host if request.client else ""
        out += [("X-Forwarded-For", client), ("X-Forwarded-Proto", request.url.scheme),
                ("X-Forwarded-Host", request.headers.get("host", "")),
                ("X-Forwarded-Prefix", PREFIX)]
        secret = self.secret()
        if secret:
            out.append((GATEWAY_HEADER, secret))
            if user:
                out.append((USER_HEADER, user))
        return out

    @staticmethod
    def response_headers(upstream: httpx.Response) -> list[tuple[bytes, bytes]]:
        connection = {t.strip().lower() for t in upstream.headers.get("connection", "").split(",")}
        out = []
        for key, value in upstream.headers.raw:
            k = key.decode("latin-1").lower()
            if k in HOP_BY_HOP or k in connection or k in ("date", "server"):
                continue  # uvicorn adds its own date and server
            if k == "set-cookie":  # the service's cookies belong under the prefix
                value = _COOKIE_PATH.sub(lambda m: m.group(1) + PREFIX + m.group(2),
                                         value.decode("latin-1")).encode("latin-1")
            elif k == "location" and value.startswith(b"/") and not value.startswith(b"//"):
                value = PREFIX.encode() + value
            out.append((key.lower(), value))
        return out

    # -- the route ------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        try:
            who = self.auth.identify(request)
        except Unauthenticated:
            challenge = {"WWW-Authenticate": 'Basic realm="Stable Diffusion WebUI"'} \
                if self.auth.api else {}
            return _error(401, "unauthorized", "log in to the WebUI first", **challenge)
        if cross_site(request, self.allowed_origins):
            return _error(403, "cross_site", "refused: the request came from another site")
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        path = raw[len(PREFIX):].decode("latin-1") or "/"
        local = self.local.get(path)
        if local is not None:
            return await local(request, who)
        query = request.scope.get("query_string", b"").decode("latin-1")
        url = self.upstream + path + (f"?{query}" if query else "")
        has_body = request.headers.get("content-length", "0") != "0" or \
            "transfer-encoding" in request.headers
        req = self.client.build_request(
            request.method, url,
            headers=self.request_headers(request, who.user, who.used_authorization),
            content=self._body(request) if has_body else None)
        try:
            upstream = await self.client.send(req, stream=True)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        except httpx.TransportError as exc:
            self.unavailable()
            return _error(503, "service_unavailable",
                          f"the Atelier service does not answer ({type(exc).__name__}); it is "
                          f"being restarted, see {self.log_file or 'its log'}",
                          **{"Retry-After": "5"})
        return _Relay(upstream, self.response_headers(upstream))

    @staticmethod
    async def _body(request: Request) -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            if chunk:
                yield chunk

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


async def _to_slash(request: Request) -> Response:
    return RedirectResponse(f"./{PREFIX.lstrip('/')}/", status_code=307)


class _Endpoint:
    """An ASGI endpoint: starlette routes a plain function for GET only, an ASGI app for
    every method."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive, send))
        await response(scope, receive, send)


def mount(app: Any, proxy: AtelierProxy) -> None:
    """Add the route (first, before gradio's own) and the gzip bypass to a WebUI app.

    Routes are starlette ``Route``s, not FastAPI ones: every method (WebDAV's too) and
    nothing in the WebUI's OpenAPI document."""
    routes = app.router.routes
    routes[:] = [r for r in routes if getattr(r, "name", None) not in ("atelier", "atelier_root")]
    routes.insert(0, Route(PREFIX + "/{path:path}", _Endpoint(proxy.handle), name="atelier"))
    routes.insert(0, Route(PREFIX, _Endpoint(_to_slash), name="atelier_root"))
    if not any(getattr(m, "cls", None) is GzipBypass for m in app.user_middleware):
        app.user_middleware.insert(0, Middleware(GzipBypass))
        # A1111 resets and rebuilds the stack the same way (setup_middleware)
        app.middleware_stack = None
        app.middleware_stack = app.build_middleware_stack()
