"""Where the bytes go: hidden partial files, free space, atomic placement.

In the target folder, for ``NAME``::

    .NAME.part       the partial file, preallocated to the full size when known
    .NAME.part.ctl   its control file (control.py)
    .NAME.lock       the per-destination lock (lock.py)
    NAME             appears only by an atomic rename, after size, hash and validation

Everything lives on the same filesystem as ``NAME`` so the rename is atomic, and a failure
leaves a resumable partial or nothing, never a wrong file under the final name.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import InsufficientSpace

_UNSAFE = re.compile(r"[\x00-\x1f/\\:*?\"<>|]")


def part_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.part")


def control_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.part.ctl")


def lock_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.lock")


def safe_name(name: str | None) -> str | None:
    """A bare file name from a header or URL; None when nothing usable is left."""
    if not name:
        return None
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip().lstrip(".")
    return name[:255] or None


def name_from_url(url: str) -> str | None:
    return safe_name(unquote(urlsplit(url).path))


def check_space(folder: Path, needed: int, reserve: int, name: str) -> None:
    """Refuse to start when ``needed`` bytes plus ``reserve`` do not fit."""
    free = shutil.disk_usage(folder).free
    if needed + reserve > free:
        raise InsufficientSpace(
            f"{name}: needs {_mb(needed)} plus {_mb(reserve)} headroom, but only {_mb(free)} "
            f"is free in {folder}")


def allocated(path: Path) -> int:
    """Bytes already allocated to ``path`` on disk (0 when missing)."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def preallocate(fd: int, size: int, name: str, folder: Path) -> None:
    """Reserve ``size`` bytes for ``fd`` so a full disk shows up now, not at 90 %."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise InsufficientSpace(f"{name}: no space left in {folder} for "
                                    f"{_mb(size)}") from None
        if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        os.ftruncate(fd, size)  # the filesystem cannot reserve: a sparse file will do


def place(part: Path, dest: Path, fd: int, durable: bool = True) -> None:
    """fsync the finished partial, rename it to ``dest`` atomically, fsync the folder."""
    if durable:
        os.fsync(fd)
    os.replace(part, dest)
    if not durable:
        return
    dfd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def no_space(error: OSError, name: str, folder: Path) -> InsufficientSpace | None:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientSpace(f"{name}: the disk filled up while writing to {folder}")
    return None


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"
