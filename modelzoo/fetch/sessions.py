"""Sessions: how a worker talks HTTP, behind one small interface the engine uses.

Every worker thread owns one :class:`Session`: a keep-alive connection per origin.
:class:`NativeSession` is ``atelier_io.http.Connections`` (``http.client``), the same
reader as the desktop client's; requests cost 0.05 s to import and a copy per read.
:class:`RequestsSession` keeps requests for what only it does here: SOCKS proxies
(PySocks) and TLS to the proxy itself (``https://`` proxy URLs). Neither keeps cookies:
nothing a server sets travels to the next request.

Proxies come from ``ATELIER_FETCH_PROXY``, else the ``*_PROXY`` environment (with
``NO_PROXY``). TLS uses the system's CA store, as curl does; ``REQUESTS_CA_BUNDLE`` or
``CURL_CA_BUNDLE`` name another bundle, and a certificate that does not verify is a final
error, not a retry.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from atelier_io.http import BodyCutShort, CertificateRejected, ConnectionFailed, Connections

from ..errors import RemoteError
from . import netguard
from .settings import FetchSettings

if TYPE_CHECKING:
    import requests

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")


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
                                  read_timeout=settings.stall_timeout, context=context,
                                  connect=netguard.connector(settings.blocked_networks))
        self._proxies = proxies

    def get(self, url: str, headers: dict[str, str]) -> Reply:
        try:
            return _NativeReply(self._conns.request("GET", url, headers,
                                                    proxy=self._proxies.for_url(url)))
        except CertificateRejected as e:
            raise RemoteError(
                f"{origin_text(url)}: its TLS certificate is not trusted ({e}); if a proxy "
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
            raise ConnectionFailed(f"GET {origin_text(url)}: {e!r}") from None
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


def origin_text(url: str) -> str:
    """``scheme://host[:port]`` as written, without credentials (for messages)."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc.rpartition('@')[2]}"
