"""HTTP for the catalogues: JSON calls with back-off, and a probe of a file's first bytes.

Tokens go only to the origin they belong to (scheme, host and port): redirects are
followed by hand, so a Civitai key never reaches the signed storage URL it redirects to
(R2 even refuses it: 400 "Missing x-amz-content-sha256"). Every call sends a
non-browser User-Agent: Civitai answers browsers with an HTML login page instead of a
JSON 401.

``probe`` reads the first bytes of a file with ``Range: bytes=0-65535`` (or, when the
server ignores Range, the first bytes of the whole body, then hangs up): enough for
the Content-Disposition name, the Content-Type, the total size and, for safetensors,
the JSON header that tells the model's type. A header larger than the first read is
fetched with a second ranged request (up to ``MAX_SNIFF``). A plain URL is probed the
same way without requests (``firstbytes.py``), which is why requests (30 ms of imports)
loads only in the functions that take a requests session: ``atelier fetch URL`` does
without it.
"""

from __future__ import annotations

import email.utils
import json
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urljoin, urlsplit

from ..errors import RateLimited, RemoteAuthRequired, RemoteError, RemoteNotFound
from ..fetch import netguard
from ..sniff import header_length

USER_AGENT = "Atelier-ModelZoo/0.1 (+https://github.com/atelier; python-requests)"
FIRST_BYTES = 64 * 1024
MAX_SNIFF = 16 * 1024 * 1024
REDIRECTS = {301, 302, 303, 307, 308}
TIMEOUT = (10.0, 30.0)

if TYPE_CHECKING:
    import requests

# origin "scheme://host:port" -> headers sent to that origin only
OriginHeaders = Mapping[str, Mapping[str, str]]
ErrorMapper = Callable[["requests.Response", str], NoReturn]


def origin(url: str) -> str:
    p = urlsplit(url)
    port = p.port or {"http": 80, "https": 443}.get(p.scheme, 0)
    return f"{p.scheme}://{(p.hostname or '').lower()}:{port}"


def headers_for(url: str, origin_headers: OriginHeaders | None) -> dict[str, str]:
    h = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if origin_headers:
        h.update(origin_headers.get(origin(url), {}))
    return h


@cache
def _guarded() -> type[Any]:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

    class Guarded(HTTPAdapter):
        """Every request (each hop of a redirect chain is one) is checked against the
        networks downloads may not reach before it goes out (``fetch/netguard.py``),
        and its connection goes to exactly the addresses checked when it opens (one
        resolution, as the engine's: a name that answers the check and the connect
        differently gets nothing). Through a proxy the proxy resolves the name."""

        def __init__(self, blocked: Sequence[str]) -> None:
            self.blocked = tuple(blocked)
            super().__init__()

        def init_poolmanager(self, *args: Any, **kw: Any) -> None:
            super().init_poolmanager(*args, **kw)
            connect = netguard.connector(self.blocked)
            if connect is None:
                return

            def pinned(base: type[HTTPConnection]) -> type[HTTPConnection]:
                def _new_conn(conn: HTTPConnection) -> Any:
                    # urllib3's own, with the checked connect, raising as it does
                    host = conn._dns_host
                    try:
                        sock = connect((host, conn.port), conn.timeout, conn.source_address)
                    except netguard.BlockedAddress:  # (a PermissionError: an OSError)
                        raise
                    except socket.gaierror as e:
                        raise NameResolutionError(conn.host, conn, e) from e
                    except TimeoutError as e:
                        raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed "
                                                  f"out. (connect timeout={conn.timeout})") from e
                    except OSError as e:
                        raise NewConnectionError(
                            conn, f"Failed to establish a new connection: {e}") from e
                    for opt in conn.socket_options or ():
                        sock.setsockopt(*opt)
                    return sock

                return type(f"Pinned{base.__name__}", (base,), {"_new_conn": _new_conn})

            pools = {"http": type("PinnedPool", (HTTPConnectionPool,),
                                  {"ConnectionCls": pinned(HTTPConnection)}),
                     "https": type("PinnedHTTPSPool", (HTTPSConnectionPool,),
                                   {"ConnectionCls": pinned(HTTPSConnection)})}
            self.poolmanager.pool_classes_by_scheme = pools

        def send(self, request: requests.PreparedRequest, *args: Any,
                 **kw: Any) -> requests.Response:
            netguard.check(str(request.url), self.blocked)
            try:
                return super().send(request, *args, **kw)
            except requests.ConnectionError as exc:
                blocked = _cause(exc, netguard.BlockedAddress)
                if blocked is not None:
                    raise blocked from None  # refused at the connect: say why
                raise

    return Guarded


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The ``kind`` exception somewhere in what ``exc`` wraps (requests wraps urllib3's
    errors, which wrap the socket's: as causes, contexts, ``reason`` or arguments)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen or len(seen) > 32:
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return e
        todo += [x for x in (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args)
                 if isinstance(x, BaseException)]
    return None


def session(blocked: Sequence[str] | None = None) -> requests.Session:
    """A session for catalogue calls and probes; ``blocked``: the networks it may not
    reach (default: the fetch settings' ``blocked_networks``)."""
    if blocked is None:
        from ..fetch.settings import FetchSettings

        blocked = FetchSettings().blocked_networks
    import requests

    s = requests.Session()
    s.headers["User-Agent"] = USER_AGENT
    guard = _guarded()(blocked)
    s.mount("http://", guard)
    s.mount("https://", guard)
    return s


def retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def page_message(text: str, limit: int = 300) -> str:
    """The remote's own words in a body: JSON ``error``/``message``, an HTML title, text."""
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            parts = [str(data[k]) for k in ("error", "message") if data.get(k)]
            text = ": ".join(dict.fromkeys(parts)) or text
    except ValueError:
        m = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
        if m:
            text = m.group(1)
    return " ".join(text.split())[:limit]


def message_of(resp: requests.Response, limit: int = 300) -> str:
    """The remote's own words: JSON ``error``/``message``, an HTML title, or text."""
    try:
        text = resp.text[:4096]
    except Exception:
        return ""
    return page_message(text, limit)


def refuse(code: int, msg: str, what: str, url: str) -> NoReturn:
    """An error answer as one of our errors."""
    detail = f" ({msg})" if msg else ""
    if code in (404, 410):
        raise RemoteNotFound(f"{what}: not found (HTTP {code}){detail}", url=url)
    if code in (401, 403):
        raise RemoteAuthRequired(f"{what}: access refused (HTTP {code}){detail}", url=url)
    if code == 429:
        raise RateLimited(f"{what}: rate limited (HTTP 429){detail}; try again later",
                          url=url)
    raise RemoteError(f"{what}: HTTP {code}{detail}", url=url)


def default_errors(resp: requests.Response, what: str) -> NoReturn:
    refuse(resp.status_code, message_of(resp), what, resp.url)


def request(sess: requests.Session, method: str, url: str, *, what: str,
            origin_headers: OriginHeaders | None = None, on_error: ErrorMapper = default_errors,
            json_body: Any = None, attempts: int = 4, max_wait: float = 30.0,
            params: Mapping[str, str] | None = None) -> requests.Response:
    """One API call; 429 and 5xx are retried after Retry-After (or 1, 2, 4 s)."""
    import requests

    delay = 1.0
    for attempt in range(attempts):
        try:
            resp = sess.request(method, url, headers=headers_for(url, origin_headers),
                                json=json_body, params=params, timeout=TIMEOUT,
                                allow_redirects=False)
        except requests.RequestException as e:
            if attempt + 1 >= attempts:
                raise RemoteError(f"{what}: cannot reach {urlsplit(url).netloc} ({e})",
                                  url=url) from None
            time.sleep(delay)
            delay *= 2
            continue
        if resp.status_code in REDIRECTS and "location" in resp.headers:
            # an API moved (http -> https, a proxy prefix): follow, without the token
            # unless the origin stays the same
            target = urljoin(url, resp.headers["location"])
            keep = origin_headers if origin(target) == origin(url) else None
            return request(sess, method, target, what=what, origin_headers=keep,
                           on_error=on_error, json_body=json_body, attempts=attempts,
                           max_wait=max_wait)
        if resp.status_code in (429, 500, 502, 503, 504) and attempt + 1 < attempts:
            wait = retry_after(resp)
            wait = delay if wait is None else wait
            if wait <= max_wait:
                resp.close()
                time.sleep(wait)
                delay *= 2
                continue
        if resp.status_code >= 400:
            on_error(resp, what)
        return resp
    raise AssertionError("unreachable")


def get_json(sess: requests.Session, url: str, *, what: str, **kw: Any) -> Any:
    resp = request(sess, "GET", url, what=what, **kw)
    try:
        return resp.json()
    except ValueError:
        ctype = resp.headers.get("content-type", "")
        raise RemoteError(f"{what}: expected JSON, got {ctype or 'something else'} "
                          f"({message_of(resp, 120)})", url=url) from None


@dataclass
class Probe:
    url: str                  # the URL asked (the user's, or the catalogue's)
    final_url: str            # after redirects: only for logs, never for names
    status: int
    content_type: str
    disposition: str | None   # the Content-Disposition header, raw
    total: int | None         # the whole file's size, when the server said
    ranged: bool
    etag: str | None
    head: bytes               # the first bytes, up to the whole safetensors header


def probe(sess: requests.Session, url: str, *, what: str,
          origin_headers: OriginHeaders | None = None, on_error: ErrorMapper = default_errors,
          first: int | None = None, extra_headers: Mapping[str, str] | None = None,
          max_redirects: int = 10) -> Probe:
    import requests

    first = first or FIRST_BYTES
    current = url
    for _ in range(max_redirects + 1):
        h = headers_for(current, origin_headers)
        if extra_headers and origin(current) == origin(url):
            h.update(extra_headers)
        h["Range"] = f"bytes=0-{first - 1}"
        try:
            resp = sess.get(current, headers=h, stream=True, timeout=TIMEOUT,
                            allow_redirects=False)
        except requests.RequestException as e:
            raise RemoteError(f"{what}: cannot reach {urlsplit(current).netloc} ({e})",
                              url=url) from None
        if resp.status_code in REDIRECTS and "location" in resp.headers:
            current = urljoin(current, resp.headers["location"])
            resp.close()
            continue
        try:
            return _read_probe(sess, url, current, resp, what, origin_headers, on_error, first)
        finally:
            resp.close()
    raise RemoteError(f"{what}: more than {max_redirects} redirects", url=url)


def _read_probe(sess: requests.Session, url: str, current: str, resp: requests.Response,
                what: str, origin_headers: OriginHeaders | None, on_error: ErrorMapper,
                first: int) -> Probe:
    if resp.status_code == 416:  # an empty file: nothing to range over
        total = _total(resp)
        return Probe(url, current, 416, "", resp.headers.get("content-disposition"), total,
                     True, resp.headers.get("etag"), b"")
    if resp.status_code >= 400:
        on_error(resp, what)
    ranged = resp.status_code == 206
    head = _read(resp, first)
    total = _total(resp)
    n = header_length(head)
    if n is not None and 8 + n > len(head) and 8 + n <= MAX_SNIFF and (
            total is None or 8 + n <= total):
        if ranged:
            more = sess.get(current, headers={**headers_for(current, origin_headers),
                                              "Range": f"bytes={len(head)}-{8 + n - 1}"},
                            stream=True, timeout=TIMEOUT, allow_redirects=False)
            try:
                if more.status_code == 206:
                    head += _read(more, 8 + n - len(head))
            finally:
                more.close()
        else:  # no Range: the rest of the header comes down the same stream
            head += _read(resp, 8 + n - len(head))
    return Probe(url, current, resp.status_code,
                 resp.headers.get("content-type", "").split(";")[0].strip().lower(),
                 resp.headers.get("content-disposition"), total, ranged,
                 resp.headers.get("etag"), head)


def _read(resp: requests.Response, n: int) -> bytes:
    import requests

    out = bytearray()
    try:
        for chunk in resp.iter_content(min(n, 64 * 1024)):
            out += chunk
            if len(out) >= n:
                break
    except requests.RequestException:
        pass
    return bytes(out[:n])


def _total(resp: requests.Response) -> int | None:
    cr = resp.headers.get("content-range", "")
    if "/" in cr:
        tail = cr.rsplit("/", 1)[1]
        return int(tail) if tail.isdigit() else None
    if resp.status_code == 200:
        cl = resp.headers.get("content-length", "")
        return int(cl) if cl.isdigit() else None
    return None
