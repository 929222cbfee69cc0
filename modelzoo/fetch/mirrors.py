"""Endpoints serving the same bytes: probe, rank, spread connections, demote.

Each candidate URL is probed with one small ranged GET (latency to the first byte, then the
throughput of ``probe_bytes``), which also resolves redirects and tells the size, the
validators and whether ranges work. Endpoints that serve the same size and validators as
the best one join the pool (with a known sha256 the size is enough: the final hash guards
correctness whichever endpoint served which byte). Connections are spread over the pool;
an endpoint that keeps failing is demoted, and its connections move to the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from ..errors import FetchError, RemoteError
from .control import Validators
from .settings import FetchSettings
from .transport import (
    Expired,
    HostHeaders,
    Retryable,
    SessionFactory,
    finish,
    open_url,
    raise_for_status,
    range_info,
)


@dataclass(eq=False)
class Endpoint:
    origin: str                      # the URL as given
    resolved: str = ""               # where the origin redirects to (a signed URL, maybe)
    validators: Validators | None = None
    ranges: bool = False
    content_type: str = ""
    filename: str | None = None      # from Content-Disposition
    latency: float = 0.0
    throughput: float = 0.0
    failures: int = 0
    demoted: bool = False
    error: BaseException | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def url(self) -> str:
        return self.resolved or self.origin

    def expire(self, seen: str) -> None:
        """The resolved URL ``seen`` expired: resolve the origin again on the next request."""
        with self._lock:
            if self.resolved == seen:
                self.resolved = ""

    def update(self, url: str) -> None:
        with self._lock:
            self.resolved = url if url != self.origin else ""

    @property
    def if_range(self) -> str | None:
        v = self.validators
        if v is None:
            return None
        if v.etag and not v.etag.startswith("W/"):  # weak ETags are not allowed in If-Range
            return v.etag
        return v.last_modified


def probe(session: requests.Session, url: str, settings: FetchSettings,
          host_headers: HostHeaders | None) -> Endpoint:
    """One small ranged GET: resolves redirects, measures, reads size and validators."""
    ep = Endpoint(url)
    t0 = time.monotonic()
    opened = open_url(session, url, settings, host_headers,
                      {"Range": f"bytes=0-{settings.probe_bytes - 1}"})
    resp = opened.response
    try:
        raise_for_status(resp, opened.url, url, settings)
    except Expired as e:  # a fresh redirect that fails at once is not an expiry
        raise RemoteError(f"{url}: {e}", url=url) from None
    ep.latency = time.monotonic() - t0
    ep.update(opened.url)
    info = range_info(resp)
    ep.ranges = info.ranged and info.start == 0
    size = info.total
    ep.validators = (Validators(size, resp.headers.get("etag"),
                                resp.headers.get("last-modified"))
                     if size is not None else None)
    ep.content_type = resp.headers.get("content-type", "")
    ep.filename = filename_from(resp.headers.get("content-disposition", ""))
    got = 0
    t1 = time.monotonic()
    for chunk in resp.iter_content(64 * 1024):
        got += len(chunk)
        if got >= settings.probe_bytes:
            break
    finish(resp, fully_read=ep.ranges and got == info.length)
    ep.throughput = got / max(time.monotonic() - t1, 1e-6)
    return ep


def probe_all(urls: Sequence[str], factory: SessionFactory, settings: FetchSettings,
              host_headers: HostHeaders | None) -> list[Endpoint]:
    """Probe every candidate in parallel; failed ones come back with ``error`` set."""
    def one(url: str) -> Endpoint:
        with factory() as session:
            last: BaseException | None = None
            for attempt in range(settings.retries + 1):
                try:
                    return probe(session, url, settings, host_headers)
                except FetchError as e:  # 404, auth, ...: retrying will not help
                    last = e
                    break
                except Retryable as e:
                    last = e
                    delay = e.delay
                except (requests.RequestException, OSError) as e:
                    last, delay = e, None
                if delay is None:
                    delay = settings.backoff_initial * 2 ** attempt
                time.sleep(min(settings.backoff_max, delay))
            ep = Endpoint(url, demoted=True, error=last)
            return ep

    if len(urls) == 1:
        return [one(urls[0])]
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        return list(pool.map(one, urls))


def rank(endpoints: Sequence[Endpoint], sha256_known: bool) -> list[Endpoint]:
    """Usable endpoints, fastest first: those serving the same bytes as the primary.

    The primary is the first candidate (in the order given) that answered; an endpoint
    joins it when the size matches and, without a sha256 to check the result, the
    validators agree. Endpoints that cannot do ranges are used only on their own.
    """
    ok = [e for e in endpoints if e.error is None and not e.demoted]
    if not ok:
        return []
    primary = ok[0]
    pv = primary.validators
    if pv is None or not primary.ranges:
        ranged = [e for e in ok if e.ranges and e.validators is not None]
        if not ranged:
            return [primary]
        primary, pv = ranged[0], ranged[0].validators
        assert pv is not None
    same = [e for e in ok
            if e.ranges and e.validators is not None and e.validators.size == pv.size
            and (sha256_known or pv.same_as(e.validators))]
    same.sort(key=lambda e: (-e.throughput, e.latency))
    return same


class EndpointPool:
    """Spreads workers over healthy endpoints and demotes failing ones."""

    def __init__(self, endpoints: Sequence[Endpoint], demote_after: int) -> None:
        self.endpoints = list(endpoints)
        self.demote_after = demote_after
        self._lock = threading.Lock()

    def healthy(self) -> list[Endpoint]:
        return [e for e in self.endpoints if not e.demoted]

    def pick(self, worker: int) -> Endpoint | None:
        with self._lock:
            healthy = self.healthy()
            if not healthy:
                return None
            # Endpoints much slower than the best get no connections of their own.
            best = max(e.throughput for e in healthy)
            fast = [e for e in healthy if e.throughput * 10 >= best] or healthy
            return fast[worker % len(fast)]

    def success(self, ep: Endpoint) -> None:
        ep.failures = 0

    def failure(self, ep: Endpoint, error: BaseException, fatal: bool = False) -> bool:
        """Count a failure; returns True when the endpoint got demoted."""
        with self._lock:
            ep.failures += 1
            ep.error = error
            if fatal or ep.failures >= self.demote_after:
                # never demote the last endpoint for transient errors: retries decide then
                if fatal or len(self.healthy()) > 1:
                    ep.demoted = True
                    return True
            return False


def filename_from(disposition: str) -> str | None:
    """The filename in a Content-Disposition header (RFC 6266, filename* preferred)."""
    from email.message import Message
    from urllib.parse import unquote

    if not disposition:
        return None
    msg = Message()
    msg["content-disposition"] = disposition
    star = None
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename*" and "''" in value:
            star = unquote(value.split("''", 1)[1].strip('"'))
    name = star or msg.get_filename()
    return name or None
