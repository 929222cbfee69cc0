"""Resumable uploads, tus 1.0.0: state in the database, bytes in a hidden partial file.

Protocol (tus.io/protocols/resumable-upload, 1.0.0) as served under ``/api/tus/``:
core (HEAD, PATCH, OPTIONS, ``Tus-Resumable`` on every answer, 409 on an offset
mismatch, 412 on another version) and the extensions creation, creation-with-upload,
creation-defer-length, termination, checksum (sha1 as the spec requires, plus
sha256; a bad chunk answers 460 and is discarded) and expiration (``Upload-Expires``,
sliding: every accepted PATCH extends it). ``Upload-Metadata`` carries ``filename``
(or ``name``), ``folder`` (the target folder, created if missing; without it, the
caller's home ``users/<name>``) and ``conflict``
(``fail`` | ``rename`` | ``overwrite``, default ``fail``).

On disk, in the target folder (same filesystem, so the final rename is atomic)::

    <folder>/.atelier-tmp-tus-<id>.part    bytes received so far; hidden from listings,
                                           and no model extension for a WebUI to load
    <folder>/<name>                        appears only after the last byte: fsync,
                                           os.link (fail/rename) or os.replace, fsync dir

The partial file's size is the offset (what survived a kill -9 or a power cut is
what the next HEAD reports); the row in ``tus_uploads`` keeps the rest and a cached
offset. A PATCH that carries a checksum first records ``verify_from`` (its start):
if the process dies before the chunk is verified, the next access cuts the file back
to it, so unverified bytes never count. One PATCH at a time per upload: an in-process
set plus ``flock`` on the partial file (released by the kernel when a process dies).

Whole-file checksum (an Atelier extension, so that a client can stream one long PATCH
without per-PATCH checksums and still have the file verified end to end): the
``Upload-Metadata`` key ``checksum`` (``xxh128``, ``blake3``, ``sha256`` or ``sha1``) asks
the server to hash the upload in order as it arrives. The PATCH that completes the upload may carry
``X-Atelier-File-Checksum: <algorithm> <base64 digest>`` of the whole file: the file is
placed only if it matches, otherwise the answer is 460 and the upload is discarded (its
bytes cannot be trusted, and nothing tells which of them are wrong). The completing
PATCH's answer, and a HEAD of the finished upload, carry the server's own digest in the
same header. The running hash lives in memory; after a restart (or on another replica)
the next PATCH re-reads the partial file to rebuild it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote

import blake3
import sqlalchemy as sa
import xxhash

from atelier_io.diskwrite import Appender, use_direct

from .. import db
from ..access.auth import Principal
from ..access.jail import check_name, clean, join
from ..errors import (
    BadRequest,
    ChecksumMismatch,
    Conflict,
    Gone,
    Locked,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
)
from ..files import fs

TUS_VERSION = "1.0.0"
EXTENSIONS = ("creation", "creation-with-upload", "creation-defer-length", "termination",
              "checksum", "expiration")
# blake3: cryptographic like sha256 at a fifth of its CPU time (0.16 against 0.8 s per GB
# here). xxh128 (XXH3, 128 bits; rsync's default file checksum since 3.2): not
# cryptographic, a quarter of blake3's time (0.04 s per GB), for catching damage in
# transit, which is what ``atelier push`` asks of it.
CHECKSUMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1, "sha256": hashlib.sha256, "blake3": blake3.blake3,
    "xxh128": xxhash.xxh3_128}
FILE_CHECKSUM = "X-Atelier-File-Checksum"
HASHERS_KEPT = 256           # running whole-file hashes kept in memory (LRU)
REHASH_BLOCK = 8 * 1024 * 1024
POLICIES = ("fail", "rename", "overwrite")
PARTIAL_PREFIX = fs.TUS_PARTIAL_PREFIX


uploads = db.tus_uploads


# -- header parsing (pure) -------------------------------------------------------------


def parse_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (value optional)."""
    out: dict[str, str] = {}
    if not header or not header.strip():
        return out
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not parts[0]:
            raise BadRequest("malformed Upload-Metadata")
        key = parts[0]
        if key in out:
            raise BadRequest(f"duplicate Upload-Metadata key {key!r}")
        try:
            out[key] = base64.b64decode(parts[1], validate=True).decode() if len(parts) == 2 \
                else ""
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest(f"Upload-Metadata value of {key!r} is not base64 UTF-8") from None
    return out


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``; unknown algorithm is 400."""
    if header is None:
        return None
    algo, _, value = header.strip().partition(" ")
    algo = algo.lower()
    if algo not in CHECKSUMS:
        raise BadRequest(f"unsupported checksum algorithm {algo!r}; use "
                         + " or ".join(CHECKSUMS))
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        raise BadRequest("Upload-Checksum digest is not base64") from None
    return algo, digest


def file_checksum_algorithm(meta: dict[str, str]) -> str | None:
    """The whole-file checksum an upload's metadata asks for (``checksum``), if any."""
    algo = meta.get("checksum")
    if algo is None:
        return None
    if algo.lower() not in CHECKSUMS:
        raise BadRequest(f"unsupported checksum algorithm {algo!r}; use "
                         + " or ".join(CHECKSUMS))
    return algo.lower()


def parse_int(header: str | None, name: str) -> int | None:
    """A header holding a non-negative decimal integer (None if absent; 400 if not one).

    ASCII digits only: ``str.isdigit`` also accepts ``²`` or ``٣``, which ``int``
    refuses or reads; a header arrives as Latin-1, so ``²`` is one byte away."""
    if header is None:
        return None
    header = header.strip()
    if not (header.isascii() and header.isdigit()) or len(header) > 20:
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(header)


def http_date(t: float) -> str:
    return formatdate(t, usegmt=True)


# -- the store ---------------------------------------------------------------------------


@dataclass
class Upload:
    id: str
    user: str
    folder: str
    name: str
    policy: str
    length: int | None
    offset: int
    verify_from: int | None
    metadata: str
    created: float
    expires: float
    final_path: str | None

    @property
    def done(self) -> bool:
        return self.final_path is not None

    @property
    def partial_name(self) -> str:
        return f"{PARTIAL_PREFIX}{self.id}.part"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "folder": self.folder, "name": self.name,
                "length": self.length, "offset": self.offset, "expires": self.expires,
                "final_path": self.final_path}


@dataclass
class Patch:
    """One PATCH in progress: the open partial file, the lock, and the limits."""

    store: TusStore
    p: Principal
    up: Upload
    fd: int
    out: Appender
    start: int
    limit: int | None           # the most bytes this PATCH may add (length, quota, disk)
    limit_error: type[Exception] = PayloadTooLarge
    hasher: Any = None
    expected: bytes | None = None
    closed: bool = field(default=False)
    file_hasher: Any = None       # the whole file's running hash (metadata ``checksum``)
    file_algo: str | None = None
    file_expected: bytes | None = None

    @property
    def written(self) -> int:
        return self.out.written

    def write(self, chunks: list[bytes]) -> None:
        """Append ``chunks`` (called in a worker thread, one call at a time)."""
        n = sum(len(c) for c in chunks)
        if self.limit is not None and self.written + n > self.limit:
            raise self.limit_error(
                "the data goes past the upload's declared length"
                if self.limit_error is PayloadTooLarge else "no room for this upload")
        hashers = [h for h in (self.hasher, self.file_hasher) if h is not None]
        if not hashers:
            self.out.write(chunks)
            return
        # Hash while the disk writes: a direct write waits for the device, and hashing
        # after it would add the hash's time to every batch (both release the GIL). If
        # the write fails, the PATCH is rolled back or the upload discarded, and a hash
        # that saw the batch is never kept.
        hashing = _hash_pool().submit(_update, hashers, chunks)
        try:
            self.out.write(chunks)
        finally:
            hashing.result()

    def finish(self, new_length: int | None = None) -> Upload:
        """The body is complete: verify, commit the offset, place the file at the end."""
        self.out.flush()
        if self.expected is not None and self.hasher.digest() != self.expected:
            self.rollback()
            raise ChecksumMismatch()
        return self.store._commit(self, new_length)

    def rollback(self) -> None:
        """Discard this PATCH's bytes (bad checksum, or cut short with a checksum)."""
        os.ftruncate(self.fd, self.start)
        self.out.written = 0
        self.file_hasher = None  # it has seen the discarded bytes: rebuilt when needed
        self.store._set(self.up.id, offset=self.start, verify_from=None)

    def abort(self) -> None:
        """The client went away mid-body: keep what arrived, unless it can't be verified."""
        if self.expected is not None:
            self.rollback()
        else:
            self.out.flush()
            self.store._set(self.up.id, offset=self.start + self.written, verify_from=None)
            self.store._keep_hasher(self.up.id, self.start + self.written, self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.out.close()
            os.close(self.fd)  # also drops the flock
            self.store._release(self.up.id)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _hash_pool() -> ThreadPoolExecutor:
    """Threads that hash PATCH bodies beside the threads that write them."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(4, thread_name_prefix="tus-hash")
        return _pool


def _update(hashers: list[Any], chunks: list[bytes]) -> None:
    for h in hashers:
        for c in chunks:
            h.update(c)


class TusStore:
    def __init__(self, fb: Any) -> None:
        from ..core import FileBrowser

        assert isinstance(fb, FileBrowser)
        self.fb = fb
        self.settings = fb.settings
        self.engine = fb.engine
        db.metadata.create_all(self.engine, tables=[uploads])
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        # upload id -> (offset, algorithm, running hash of bytes [0, offset))
        self._hashers: OrderedDict[str, tuple[int, str, Any]] = OrderedDict()
        self._hashers_lock = threading.Lock()

    # -- rows ---------------------------------------------------------------------

    def _get(self, uid: str) -> Upload | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(uploads).where(uploads.c.id == uid)).first()
        return Upload(**row._mapping) if row else None

    def _set(self, uid: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(uploads.update().where(uploads.c.id == uid).values(**values))

    def _delete_row(self, uid: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(uploads.delete().where(uploads.c.id == uid))

    def exists(self, uid: str) -> bool:
        """Whether an upload (finished or not) has this id: its partial file is its own."""
        return self._get(uid) is not None

    def list(self, p: Principal) -> list[Upload]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(uploads).where(uploads.c.user == p.name)
                                .order_by(uploads.c.created)).all()
        return [Upload(**r._mapping) for r in rows]

    def expires_at(self) -> float:
        return time.time() + self.settings.tus_expire_hours * 3600

    # -- paths ----------------------------------------------------------------------

    def _folder_real(self, up: Upload) -> Path:
        return self.fb.jail.real(up.folder)

    def partial(self, up: Upload) -> Path:
        return self._folder_real(up) / up.partial_name

    def _writable_folder(self, p: Principal, up: Upload) -> Path:
        _, real = self.fb.jail.resolve(p.scope, up.folder, write=True)
        return real

    # -- locking ----------------------------------------------------------------------

    def _acquire(self, uid: str) -> bool:
        with self._busy_lock:
            if uid in self._busy:
                return False
            self._busy.add(uid)
            return True

    def _release(self, uid: str) -> None:
        with self._busy_lock:
            self._busy.discard(uid)

    def _open_locked(self, up: Upload) -> int | None:
        """Open the partial file for appending with an exclusive lock, or None if busy."""
        if not self._acquire(up.id):
            return None
        try:
            # read-write: a direct-I/O append re-reads the partial block it starts in
            fd = os.open(self.partial(up), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            self._release(up.id)
            raise Gone("the upload's folder was moved or removed") from None
        except BaseException:
            self._release(up.id)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self._release(up.id)
            return None
        return fd

    # -- quota ----------------------------------------------------------------------

    def _room(self, p: Principal, up: Upload | None) -> int | None:
        """Bytes the caller may still add to uploads (None: no quota)."""
        quota = p.user.quota_bytes
        if quota is None:
            return None
        # partial files count by their stored offsets; the rest of the home is walked at
        # most every quota_recheck_seconds (not once per PATCH)
        used = self.fb.usage.stored_bytes(p.name,
                                          max_age=self.settings.quota_recheck_seconds)
        reserved = 0
        for other in self.list(p):
            if other.done or other.length is None or (up is not None and other.id == up.id):
                continue
            reserved += max(0, other.length - other.offset)
        return quota - used - reserved

    # -- protocol operations ------------------------------------------------------

    def create(self, p: Principal, length: int | None, metadata_header: str | None) -> Upload:
        meta = parse_metadata(metadata_header)
        file_checksum_algorithm(meta)  # an unknown algorithm is refused now, not at the end
        raw_name = meta.get("filename") or meta.get("name")
        if not raw_name:
            raise BadRequest("Upload-Metadata needs a 'filename'")
        name = check_name(raw_name)
        policy = meta.get("conflict", "fail")
        if policy not in POLICIES:
            raise BadRequest(f"conflict must be one of {', '.join(POLICIES)}")
        # no folder named: the caller's home (the root is read-only to all but admins)
        folder_raw = meta["folder"] if "folder" in meta else f"users/{p.name}"
        folder_v, folder = self.fb.jail.resolve(p.scope, clean(folder_raw),
                                                write=True, must_exist=False)
        if length is not None and length > self.settings.tus_max_size:
            raise PayloadTooLarge(f"uploads are limited to {self.settings.tus_max_size} bytes",
                                  headers={"Tus-Max-Size": str(self.settings.tus_max_size)})
        if os.path.lexists(folder) and not folder.is_dir():
            raise Conflict(f"{folder_v!r} is not a folder")
        target = folder / name
        if policy == "fail" and os.path.lexists(target):
            raise Conflict(f"{join(folder_v, name)!r} already exists")
        if policy == "overwrite" and target.is_dir():
            raise Conflict(f"{join(folder_v, name)!r} is a folder")
        if length:
            room = self._room(p, None)
            if room is not None and length > room:
                raise QuotaExceeded(f"this upload ({length} bytes) would exceed your quota "
                                    f"({max(room, 0)} bytes left)", needed=length)
        folder.mkdir(parents=True, exist_ok=True)
        if length:
            fs.check_free_space(folder, length)
        t = time.time()
        up = Upload(id=secrets.token_hex(16), user=p.name, folder=folder_v, name=name,
                    policy=policy, length=length, offset=0, verify_from=None,
                    metadata=metadata_header or "", created=t, expires=self.expires_at(),
                    final_path=None)
        # The row first: a crash before the file exists leaves a row whose file is
        # recreated empty on first use, never an orphan file nobody knows about.
        with self.engine.begin() as conn:
            conn.execute(uploads.insert().values(**up.__dict__))
        with open(self.partial(up), "xb"):
            pass
        if length == 0:
            return self._finalize(p, up)
        return up

    def get(self, p: Principal, uid: str) -> Upload:
        up = self._get(uid)
        if up is None or up.user != p.name:
            raise NotFound("no such upload")
        if up.expires < time.time():
            self._discard(up)
            raise Gone()
        return up

    def status(self, p: Principal, uid: str) -> Upload:
        """The upload with its offset reconciled against the partial file (for HEAD)."""
        up = self.get(p, uid)
        if up.done:
            return up
        fd = self._open_locked(up)
        if fd is None:  # a PATCH is running: report the offset it started from
            return up
        try:
            self._reconcile(up, fd)
        finally:
            os.close(fd)
            self._release(up.id)
        return up

    def _reconcile(self, up: Upload, fd: int) -> None:
        size = os.fstat(fd).st_size
        if up.verify_from is not None:  # a checksummed PATCH died before verification
            os.ftruncate(fd, up.verify_from)
            size = up.verify_from
        if up.length is not None and size > up.length:
            os.ftruncate(fd, up.length)
            size = up.length
        if size != up.offset or up.verify_from is not None:
            self._set(up.id, offset=size, verify_from=None)
            up.offset, up.verify_from = size, None
            self._forget_hasher(up.id)

    def begin_patch(self, p: Principal, uid: str, offset: int, new_length: int | None,
                    checksum: tuple[str, bytes] | None, content_length: int | None,
                    file_checksum: tuple[str, bytes] | None = None) -> Patch:
        up = self.get(p, uid)
        if up.done:
            if offset == up.length and not content_length:
                raise _AlreadyDone(up)
            raise Conflict("this upload is complete", headers=self.headers(up))
        folder = self._writable_folder(p, up)
        if new_length is not None:
            if up.length is not None and new_length != up.length:
                raise BadRequest("Upload-Length cannot change")
            if new_length > self.settings.tus_max_size:
                raise PayloadTooLarge(f"uploads are limited to {self.settings.tus_max_size} bytes")
        fd = self._open_locked(up)
        if fd is None:
            raise Locked(headers={"Retry-After": "1"})
        try:
            self._reconcile(up, fd)
            if offset != up.offset:
                raise Conflict(f"Upload-Offset is {offset}, the upload is at {up.offset}",
                               headers=self.headers(up))
            length = up.length if up.length is not None else new_length
            if length is not None and new_length is not None and new_length < up.offset:
                raise BadRequest("Upload-Length is smaller than what was received")
            limit_error: type[Exception] = PayloadTooLarge
            limit = None if length is None else length - up.offset
            if content_length is not None and limit is not None and content_length > limit:
                raise PayloadTooLarge("the chunk goes past the upload's declared length")
            room = self._room(p, up)
            if room is not None:
                # what this upload still needs must fit; the partial is already counted
                need = (length - up.offset) if length is not None else (content_length or 0)
                if need > room:
                    raise QuotaExceeded(f"this upload would exceed your quota "
                                        f"({max(room, 0)} bytes left)", needed=need)
                if limit is None or room < limit:
                    limit, limit_error = max(room, 0), QuotaExceeded
            need = (length - up.offset) if length is not None else (content_length or 0)
            fs.check_free_space(folder, need)
            if new_length is not None and up.length is None:
                self._set(up.id, length=new_length)
                up.length = new_length
            hasher = expected = None
            if checksum is not None:
                hasher, expected = CHECKSUMS[checksum[0]](), checksum[1]
                self._set(up.id, verify_from=up.offset)
            # by the whole upload's size: a big file's last small PATCHes go direct too
            direct = use_direct(self.settings.upload_direct_io, folder,
                                length if length is not None else need)
            patch = Patch(self, p, up, fd, Appender(self.partial(up), fd, up.offset, direct),
                          up.offset, limit, limit_error, hasher, expected)
            self._file_hash(patch, file_checksum)
            return patch
        except BaseException:
            os.close(fd)
            self._release(up.id)
            raise

    def _commit(self, patch: Patch, new_length: int | None) -> Upload:
        up = patch.up
        up.offset = patch.start + patch.written
        up.expires = self.expires_at()
        up.verify_from = None
        self._set(up.id, offset=up.offset, verify_from=None, expires=up.expires)
        self._keep_hasher(up.id, up.offset, patch)
        if up.length is not None and up.offset == up.length:
            if patch.file_expected is not None and \
                    patch.file_hasher.digest() != patch.file_expected:
                self._discard(up)
                raise ChecksumMismatch("the whole file's checksum does not match the bytes "
                                       "received; the upload was discarded")
            os.fsync(patch.fd)
            return self._finalize(patch.p, up)
        return up

    # -- the whole file's running hash ------------------------------------------------

    def _file_hash(self, patch: Patch, file_checksum: tuple[str, bytes] | None) -> None:
        """Give ``patch`` the running hash of the bytes before it, if the upload asked for
        one (metadata ``checksum``) or this PATCH brings the digest to check."""
        up = patch.up
        algo = file_checksum_algorithm(parse_metadata(up.metadata))
        if file_checksum is not None:
            if algo is not None and algo != file_checksum[0]:
                raise BadRequest(f"this upload is hashed with {algo}, not {file_checksum[0]}")
            algo, patch.file_expected = file_checksum
        if algo is None:
            return
        patch.file_algo = algo
        with self._hashers_lock:
            kept = self._hashers.pop(up.id, None)
        if kept is not None and kept[0] == up.offset and kept[1] == algo:
            patch.file_hasher = kept[2]
            return
        # after a restart, on another replica or after a rollback: hash what is on disk
        hasher = CHECKSUMS[algo]()
        buf = bytearray(min(REHASH_BLOCK, up.offset))
        view = memoryview(buf)
        at = 0
        while at < up.offset:
            n = os.preadv(patch.fd, [view[:min(len(buf), up.offset - at)]], at)
            if n == 0:
                raise Gone("the upload's partial file is shorter than its offset")
            hasher.update(view[:n])
            at += n
        patch.file_hasher = hasher

    def _keep_hasher(self, uid: str, offset: int, patch: Patch) -> None:
        if patch.file_hasher is None or patch.file_algo is None:
            return
        with self._hashers_lock:
            self._hashers[uid] = (offset, patch.file_algo, patch.file_hasher)
            self._hashers.move_to_end(uid)
            while len(self._hashers) > HASHERS_KEPT:
                self._hashers.popitem(last=False)

    def _forget_hasher(self, uid: str) -> None:
        with self._hashers_lock:
            self._hashers.pop(uid, None)

    def file_digest(self, up: Upload) -> str | None:
        """``<algorithm> <base64>`` of a finished upload's whole file, while remembered."""
        with self._hashers_lock:
            kept = self._hashers.get(up.id)
        if kept is None or kept[0] != up.length:
            return None
        return f"{kept[1]} {base64.b64encode(kept[2].digest()).decode()}"

    def _finalize(self, p: Principal, up: Upload) -> Upload:
        """Last byte: fsync, place atomically under the final name, record usage."""
        folder = self._writable_folder(p, up)
        partial = folder / up.partial_name
        if up.length == 0:
            fs.fsync_file(partial)
        try:
            final = fs.place(partial, folder, up.name, up.policy)  # type: ignore[arg-type]
        except Conflict:
            # another upload took the name first: this one is over, its bytes removed
            self._delete_row(up.id)
            raise
        fs.fsync_dir(folder)
        up.final_path = join(up.folder, final)
        self._set(up.id, final_path=up.final_path, offset=up.length)
        self.fb.usage.set_owner(p.name, up.final_path)
        self.fb.usage.record(p.name, "tus", up.final_path, up.length or 0)
        return up

    def terminate(self, p: Principal, uid: str) -> None:
        up = self.get(p, uid)
        if not up.done and not self._acquire(up.id):
            raise Locked(headers={"Retry-After": "1"})
        try:
            self._discard(up)
        finally:
            self._release(up.id)

    def _discard(self, up: Upload) -> None:
        """Forget the upload and remove its partial file (never the placed file)."""
        if not up.done:
            with contextlib.suppress(FileNotFoundError, NotFound):
                self.partial(up).unlink()
        self._delete_row(up.id)
        self._forget_hasher(up.id)

    def fail_full(self, up: Upload) -> None:
        """The disk filled up mid-PATCH: give the space back and forget the upload."""
        self._discard(up)

    def cleanup(self, now: float | None = None) -> int:
        """Remove expired uploads (and their partial files); return how many."""
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(uploads).where(uploads.c.expires < now)).all()
        n = 0
        for row in rows:
            up = Upload(**row._mapping)
            if not up.done and not self._acquire(up.id):
                continue
            try:
                self._discard(up)
                n += 1
            finally:
                self._release(up.id)
        return n

    # -- answers ------------------------------------------------------------------

    def headers(self, up: Upload) -> dict[str, str]:
        h = {"Upload-Offset": str(up.length if up.done else up.offset),
             "Cache-Control": "no-store"}
        if up.length is None:
            h["Upload-Defer-Length"] = "1"
        else:
            h["Upload-Length"] = str(up.length)
        if up.metadata:
            h["Upload-Metadata"] = up.metadata
        if not up.done:
            h["Upload-Expires"] = http_date(up.expires)
        else:
            h["X-Atelier-Path"] = quote(up.final_path or "")
            digest = self.file_digest(up)
            if digest is not None:
                h[FILE_CHECKSUM] = digest
        return h


class _AlreadyDone(Exception):
    """A zero-byte PATCH at the end of a finished upload: answer 204 again (idempotent)."""

    def __init__(self, up: Upload) -> None:
        self.up = up
