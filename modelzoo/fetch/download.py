"""One attempt at one file from ranked endpoints: the workers, the hasher, the end.

    segmented: workers, each with its own session, pull segments from the scheduler
               (segments.py) and pwrite them into .NAME.part; finished pieces are marked
               in the control file (control.py) and their write-back to disk starts at
               once; a hasher thread follows the contiguous done prefix, so sha256 needs
               no second pass over the file. The worker count is fixed (``connections``)
               or tuned (tuning.py); mirrors share the workers by speed (mirrors.py).
               The first worker starts with the probe's bytes and connection
               (mirrors.Handoff).
    single:    one stream, when the server ignores Range or sends no length
    the end:   size, sha256, validator (validate.py) -> fsync, atomic rename

Failures: a retryable error (drop, stall, 5xx, 429 with Retry-After) costs the connection a
backoff; a redirect target answering 400/401/403/410 means the signed URL expired, so the
origin is resolved again; a remote change (If-Range answered 200, other validators) raises
:class:`Changed` for the job to start over. An answer that contradicts itself
(Content-Length against Content-Range, the whole file for a mid-file range, a body that
ends at the same byte short of its announced length twice) fails at once: the same request
gets the same answer. Ctrl-C (or ``cancel``) stops the workers and keeps the control file.

Durability: with ``fsync`` on, each finished piece's pages are handed to the disk at once
(``posix_fadvise(DONTNEED)`` starts write-back of dirty pages without waiting, the fallback
PostgreSQL's ``pg_flush_data`` uses where ``sync_file_range`` is missing), so the final
fsync finds little left to write: 3 ms instead of 50 ms for 128 MiB here.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from atelier_io.http import BodyCutShort

from ..errors import ChecksumMismatch, FetchError, NotAModel, RateLimited, RemoteError, SizeMismatch
from . import placement
from .control import ControlFile, Validators
from .lock import FileLock
from .mirrors import Endpoint, EndpointPool, Handoff
from .results import FetchProgress, FetchResult, MirrorReport
from .segments import Scheduler, Segment
from .sessions import NETWORK_ERRORS, Reply, Session
from .throttle import Throttle
from .transport import Expired, Retryable, open_url, raise_for_status, range_info
from .tuning import Tuner

if TYPE_CHECKING:
    from .engine import Job

# what costs a connection a retry (ValueError: http.client on a garbled status line)
_RETRY: tuple[type[Exception], ...] = (Retryable, ValueError, *NETWORK_ERRORS)
_RETRY_SINGLE: tuple[type[Exception], ...] = (Retryable, Expired, *NETWORK_ERRORS)
HASH_CHUNK = 4 * 1024 * 1024
TICK = 0.05  # seconds between looks of the control loop (tuning, mirrors, cancel)


class Changed(Exception):
    """The remote file changed under us: start over."""


class Retired(Exception):
    """This worker is one more than the download wants now."""


class Download:
    """One attempt at one file, from the ranked endpoints."""

    def __init__(self, job: Job, path: Path, lock: FileLock | None) -> None:
        self.job = job
        self.s = job.settings
        self.path = path
        self.name = path.name
        self.lock = lock
        self.part = placement.part_path(path)
        self.ctl_path = placement.control_path(path)
        self.validator = job.validator(self.name)
        self.pool = EndpointPool(job.endpoints, self.s.demote_after, self.s.mirror_keep_ratio)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.changed = False
        self.received = 0
        self._recv_lock = threading.Lock()
        self.throttle = Throttle(self.s.bandwidth_limit)
        self._replies: dict[int, Reply] = {}
        self._speed: deque[tuple[float, int]] = deque(maxlen=64)
        self.peak = 0

    def run(self) -> FetchResult:
        self._check_endpoints()
        primary = self.pool.usable()[0] if self.pool.usable() else self.pool.endpoints[0]
        remote = primary.validators
        if remote is not None and self.job.size is not None and remote.size != self.job.size:
            raise SizeMismatch(
                f"{self.name}: the server offers {remote.size} bytes, expected "
                f"{self.job.size}", url=primary.origin)
        if remote is not None and primary.ranges and remote.size > 0:
            return self._segmented(remote)
        return self._single(primary)

    def _check_endpoints(self) -> None:
        """What each endpoint's probe saw must be what is expected: endpoints serving a
        page are set aside; when none is left, the first one's reason is the error."""
        if self.validator is None:
            return
        first: NotAModel | None = None
        for ep in self.pool.endpoints:
            size = ep.validators.size if ep.validators is not None else None
            try:
                self.validator.check_content_type(ep.content_type, self.name, ep.head)
                if ep.head:
                    self.validator.check_start(ep.head, self.name, size)
            except NotAModel as e:
                first = first or e
                self.pool.failure(ep, e, fatal=True)
        if not self.pool.healthy():
            assert first is not None
            raise first

    # ---- segmented download ------------------------------------------------------------

    def _segmented(self, remote: Validators) -> FetchResult:
        size = remote.size
        ctl = ControlFile.load(self.ctl_path)
        if ctl is not None and not (self._resumable(ctl, remote) and self.part.exists()
                                    and self.part.stat().st_size == size):
            ctl.remove()
            ctl = None
        if ctl is None:
            self.part.unlink(missing_ok=True)
        placement.check_space(self.path.parent, size - placement.allocated(self.part),
                              self.s.reserve_bytes, self.name)
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if ctl is None:
                try:
                    if self.s.preallocate:
                        placement.preallocate(fd, size, self.name, self.path.parent)
                    else:
                        os.ftruncate(fd, size)
                except BaseException:
                    os.close(fd)
                    fd = -1
                    self.part.unlink(missing_ok=True)
                    raise
                primary = self._primary(remote)
                ctl = ControlFile.create(self.ctl_path, primary.validators or remote,
                                         self.s.piece_size, primary.origin)
            try:
                return self._run_workers(fd, ctl, size)
            except NotAModel:  # nothing worth resuming: leave nothing behind
                self.part.unlink(missing_ok=True)
                self.ctl_path.unlink(missing_ok=True)
                raise
        finally:
            if fd >= 0:
                os.close(fd)

    def _primary(self, remote: Validators) -> Endpoint:
        return next((e for e in self.pool.healthy() if e.validators == remote),
                    self.pool.endpoints[0])

    def _resumable(self, ctl: ControlFile, remote: Validators) -> bool:
        """The partial belongs to these bytes: same validators as the endpoint that
        started it (mirrors may differ in ETag), or, with a sha256 to check the result,
        the same size when that endpoint is not among today's."""
        starter = next((e for e in self.pool.healthy()
                        if e.origin == ctl.url and e.validators is not None), None)
        if starter is not None:
            assert starter.validators is not None
            return ctl.validators.same_as(starter.validators)
        if self.job.sha256 is not None:
            return ctl.validators.size == remote.size
        return ctl.validators.same_as(remote)

    def _run_workers(self, fd: int, ctl: ControlFile, size: int) -> FetchResult:
        self.fd, self.ctl, self.size = fd, ctl, size
        fixed = self.s.connections
        cap = fixed or self.s.max_connections
        start = fixed or min(self.s.initial_connections, cap)
        self.tuner = None if fixed else Tuner(start, cap, window=self.s.tuning_window)
        self.target = start
        self.ceiling = cap          # lowered by each worker that runs out of retries
        # hashing: one free run that workers carve chunks off in order (_chunk)
        shares = 1 if self.job.want_hash else start
        sched = self.sched = Scheduler(size, ctl.piece_size, shares, ctl.done)
        sched.arrived = self._arrived
        resumed = sched.done_bytes
        self.prefix_cond = threading.Condition()
        self.digest: str | None = None
        self._workers: dict[int, threading.Thread] = {}
        self._alive: set[int] = set()
        self._warm: set[int] = set()
        self._next_id = 0
        self._last_error: BaseException | None = None
        self._wake = threading.Event()  # a worker ended: the control loop looks at once
        hasher = (threading.Thread(target=self._hasher, daemon=True, name="fetch-hash")
                  if self.job.want_hash else None)
        first = self._first_segment()
        try:
            if hasher is not None:
                hasher.start()
            self._spawn(first)
            self._control_loop(fd, size)
            if self.error is None and not self.changed and sched.complete and hasher:
                hasher.join()  # the done prefix is the whole file now: it finishes
        finally:
            self._shutdown(hasher)
        if self.error is not None:
            raise self.error
        if self.changed:
            raise Changed()
        if not sched.complete:
            raise self._last_error or RemoteError(f"{self.name}: incomplete download")
        if self.job.want_hash and self.digest is None:
            raise FetchError(f"{self.name}: hashing did not finish")
        self._report(size)
        return self._finish(fd, size, self.digest, resumed)

    def _chunk(self) -> int | None:
        """How much a worker takes at once while hashing (None: its whole share).

        The hasher reads the done prefix, which then trails the download by about
        connections x chunk, instead of waiting for the first connection's whole share
        (that left most of a 2 GiB file to hash after the last byte: 3.5 s here). Each
        request still moves 20 x (round trip x speed per connection), measured live, so
        the round trip a new request costs stays near 2 % of its time; 16 pieces until
        there are measurements. Never more than an equal share per connection, or the
        others would start by stealing."""
        if not self.job.want_hash:
            return None
        piece = self.sched.piece_size
        share = max(piece, self.size // max(1, min(self.target, self.ceiling)))
        eps = [e for e in self.pool.usable() if e.rtt is not None and e.measured]
        if not eps:
            return min(16 * piece, share)
        want = int(20 * max(e.rtt or 0.0 for e in eps) * max(e.per_conn for e in eps))
        return min(max(16 * piece, want), 256 * 1024 * 1024, share)

    def _control_loop(self, fd: int, size: int) -> None:
        last_sync = last_report = time.monotonic()
        while True:
            self._wake.wait(TICK)
            self._wake.clear()
            now = time.monotonic()
            if self.stop.is_set() or self.sched.complete and not self._alive:
                return
            if self.job.cancel.is_set():
                raise KeyboardInterrupt
            if self.lock is not None and self.lock.lost.is_set():
                self._fail(FetchError(f"{self.name}: lost the lock to another process"))
                return
            self.pool.observe(now)
            if self.tuner is not None:
                wanted = self.tuner.update(now, self.received, len(self._warm))
                if wanted != self.target:
                    self._warm.clear()
                self.target = wanted
            self._spawn()
            if not self._alive:
                if self.sched.complete:
                    return
                if self.ceiling <= 0 or not self.sched.has_work():
                    self._fail(self._as_error(self._last_error)
                               if self._last_error else
                               RemoteError(f"{self.name}: no connection is left"))
                    return
            if now - last_report >= self.s.progress_interval:
                self._report(size)
                last_report = now
            if self.s.fsync and now - last_sync >= self.s.sync_interval:
                os.fdatasync(fd)
                self.ctl.sync()
                last_sync = now

    def _first_segment(self) -> tuple[Segment, Handoff] | None:
        """The segment at offset 0 for the probe's kept answer, if both exist."""
        handoff = self.job.take_handoff()
        if handoff is None:
            return None
        seg = None
        if self.sched.missing_runs()[:1] and self.sched.missing_runs()[0][0] == 0:
            seg = self.sched.take(0, self._chunk())
        if seg is None or seg.start != 0:
            if seg is not None:
                self.sched.release(seg)
            handoff.close()  # resuming: offset 0 is done already
            return None
        return seg, handoff

    def _arrived(self, seg: Segment) -> int:
        """Bytes waiting in the socket of the worker that owns ``seg`` (for thieves)."""
        reply = self._replies.get(seg.owner) if seg.owner is not None else None
        return reply.queued() if reply is not None else 0

    def _spawn(self, first: tuple[Segment, Handoff] | None = None) -> None:
        """Start workers up to the wanted count, while there is work to hand out; the
        first one may start with the probe's answer."""
        want = min(self.target, self.ceiling)
        with self._recv_lock:
            while len(self._alive) < want and not self.stop.is_set():
                if self._alive and not self.sched.has_work():
                    break
                wid = self._next_id
                self._next_id += 1
                self._alive.add(wid)
                t = threading.Thread(target=self._worker, args=(wid, first), daemon=True,
                                     name=f"fetch-{wid}")
                first = None
                self._workers[wid] = t
                t.start()
            self.peak = max(self.peak, len(self._alive))

    def _retire(self, wid: int) -> bool:
        """True when this worker is the newest of more than the download wants now."""
        with self._recv_lock:
            if len(self._alive) > min(self.target, self.ceiling) and wid == max(self._alive):
                return True
            return False

    def _shutdown(self, hasher: threading.Thread | None) -> None:
        self.stop.set()
        with self.prefix_cond:
            self.prefix_cond.notify_all()
        for reply in list(self._replies.values()):
            reply.abort()  # wakes a worker blocked in recv
        deadline = time.monotonic() + 5
        for t in [*self._workers.values(), *([hasher] if hasher else [])]:
            t.join(max(0.0, deadline - time.monotonic()))
        try:
            if self.s.fsync and not self.sched.complete:  # what to resume from is durable
                os.fdatasync(self.fd)
                self.ctl.sync()
        except OSError:
            pass
        self.ctl.close()

    def _worker(self, wid: int, first: tuple[Segment, Handoff] | None = None) -> None:
        handoff = first[1] if first else None
        session = handoff.session if handoff else self.job.session()
        buf = memoryview(bytearray(self.s.buffer_size))
        attempts = 0
        expiries = 0
        cuts: dict[int, int] = {}  # endpoint -> file offset where its body last ended early
        seg = first[0] if first else self.sched.take(wid, self._chunk())
        try:
            while seg is not None and not self.stop.is_set():
                if seg.finished:
                    seg = self.sched.take(wid, self._chunk())
                    continue
                ep = self.pool.pick(wid)
                if ep is None:
                    self._fail(self._last_endpoint_error() or RemoteError("no usable endpoint"))
                    break
                before = seg.committed
                try:
                    if handoff is not None:
                        taken = handoff
                        handoff = None  # once: a retry asks the server again
                        self._continue(taken, ep, seg, buf, wid)
                    else:
                        self._stream(session, ep, seg, buf, wid)
                    self.pool.success(ep)
                    attempts = expiries = 0
                except Retired:
                    break
                except Expired as e:
                    ep.expire(ep.resolved)
                    expiries += 1
                    if expiries > 2:  # a fresh signed URL fails too: not an expiry
                        self.pool.failure(ep, RemoteError(str(e), url=ep.origin), fatal=True)
                except Changed:
                    self.changed = True
                    self.stop.set()
                    break
                except NotAModel as e:
                    self._fail(e)
                    break
                except FetchError as e:
                    if not self.pool.failure(ep, e, fatal=True) or not self.pool.healthy():
                        self._fail(e)
                        break
                except _RETRY as e:
                    if self.stop.is_set():
                        break
                    full = (placement.no_space(e, self.name, self.path.parent)
                            if isinstance(e, OSError) else None)
                    if full is not None:
                        self._fail(full)
                        break
                    if isinstance(e, BodyCutShort):
                        if cuts.get(id(ep)) == seg.committed:
                            same = RemoteError(
                                f"{ep.origin} ended its answer {e.missing} bytes short at "
                                f"offset {seg.committed}, twice: it announces bytes it does "
                                f"not send; retrying will not help", url=ep.origin)
                            if not self.pool.failure(ep, same, fatal=True) or \
                                    not self.pool.healthy():
                                self._fail(same)
                                break
                            continue
                        cuts[id(ep)] = seg.committed
                    if seg.committed > before:
                        attempts = 0
                    attempts += 1
                    self._last_error = e
                    self.pool.failure(ep, e)
                    if attempts > self.s.retries:
                        self._give_up(e)
                        break
                    delay = e.delay if isinstance(e, Retryable) else None
                    if delay is None:
                        delay = min(self.s.backoff_max,
                                    self.s.backoff_initial * 2 ** (attempts - 1))
                    self.stop.wait(delay)
                finally:
                    self.pool.done(ep)
        finally:
            if handoff is not None:
                handoff.close()
            if seg is not None and not seg.finished:
                self.sched.release(seg)
            session.close()
            with self._recv_lock:
                self._alive.discard(wid)
                self._warm.discard(wid)
            self._wake.set()

    def _stream(self, session: Session, ep: Endpoint, seg: Segment, buf: memoryview,
                wid: int) -> None:
        """One ranged GET for the rest of ``seg``, written as it arrives."""
        start, end = seg.committed, seg.end
        extra = {"Range": f"bytes={start}-{end - 1}"}
        if ep.if_range:
            extra["If-Range"] = ep.if_range
        t0 = time.monotonic()
        opened = open_url(session, ep.url(), self.s, self.job.bound, extra)
        ep.note_rtt(time.monotonic() - t0)
        reply = opened.reply
        self._replies[wid] = reply
        fully = False
        try:
            raise_for_status(reply, opened.url, ep.origin, self.s)
            ep.update(opened.url)
            info = range_info(reply, ep.origin)
            self._check_identity(ep, reply, info.ranged, start, end)
            if not info.ranged or info.start != start:
                raise RemoteError(f"{ep.origin} answered bytes {info.start}- to a request for "
                                  f"bytes {start}-; retrying will not help", url=ep.origin)
            if info.total is not None and info.total != self.size:
                raise Changed()
            self._read_into(reply, ep, seg, buf, wid)
            fully = seg.committed == end
        finally:
            self._replies.pop(wid, None)
            reply.release(fully)

    def _continue(self, handoff: Handoff, ep: Endpoint, seg: Segment, buf: memoryview,
                  wid: int) -> None:
        """The probe's answer as this segment's start: the bytes it read (then the same
        connection asks for the rest of the segment)."""
        reply = handoff.reply
        end = handoff.end if handoff.end is not None else self.size
        fully = reply is None
        if reply is not None:
            self._replies[wid] = reply
        try:
            data = memoryview(handoff.data)
            if data and self._store(ep, seg, data, len(data), wid) < len(data):
                return  # the segment ended within what the probe read
            if reply is not None and seg.claimed < end:
                self._read_into(reply, ep, seg, buf, wid, end)
                fully = seg.committed == end
        finally:
            self._replies.pop(wid, None)
            if reply is not None:
                reply.release(fully)
            handoff.reply = None  # the worker's session goes on with the connection

    def _read_into(self, reply: Reply, ep: Endpoint, seg: Segment, buf: memoryview,
                   wid: int, until: int | None = None) -> None:
        """Read the answer into ``seg`` up to its end (or ``until``, where the answer
        ends), until a thief, a retirement or a better mirror stops it."""
        stop, pool = self.stop, self.pool
        readinto = reply.readinto
        while not stop.is_set():
            want = min(len(buf), seg.end - seg.claimed,
                       (until if until is not None else seg.end) - seg.claimed)
            if want <= 0:
                return
            n = readinto(buf[:want])
            if n <= 0:
                raise Retryable(f"{ep.origin}: connection closed early")
            if self._store(ep, seg, buf, n, wid) < n:
                return  # a thief took the rest of this segment
            if len(self._alive) > self.target and self._retire(wid):
                raise Retired()
            if not ep.usable and pool.should_leave(ep):
                return  # left out or demoted: the next request goes elsewhere

    def _store(self, ep: Endpoint, seg: Segment, data: memoryview, n: int, wid: int) -> int:
        """Write ``n`` bytes that arrived for ``seg``; returns how many were still its own
        (fewer when a thief took the rest meanwhile)."""
        with self._recv_lock:
            self.received += n
            ep.received += n
        if wid not in self._warm:
            self._warm.add(wid)
        if seg.claimed == 0 and self.validator is not None:
            self.validator.check_start(bytes(data[:min(n, 4096)]), self.name, self.size)
        offset = seg.claimed
        ours = self.sched.claim(seg, n)
        if ours:
            os.pwrite(self.fd, data[:ours], offset)
            pieces = self.sched.commit(seg, ours)
            if pieces:
                for i in pieces:
                    self.ctl.mark(i)
                if self.s.fsync:
                    self._write_back(pieces)
                if self.job.want_hash:
                    with self.prefix_cond:
                        self.prefix_cond.notify_all()
            self.throttle.consume(ours, self.stop)
        return ours

    def _write_back(self, pieces: list[int]) -> None:
        """Start writing the finished pieces to disk now (see the module docstring)."""
        piece = self.sched.piece_size
        lo = pieces[0] * piece
        hi = min(self.size, (pieces[-1] + 1) * piece)
        try:
            os.posix_fadvise(self.fd, lo, hi - lo, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # only a hint

    def _check_identity(self, ep: Endpoint, reply: Reply, ranged: bool, start: int,
                        end: int) -> None:
        """Other validators than the probe's: the file changed. A 200 carrying the same
        validators to a mid-file range: the server ignores such ranges (final)."""
        v = ep.validators
        if v is None:
            return
        etag, lm = reply.headers.get("etag"), reply.headers.get("last-modified")
        if (v.etag and etag and etag != v.etag) or (
                v.last_modified and lm and lm != v.last_modified):
            raise Changed()
        if not ranged and reply.status == 200:
            if (v.etag and etag == v.etag) or (v.last_modified and lm == v.last_modified):
                raise RemoteError(
                    f"{ep.origin} answered a request for bytes {start}-{end - 1} with the "
                    f"whole file (HTTP 200, same ETag): it serves ranges only from the "
                    f"start; retrying will not help", url=ep.origin)
            if ep.if_range:
                raise Changed()

    def _hasher(self) -> None:
        h = hashlib.sha256()
        pos = 0
        buf = memoryview(bytearray(HASH_CHUNK))
        while True:
            with self.prefix_cond:
                while not self.stop.is_set() and self.sched.prefix_bytes <= pos \
                        and pos < self.size:
                    self.prefix_cond.wait(0.5)
            if self.stop.is_set():
                return
            end = self.sched.prefix_bytes
            while pos < end:
                n = os.preadv(self.fd, [buf[:min(len(buf), end - pos)]], pos)
                if n <= 0:
                    return
                h.update(buf[:n])
                pos += n
            if pos >= self.size:
                self.digest = h.hexdigest()
                return

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.stop.set()

    def _give_up(self, error: BaseException) -> None:
        """This connection is out of retries; the download fails when all are."""
        with self._recv_lock:
            # no replacement for it: the download fails once every connection gave up
            self.ceiling = min(self.ceiling, len(self._alive)) - 1
            self._last_error = error

    def _last_endpoint_error(self) -> BaseException | None:
        errors = [e.error for e in self.pool.endpoints if e.error is not None]
        return self._as_error(errors[-1]) if errors else None

    def _as_error(self, error: BaseException) -> BaseException:
        if isinstance(error, FetchError):
            return error
        origin = self.pool.endpoints[0].origin
        if isinstance(error, Retryable) and "429" in str(error):
            return RateLimited(f"{origin} kept answering 429 ({error})", url=origin)
        return RemoteError(f"{self.name}: giving up after {self.s.retries} retries: {error}",
                           url=origin)

    def _report(self, total: int | None) -> None:
        done = self.sched.done_bytes if hasattr(self, "sched") else self._single_done
        now = time.monotonic()
        self._speed.append((now, done))
        while len(self._speed) > 2 and now - self._speed[0][0] > 3:
            self._speed.popleft()
        t0, d0 = self._speed[0]
        speed = (done - d0) / (now - t0) if now > t0 else 0.0
        conns = self.sched.in_flight() if hasattr(self, "sched") else 1
        if self.job.progress is not None:
            self.job.progress(FetchProgress(self.name, total, done, speed, conns))

    # ---- single stream -----------------------------------------------------------------

    _single_done = 0

    def _single(self, ep: Endpoint) -> FetchResult:
        """The server ignores Range or sends no length: one stream, restarted on failure."""
        known = ep.validators.size if ep.validators is not None else None
        self.ctl_path.unlink(missing_ok=True)  # a partial from a ranged run is of no use
        if known is not None:
            placement.check_space(self.path.parent, known, self.s.reserve_bytes, self.name)
        handoff = self.job.take_handoff()
        session = handoff.session if handoff is not None else self.job.session()
        buf = memoryview(bytearray(self.s.buffer_size))
        attempts = 0
        short_at: int | None = None
        self.peak = 1
        try:
            while True:
                try:
                    taken, handoff = handoff, None
                    return self._single_attempt(session, ep, buf, known, taken)
                except _RETRY_SINGLE as e:
                    if isinstance(e, FetchError):
                        raise
                    if isinstance(e, _Short):
                        if e.got == short_at:
                            raise RemoteError(
                                f"{ep.origin}: got {e.got} of {e.announced} bytes, twice: the "
                                f"server announces a length it does not send; retrying will "
                                f"not help", url=ep.origin) from None
                        short_at = e.got
                    attempts += 1
                    if attempts > self.s.retries:
                        raise self._as_error(e) from e
                    delay = e.delay if isinstance(e, Retryable) else None
                    if isinstance(e, Expired):
                        ep.expire(ep.resolved)
                        delay = 0
                    if delay is None:
                        delay = min(self.s.backoff_max,
                                    self.s.backoff_initial * 2 ** (attempts - 1))
                    if self.job.cancel.wait(delay):
                        raise KeyboardInterrupt from None
        finally:
            session.close()

    def _single_attempt(self, session: Session, ep: Endpoint, buf: memoryview,
                        known: int | None, handoff: Handoff | None = None) -> FetchResult:
        """One whole-body GET, or the probe's answer (``handoff``) read on."""
        reply: Reply | None
        if handoff is not None:  # its status and headers were checked by the probe
            reply, head = handoff.reply, memoryview(handoff.data)
        else:
            opened = open_url(session, ep.url(), self.s, self.job.bound)
            reply, head = opened.reply, memoryview(b"")
        fd = -1
        ok = False
        done = 0
        try:
            if handoff is None:
                assert reply is not None
                raise_for_status(reply, opened.url, ep.origin, self.s)
            fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            h = hashlib.sha256() if self.job.want_hash else None
            self._single_done = 0
            last = time.monotonic()
            while True:
                if self.job.cancel.is_set():
                    raise KeyboardInterrupt
                if head:  # the probe's bytes come first
                    n = min(len(head), len(buf))
                    buf[:n] = head[:n]
                    head = head[n:]
                elif reply is None:
                    break
                else:
                    try:
                        n = reply.readinto(buf)
                    except BodyCutShort:
                        raise _Short(done, known if known is not None else done) from None
                if n <= 0:
                    break
                if done == 0 and self.validator is not None and reply is not None:
                    self.validator.check_content_type(
                        reply.headers.get("content-type") or "", self.name,
                        bytes(buf[:min(n, 4096)]))
                    self.validator.check_start(bytes(buf[:min(n, 4096)]), self.name, known)
                try:
                    os.write(fd, buf[:n])
                except OSError as e:
                    raise placement.no_space(e, self.name, self.path.parent) or e from None
                if h is not None:
                    h.update(buf[:n])
                done += n
                self.received += n
                ep.received += n
                self._single_done = done
                self.throttle.consume(n, self.job.cancel)
                if time.monotonic() - last >= self.s.progress_interval:
                    self._report(known)
                    last = time.monotonic()
            if known is not None and done != known:
                raise _Short(done, known)
            self._report(done)
            result = self._finish(fd, done, h.hexdigest() if h else None, 0)
            ok = True
            return result
        finally:
            if reply is not None:
                reply.release(False)
            if fd >= 0:
                os.close(fd)
            if not ok:
                self.part.unlink(missing_ok=True)  # not resumable: leave nothing

    # ---- the end -----------------------------------------------------------------------

    def _finish(self, fd: int, size: int, digest: str | None, resumed: int) -> FetchResult:
        try:
            actual = os.fstat(fd).st_size
            if actual != size or (self.job.size is not None and size != self.job.size):
                raise SizeMismatch(f"{self.name}: wrote {actual} bytes, expected "
                                   f"{self.job.size if self.job.size is not None else size}")
            if self.job.sha256 is not None and digest != self.job.sha256:
                raise ChecksumMismatch(
                    f"{self.name}: sha256 is {digest}, expected {self.job.sha256}; "
                    f"the download was deleted")
            if self.validator is not None:
                self.validator.check_file(self.part, self.name)
        except FetchError:
            self.part.unlink(missing_ok=True)
            placement.control_path(self.path).unlink(missing_ok=True)
            raise
        placement.place(self.part, self.path, fd, durable=self.s.fsync)
        self.ctl_path.unlink(missing_ok=True)
        healthy = self.pool.healthy()
        return FetchResult(
            self.path, size, digest, self.received, resumed,
            endpoints=tuple(e.origin for e in healthy if e.received > 0 or e.usable),
            connections=self.peak, mirrors=self._mirrors())

    def _mirrors(self) -> tuple[MirrorReport, ...]:
        seen = {id(e) for e in self.pool.endpoints}
        everyone = [*self.pool.endpoints,
                    *(e for e in self.job.probed if id(e) not in seen)]
        return tuple(MirrorReport(e.origin, e.received, e.received > 0 and not e.demoted,
                                  e.note or (str(e.error) if e.error else None))
                     for e in everyone)


class _Short(Retryable):
    """A single stream ended before its announced length."""

    def __init__(self, got: int, announced: int) -> None:
        super().__init__(f"got {got} of {announced} bytes")
        self.got = got
        self.announced = announced


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = memoryview(bytearray(HASH_CHUNK))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(buf[:n])
    return h.hexdigest()
