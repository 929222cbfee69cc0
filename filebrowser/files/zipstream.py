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
- Symlinks and our internal ``.atelier*`` names are skipped; the walk is lazy, so a
  folder of 200k images does not build a list first.
"""

from __future__ import annotations

import os
import stat as st
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..access.jail import INTERNAL_PREFIX
from .fs import kind_of

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
    real: Path
    size: int
    mtime: float
    is_dir: bool = False


def walk(top: Path, arcname: str) -> Iterator[Member]:
    """``top`` (a file or a folder) as members under ``arcname``, never following links."""
    s = os.lstat(top)
    if st.S_ISREG(s.st_mode):
        yield Member(arcname, top, s.st_size, s.st_mtime)
        return
    if not st.S_ISDIR(s.st_mode):
        return
    yield Member(arcname + "/", top, 0, s.st_mtime, is_dir=True)
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        if e.name.startswith(INTERNAL_PREFIX) or e.is_symlink():
            continue
        yield from walk(Path(e.path), f"{arcname}/{safe_component(e.name)}")


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
                src = open(m.real, "rb")  # noqa: SIM115 - closed below
            except OSError:
                continue  # vanished or unreadable since the walk: left out
            with src:
                stored = kind_of(m.real.name, False) in ("image", "model")
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
