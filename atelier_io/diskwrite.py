"""Upload bodies to disk: batched off the event loop, big files past the page cache.

:func:`receive_into` gathers an ASGI request body into ~8 MiB batches and hands each
to a worker thread while the next one arrives, so the loop never waits on the disk
and pays one thread hop per batch, not per 64 KiB chunk. tus PATCH and WebDAV PUT
both use it.

:class:`Appender` puts those batches into the file. With direct I/O it copies them
into a reused, page-aligned buffer and writes whole 4 KiB blocks with ``O_DIRECT``;
the last partial block of a request goes through the page cache as usual. Measured
on this project's VM for 2 GB after a cache drop: buffered writes and fsync 400 MB/s
and 3.9 s of system CPU, the same bytes through ``O_DIRECT`` 1070 MB/s and 0.6 s. A
buffered write allocates a page-cache page per 4 KiB and fills the cache with a file
nobody reads yet, evicting the models the WebUI keeps warm; object stores (MinIO)
write large objects with ``O_DIRECT`` for the same two reasons.

``upload_direct_io`` chooses: ``auto`` uses it on local block-device filesystems
(ext4, xfs, btrfs, f2fs) for uploads of at least 16 MiB and never on network or FUSE
mounts, whose ``O_DIRECT`` semantics and speed vary; ``on`` tries it everywhere (a
filesystem that refuses falls back to buffered writes); ``off`` never uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mmap
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import ClientDisconnect, Request

BATCH = 8 * 1024 * 1024      # bytes gathered per worker-thread write
BLOCK = 4096                 # O_DIRECT alignment of offsets, lengths and memory
DIRECT_MIN = 16 * 1024 * 1024
LOCAL_FILESYSTEMS = frozenset({"ext4", "ext3", "ext2", "xfs", "btrfs", "f2fs"})


# -- receiving -----------------------------------------------------------------------


async def receive_into(request: Request, write: Callable[[list[bytes]], None]) -> bool:
    """Stream the body into ``write`` (called in a worker thread, one batch at a time);
    False if the client went away before the end (what arrived was written)."""
    loop = asyncio.get_running_loop()
    pending: list[bytes] = []
    size = 0
    writing: asyncio.Future[None] | None = None
    complete = True
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            pending.append(chunk)
            size += len(chunk)
            if size >= BATCH:
                if writing is not None:
                    await writing
                writing = loop.run_in_executor(None, write, pending)
                pending, size = [], 0
    except ClientDisconnect:
        complete = False
    finally:
        if writing is not None:
            await writing
    if pending:
        await loop.run_in_executor(None, write, pending)
    return complete


# -- choosing --------------------------------------------------------------------------

_fs_types: dict[int, str] = {}


def filesystem_type(path: Path) -> str:
    """The filesystem type of the mount holding ``path`` (from /proc/self/mountinfo)."""
    dev = os.stat(path).st_dev
    known = _fs_types.get(dev)
    if known is not None:
        return known
    want = f"{os.major(dev)}:{os.minor(dev)}"
    found = "unknown"
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[2] == want and " - " in line:
                found = line.split(" - ", 1)[1].split()[0]
                break
    _fs_types[dev] = found
    return found


def use_direct(mode: str, folder: Path, expected: int | None) -> bool:
    """Whether an upload of ``expected`` more bytes into ``folder`` should use O_DIRECT."""
    if mode == "off" or not hasattr(os, "O_DIRECT"):
        return False
    if mode == "on":
        return True
    return (expected or 0) >= DIRECT_MIN and filesystem_type(folder) in LOCAL_FILESYSTEMS


# -- writing ---------------------------------------------------------------------------


class _Buffers:
    """Page-aligned 8 MiB buffers, reused: a fresh mapping per upload would be fresh
    pages, each one a page fault (and on a VM that returns free memory to its host, a
    host fault). At most ``keep`` idle buffers stay mapped."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.idle: list[mmap.mmap] = []
        self.lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self.lock:
            if self.idle:
                return self.idle.pop()
        return mmap.mmap(-1, BATCH + BLOCK)  # anonymous maps are page-aligned

    def give(self, buf: mmap.mmap) -> None:
        with self.lock:
            if len(self.idle) < self.keep:
                self.idle.append(buf)
                return
        buf.close()


BUFFERS = _Buffers()


class DiskFull(OSError):
    """The disk (or the user's filesystem quota) is full; the services answer 507."""

    def __init__(self, message: str = "the disk is full") -> None:
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Appender:
    """Appends to the open file ``fd`` from byte ``offset`` on (one thread at a time).

    ``written`` counts the bytes accepted; after :meth:`flush` they are all in the file.
    A full disk raises :class:`DiskFull`; the caller truncates or keeps.
    """

    def __init__(self, path: Path, fd: int, offset: int, direct: bool) -> None:
        self.fd = fd
        self.written = 0
        self.dfd: int | None = None
        self.buf: mmap.mmap | None = None
        if direct:
            with contextlib.suppress(OSError):  # EINVAL: this filesystem has no O_DIRECT
                self.dfd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
        if self.dfd is not None:
            self.buf = BUFFERS.take()
            self.view = memoryview(self.buf)
            # The buffer starts at the block boundary below ``offset``: the block's first
            # bytes are read back so the first direct write rewrites them unchanged.
            self.base = offset - offset % BLOCK
            self.fill = offset - self.base
            if self.fill:
                self._read_exact(self.view[:self.fill], self.base)
        else:
            os.lseek(fd, offset, os.SEEK_SET)

    @property
    def direct(self) -> bool:
        return self.dfd is not None

    def write(self, chunks: list[bytes]) -> None:
        try:
            for i, c in enumerate(chunks):
                if self.dfd is None:
                    self._writev(chunks[i:])
                    break
                self._copy(memoryview(c))
        except OSError as exc:
            if _full(exc):
                raise DiskFull() from None
            raise
        self.written += sum(len(c) for c in chunks)

    def flush(self) -> None:
        """Write what the buffer holds: whole blocks direct, the rest through the cache."""
        if self.dfd is None or self.fill == 0:
            return
        try:
            whole = self.fill - self.fill % BLOCK
            if whole:
                self._write_direct(whole)
                if self.dfd is None:
                    return  # fell back to buffered writes, which took everything
            rest = self.fill - whole
            if rest:
                self._pwrite(self.fd, self.view[whole:self.fill], self.base + whole)
                # keep the partial block at the buffer's head: later writes stay aligned
                self.view[:rest] = self.view[whole:self.fill]
            self.base += whole
            self.fill = rest
        except OSError as exc:
            if _full(exc):
                raise DiskFull() from None
            raise

    def close(self) -> None:
        if self.dfd is not None:
            os.close(self.dfd)
            self.dfd = None
        if self.buf is not None:
            self.view.release()
            BUFFERS.give(self.buf)
            self.buf = None

    # -- internals -------------------------------------------------------------------

    def _writev(self, chunks: list[Any]) -> None:
        view = chunks
        while view:
            done = os.writev(self.fd, view[:1024])
            # drop what was written; keep a partially written buffer's tail
            while view and done >= len(view[0]):
                done -= len(view[0])
                view = view[1:]
            if view and done:
                view = [memoryview(view[0])[done:], *view[1:]]

    def _copy(self, data: memoryview) -> None:
        while data:
            n = min(len(data), BATCH - self.fill)
            self.view[self.fill:self.fill + n] = data[:n]
            self.fill += n
            data = data[n:]
            if self.fill == BATCH:
                self._write_direct(BATCH)
                if self.dfd is None:  # fell back: the rest of this chunk, buffered
                    if data:
                        self._writev([data])
                    return
                self.base += BATCH
                self.fill = 0

    def _write_direct(self, length: int) -> None:
        """Write the buffer's first ``length`` bytes (whole blocks) at ``base``. If the
        filesystem refuses direct I/O (EINVAL) or writes short, everything the buffer
        holds goes through the page cache instead, and so does every later write."""
        assert self.dfd is not None
        done = 0
        while done < length:
            try:
                n = os.pwrite(self.dfd, self.view[done:length], self.base + done)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                n = 0
            if n > 0 and n % BLOCK == 0:
                done += n
                continue
            done += max(n, 0)
            self._pwrite(self.fd, self.view[done:self.fill], self.base + done)
            os.lseek(self.fd, self.base + self.fill, os.SEEK_SET)
            self.close()
            return

    @staticmethod
    def _pwrite(fd: int, data: memoryview, at: int) -> None:
        while data:
            n = os.pwrite(fd, data, at)
            data, at = data[n:], at + n

    def _read_exact(self, into: memoryview, at: int) -> None:
        got = 0
        while got < len(into):
            n = os.preadv(self.fd, [into[got:]], at + got)
            if n == 0:
                raise OSError(errno.EIO, "the partial file is shorter than its offset")
            got += n
