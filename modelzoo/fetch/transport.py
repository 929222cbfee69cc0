"""HTTP plumbing: sessions, redirects with per-host headers, responses to errors.

Every worker thread owns one ``requests.Session`` (one pooled keep-alive connection per
host). Redirects are followed by hand so that each hop gets only the headers configured
for *its* host: a Civitai token never reaches the signed storage host it redirects to.
Bodies are asked for with ``Accept-Encoding: identity`` because byte ranges must address
the stored bytes, not a compressed stream.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from ..errors import RateLimited, RemoteAuthRequired, RemoteError, RemoteNotFound
from .settings import FetchSettings

SessionFactory = Callable[[], requests.Session]
HostHeaders = Mapping[str, Mapping[str, str]]

REDIRECTS = {301, 302, 303, 307, 308}


def make_session_factory(settings: FetchSettings) -> SessionFactory:
    def factory() -> requests.Session:
        s = requests.Session()
        # One worker = one connection per host; no urllib3-level retries (we retry).
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=1, max_retries=0)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        if settings.proxy:
            s.proxies = {"http": settings.proxy, "https": settings.proxy}
        return s
    return factory


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def headers_for(url: str, settings: FetchSettings, host_headers: HostHeaders | None,
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
    h = {"User-Agent": settings.user_agent, "Accept-Encoding": "identity"}
    if host_headers:
        host = host_of(url)
        for key, value in host_headers.items():
            if key.lower() == host:
                h.update(value)
    if extra:
        h.update(extra)
    return h


@dataclass
class Opened:
    response: requests.Response
    url: str  # the final URL after redirects


def open_url(session: requests.Session, url: str, settings: FetchSettings,
             host_headers: HostHeaders | None, extra: Mapping[str, str] | None = None,
             ) -> Opened:
    """GET ``url`` following redirects by hand; the response is streamed, not read."""
    current = url
    for _ in range(settings.max_redirects + 1):
        resp = session.get(
            current, headers=headers_for(current, settings, host_headers, extra),
            stream=True, allow_redirects=False,
            timeout=(settings.connect_timeout, settings.stall_timeout))
        if resp.status_code in REDIRECTS and "location" in resp.headers:
            nxt = urljoin(current, resp.headers["location"])
            resp.close()
            current = nxt
            continue
        return Opened(resp, current)
    raise RemoteError(f"more than {settings.max_redirects} redirects", url=url)


def retry_after(resp: requests.Response, cap: float) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
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


def body_hint(resp: requests.Response, limit: int = 2048) -> str:
    """A short excerpt of an error body: JSON ``error``/``message``, an HTML title, or text."""
    try:
        raw = resp.raw.read(limit, decode_content=True) or b""
    except Exception:
        return ""
    text = raw.decode("utf-8", "replace")
    ctype = resp.headers.get("content-type", "").lower()
    if "json" in ctype or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
            if isinstance(data, dict):
                text = str(data.get("error") or data.get("message") or text)
        except ValueError:
            pass
    elif "html" in ctype or text.lstrip().lower().startswith("<!doctype"):
        m = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
        text = m.group(1) if m else ""
    text = " ".join(text.split())[:200]
    return f": {text}" if text else ""


def raise_for_status(resp: requests.Response, url: str, origin: str,
                     settings: FetchSettings) -> None:
    """Turn a non-2xx answer into a retry, a re-resolve, or one of our errors."""
    code = resp.status_code
    if code < 300:
        return
    redirected = url != origin  # reached through a redirect (or a cached signed URL)
    if code in (429, 503, 502, 504, 500, 408):
        delay = retry_after(resp, settings.retry_after_max)
        msg = f"HTTP {code} from {host_of(url)}"
        resp.close()
        if code == 429 and delay is None:
            delay = settings.backoff_initial
        raise Retryable(msg, delay)
    if redirected and code in (400, 401, 403, 410):
        resp.close()
        raise Expired(f"HTTP {code} from redirect target {host_of(url)}")
    hint = body_hint(resp)
    resp.close()
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


def reader(resp: requests.Response) -> Callable[[memoryview], int]:
    """``readinto`` for a streamed response, without a copy per chunk when possible.

    urllib3's ``HTTPResponse.read`` allocates a new bytes object per call; reading straight
    from the underlying ``http.client.HTTPResponse`` into our preallocated buffer does not.
    Safe because we ask for identity encoding; otherwise fall back to urllib3.
    """
    raw: Any = resp.raw
    fp = getattr(raw, "_fp", None)
    encoded = resp.headers.get("content-encoding", "identity").lower() not in ("identity", "")
    if isinstance(fp, http.client.HTTPResponse) and not encoded:
        return fp.readinto

    def fallback(buf: memoryview) -> int:
        data = raw.read(len(buf), decode_content=True)
        buf[:len(data)] = data
        return len(data)
    return fallback


def finish(resp: requests.Response, fully_read: bool) -> None:
    """Return a fully read connection to the pool, else drop it."""
    raw: Any = resp.raw
    if fully_read:
        try:
            raw.release_conn()
            return
        except Exception:
            pass
    resp.close()


@dataclass(frozen=True)
class RangeInfo:
    ranged: bool          # 206 with a Content-Range
    start: int
    total: int | None     # full size of the remote file, if known
    length: int | None    # bytes in this body, if known


def range_info(resp: requests.Response) -> RangeInfo:
    cr = resp.headers.get("content-range", "")
    cl = resp.headers.get("content-length")
    length = int(cl) if cl and cl.isdigit() else None
    if resp.status_code == 206 and cr.startswith("bytes "):
        span, _, total = cr[6:].partition("/")
        lo, _, hi = span.partition("-")
        try:
            start, end = int(lo), int(hi)
        except ValueError:
            raise RemoteError(f"malformed Content-Range {cr!r}") from None
        tot = int(total) if total.isdigit() else None
        if length is not None and length != end - start + 1:
            raise Retryable(f"Content-Length {length} disagrees with Content-Range {cr!r}")
        return RangeInfo(True, start, tot, end - start + 1)
    return RangeInfo(False, 0, length, length)
