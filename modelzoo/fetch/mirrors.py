"""Endpoints serving the same bytes: probe, rank, share connections by speed, demote.

Each candidate URL is probed with one small ranged GET (latency to the first byte, then
the throughput of ``probe_bytes``), which also resolves redirects and tells the size, the
validators, whether ranges work and what the body starts with. Endpoints serving the same
size and validators as the primary (the first that answered) join the pool. With a known
sha256 the size is enough: a mirror whose ETag differs is used, noted in the report, and
the final hash checks every byte whichever endpoint served it.

Connections go to endpoints in proportion to their speed *per connection*: measured by
the probe at first, then on the live transfer (bytes per connection-second over the last
half second). An endpoint slower per connection than ``keep_ratio`` times the best is
left out: with a connection budget, each connection it holds would move fewer bytes than
on the best one, so it slows the whole down (a 3x slower mirror given half the
connections costs a third of the speed). Its workers move over at once. An endpoint that
keeps failing is demoted and its connections move to the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import FetchError, RemoteError
from .control import Validators
from .sessions import NETWORK_ERRORS, Reply, Session, SessionFactory
from .settings import FetchSettings
from .transport import Expired, Retryable, open_url, raise_for_status, range_info

log = logging.getLogger("modelzoo.fetch")
HEAD_BYTES = 4096  # what validators see of the body's start


@dataclass(eq=False)
class Endpoint:
    origin: str                      # the URL as given
    resolved: str = ""               # where the origin redirects to (a signed URL, maybe)
    validators: Validators | None = None
    ranges: bool = False
    content_type: str = ""
    filename: str | None = None      # from Content-Disposition
    head: bytes = b""                # the body's first bytes
    latency: float = 0.0
    throughput: float = 0.0          # probe: bytes/s on one connection
    failures: int = 0
    demoted: bool = False
    error: BaseException | None = None
    note: str | None = None          # why it is left out, or what was odd about it
    handoff: Handoff | None = None   # the probe's answer, kept open for the first worker
    # live figures, kept by EndpointPool
    received: int = 0                # bytes this endpoint delivered
    conns: int = 0                   # requests in flight
    left_out: bool = False
    per_conn: float = 0.0            # bytes/s per connection, live (probe until known)
    measured: bool = False           # per_conn comes from the transfer, not the probe
    rtt: float | None = None         # seconds from a request to its answer's headers
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

    @property
    def usable(self) -> bool:
        return not self.demoted and not self.left_out

    def note_rtt(self, seconds: float) -> None:
        """A request's time to its headers (smoothed; the probe's included a connect)."""
        self.rtt = seconds if self.rtt is None else 0.8 * self.rtt + 0.2 * seconds


@dataclass(eq=False)
class Handoff:
    """A probe's answer kept for the first worker: the body bytes the probe read (from
    offset 0), and, when the server sent more than was asked (it ignores Range), the rest
    still to read from ``reply`` (else None). Its session goes with it: the connection is
    warm."""

    session: Session
    reply: Reply | None
    url: str                 # where the answer came from (after redirects)
    data: bytes
    end: int | None          # file offset just past the range answered (None: unknown)

    def close(self) -> None:
        if self.reply is not None:
            self.reply.release(False)
            self.reply = None
        self.session.close()


def probe(session: Session, url: str, settings: FetchSettings,
          bound: Mapping[str, Mapping[str, str]], keep: bool = False) -> Endpoint:
    """One ranged GET of the first ``probe_bytes``: resolves redirects, measures, reads
    size and validators. With ``keep``, what it read and its connection become
    ``ep.handoff`` for the first worker (the bytes are not asked for twice); a server that
    ignores Range sends the whole file, whose rest the single stream reads on.

    Not more than ``probe_bytes``: a longer first answer would outrun the first worker's
    share of a mid-size file, and what the server had sent beyond it would be lost."""
    ep = Endpoint(url)
    t0 = time.monotonic()
    opened = open_url(session, url, settings, bound,
                      {"Range": f"bytes=0-{settings.probe_bytes - 1}"})
    reply = opened.reply
    if reply.status == 416 and (reply.headers.get("content-range") or "") == "bytes */0":
        # no byte 0 to send: an empty file (HF repos have empty __init__.py files)
        ep.latency = time.monotonic() - t0
        ep.update(opened.url)
        ep.validators = Validators(0, reply.headers.get("etag"),
                                   reply.headers.get("last-modified"))
        reply.release(False)
        return ep
    try:
        raise_for_status(reply, opened.url, url, settings)
    except Expired as e:  # a fresh redirect that fails at once is not an expiry
        raise RemoteError(f"{url}: {e}", url=url) from None
    ep.latency = time.monotonic() - t0
    ep.update(opened.url)
    fully = False
    kept = False
    try:
        info = range_info(reply, url)
        ep.ranges = info.ranged and info.start == 0
        size = info.total
        ep.validators = (Validators(size, reply.headers.get("etag"),
                                    reply.headers.get("last-modified"))
                         if size is not None else None)
        ep.content_type = reply.headers.get("content-type") or ""
        ep.filename = filename_from(reply.headers.get("content-disposition") or "")
        want = settings.probe_bytes if info.length is None else min(settings.probe_bytes,
                                                                    info.length)
        data = bytearray(want or 1)
        view = memoryview(data)
        got = 0
        t1 = time.monotonic()
        while got < want:
            n = reply.readinto(view[got:want])
            if n <= 0:
                break
            got += n
        ep.throughput = got / max(time.monotonic() - t1, 1e-6)
        ep.per_conn = ep.throughput
        ep.head = bytes(view[:min(got, HEAD_BYTES)])
        fully = got == info.length
        if keep and info.start == 0:
            end = info.length if info.length is not None else None
            ep.handoff = Handoff(session, None if fully else reply, opened.url,
                                 bytes(view[:got]), end)
            kept = True
        view.release()
    finally:
        if not kept:
            reply.release(fully and ep.ranges)
    return ep


def probe_all(urls: Sequence[str], factory: SessionFactory, settings: FetchSettings,
              bound: Mapping[str, Mapping[str, str]],
              keep: Callable[[Session], None] | None = None,
              handoff: bool = False) -> list[Endpoint]:
    """Probe every candidate in parallel; failed ones come back with ``error`` set.

    ``keep`` receives each probe's session afterwards (its connection is warm: the first
    worker reuses it) instead of it being closed. ``handoff``: see :func:`probe`."""
    def one(url: str) -> Endpoint:
        session = factory()
        try:
            last: BaseException | None = None
            for attempt in range(settings.retries + 1):
                try:
                    ep = probe(session, url, settings, bound, handoff)
                    if ep.handoff is not None:
                        session = None  # type: ignore[assignment]  # the handoff has it
                    elif keep is not None:
                        keep(session)
                        session = None  # type: ignore[assignment]
                    return ep
                except FetchError as e:  # 404, auth, a self-contradicting answer: final
                    last = e
                    break
                except Retryable as e:
                    last = e
                    delay = e.delay
                except NETWORK_ERRORS as e:
                    last, delay = e, None
                if delay is None:
                    delay = settings.backoff_initial * 2 ** attempt
                time.sleep(min(settings.backoff_max, delay))
            return Endpoint(url, demoted=True, error=last)
        finally:
            if session is not None:
                session.close()

    if len(urls) == 1:
        return [one(urls[0])]
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        return list(pool.map(one, urls))


def rank(endpoints: Sequence[Endpoint], sha256_known: bool) -> list[Endpoint]:
    """Usable endpoints, fastest first: those serving the same bytes as the primary.

    The primary is the first candidate (in the order given) that answered; an endpoint
    joins it when the size matches and, without a sha256 to check the result, the
    validators agree. Endpoints that cannot do ranges are used only on their own. Those
    set aside get a ``note`` saying why (logged too)."""
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
    same: list[Endpoint] = []
    for e in ok:
        ev = e.validators
        if e is not primary and (not e.ranges or ev is None):
            _note(e, "does not serve byte ranges with a known size; not mixed with others")
        elif ev is not None and ev.size != pv.size:
            _note(e, f"serves {ev.size} bytes where {primary.origin} serves {pv.size}; "
                     f"not used")
        elif ev is not None and not pv.same_as(ev):
            if sha256_known:
                _note(e, f"its ETag/Last-Modified differ from {primary.origin}'s; used, "
                         f"the sha256 checks every byte")
                same.append(e)
            else:
                _note(e, f"its ETag/Last-Modified differ from {primary.origin}'s and no "
                         f"sha256 is known to check a mix; not used")
        else:
            same.append(e)
    same.sort(key=lambda e: (-e.throughput, e.latency))
    return same


def _note(ep: Endpoint, text: str) -> None:
    ep.note = text
    log.info("mirror %s %s", ep.origin, text)


class EndpointPool:
    """Shares connections among endpoints by speed; demotes failing ones.

    ``pick`` gives a worker the endpoint furthest below its share of the connections in
    flight (shares in proportion to per-connection speed); ``observe`` (the engine's
    clock tick) measures live speeds and leaves out endpoints that would slow the whole."""

    def __init__(self, endpoints: Sequence[Endpoint], demote_after: int,
                 keep_ratio: float = 0.5, window: float = 0.5) -> None:
        self.endpoints = list(endpoints)
        self.demote_after = demote_after
        self.keep_ratio = keep_ratio
        self.window = window
        self._lock = threading.Lock()
        self._history: deque[tuple[float, dict[int, tuple[int, float]]]] = deque()
        self._conn_time = {id(e): 0.0 for e in self.endpoints}
        self._last: float | None = None
        self._judge()

    def healthy(self) -> list[Endpoint]:
        return [e for e in self.endpoints if not e.demoted]

    def usable(self) -> list[Endpoint]:
        return [e for e in self.endpoints if e.usable]

    def pick(self, worker: int) -> Endpoint | None:
        """The endpoint for this worker's next request (counted until ``done``)."""
        with self._lock:
            active = self.usable() or self.healthy()
            if not active:
                return None
            total_speed = sum(max(e.per_conn, 1.0) for e in active)
            in_flight = sum(e.conns for e in active) + 1
            best = max(active, key=lambda e: (
                max(e.per_conn, 1.0) / total_speed * in_flight - e.conns, -e.latency))
            best.conns += 1
            return best

    def done(self, ep: Endpoint) -> None:
        with self._lock:
            ep.conns = max(0, ep.conns - 1)

    def should_leave(self, ep: Endpoint) -> bool:
        """A worker on ``ep`` should move: it is left out or demoted and others remain."""
        return not ep.usable and any(e.usable for e in self.endpoints)

    def observe(self, now: float) -> None:
        """Account connection-time since the last call; re-judge speeds every window."""
        with self._lock:
            if self._last is not None:
                dt = now - self._last
                for e in self.endpoints:
                    self._conn_time[id(e)] += e.conns * dt
            self._last = now
            snap = {id(e): (e.received, self._conn_time[id(e)]) for e in self.endpoints}
            self._history.append((now, snap))
            while len(self._history) > 2 and now - self._history[1][0] >= self.window:
                self._history.popleft()
            t0, old = self._history[0]
            if now - t0 < self.window:
                return
            for e in self.endpoints:
                got = snap[id(e)][0] - old[id(e)][0]
                spent = snap[id(e)][1] - old[id(e)][1]
                if spent >= 0.5 * self.window:  # enough connection-time to judge by
                    e.per_conn = got / spent
                    e.measured = True
            self._judge()

    def _judge(self) -> None:
        healthy = self.healthy()
        if not healthy:
            return
        best = max(e.per_conn for e in healthy)
        for e in healthy:
            slow = best > 0 and e.per_conn < self.keep_ratio * best
            if slow and not e.left_out:
                _note(e, f"left out: {best / max(e.per_conn, 1.0):.1f}x slower per "
                         f"connection than the best mirror")
            elif not slow and e.left_out:
                _note(e, "back in use: its speed per connection caught up")
            e.left_out = slow

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
                    if ep.note is None or not ep.note.startswith("demoted"):
                        _note(ep, f"demoted: {error}")
                    self._judge()
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
