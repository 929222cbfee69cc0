"""``atelier pull`` of one file: a Range-resuming download.

``<dest>.atelier-part`` grows with ``Range: bytes=<size>-`` and ``If-Range: <etag>`` (a
changed file restarts from 0); the finished file must have the size the server
announced and the same ETag as a last HEAD reports (a file rewritten in place while it
was sent fails), then it is renamed into place.

The body is read into one reused 256 KiB buffer and written in 16 KiB pieces, as curl
writes. splice(2) from the socket into the file (no copy through the process) was the
way until this session: on this VM a quarter of its 1 GB runs fell to 0.35x-0.8x of
curl's rate, and with 16 KiB file writes still one in three, while this loop stayed
at 0.93x-1.25x over 22 runs (``bench/transfer.py --sections download``). A single
file needs no stat first: the GET's own headers say its size, ETag and date, and a
folder answers 400, after which the caller lists it (:meth:`Puller.stat`, :meth:`walk`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from email.utils import mktime_tz, parsedate_tz  # already loaded by http.client
from pathlib import Path
from typing import Any, NamedTuple

from atelier_io.http import Client, ConnectionFailed

from .transfers import Progress, ResumeStore, Retry, Throttle, TransferError, raise_final

PART_SUFFIX = ".atelier-part"
WRITE_PIECE = 16 * 1024


class PullResult(NamedTuple):
    remote: str
    local: Path
    size: int
    received: int
    resumed_from: int
    skipped: bool = False


class IsFolder(TransferError):
    """The path asked for is a folder (the download answered 400): list it instead."""


class _Retryable(Exception):
    pass


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
            raise_final(r, remote)
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
                    raise_final(r, current)
                page = r.json()
                for e in page["entries"]:
                    if e["type"] == "dir":
                        stack.append(e["path"])
                    else:
                        yield e
                cursor = page.get("next")
                if not cursor:
                    break

    def pull(self, remote: str, size: int | None, dest: Path, mtime: float | None = None,
             progress: Progress | None = None,
             on_size: Callable[[int], None] | None = None) -> PullResult:
        """Download ``remote`` to ``dest``. ``size`` and ``mtime`` (from a listing) let a
        file already there be skipped; without them the GET says what they are, and
        ``on_size`` hears the size. A folder raises :class:`IsFolder`."""
        progress = progress or (lambda n: None)
        if size is not None and dest.is_file() and dest.stat().st_size == size and \
                mtime is not None and abs(dest.stat().st_mtime - mtime) < 1:
            progress(size)
            return PullResult(remote, dest, size, 0, size, skipped=True)
        part = dest.with_name(dest.name + PART_SUFFIX)
        key = json.dumps(["pull", self.base, remote, str(dest.resolve())])
        etag = self.store.get(key)
        if etag is None:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        have = part.stat().st_size if etag is not None and part.exists() else 0
        start = have
        progress(have)
        waits = self.retry.waits()
        while True:
            try:
                have, etag, total, modified = self._get(remote, dest, part, have, etag, key,
                                                        progress, on_size)
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
        mtime = mtime if mtime is not None else modified
        if mtime is not None:
            os.utime(dest, (mtime, mtime))
        self.store.set(key, None)
        return PullResult(remote, dest, total, total - start, start)

    def _get(self, remote: str, dest: Path, part: Path, have: int, etag: str | None,
             key: str, progress: Progress, on_size: Callable[[int], None] | None,
             ) -> tuple[int, str, int, float | None]:
        """One GET from ``have`` on: (bytes now in the part file, ETag, total, mtime)."""
        headers = {"Accept-Encoding": "identity"}
        if have and etag:
            headers |= {"Range": f"bytes={have}-", "If-Range": etag}
        with self.s.get("/api/fs/download", params={"path": remote}, headers=headers,
                        stream=True) as r:
            if r.status == 416:  # nothing left to send: the part is complete
                total = int(r.headers.get("Content-Range", "*/0").rpartition("/")[2])
                return have, etag or "", total, None
            if r.status >= 500:
                raise _Retryable(f"HTTP {r.status}")
            if r.status == 400 and not have:
                r.read()
                raise IsFolder(f"{remote}: {r.message()}", 400)
            if r.status not in (200, 206):
                raise_final(r, remote)
            new_etag = r.headers.get("ETag", "")
            if r.status == 200:  # a fresh start (or the file changed): from byte 0
                progress(-have)
                have = 0
                total = int(r.headers.get("Content-Length", "-1"))
            else:
                total = int(str(r.headers["Content-Range"]).rpartition("/")[2])
            if on_size is not None:
                on_size(total)
            date = parsedate_tz(r.headers.get("Last-Modified", ""))
            modified = float(mktime_tz(date)) if date else None
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.store.set(key, new_etag)
            throttle = Throttle(self.rate)

            def step(n: int) -> None:
                progress(n)
                throttle(n)

            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC |
                         (os.O_TRUNC if have == 0 else 0), 0o644)
            try:
                os.lseek(fd, have, os.SEEK_SET)
                have += self._copy(r.readinto, fd, step)
            finally:
                os.close(fd)
            return have, new_etag, total, modified

    def _copy(self, read: Callable[[memoryview], int], fd: int, step: Progress) -> int:
        buf = memoryview(bytearray(self.block))
        piece = WRITE_PIECE
        got = 0
        while n := read(buf):
            # written in 16 KiB pieces, as curl does: one write(2) of 128 KiB or more asks
            # the page cache for large folios, and after a cache drop this VM spent 4-10x
            # the system time on them (1 GB: 0.7 s against 1.7-4.8 s for 128 KiB writes)
            for at in range(0, n, piece):
                view = buf[at:min(n, at + piece)]
                while view:
                    view = view[os.write(fd, view):]
            got += n
            step(n)
        return got
