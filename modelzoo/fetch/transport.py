"""HTTP plumbing: sessions, redirects with per-origin headers, answers to errors.

Every worker thread owns one :class:`Session` (a keep-alive connection per origin).
Redirects are followed by hand so that each hop gets only the headers meant for it.
Headers are bound to an *origin*, scheme, host and port, as browsers bind cookies and
curl binds credentials since CVE-2022-27776: a token for ``https://civitai.com`` never
reaches ``http://civitai.com``, another port of the same host, or the signed storage URL
it redirects to. A redirect chain that leaves the origin it started on carries no caller
headers from then on, and sessions keep no cookie jar, so nothing a server sets travels
either. Bodies are asked for with ``Accept-Encoding: identity`` because byte ranges must
address the stored bytes, not a compressed stream.

The session is ``atelier_io.http.Connections`` (``http.client``): requests costs 0.05 s
to import and a copy per read. requests remains for what only it does here: SOCKS
proxies (PySocks) and TLS to the proxy itself (``https://`` proxy URLs).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urljoin, urlsplit

from atelier_io.http import BodyCutShort, CertificateRejected, ConnectionFailed, Connections

from ..errors import RateLimited, RemoteAuthRequired, RemoteError, RemoteNotFound
from .settings import FetchSettings

if TYPE_CHECKING:
    import requests

HostHeaders = Mapping[str, Mapping[str, str]]
REDIRECTS = {301, 302, 303, 307, 308}
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")


# ---- the session interface the engine uses --------------------------------------------

class Headers(Protocol):
    def get(self, name: str, default: Any = None) -> Any: ...


class Reply(Protocol):
    """One answer, its body not read yet."""

    status: int
    headers: Headers

    def readinto(self, buf: memoryview) -> int:
        """Body bytes into ``buf``; 0 at the end; ConnectionFailed if cut short."""
        ...

    def read(self, limit: int) -> bytes: ...

    def release(self, fully_read: bool) -> None:
        """Done with it: keep the connection when the body was read to its end."""
        ...

    def abort(self) -> None:
        """From another thread: wake a reader blocked on this answer."""
        ...

    def queued(self) -> int:
        """Body bytes already on this machine, not read yet (0 when unknown)."""
        ...


class Session(Protocol):
    def get(self, url: str, headers: dict[str, str]) -> Reply: ...
    def close(self) -> None: ...


SessionFactory = Callable[[], Session]

# what a lost or broken connection raises, whichever session is in use
NETWORK_ERRORS: tuple[type[Exception], ...] = (
    ConnectionFailed, OSError, http.client.HTTPException)


class _NativeReply:
    def __init__(self, response: Any) -> None:
        self._r = response
        self.status: int = response.status
        self.headers: Headers = response.headers

    def readinto(self, buf: memoryview) -> int:
        n: int = self._r.readinto(buf)
        return n

    def read(self, limit: int) -> bytes:
        try:
            data: bytes = self._r.raw.read(limit)
            return data
        except (OSError, http.client.HTTPException):
            return b""

    def release(self, fully_read: bool) -> None:
        if fully_read and self._r.raw.isclosed():
            return  # the connection stays open for the next request
        self._r.close()

    def abort(self) -> None:
        self._r.abort()

    def queued(self) -> int:
        n: int = self._r.queued()
        return n


class NativeSession:
    """``http.client`` connections, one per origin (and proxy)."""

    def __init__(self, settings: FetchSettings, proxies: _Proxies,
                 context: Any = None) -> None:
        self._conns = Connections(connect_timeout=settings.connect_timeout,
                                  read_timeout=settings.stall_timeout, context=context)
        self._proxies = proxies

    def get(self, url: str, headers: dict[str, str]) -> Reply:
        try:
            return _NativeReply(self._conns.request("GET", url, headers,
                                                    proxy=self._proxies.for_url(url)))
        except CertificateRejected as e:
            raise RemoteError(
                f"{_origin_text(url)}: its TLS certificate is not trusted ({e}); if a proxy "
                f"or a private CA signs it, name the CA bundle in REQUESTS_CA_BUNDLE",
                url=url) from None

    def close(self) -> None:
        self._conns.close()


class _RequestsReply:
    def __init__(self, response: requests.Response) -> None:
        self._r = response
        self.status = response.status_code
        self.headers: Headers = response.headers  # type: ignore[assignment]
        raw: Any = response.raw
        fp = getattr(raw, "_fp", None)
        # straight from http.client into our buffer: urllib3's read() copies per call
        self._readinto = fp.readinto if isinstance(fp, http.client.HTTPResponse) else None
        self._length = int(response.headers.get("content-length") or -1)
        self._got = 0

    def readinto(self, buf: memoryview) -> int:
        import requests

        try:
            if self._readinto is not None:
                n = self._readinto(buf)
            else:
                data = self._r.raw.read(len(buf), decode_content=True)
                n = len(data)
                buf[:n] = data
        except (requests.RequestException, OSError, http.client.HTTPException) as e:
            raise ConnectionFailed(f"the connection broke mid-download: {e!r}") from None
        self._got += n
        if n == 0 and len(buf) and 0 <= self._got < self._length:
            raise BodyCutShort(self._length - self._got)
        return n

    def read(self, limit: int) -> bytes:
        try:
            data: bytes = self._r.raw.read(limit, decode_content=True) or b""
            return data
        except Exception:
            return b""

    def release(self, fully_read: bool) -> None:
        raw: Any = self._r.raw
        if fully_read:
            try:
                raw.release_conn()
                return
            except Exception:
                pass
        self._r.close()

    def queued(self) -> int:
        return 0  # urllib3 hides its socket well enough; SOCKS paths just steal plainly

    def abort(self) -> None:
        import socket

        raw: Any = self._r.raw
        sock = getattr(getattr(raw, "_connection", None), "sock", None)
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class RequestsSession:
    """A ``requests.Session`` behind the same interface (SOCKS and https proxies)."""

    def __init__(self, settings: FetchSettings, session: requests.Session | None = None,
                 ) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self._settings = settings
        if session is None:
            session = requests.Session()
            # one worker = one connection per host; no urllib3-level retries (we retry)
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=1, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            if settings.proxy:
                session.proxies = {"http": settings.proxy, "https": settings.proxy}
        session.cookies.set_policy(_NoCookies())  # nothing a server sets travels on
        self._s = session

    def get(self, url: str, headers: dict[str, str]) -> Reply:
        import requests

        try:
            r = self._s.get(url, headers=headers, stream=True, allow_redirects=False,
                            timeout=(self._settings.connect_timeout,
                                     self._settings.stall_timeout))
        except requests.RequestException as e:
            raise ConnectionFailed(f"GET {_origin_text(url)}: {e!r}") from None
        return _RequestsReply(r)

    def close(self) -> None:
        self._s.close()


def _NoCookies() -> Any:  # noqa: N802 (a class made on demand: cookielib loads lazily)
    from http.cookiejar import DefaultCookiePolicy

    class NoCookies(DefaultCookiePolicy):
        def set_ok(self, cookie: Any, request: Any) -> bool:
            return False

    return NoCookies()


class _Proxies:
    """Which proxy a URL goes through: the setting, else the ``*_PROXY`` environment."""

    def __init__(self, settings: FetchSettings) -> None:
        self.fixed = settings.proxy
        self.env: dict[str, str] = {}
        if self.fixed is None and any(k.lower() in _PROXY_VARS for k in os.environ):
            import urllib.request  # only when a proxy is configured: 20 ms of imports

            self.env = urllib.request.getproxies_environment()
            self._bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]

    def for_url(self, url: str) -> str | None:
        if self.fixed:
            return self.fixed
        if not self.env:
            return None
        parts = urlsplit(url)
        if self._bypass(parts.netloc.rpartition("@")[2], self.env):
            return None
        return self.env.get(parts.scheme) or self.env.get("all")

    def needs_requests(self) -> bool:
        """http.client speaks to plain HTTP proxies only."""
        chosen = [self.fixed] if self.fixed else [
            v for k, v in self.env.items() if k in ("http", "https", "all")]
        return any(not p.lower().startswith("http://") for p in chosen if p)


def make_session_factory(settings: FetchSettings) -> SessionFactory:
    proxies = _Proxies(settings)
    if proxies.needs_requests():
        return lambda: RequestsSession(settings)
    return lambda: NativeSession(settings, proxies, tls_context)


_CONTEXTS: dict[str | None, Any] = {}


def tls_context() -> Any:
    """One TLS context for every connection, made when the first https one opens.

    The system's CA store, as curl uses; ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``
    still name a bundle for those who set one for requests, and certifi's bundle fills
    in where the system has none (a slim container without ca-certificates).
    """
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None
    ctx = _CONTEXTS.get(bundle)
    if ctx is None:
        import ssl

        ctx = ssl.create_default_context(cafile=bundle)
        paths = ssl.get_default_verify_paths()
        if not bundle and not any(p and os.path.exists(p) for p in (paths.cafile,
                                                                    paths.capath)):
            try:
                import certifi

                ctx.load_verify_locations(certifi.where())
            except ImportError:
                pass
        _CONTEXTS[bundle] = ctx
    return ctx


def as_session_factory(factory: Callable[[], Any], settings: FetchSettings,
                       ) -> SessionFactory:
    """Accept the old ``requests.Session`` factories too."""
    def make() -> Session:
        s = factory()
        if hasattr(s, "mount") and hasattr(s, "cookies"):  # a requests.Session
            return RequestsSession(settings, s)
        session: Session = s
        return session
    return make


# ---- origins and the headers bound to them --------------------------------------------

def origin_of(url: str) -> str:
    """``scheme://host:port``, lower-case, with the default port spelled out."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if scheme == "https" else 80
    return f"{scheme}://{host}:{port}"


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def bind_headers(headers: HostHeaders | None, urls: Iterable[str],
                 ) -> dict[str, dict[str, str]]:
    """Headers per origin. A key is an origin (``https://host[:port]``) or, as before
    origins, a bare host name: that means the origins of ``urls`` on that host, no
    others (not the same host on another scheme or port)."""
    bound: dict[str, dict[str, str]] = {}
    if not headers:
        return bound
    url_list = list(urls)
    for key, values in headers.items():
        if "://" in key:
            targets = [origin_of(key)]
        else:
            host = key.lower().strip("[]")
            targets = [origin_of(u) for u in url_list if host_of(u).strip("[]") == host]
        for origin in targets:
            bound.setdefault(origin, {}).update(values)
    return bound


def headers_for(url: str, settings: FetchSettings, bound: Mapping[str, Mapping[str, str]] | None,
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
    h = {"User-Agent": settings.user_agent, "Accept-Encoding": "identity"}
    if bound:
        h.update(bound.get(origin_of(url), {}))
    if extra:
        h.update(extra)
    return h


@dataclass
class Opened:
    reply: Reply
    url: str  # the final URL after redirects


def open_url(session: Session, url: str, settings: FetchSettings,
             bound: Mapping[str, Mapping[str, str]] | None,
             extra: Mapping[str, str] | None = None) -> Opened:
    """GET ``url`` following redirects by hand; the body is not read.

    The caller's headers go only to hops on the origin the chain started from, and only
    until the chain first leaves it."""
    current = url
    start = origin_of(url)
    trusted = True
    for _ in range(settings.max_redirects + 1):
        trusted = trusted and origin_of(current) == start
        sent = headers_for(current, settings, bound if trusted else {}, extra)
        reply = session.get(current, sent)
        location = reply.headers.get("location")
        if reply.status in REDIRECTS and location:
            reply.release(False)
            nxt = urljoin(current, location)
            if urlsplit(nxt).scheme.lower() not in ("http", "https"):
                raise RemoteError(f"{_origin_text(current)} redirects to {nxt!r}, "
                                  f"not an http(s) URL", url=url)
            current = nxt
            continue
        return Opened(reply, current)
    raise RemoteError(f"more than {settings.max_redirects} redirects", url=url)


def _origin_text(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc.rpartition('@')[2]}"


# ---- answers to errors ----------------------------------------------------------------

def retry_after(reply: Reply, cap: float) -> float | None:
    value = reply.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = parsed.timestamp() - time.time()
    return max(0.0, min(cap, seconds))


class Retryable(Exception):
    """A failure worth another attempt, after ``delay`` seconds if the server said so."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class Expired(Exception):
    """A redirect target refused a later request: the signed URL has expired."""


def page_excerpt(raw: bytes, content_type: str = "") -> str:
    """What a page says, short: JSON ``error``/``message``/``detail``, an HTML title, text."""
    text = raw.decode("utf-8", "replace").lstrip("\ufeff")
    stripped = text.lstrip()
    if "json" in content_type.lower() or stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, list) and data:
            data = data[0]
        if isinstance(data, dict):
            for key in ("error", "message", "detail", "msg"):
                if data.get(key):
                    value = data[key]
                    text = value if isinstance(value, str) else json.dumps(value)
                    break
    elif "html" in content_type.lower() or stripped[:1] == "<":
        m = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
        if m:
            text = m.group(1)
        else:
            text = re.sub(r"<[^>]*>", " ", text)
    return " ".join(text.split())[:200]


def body_hint(reply: Reply, limit: int = 2048) -> str:
    """A short excerpt of an error body, as ``": excerpt"``."""
    text = page_excerpt(reply.read(limit), reply.headers.get("content-type") or "")
    return f": {text}" if text else ""


def raise_for_status(reply: Reply, url: str, origin: str, settings: FetchSettings) -> None:
    """Turn a non-2xx answer into a retry, a re-resolve, or one of our errors."""
    code = reply.status
    if code < 300:
        return
    redirected = url != origin  # reached through a redirect (or a cached signed URL)
    if code in (429, 503, 502, 504, 500, 408):
        delay = retry_after(reply, settings.retry_after_max)
        msg = f"HTTP {code} from {host_of(url)}"
        reply.release(False)
        if code == 429 and delay is None:
            delay = settings.backoff_initial
        raise Retryable(msg, delay)
    if redirected and code in (400, 401, 403, 410):
        reply.release(False)
        raise Expired(f"HTTP {code} from redirect target {host_of(url)}")
    hint = body_hint(reply)
    reply.release(False)
    if code == 404 or code == 410:
        raise RemoteNotFound(f"{origin} not found (HTTP {code}){hint}", url=origin)
    if code in (401, 403):
        raise RemoteAuthRequired(
            f"{origin} refused access (HTTP {code}){hint}; check the token or headers",
            url=origin)
    if code == 416:
        raise Retryable(f"HTTP 416 from {host_of(url)}")
    raise RemoteError(f"{origin}: HTTP {code}{hint}", url=origin)


def rate_limited(origin: str, detail: str) -> RateLimited:
    return RateLimited(f"{origin} kept answering 429 Too Many Requests ({detail})", url=origin)


@dataclass(frozen=True)
class RangeInfo:
    ranged: bool          # 206 with a Content-Range
    start: int
    total: int | None     # full size of the remote file, if known
    length: int | None    # bytes in this body, if known


def range_info(reply: Reply, origin: str) -> RangeInfo:
    """What the answer covers. An answer that contradicts itself is a RemoteError at
    once: the same request gets the same answer, so retrying cannot help."""
    cr = reply.headers.get("content-range") or ""
    cl = reply.headers.get("content-length")
    length = int(cl) if cl and cl.isdigit() else None
    if reply.status == 206:
        if not cr.startswith("bytes "):
            raise RemoteError(f"{origin} answered 206 without a usable Content-Range "
                              f"({cr!r}); retrying will not help", url=origin)
        span, _, total = cr[6:].partition("/")
        lo, _, hi = span.partition("-")
        try:
            start, end = int(lo), int(hi)
        except ValueError:
            raise RemoteError(f"{origin} sent a malformed Content-Range {cr!r}",
                              url=origin) from None
        tot = int(total) if total.isdigit() else None
        if end < start or (tot is not None and end >= tot):
            raise RemoteError(f"{origin} sent an impossible Content-Range {cr!r}",
                              url=origin)
        if length is not None and length != end - start + 1:
            raise RemoteError(
                f"{origin} sent Content-Length {length} with Content-Range {cr!r} "
                f"({end - start + 1} bytes): the server contradicts itself; retrying will "
                f"not help", url=origin)
        return RangeInfo(True, start, tot, end - start + 1)
    return RangeInfo(False, 0, length, length)
