"""HTTP plumbing: redirects with per-origin headers, answers to errors.

Redirects are followed by hand so that each hop gets only the headers meant for it.
Headers are bound to an *origin*, scheme, host and port, as browsers bind cookies and
curl binds credentials since CVE-2022-27776: a token for ``https://civitai.com`` never
reaches ``http://civitai.com``, another port of the same host, or the signed storage URL
it redirects to. A redirect chain that leaves the origin it started on carries no caller
headers from then on, and sessions keep no cookie jar, so nothing a server sets travels
either. Bodies are asked for with ``Accept-Encoding: identity`` because byte ranges must
address the stored bytes, not a compressed stream. Sessions are in sessions.py.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from ..errors import RateLimited, RemoteAuthRequired, RemoteError, RemoteNotFound
from . import netguard
from .sessions import Reply, Session, origin_text
from .settings import FetchSettings

HostHeaders = Mapping[str, Mapping[str, str]]
REDIRECTS = {301, 302, 303, 307, 308}


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
        netguard.check(current, settings.blocked_networks)
        sent = headers_for(current, settings, bound if trusted else {}, extra)
        reply = session.get(current, sent)
        location = reply.headers.get("location")
        if reply.status in REDIRECTS and location:
            reply.release(False)
            nxt = urljoin(current, location)
            if urlsplit(nxt).scheme.lower() not in ("http", "https"):
                raise RemoteError(f"{origin_text(current)} redirects to {nxt!r}, "
                                  f"not an http(s) URL", url=url)
            current = nxt
            continue
        return Opened(reply, current)
    raise RemoteError(f"more than {settings.max_redirects} redirects", url=url)


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
