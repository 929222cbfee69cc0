"""The fetch engine: one call downloads one file, fast, resumably and verified.

    fetch(urls, dest, size=, sha256=, connections=, headers=, progress=)
      -> lock .NAME.lock (another replica downloading it? wait, then reuse its file)
      -> probe every URL (mirrors.py), rank, check size / Content-Type
      -> segmented: N workers, each with its own session, pull segments from the
         scheduler (segments.py) and pwrite them into .NAME.part; finished pieces are
         marked in the control file (control.py); a hasher thread follows the contiguous
         done prefix, so sha256 needs no second pass over the file
         single stream: when the server ignores Range or sends no length
      -> size, sha256, validator (validate.py) -> fsync, atomic rename (placement.py)

Failures: a retryable error (drop, stall, 5xx, 429 with Retry-After) costs the connection a
backoff; a redirect target answering 400/401/403/410 means the signed URL expired, so the
origin is resolved again; a remote change (If-Range answered 200, other validators)
restarts from scratch once. Ctrl-C stops the workers, keeps the control file and re-raises
KeyboardInterrupt: the same call resumes.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from ..errors import (
    ChecksumMismatch,
    FetchError,
    NotAModel,
    RateLimited,
    RemoteChanged,
    RemoteError,
    SizeMismatch,
)
from . import placement
from .control import ControlFile, Validators
from .lock import FileLock
from .mirrors import Endpoint, EndpointPool, probe_all, rank
from .segments import Scheduler, Segment
from .settings import FetchSettings
from .throttle import Throttle
from .transport import (
    Expired,
    HostHeaders,
    Retryable,
    SessionFactory,
    finish,
    make_session_factory,
    open_url,
    raise_for_status,
    range_info,
    reader,
)
from .validate import Validator, validator_for

HASH_CHUNK = 4 * 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class FetchProgress:
    name: str
    total: int | None
    done: int
    speed: float        # bytes per second over the last few seconds
    connections: int    # connections moving bytes right now

    @property
    def eta(self) -> float | None:
        if self.total is None or self.speed <= 0:
            return None
        return (self.total - self.done) / self.speed


@dataclass(frozen=True)
class FetchResult:
    path: Path
    size: int
    sha256: str | None       # computed (and checked, when one was expected)
    fetched: int             # bytes this call received from the network
    resumed: int             # bytes already on disk from an earlier run
    reused: bool = False     # the file was already there (another replica fetched it)
    endpoints: tuple[str, ...] = ()


ProgressCallback = Callable[[FetchProgress], None]


class _Changed(Exception):
    """The remote file changed under us: start over."""


def fetch(urls: str | Sequence[str], dest: str | os.PathLike[str], *,
          size: int | None = None, sha256: str | None = None,
          connections: int | None = None, headers: HostHeaders | None = None,
          progress: ProgressCallback | None = None, settings: FetchSettings | None = None,
          session_factory: SessionFactory | None = None,
          validator: Validator | None | bool = True, compute_sha256: bool = False,
          cancel: threading.Event | None = None) -> FetchResult:
    """Download one file from one or more URLs serving the same bytes.

    ``dest`` is the file to create, or an existing folder (the name then comes from
    Content-Disposition or the URL). ``headers`` maps a host name to headers sent only to
    that host (tokens); redirect targets get none of them. ``validator`` is True for the
    default by file extension (safetensors header check, no HTML pages as models), None or
    False for none, or a :class:`Validator`. ``cancel`` stops the download like Ctrl-C.
    """
    settings = settings or FetchSettings()
    if connections is not None:
        settings = settings.model_copy(update={"connections": connections})
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise ValueError("at least one URL is required")
    if sha256 is not None and not _SHA256.match(sha256):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    job = _Job(url_list, Path(dest), size, sha256.lower() if sha256 else None, headers,
               progress, settings, session_factory or make_session_factory(settings),
               validator, compute_sha256 or sha256 is not None, cancel or threading.Event())
    return job.run()


@dataclass
class _Job:
    urls: list[str]
    dest: Path
    size: int | None
    sha256: str | None
    headers: HostHeaders | None
    progress: ProgressCallback | None
    settings: FetchSettings
    factory: SessionFactory
    validator_arg: Validator | None | bool
    want_hash: bool
    cancel: threading.Event
    endpoints: list[Endpoint] = field(default_factory=list)

    # ---- orchestration -----------------------------------------------------------------

    def run(self) -> FetchResult:
        path = self.dest
        if path.is_dir():
            self.endpoints = self._probe()
            name = self._name_from(self.endpoints)
            path = path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = (FileLock(placement.lock_path(path), heartbeat=self.settings.lock_heartbeat,
                         stale_after=self.settings.lock_stale_after)
                if self.settings.lock else None)
        waited = False
        if lock is not None:
            waited = lock.acquire(self.settings.lock_wait, self.cancel)
        try:
            if path.exists():
                reused = self._reuse(path, waited)
                if reused is not None:
                    return reused
            for attempt in range(2):
                if not self.endpoints or attempt:
                    self.endpoints = self._probe()
                try:
                    return _Download(self, path, lock).run()
                except _Changed:
                    placement.control_path(path).unlink(missing_ok=True)
                    placement.part_path(path).unlink(missing_ok=True)
            raise RemoteChanged(f"{self.urls[0]} changed twice during the download",
                                url=self.urls[0])
        finally:
            if lock is not None:
                lock.release()

    def _probe(self) -> list[Endpoint]:
        eps = probe_all(self.urls, self.factory, self.settings, self.headers)
        usable = rank(eps, self.sha256 is not None)
        if not usable:
            err = next((e.error for e in eps if e.error is not None), None)
            if isinstance(err, FetchError):
                raise err
            if isinstance(err, Retryable) and "429" in str(err):
                raise RateLimited(f"{self.urls[0]}: {err}", url=self.urls[0])
            raise RemoteError(f"{self.urls[0]}: {err}", url=self.urls[0]) from err
        return usable

    def _name_from(self, eps: list[Endpoint]) -> str:
        ep = eps[0]
        name = (placement.safe_name(ep.filename) or placement.name_from_url(ep.url())
                or placement.name_from_url(ep.origin))
        if not name:
            raise FetchError(f"cannot tell a file name for {ep.origin}; give a file path")
        return name

    def validator(self, name: str) -> Validator | None:
        if self.validator_arg is True:
            return validator_for(name)
        if self.validator_arg is False or self.validator_arg is None:
            return None
        return self.validator_arg

    def _reuse(self, path: Path, waited: bool) -> FetchResult | None:
        """The final file exists: reuse it when it is the one asked for."""
        have = path.stat().st_size
        if self.size is not None and have != self.size:
            return None
        digest = None
        if self.sha256 is not None:
            digest = _hash_file(path)
            if digest != self.sha256:
                return None
        elif self.size is None and not waited:
            if not self.endpoints:
                self.endpoints = self._probe()
            v = self.endpoints[0].validators
            if v is None or v.size != have:
                return None
        return FetchResult(path, have, digest, 0, have, reused=True)


class _Download:
    """One attempt at one file, from the ranked endpoints."""

    def __init__(self, job: _Job, path: Path, lock: FileLock | None) -> None:
        self.job = job
        self.s = job.settings
        self.path = path
        self.name = path.name
        self.lock = lock
        self.part = placement.part_path(path)
        self.ctl_path = placement.control_path(path)
        self.validator = job.validator(self.name)
        self.pool = EndpointPool(job.endpoints, self.s.demote_after)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.changed = False
        self.received = 0
        self._recv_lock = threading.Lock()
        self.throttle = Throttle(self.s.bandwidth_limit)
        self._responses: dict[int, requests.Response] = {}
        self._speed: deque[tuple[float, int]] = deque(maxlen=64)

    def run(self) -> FetchResult:
        primary = self.pool.endpoints[0]
        if self.validator is not None:
            self.validator.check_content_type(primary.content_type, self.name)
        remote = primary.validators
        if remote is not None and self.job.size is not None and remote.size != self.job.size:
            raise SizeMismatch(
                f"{self.name}: the server offers {remote.size} bytes, expected "
                f"{self.job.size}", url=primary.origin)
        if remote is not None and primary.ranges and remote.size > 0:
            return self._segmented(remote)
        return self._single(primary)

    # ---- segmented download ------------------------------------------------------------

    def _segmented(self, remote: Validators) -> FetchResult:
        size = remote.size
        ctl = ControlFile.load(self.ctl_path)
        if ctl is not None and not (ctl.validators.same_as(remote) and self.part.exists()
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
                ctl = ControlFile.create(self.ctl_path, remote, self.s.piece_size,
                                         self.pool.endpoints[0].origin)
            try:
                return self._run_workers(fd, ctl, size)
            except NotAModel:  # nothing worth resuming: leave nothing behind
                self.part.unlink(missing_ok=True)
                self.ctl_path.unlink(missing_ok=True)
                raise
        finally:
            if fd >= 0:
                os.close(fd)

    def _run_workers(self, fd: int, ctl: ControlFile, size: int) -> FetchResult:
        self.fd, self.ctl, self.size = fd, ctl, size
        sched = self.sched = Scheduler(size, ctl.piece_size, self.s.connections, ctl.done)
        resumed = sched.done_bytes
        self.prefix_cond = threading.Condition()
        self.digest: str | None = None
        self._all_done = threading.Event()
        self._alive = self.s.connections
        workers = [threading.Thread(target=self._worker, args=(i,), daemon=True,
                                    name=f"fetch-{i}") for i in range(self.s.connections)]
        hasher = (threading.Thread(target=self._hasher, daemon=True, name="fetch-hash")
                  if self.job.want_hash else None)
        try:
            for t in [*workers, *([hasher] if hasher else [])]:
                t.start()
            last_sync = time.monotonic()
            while not self._all_done.wait(self.s.progress_interval):
                if self.job.cancel.is_set():
                    raise KeyboardInterrupt
                if self.lock is not None and self.lock.lost.is_set():
                    self._fail(FetchError(f"{self.name}: lost the lock to another process"))
                self._report(size)
                if self.s.fsync and time.monotonic() - last_sync >= self.s.sync_interval:
                    os.fdatasync(fd)
                    ctl.sync()
                    last_sync = time.monotonic()
            if self.changed:
                raise _Changed()
            if self.error is not None:
                raise self.error
            if not sched.complete:
                last = getattr(self, "_last", None)
                raise (self._as_error(last) if last is not None else
                       RemoteError(f"{self.name}: download stopped before the end"))
            if hasher is not None:
                with self.prefix_cond:
                    self.prefix_cond.notify_all()
                hasher.join()
            self._report(size)
        except BaseException:
            self._shutdown(workers, hasher)
            raise
        finally:
            ctl.close()
        return self._finish(fd, size, self.digest, resumed)

    def _shutdown(self, workers: list[threading.Thread], hasher: threading.Thread | None,
                  ) -> None:
        self.stop.set()
        with self.prefix_cond:
            self.prefix_cond.notify_all()
        for resp in list(self._responses.values()):
            _abort(resp)  # wakes a worker blocked in recv
        deadline = time.monotonic() + 5
        for t in [*workers, *([hasher] if hasher else [])]:
            t.join(max(0.0, deadline - time.monotonic()))
        try:
            if self.s.fsync:
                os.fdatasync(self.fd)
                self.ctl.sync()
        except OSError:
            pass
        self.ctl.close()

    def _worker(self, wid: int) -> None:
        session = self.job.factory()
        buf = memoryview(bytearray(self.s.buffer_size))
        attempts = 0
        expiries = 0
        seg = self.sched.take(wid)
        try:
            while seg is not None and not self.stop.is_set():
                if seg.finished:
                    seg = self.sched.take(wid)
                    continue
                ep = self.pool.pick(wid)
                if ep is None:
                    self._fail(self._last_error() or RemoteError("no usable endpoint left"))
                    break
                before = seg.committed
                try:
                    self._stream(session, ep, seg, buf)
                    self.pool.success(ep)
                    attempts = expiries = 0
                except Expired as e:
                    ep.expire(ep.resolved)
                    expiries += 1
                    if expiries > 2:  # a fresh signed URL fails too: not an expiry
                        self.pool.failure(ep, RemoteError(str(e), url=ep.origin), fatal=True)
                except _Changed:
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
                except (Retryable, requests.RequestException, OSError, http.client.HTTPException,
                        ValueError) as e:
                    if self.stop.is_set():
                        break
                    full = (placement.no_space(e, self.name, self.path.parent)
                            if isinstance(e, OSError) else None)
                    if full is not None:
                        self._fail(full)
                        break
                    if seg.committed > before:
                        attempts = 0
                    attempts += 1
                    self.pool.failure(ep, e)
                    if attempts > self.s.retries:
                        self._give_up(wid, e)
                        break
                    delay = e.delay if isinstance(e, Retryable) else None
                    if delay is None:
                        delay = min(self.s.backoff_max,
                                    self.s.backoff_initial * 2 ** (attempts - 1))
                    self.stop.wait(delay)
        finally:
            if seg is not None and not seg.finished:
                self.sched.release(seg)
            session.close()
            with self._recv_lock:
                self._alive -= 1
                if self._alive == 0:
                    self._all_done.set()

    def _stream(self, session: requests.Session, ep: Endpoint, seg: Segment,
                buf: memoryview) -> None:
        """One ranged GET for the rest of ``seg``, written as it arrives."""
        start, end = seg.committed, seg.end
        extra = {"Range": f"bytes={start}-{end - 1}"}
        if ep.if_range:
            extra["If-Range"] = ep.if_range
        opened = open_url(session, ep.url(), self.s, self.job.headers, extra)
        resp = opened.response
        self._responses[threading.get_ident()] = resp
        fully = False
        try:
            raise_for_status(resp, opened.url, ep.origin, self.s)
            ep.update(opened.url)
            info = range_info(resp)
            self._check_identity(ep, resp, info.ranged)
            if not info.ranged or info.start != start:
                raise FetchError(f"{ep.origin} stopped honouring Range requests", url=ep.origin)
            if info.total is not None and info.total != self.size:
                raise _Changed()
            read = reader(resp)
            while not self.stop.is_set():
                want = min(len(buf), seg.end - seg.claimed)
                if want <= 0:
                    break
                n = read(buf[:want])
                if n <= 0:
                    raise Retryable(f"{ep.origin}: connection closed early")
                with self._recv_lock:
                    self.received += n
                if seg.claimed == 0 and self.validator is not None:
                    self.validator.check_start(bytes(buf[:min(n, 4096)]), self.name, self.size)
                offset = seg.claimed
                ours = self.sched.claim(seg, n)
                if ours:
                    os.pwrite(self.fd, buf[:ours], offset)
                    pieces = self.sched.commit(seg, ours)
                    for i in pieces:
                        self.ctl.mark(i)
                    if pieces and self.job.want_hash:
                        with self.prefix_cond:
                            self.prefix_cond.notify_all()
                    self.throttle.consume(ours, self.stop)
                if ours < n:
                    break  # a thief took the rest of this segment
            fully = seg.committed == end
        finally:
            self._responses.pop(threading.get_ident(), None)
            finish(resp, fully)

    def _check_identity(self, ep: Endpoint, resp: requests.Response, ranged: bool) -> None:
        """A 200 to an If-Range request, or other validators on a 206: the file changed."""
        v = ep.validators
        etag, lm = resp.headers.get("etag"), resp.headers.get("last-modified")
        if v is None:
            return
        if (v.etag and etag and etag != v.etag) or (
                v.last_modified and lm and lm != v.last_modified):
            raise _Changed()
        if not ranged and resp.status_code == 200 and ep.if_range:
            raise _Changed()

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

    def _give_up(self, wid: int, error: BaseException) -> None:
        """This connection is out of retries; the download fails when all are."""
        self._gave_up = getattr(self, "_gave_up", 0) + 1
        self._last = error
        if self._gave_up >= self.s.connections:
            self._fail(self._as_error(error))

    def _last_error(self) -> BaseException | None:
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
        session = self.job.factory()
        buf = memoryview(bytearray(self.s.buffer_size))
        attempts = 0
        try:
            while True:
                try:
                    return self._single_attempt(session, ep, buf, known)
                except (Retryable, requests.RequestException, http.client.HTTPException,
                        Expired, OSError) as e:
                    if isinstance(e, FetchError):
                        raise
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

    def _single_attempt(self, session: requests.Session, ep: Endpoint, buf: memoryview,
                        known: int | None) -> FetchResult:
        opened = open_url(session, ep.url(), self.s, self.job.headers)
        resp = opened.response
        fd = -1
        ok = False
        try:
            raise_for_status(resp, opened.url, ep.origin, self.s)
            if self.validator is not None:
                self.validator.check_content_type(resp.headers.get("content-type", ""),
                                                  self.name)
            fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            h = hashlib.sha256() if self.job.want_hash else None
            read = reader(resp)
            done = 0
            self._single_done = 0
            last = time.monotonic()
            while True:
                if self.job.cancel.is_set():
                    raise KeyboardInterrupt
                n = read(buf)
                if n <= 0:
                    break
                if done == 0 and self.validator is not None:
                    self.validator.check_start(bytes(buf[:min(n, 4096)]), self.name, known)
                try:
                    os.write(fd, buf[:n])
                except OSError as e:
                    raise placement.no_space(e, self.name, self.path.parent) or e from None
                if h is not None:
                    h.update(buf[:n])
                done += n
                self.received += n
                self._single_done = done
                self.throttle.consume(n, self.job.cancel)
                if time.monotonic() - last >= self.s.progress_interval:
                    self._report(known)
                    last = time.monotonic()
            if known is not None and done != known:
                raise Retryable(f"{ep.origin}: got {done} of {known} bytes")
            self._report(done)
            result = self._finish(fd, done, h.hexdigest() if h else None, 0)
            ok = True
            return result
        finally:
            finish(resp, False)
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
        return FetchResult(self.path, size, digest, self.received, resumed,
                           endpoints=tuple(e.origin for e in self.pool.healthy()))


def _abort(resp: requests.Response) -> None:
    """Shut the socket down so a thread blocked reading it wakes up at once."""
    raw: Any = resp.raw
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = memoryview(bytearray(HASH_CHUNK))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(buf[:n])
    return h.hexdigest()


def hosts_headers(pairs: Mapping[str, str], hosts: Sequence[str]) -> dict[str, dict[str, str]]:
    """The same headers for each of ``hosts`` (the CLI's ``--header``)."""
    return {h: dict(pairs) for h in hosts}
