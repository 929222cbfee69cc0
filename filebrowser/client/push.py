"""``atelier push`` of one file: a streaming tus upload, verified end to end.

Per file: create the upload (POST, with ``Upload-Metadata`` ``checksum xxh128`` so the
server hashes it as it arrives) or HEAD the URL stored from an interrupted run; then

    PATCH [offset, size - TAIL)   one streaming request (or ``chunk_size`` pieces): the
                                  file read in BLOCK steps, each hashed and sent before
                                  the next is read; no per-request checksum
    PATCH [size - TAIL, size)     the last bytes, held in memory, with
                                  ``X-Atelier-File-Checksum: xxh128 <digest of the file>``

The server places the file only if its own hash of every byte it stored matches the
digest, and echoes its digest in the last answer, which must match too. A mismatch
fails loudly: the server has discarded the upload, and a rerun starts afresh.

How this shape was found (1 GB on loopback, 2 cores shared by client and server):
- one 32 MiB PATCH at a time with a sha256 each waited for each answer (the server
  flushes, verifies and commits before answering), a bubble per chunk, and sha256 on
  both sides cost 1.6 CPU s per GB: 0.5x to 0.7x curl;
- one streaming PATCH, blake3 in a reader thread over 8 MiB blocks: 0.66x to 0.78x.
  blake3 costs 0.16 CPU s per GB on each side; XXH3-128 0.04 (``xxh128``: rsync's file
  checksum since 3.2; it catches damage in transit, which is its job here; a server
  that lies could echo any digest);
- sendfile(2) with the hash in its own thread raised the server's CPU per GB; 8 MiB
  blocks go through memory three times (read, hash, send). A 1 MiB block read, hashed
  and sent by one thread stays in the CPU's cache: as fast as curl's upload without
  the checksum.

A connection error, 5xx, 423 or 409 waits (doubling), asks the server's offset with a
HEAD and goes on from there: the hash is rebuilt from the local file up to that offset
(the stream hashes ahead of what the server stored). A server restart is a longer
outage; a client killed with -9 resumes on the next run from the stored URL.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import blake3
import xxhash

from atelier_io.http import Client, ConnectionFailed, Response

from .transfers import TUS, Progress, ResumeStore, Retry, Throttle, TransferError, raise_final

ALGORITHM = "xxh128"
# what a resumed upload may have been started with (blake3: clients before xxh128)
HASHERS: dict[str, Callable[[], Any]] = {"xxh128": xxhash.xxh3_128, "blake3": blake3.blake3}
FILE_CHECKSUM = "X-Atelier-File-Checksum"
BLOCK = 1024 * 1024         # read, hashed and sent per step
TAIL = 1024 * 1024          # the completing PATCH: small, so its headers can carry the digest
OFFSET_TYPE = "application/offset+octet-stream"


@dataclass
class PushResult:
    local: Path
    remote: str
    size: int
    sent: int  # bytes sent in this run (less than size when resumed)
    resumed_from: int


class _Retry(Exception):
    """The last request failed in a way worth retrying after a HEAD."""


class Pusher:
    def __init__(self, client: Client, store: ResumeStore, *, chunk_size: int = 0,
                 retry: Retry | None = None, conflict: str = "fail",
                 rate: float | None = None) -> None:
        self.rate = rate
        self.s = client
        self.base = client.base_url
        self.store = store
        self.chunk_size = chunk_size  # the most bytes one PATCH carries (0: no limit)
        self.retry = retry or Retry()
        self.conflict = conflict
        # with a rate limit, smaller steps: the limit is kept per step
        self.block = BLOCK if not rate else int(min(BLOCK, max(64 * 1024, rate / 4)))

    def _key(self, local: Path, folder: str, name: str) -> str:
        st = local.stat()
        return json.dumps(["push", self.base, str(local.resolve()), st.st_size, st.st_mtime_ns,
                           folder, name, self.conflict])

    def _create(self, size: int, folder: str, name: str) -> str:
        meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in
                        (("filename", name), ("folder", folder), ("conflict", self.conflict),
                         ("checksum", ALGORITHM)))
        r = self.s.post("/api/tus/", headers={
            **TUS, "Upload-Length": str(size), "Upload-Metadata": meta})
        if r.status != 201:
            raise_final(r, f"cannot start {name}")
        location = str(r.headers["Location"])
        return self.base + location if location.startswith("/") else location

    def _head(self, url: str) -> tuple[int, str | None, str] | None:
        """(offset, final path if complete, the checksum algorithm the upload was started
        with), or None if the server forgot the upload."""
        r = self.s.head(url, headers=TUS)
        if r.status in (404, 410):
            return None
        if r.status != 200:
            if r.status >= 500 or r.status == 423:
                raise ConnectionFailed(f"HEAD answered {r.status}")
            raise_final(r, "cannot resume")
        final = r.headers.get("X-Atelier-Path")
        algo = _metadata(r.headers.get("Upload-Metadata") or "").get("checksum", ALGORITHM)
        return (int(r.headers["Upload-Offset"]), unquote(final) if final else None,
                algo if algo in HASHERS else ALGORITHM)

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
            state = (0, None, ALGORITHM) if size else \
                self._with_retry(lambda: self._head(url))
            if state is None:
                raise TransferError(f"{name}: the server lost the upload just created")
        offset, final, algo = state
        start = offset
        progress(offset)
        try:
            if final is None and offset < size:
                final = self._send(url, local, size, offset, progress, algo)
        except TransferError as exc:
            if exc.status == 460:  # the server discarded it: the next run starts afresh
                self.store.set(key, None)
            raise
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

    # -- sending -----------------------------------------------------------------------

    def _send(self, url: str, local: Path, size: int, offset: int,
              progress: Progress, algo: str) -> str:
        """Send [offset, size); the final path once the server has placed the file."""
        before = local.stat()
        tail = max(0, size - TAIL)
        throttle = Throttle(self.rate)
        reported = offset  # what progress() has been told

        def sent(n: int) -> None:
            nonlocal reported
            reported += n
            progress(n)
            throttle(n)

        waits = self.retry.waits()
        # One buffer, reused: a fresh bytes object per step would be fresh memory, and on
        # a VM that hands freed memory back to its host every new page costs a host fault.
        buf = memoryview(bytearray(max(1, min(self.block, size))))
        with open(local, "rb") as f:
            hasher = _hash_upto(f.fileno(), offset, buf, local, algo)
            exact: int | None = offset  # the hash covers [0, exact); None: it ran ahead
            while True:
                try:
                    if offset < tail:
                        stop = tail if not self.chunk_size else \
                            min(tail, offset + self.chunk_size)
                        exact = None
                        self._stream(url, f.fileno(), offset, stop, hasher, buf, local, sent)
                        exact = offset = stop
                        waits = self.retry.waits()  # progress made: the outage budget resets
                        continue
                    if (local.stat().st_size, local.stat().st_mtime_ns) != \
                            (before.st_size, before.st_mtime_ns):
                        with contextlib.suppress(ConnectionFailed):
                            self.s.request("DELETE", url, headers=TUS)
                        raise TransferError(f"{local.name} changed while being uploaded; "
                                            "run the command again")
                    final = self._finish(url, f.fileno(), offset, size, hasher, local,
                                         algo)
                    progress(size - reported)
                    return final
                except _Retry as exc:
                    delay = next(waits, None)
                    if delay is None:
                        raise TransferError(f"{local.name}: gave up after retries ({exc})") \
                            from None
                    time.sleep(delay)
                state = self._with_retry(lambda: self._head(url))
                if state is None:
                    raise TransferError(f"{local.name}: the upload expired on the server")
                offset, final_path, _ = state
                progress(offset - reported)
                reported = offset
                if final_path is not None:
                    return final_path  # placed: the server checked the digest we sent
                if exact != offset:  # the stream hashed ahead of what the server stored
                    hasher = _hash_upto(f.fileno(), offset, buf, local, algo)
                    exact = offset

    def _stream(self, url: str, fd: int, start: int, stop: int, hasher: Any,
                buf: memoryview, local: Path, sent: Progress) -> None:
        body = _blocks(fd, start, stop, hasher, buf, local, sent)
        try:
            r = self.s.patch(url, body=body, headers={
                **TUS, "Upload-Offset": str(start), "Content-Type": OFFSET_TYPE,
                "Content-Length": str(stop - start)})
        except ConnectionFailed as exc:
            raise _Retry(str(exc)) from None
        finally:
            body.close()
        _check(r, local)
        if int(r.headers["Upload-Offset"]) != stop:
            raise _Retry(f"the server stored up to {r.headers['Upload-Offset']}, not {stop}")

    def _finish(self, url: str, fd: int, offset: int, size: int, hasher: Any,
                local: Path, algo: str) -> str:
        """The last bytes with the whole file's digest: the server places the file only
        if its hash of what it stored matches."""
        data = _read(fd, offset, size - offset, local)
        whole = hasher.copy()  # a failed attempt must not move the running hash
        whole.update(data)
        digest = f"{algo} {base64.b64encode(whole.digest()).decode()}"
        try:
            r = self.s.patch(url, body=data, headers={
                **TUS, "Upload-Offset": str(offset), "Content-Type": OFFSET_TYPE,
                FILE_CHECKSUM: digest})
        except ConnectionFailed as exc:
            raise _Retry(str(exc)) from None
        _check(r, local)
        final = r.headers.get("X-Atelier-Path")
        if final is None:
            raise _Retry("the server did not complete the upload")
        echoed = r.headers.get(FILE_CHECKSUM)
        if echoed != digest:
            raise TransferError(
                f"{local.name}: the server did not confirm the file's checksum "
                f"(sent {digest}, got {echoed}); check {unquote(final)}", 460)
        return unquote(final)


def _check(r: Response, local: Path) -> None:
    if r.status == 204:
        return
    if r.status == 460:
        raise TransferError(f"{local.name}: {r.message()}; run the command again to "
                            "upload it afresh", 460)
    if r.status == 409 and "Upload-Offset" not in r.headers:
        raise_final(r, local.name)  # the name was taken meanwhile
    if r.status in (409, 423) or r.status >= 500:
        raise _Retry(f"HTTP {r.status}")
    raise_final(r, local.name)


def _read(fd: int, at: int, n: int, local: Path, into: memoryview | None = None) -> memoryview:
    view = into[:n] if into is not None else memoryview(bytearray(n))
    got = 0
    while got < n:
        k = os.preadv(fd, [view[got:]], at + got)
        if k == 0:
            raise TransferError(f"{local.name} shrank while being uploaded")
        got += k
    return view


def _metadata(header: str) -> dict[str, str]:
    """tus ``Upload-Metadata`` (``key base64,...``); what does not decode is left out."""
    out = {}
    for pair in header.split(","):
        key, _, value = pair.strip().partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = base64.b64decode(value, validate=True).decode()
    return out


def _hash_upto(fd: int, stop: int, buf: memoryview, local: Path, algo: str) -> Any:
    """The hash of the file's bytes [0, stop) (a resumed upload goes on from there)."""
    hasher = HASHERS[algo]()
    at = 0
    while at < stop:
        n = min(len(buf), stop - at)
        hasher.update(_read(fd, at, n, local, buf))
        at += n
    return hasher


def _blocks(fd: int, start: int, stop: int, hasher: Any, buf: memoryview, local: Path,
            sent: Progress) -> Generator[memoryview, None, None]:
    """The bytes [start, stop) in steps of ``buf``: each read, hashed and sent before the
    next is read, so a step goes from the page cache to the socket while it is still in
    the CPU's cache. ``sent`` hears of each step once it is on its way."""
    at = start
    while at < stop:
        view = _read(fd, at, min(len(buf), stop - at), local, buf)
        hasher.update(view)
        yield view
        at += len(view)
        sent(len(view))
