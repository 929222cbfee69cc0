"""File hashes A1111 shows, computed once per file version and kept in the database.

    sha256     of the whole file; ``[:10]`` is the checkpoint "short hash" (Civitai AutoV2)
               that infotext calls ``Model hash`` and ``/sdapi/v1/sd-models`` calls ``hash``
    addnet     sha256 of a safetensors file's tensor data only (after the header), the
               LoRA hash A1111 writes as ``Lora hashes: "name: <addnet[:12]>"`` (AutoV3)
    legacy     the pre-2023 ``model hash``: sha256 of 64 KiB at offset 1 MiB, ``[:8]``

A row is keyed by the real path and valid while the file's size and mtime are the same,
so a replaced file is hashed again and every replica sharing the database (PostgreSQL)
reuses one reading. Hashing a 6.5 GB checkpoint reads it all, so it happens once, off
the request path: ``warm`` starts it in the background when a request is submitted, and
the job asks ``get`` after the model is loaded (its file is then in the page cache). A
per-path lock makes concurrent callers wait for the one reading instead of repeating it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import struct
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from . import db

log = logging.getLogger(__name__)
CHUNK = 1 << 20


@dataclass(frozen=True)
class FileHashes:
    sha256: str
    addnet: str | None
    legacy: str | None

    @property
    def short(self) -> str:
        return self.sha256[:10]

    @property
    def addnet_short(self) -> str | None:
        return self.addnet[:12] if self.addnet else None


def compute(path: Path) -> FileHashes:
    """Read the file once, feeding both digests (stdlib; runs on a worker thread)."""
    full = hashlib.sha256()
    data = hashlib.sha256() if path.suffix == ".safetensors" else None
    legacy = None
    with open(path, "rb") as f:
        skip = 0
        if data is not None:
            head = f.read(8)
            full.update(head)
            if len(head) == 8:
                skip = struct.unpack("<Q", head)[0]
            offset = 8
        else:
            offset = 0
        while chunk := f.read(CHUNK):
            full.update(chunk)
            if data is not None:
                start = max(0, 8 + skip - offset)
                if start < len(chunk):
                    data.update(chunk[start:])
            offset += len(chunk)
        try:  # A1111's model_hash(): 64 KiB from offset 1 MiB
            f.seek(0x100000)
            legacy = hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
        except OSError:
            legacy = None
    return FileHashes(full.hexdigest(), data.hexdigest() if data is not None else None, legacy)


class HashStore:
    def __init__(self, engine: sa.Engine, *, workers: int = 1) -> None:
        self.engine = engine
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hash")
        self._pending: dict[str, Future[FileHashes | None]] = {}

    @staticmethod
    def _key(path: Path) -> tuple[str, int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return os.path.realpath(path), st.st_size, st.st_mtime_ns

    def lookup(self, path: Path) -> FileHashes | None:
        """The stored hashes if the file has not changed since; never reads the file."""
        key = self._key(path)
        if key is None or not Path(key[0]).is_file():
            return None
        t = db.file_hashes
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.path == key[0])).first()
        if row is None or (row.size, row.mtime_ns) != key[1:]:
            return None
        return FileHashes(row.sha256, row.addnet, row.legacy)

    def get(self, path: Path) -> FileHashes | None:
        """Stored hashes, or compute and store them (None for folders and missing files)."""
        hit = self.lookup(path)
        if hit is not None:
            return hit
        key = self._key(path)
        if key is None or not Path(key[0]).is_file():
            return None
        with self._guard:
            lock = self._locks.setdefault(key[0], threading.Lock())
        with lock:
            hit = self.lookup(path)  # another thread may have finished meanwhile
            if hit is not None:
                return hit
            hashes = compute(Path(key[0]))
            if self._key(path) != key:
                return hashes  # changed while reading: use it, do not store it
            self._store(key, hashes)
            return hashes

    def _store(self, key: tuple[str, int, int], h: FileHashes) -> None:
        t = db.file_hashes
        row = {"size": key[1], "mtime_ns": key[2], "sha256": h.sha256, "addnet": h.addnet,
               "legacy": h.legacy, "computed_at": dt.datetime.now(dt.UTC)}
        with self.engine.begin() as conn:
            done = conn.execute(t.update().where(t.c.path == key[0]).values(**row)).rowcount
            if not done:
                try:
                    conn.execute(t.insert().values(path=key[0], **row))
                except sa.exc.IntegrityError:  # another replica inserted it first
                    pass

    def warm(self, path: Path) -> Future[FileHashes | None] | None:
        """Start hashing in the background unless already known or under way."""
        if not path.is_file() or self.lookup(path) is not None:
            return None
        real = os.path.realpath(path)
        with self._guard:
            fut = self._pending.get(real)
            if fut is not None and not fut.done():
                return fut
            fut = self._pool.submit(self._warm, path)
            self._pending[real] = fut
        return fut

    def _warm(self, path: Path) -> FileHashes | None:
        try:
            return self.get(path)
        except OSError as exc:
            log.info("hashing %s skipped: %s", path, exc)
            return None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
