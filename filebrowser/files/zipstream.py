"""A folder or a selection streamed as a zip: no temporary file, memory independent of size.

The stdlib ``zipfile`` writes to a sink without ``seek``: it then puts a data
descriptor after each member (sizes and CRC known only at the end) and keeps only
the central directory in memory (~100 bytes per member). Members whose declared size
needs it get ZIP64 headers (``force_zip64``), and the archive switches to ZIP64 end
records by itself past 4 GiB or 65535 members.

- Images and models are *stored* (already compressed; deflating a 7 GB checkpoint
  would cost minutes of CPU for nothing); other files are deflated at level 1.
- Names are rebuilt from our own walk, component by component: no absolute path,
  no ``..``, no backslash or drive colon (which Windows extractors treat as
  separators), no control characters; so extraction never leaves its folder.
- The members come from the caller's walk (:mod:`.walk`: only what they may read,
  symlinks and internal names left out), lazily, so a folder of 200k images does not
  build a list first; each file is read from a descriptor opened when its turn comes.
"""

from __future__ import annotations

import os
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .fs import kind_of
from .walk import Item

BLOCK = 1024 * 1024
_BAD = str.maketrans({"\\": "_", ":": "_", **{chr(i): "_" for i in range(32)}, "\x7f": "_"})


def safe_component(name: str) -> str:
    name = name.translate(_BAD).strip()
    return "_" if name in ("", ".", "..") else name


def safe_arcname(parts: Iterable[str]) -> str:
    return "/".join(safe_component(p) for p in parts)


@dataclass(frozen=True)
class Member:
    arcname: str        # '/'-separated, sanitised; folders end with '/'
    name: str           # the file's own name (its kind decides stored or deflated)
    size: int
    mtime: float
    is_dir: bool = False
    open: Callable[[], int] | None = None  # a read descriptor of the file, when its turn comes


def members(items: Iterable[Item], arcname: str) -> Iterator[Member]:
    """A walk's items as members under ``arcname`` (a folder, or the file's own name)."""
    for item in items:
        arc = safe_arcname((arcname, *item.rel))
        if item.is_dir:
            yield Member(arc + "/", item.name, 0, item.stat.st_mtime, is_dir=True)
        else:
            yield Member(arc, item.name or arcname, item.stat.st_size, item.stat.st_mtime,
                         open=item.open)


def _date_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    t = time.localtime(max(mtime, 315532800 + 86400))  # zip dates start in 1980
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


class _Sink:
    """The write-only file zipfile writes into; ``take()`` hands the bytes on."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.total = 0

    def write(self, b: bytes) -> int:
        self.parts.append(bytes(b))
        self.size += len(b)
        self.total += len(b)
        return len(b)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts, self.size = [], 0
        return out


def stream_zip(members: Iterable[Member], block: int = BLOCK) -> Iterator[bytes]:
    """The archive as byte chunks of about ``block`` bytes."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", allowZip64=True) as zf:  # type: ignore[call-overload]
        for m in members:
            info = zipfile.ZipInfo(m.arcname, _date_time(m.mtime))
            if m.is_dir:
                info.external_attr = (0o40755 << 16) | 0x10
                zf.writestr(info, b"")
                continue
            try:
                assert m.open is not None
                src = os.fdopen(m.open(), "rb", buffering=0)
            except OSError:
                continue  # vanished, changed or unreadable since the walk: left out
            with src:
                stored = kind_of(m.name, False) in ("image", "model")
                info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                if not stored:
                    info._compresslevel = 1  # type: ignore[attr-defined]
                info.external_attr = 0o644 << 16
                info.file_size = m.size
                left = m.size  # a file growing meanwhile is cut at its size from the walk
                with zf.open(info, "w", force_zip64=m.size >= zipfile.ZIP64_LIMIT) as dst:
                    while left > 0:
                        chunk = src.read(min(block, left))
                        if not chunk:
                            break
                        left -= len(chunk)
                        dst.write(chunk)
                        if sink.size >= block:
                            yield sink.take()
            if sink.size >= block:
                yield sink.take()
    yield sink.take()
