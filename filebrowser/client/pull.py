"""The desktop side of transfers: a streaming tus uploader and a Range-resuming downloader.

Both talk through a :class:`~atelier_io.http.Client` (already carrying the
token). State that makes a rerun resume lives in a small
JSON file (:class:`ResumeStore`): for uploads the tus URL of each local file
(keyed by server, path, size, mtime and target), for downloads the ETag the partial
file was started from.

Upload, per file: create (POST) or HEAD the stored URL, then PATCH chunks of
``chunk_size`` bytes, each with ``Upload-Checksum: sha256``; a reader thread reads and
hashes the next chunk while the current one is on the wire. Connection errors, 5xx,
423 and 460 are retried from a fresh HEAD with backoff (a server restart is just a
longer outage); a 409 offset mismatch re-syncs from HEAD.

Download, per file: ``<dest>.atelier-part`` grows with ``Range: bytes=<size>-`` and
``If-Range: <etag>`` (a changed file restarts from 0); the finished file must have
the size the server announced and the same ETag, then it is renamed into place.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from atelier_io.http import Client, ConnectionFailed, Response

TUS = {"Tus-Resumable": "1.0.0"}
PART_SUFFIX = ".atelier-part"
WRITE_PIECE = 16 * 1024
Progress = Callable[[int], None]  # called with bytes newly transferred


class TransferError(Exception):
    """A transfer that failed for good (after retries), with a message for the user."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthError(TransferError):
    """401: the token is wrong or revoked; every other transfer will fail too."""


def _raise_final(r: Response, what: str) -> None:
    if r.status == 401:
        raise AuthError("the server refused the token; run `atelier login` again", 401)
    raise TransferError(f"{what}: {r.message()} (HTTP {r.status})", r.status)


class ResumeStore:
    """A JSON dict on disk, shared by threads; written atomically, mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> Any:
        with self._lock:
            return self._load().get(key)

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            data = self._load()
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)


@dataclass
class Retry:
    """How long to keep trying through outages: ``attempts`` waits, doubling up to ``cap``."""

    attempts: int = 10
    first: float = 0.5
    cap: float = 15.0

    def waits(self) -> Iterator[float]:
        delay = self.first
        for _ in range(self.attempts):
            yield delay
            delay = min(delay * 2, self.cap)


class Throttle:
    """At most ``rate`` bytes per second for one transfer (None: unlimited)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.t0 = time.monotonic()
        self.done = 0

    def __call__(self, n: int) -> None:
        if not self.rate:
            return
        self.done += n
        ahead = self.done / self.rate - (time.monotonic() - self.t0)
        if ahead > 0:
            time.sleep(ahead)


# -- upload ------------------------------------------------------------------------------


@dataclass
class PushResult:
    local: Path
    remote: str
    size: int
    sent: int  # bytes sent in this run (less than size when resumed)
    resumed_from: int


class Pusher:
    def __init__(self, client: Client, store: ResumeStore, *,
                 chunk_size: int = 32 * 1024 * 1024, retry: Retry | None = None,
                 conflict: str = "fail", rate: float | None = None) -> None:
        self.rate = rate
        self.s = client
        self.base = client.base_url
        self.store = store
        self.chunk_size = chunk_size
        self.retry = retry or Retry()
        self.conflict = conflict

    def _key(self, local: Path, folder: str, name: str) -> str:
        st = local.stat()
        return json.dumps(["push", self.base, str(local.resolve()), st.st_size, st.st_mtime_ns,
                           folder, name, self.conflict])

    def _create(self, size: int, folder: str, name: str) -> str:
        meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in
                        (("filename", name), ("folder", folder), ("conflict", self.conflict)))
        r = self.s.post("/api/tus/", headers={
            **TUS, "Upload-Length": str(size), "Upload-Metadata": meta})
        if r.status != 201:
            _raise_final(r, f"cannot start {name}")
        location = str(r.headers["Location"])
        return self.base + location if location.startswith("/") else location

    def _head(self, url: str) -> tuple[int, str | None] | None:
        """(offset, final path if complete), or None if the server forgot the upload."""
        r = self.s.head(url, headers=TUS)
        if r.status in (404, 410):
            return None
        if r.status != 200:
            if r.status >= 500 or r.status == 423:
                raise ConnectionFailed(f"HEAD answered {r.status}")
            _raise_final(r, "cannot resume")
        final = r.headers.get("X-Atelier-Path")
        return int(r.headers["Upload-Offset"]), unquote(final) if final else None

    def push(self, local: Path, folder: str, name: str,
             progress: Progress | None = None) -> PushResult:
        progress = progress or (lambda n: None)
        size = local.stat().st_size
        key = self._key(local, folder, name)
        url = self.store.get(key)
        state = self._with_retry(lambda: self._head(url)) if url else None
        if url is None or state is None:
            url = self._with_retry(lambda: self._create(size, folder, name))
            self.store.set(key, url)
            state = (0, None) if size else self._with_retry(lambda: self._head(url))
            if state is None:
                raise TransferError(f"{name}: the server lost the upload just created")
        offset, final = state
        start = offset
        progress(offset)
        try:
            if final is None and offset < size:
                offset, final = self._send(url, local, size, offset, progress)
        finally:
            if final is not None:
                self.store.set(key, None)
        return PushResult(local, final or f"{folder}/{name}", size, size - start, start)

    def _with_retry(self, fn: Callable[[], Any]) -> Any:
        waits = self.retry.waits()
        while True:
            try:
                return fn()
            except ConnectionFailed as exc:
                delay = next(waits, None)
                if delay is None:
                    raise TransferError(f"the server is unreachable: {exc}") from None
                time.sleep(delay)

    def _send(self, url: str, local: Path, size: int, offset: int,
              progress: Progress) -> tuple[int, str | None]:
        waits = self.retry.waits()
        throttle = Throttle(self.rate)
        # Two buffers, reused: one on the wire while the reader thread fills and hashes the
        # other. A fresh 32 MiB bytes per chunk is a fresh mmap, and on a VM that hands
        # freed memory back to its host every new page costs a host fault (client system
        # time fell from 1.9 s to 1.0 s per 2 GB here).
        buffers = [bytearray(min(self.chunk_size, size - offset)) for _ in range(2)]
        turn = 0
        with open(local, "rb") as f, ThreadPoolExecutor(1) as reader:
            def read(at: int, buf: bytearray) -> tuple[int, memoryview, str]:
                view = memoryview(buf)[:min(self.chunk_size, size - at)]
                got = 0
                while got < len(view):
                    n = os.preadv(f.fileno(), [view[got:]], at + got)
                    if n == 0:
                        raise TransferError(f"{local.name} shrank while being uploaded")
                    got += n
                return at, view, base64.b64encode(hashlib.sha256(view).digest()).decode()

            nxt: Future[tuple[int, memoryview, str]] = reader.submit(read, offset, buffers[0])
            while True:
                at, data, digest = nxt.result()
                if at != offset:  # resynced to another offset: read again
                    nxt = reader.submit(read, offset, buffers[turn])
                    continue
                end = at + len(data)
                turn ^= 1
                if end < size:  # read and hash the next chunk while this one flies
                    nxt = reader.submit(read, end, buffers[turn])
                try:
                    r: Response | None = self.s.patch(url, body=data, headers={
                        **TUS, "Upload-Offset": str(at),
                        "Content-Type": "application/offset+octet-stream",
                        "Upload-Checksum": f"sha256 {digest}"})
                except ConnectionFailed:
                    r = None
                if r is not None and r.status == 204:
                    offset = int(r.headers["Upload-Offset"])
                    progress(offset - at)
                    throttle(offset - at)
                    waits = self.retry.waits()  # progress made: the outage budget resets
                    final = r.headers.get("X-Atelier-Path")
                    if final is not None or offset >= size:
                        return offset, unquote(final) if final else None
                    continue
                if r is not None and r.status == 409 and "Upload-Offset" not in r.headers:
                    _raise_final(r, local.name)  # the name was taken meanwhile
                if r is not None and r.status not in (409, 423, 460) and r.status < 500:
                    _raise_final(r, local.name)
                delay = next(waits, None)
                if delay is None:
                    why = f"HTTP {r.status}" if r is not None else "connection lost"
                    raise TransferError(f"{local.name}: gave up after retries ({why})")
                time.sleep(delay)
                state = self._with_retry(lambda: self._head(url))
                if state is None:
                    raise TransferError(f"{local.name}: the upload expired on the server")
                new_offset, final = state
                progress(new_offset - offset)
                offset = new_offset
                if final is not None or offset >= size:
                    return offset, final
                # the loop's top re-reads when the prefetched chunk is not at ``offset``


# -- download ----------------------------------------------------------------------------


@dataclass
class PullResult:
    remote: str
    local: Path
    size: int
    received: int
    resumed_from: int
    skipped: bool = False


class Puller:
    def __init__(self, client: Client, store: ResumeStore, *, retry: Retry | None = None,
                 block: int = 256 * 1024, rate: float | None = None) -> None:
        self.rate = rate
        self.s = client
        self.base = client.base_url
        self.store = store
        self.retry = retry or Retry()
        self.block = block

    def stat(self, remote: str) -> dict[str, Any]:
        r = self.s.get("/api/fs/stat", params={"path": remote})
        if r.status != 200:
            _raise_final(r, remote)
        result: dict[str, Any] = r.json()
        return result

    def walk(self, folder: str) -> Iterator[dict[str, Any]]:
        """Every file below ``folder`` (entries as the listing returns them)."""
        stack = [folder]
        while stack:
            current = stack.pop()
            cursor = None
            while True:
                params: dict[str, str | int] = {"path": current, "limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                r = self.s.get("/api/fs/list", params=params)
                if r.status != 200:
                    _raise_final(r, current)
                page = r.json()
                for e in page["entries"]:
                    if e["type"] == "dir":
                        stack.append(e["path"])
                    else:
                        yield e
                cursor = page.get("next")
                if not cursor:
                    break

    def pull(self, remote: str, size: int, dest: Path, mtime: float | None = None,
             progress: Progress | None = None) -> PullResult:
        progress = progress or (lambda n: None)
        if dest.is_file() and dest.stat().st_size == size and mtime is not None and \
                abs(dest.stat().st_mtime - mtime) < 1:
            progress(size)
            return PullResult(remote, dest, size, 0, size, skipped=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + PART_SUFFIX)
        key = json.dumps(["pull", self.base, remote, str(dest.resolve())])
        etag = self.store.get(key)
        if etag is None:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        have = part.stat().st_size if part.exists() else 0
        start = have
        progress(have)
        waits = self.retry.waits()
        while True:
            try:
                have, etag, total = self._get(remote, part, have, etag, key, progress)
                break
            except (ConnectionFailed, _Retryable) as exc:
                delay = next(waits, None)
                if delay is None:
                    raise TransferError(f"{remote}: gave up after retries ({exc})") from None
                time.sleep(delay)
                new = part.stat().st_size if part.exists() else 0
                progress(new - have)
                have = new
                etag = self.store.get(key)
        if have != total:
            raise TransferError(f"{remote}: got {have} bytes, the server announced {total}")
        final = self.s.head("/api/fs/download", params={"path": remote})
        if final.status == 200 and final.headers.get("ETag") != etag:
            self.store.set(key, None)
            part.unlink()
            raise TransferError(f"{remote}: the file changed on the server during the download")
        os.replace(part, dest)
        if mtime is not None:
            os.utime(dest, (mtime, mtime))
        self.store.set(key, None)
        return PullResult(remote, dest, total, total - start, start)

    def _get(self, remote: str, part: Path, have: int, etag: str | None, key: str,
             progress: Progress) -> tuple[int, str, int]:
        headers = {}
        if have and etag:
            headers = {"Range": f"bytes={have}-", "If-Range": etag}
        headers["Accept-Encoding"] = "identity"
        with self.s.get("/api/fs/download", params={"path": remote}, headers=headers,
                        stream=True) as r:
            if r.status == 416:  # nothing left to send: the part is complete
                total = int(r.headers.get("Content-Range", "*/0").rpartition("/")[2])
                return have, etag or "", total
            if r.status >= 500:
                raise _Retryable(f"HTTP {r.status}")
            if r.status not in (200, 206):
                _raise_final(r, remote)
            new_etag = r.headers.get("ETag", "")
            if r.status == 200:  # a fresh start (or the file changed): from byte 0
                progress(-have)
                have = 0
                total = int(r.headers.get("Content-Length", "-1"))
                mode = "wb"
            else:
                total = int(str(r.headers["Content-Range"]).rpartition("/")[2])
                mode = "ab"
            self.store.set(key, new_etag)
            throttle = Throttle(self.rate)
            read = r.readinto
            buf = memoryview(bytearray(self.block))
            piece = WRITE_PIECE
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC |
                         (os.O_APPEND if mode == "ab" else os.O_TRUNC), 0o644)
            try:
                while n := read(buf):
                    # written in 16 KiB pieces, as curl does: one write(2) of 128 KiB or
                    # more asks the page cache for large folios, and after a cache drop
                    # this VM spent 4-10x the system time on them (1 GB: 0.7 s against
                    # 1.7-4.8 s for 128 KiB writes)
                    for at in range(0, n, piece):
                        view = buf[at:min(n, at + piece)]
                        while view:
                            view = view[os.write(fd, view):]
                    have += n
                    progress(n)
                    throttle(n)
            finally:
                os.close(fd)
            return have, new_etag, total


class _Retryable(Exception):
    pass
