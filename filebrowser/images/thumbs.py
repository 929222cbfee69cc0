"""Thumbnails: WebP at 256 px (grid) and 1024 px (preview), cached on local disk.

Cache layout, under ``state_dir/thumbs`` (local disk, never the NAS)::

    thumbs/<k[:2]>/<k>.webp     k = sha256(real path, size, mtime_ns, byte size, inode)
    thumbs/<k[:2]>/<k>.bad      the image could not be thumbnailed (broken, a bomb)

The key changes whenever the file does, so a stale thumbnail is never looked up; and
a thumbnail is only stored if the source's stat is the same after rendering as before
(an image rewritten mid-render is rendered again). Rendering runs in a bounded thread
pool (Pillow releases the GIL in decode and resize); identical concurrent requests
share one render. Images over ``max_pixels`` (checked from the header, before any
decoding) and files Pillow refuses get a placeholder and a ``.bad`` marker, so a bad
file costs one attempt per version, never a stuck or crashed worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageDraw, ImageOps

SIZES = (256, 1024)
RENDER_TIMEOUT = 60.0
_PRUNE_EVERY = 3600.0


@dataclass(frozen=True)
class Thumb:
    data: bytes
    etag: str
    placeholder: bool


def version_of(st: os.stat_result) -> str:
    """What a client puts in ``v=`` to get a long-lived cached URL."""
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


class _Changed(Exception):
    """The source changed while it was being rendered."""


class _Unrenderable(Exception):
    pass


class Thumbnailer:
    def __init__(self, cache_dir: Path, *, workers: int = 2, max_pixels: int = 89_478_485,
                 max_bytes: int = 2 << 30) -> None:
        self.dir = cache_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="thumb")
        self._inflight: dict[str, Future[Thumb]] = {}
        self._lock = threading.Lock()
        self._placeholders: dict[int, bytes] = {}
        self._written = 0
        self._last_prune = time.monotonic()
        self._pruning = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- keys ------------------------------------------------------------------------

    @staticmethod
    def key(real: Path, size: int, st: os.stat_result) -> str:
        raw = f"{real}\0{size}\0{st.st_mtime_ns}\0{st.st_size}\0{st.st_ino}"
        return hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()[:40]

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.dir / key[:2]
        return folder / f"{key}.webp", folder / f"{key}.bad"

    # -- public ----------------------------------------------------------------------

    def get(self, real: Path, size: int, *, timeout: float = RENDER_TIMEOUT,
            key: str | None = None) -> Thumb:
        """The thumbnail of ``real`` as it is now (rendered if not cached).

        ``real`` is opened once and everything is read from that descriptor: pass the
        jail's ``/proc/self/fd`` name of a checked file, and ``key`` its real path
        (what the cache is keyed by; default ``real``)."""
        if size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}")
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            for _ in range(3):
                st = os.fstat(fd)
                k = self.key(Path(key or real), size, st)
                good, bad = self._paths(k)
                try:
                    return Thumb(good.read_bytes(), f'"t-{k}"', False)
                except FileNotFoundError:
                    pass
                if bad.exists():
                    return self._placeholder(size, k)
                try:
                    return self._render_shared(k, fd, size, st, timeout)
                except _Changed:
                    continue
                except FutureTimeout:
                    return self._placeholder(size, k)
            return self._placeholder(size, "busy")
        finally:
            os.close(fd)

    def _render_shared(self, key: str, fd: int, size: int, st: os.stat_result,
                       timeout: float) -> Thumb:
        with self._lock:
            fut = self._inflight.get(key)
            new = fut is None
            if fut is None:
                # the job owns a duplicate: it may outlive this call (timeout)
                fut = self.pool.submit(self._render, key, os.dup(fd), size, st)
                self._inflight[key] = fut
        if new:
            # outside the lock: a finished future runs the callback right here
            fut.add_done_callback(partial(self._forget, key))
        return fut.result(timeout)

    def _forget(self, key: str, _fut: object = None) -> None:
        with self._lock:
            self._inflight.pop(key, None)

    # -- rendering -------------------------------------------------------------------

    def _render(self, key: str, fd: int, size: int, st: os.stat_result) -> Thumb:
        good, bad = self._paths(key)
        with os.fdopen(fd, "rb") as src:
            good.parent.mkdir(parents=True, exist_ok=True)
            try:
                data = self.render(src, size)
            except _Unrenderable:
                data = None
            except Exception:  # any decoder failure is a broken image, not a server error
                data = None
            now = os.fstat(src.fileno())
        if (now.st_mtime_ns, now.st_size, now.st_ino) != (st.st_mtime_ns, st.st_size,
                                                          st.st_ino):
            raise _Changed()
        if data is None:
            bad.touch()
            return self._placeholder(size, key)
        tmp = good.with_name(f".{good.name}.{threading.get_ident()}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, good)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._written += len(data)
        self._maybe_prune()
        return Thumb(data, f'"t-{key}"', False)

    def render(self, real: Path | BinaryIO, size: int) -> bytes:
        """WebP bytes of an image (a path or an open file) fitted into ``size``x``size``;
        raises if unreadable."""
        with Image.open(real) as im:
            w, h = im.size
            if w <= 0 or h <= 0 or w * h > self.max_pixels:
                raise _Unrenderable(f"{w}x{h} exceeds the pixel limit")
            if im.format == "JPEG":
                im.draft("RGB", (size, size))  # decode at 1/2..1/8 scale: far less work
            im.seek(0)  # first frame of GIF/WebP/APNG animations
            im.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
            out = ImageOps.exif_transpose(im)
            if out.mode not in ("RGB", "RGBA"):
                has_alpha = out.mode in ("LA", "PA", "RGBa", "La") or (
                    out.mode == "P" and "transparency" in out.info)
                out = out.convert("RGBA" if has_alpha else "RGB")
            buf = io.BytesIO()
            out.save(buf, "WEBP", quality=80, method=4)
            return buf.getvalue()

    def _placeholder(self, size: int, key: str) -> Thumb:
        data = self._placeholders.get(size)
        if data is None:
            im = Image.new("RGB", (size, size), (58, 58, 64))
            d = ImageDraw.Draw(im)
            m, w = size // 4, max(2, size // 32)
            d.line((m, m, size - m, size - m), fill=(150, 150, 160), width=w)
            d.line((m, size - m, size - m, m), fill=(150, 150, 160), width=w)
            buf = io.BytesIO()
            im.save(buf, "WEBP", quality=60)
            data = self._placeholders[size] = buf.getvalue()
        return Thumb(data, f'"p-{key}"', True)

    # -- cache size ------------------------------------------------------------------

    def _maybe_prune(self) -> None:
        due = time.monotonic() - self._last_prune > _PRUNE_EVERY
        if (due or self._written > self.max_bytes // 20) and self._pruning.acquire(False):
            self._written = 0
            self._last_prune = time.monotonic()

            def run() -> None:
                try:
                    self.prune()
                finally:
                    self._pruning.release()

            threading.Thread(target=run, name="thumb-prune", daemon=True).start()

    def prune(self) -> int:
        """Remove the least recently written thumbnails beyond ``max_bytes``."""
        files: list[tuple[float, int, str]] = []
        total = 0
        for sub in os.scandir(self.dir):
            if not sub.is_dir():
                continue
            for e in os.scandir(sub.path):
                try:
                    s = e.stat()
                except OSError:
                    continue
                files.append((s.st_mtime, s.st_size, e.path))
                total += s.st_size
        removed = 0
        if total <= self.max_bytes:
            return 0
        files.sort()
        for _, nbytes, path in files:
            if total <= self.max_bytes * 0.9:
                break
            with contextlib.suppress(OSError):
                os.unlink(path)
                total -= nbytes
                removed += 1
        return removed
