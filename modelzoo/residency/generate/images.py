"""Saving generated images under the owner's outputs, counted against their quota.

    <outputs>/txt2img-images/2025-06-01/00012-1234567.png     (the WebUI's naming:
    <outputs>/img2img-images/2025-06-01/00013-1234568.png      number, then seed)

Each PNG carries the infotext in its ``parameters`` chunk. It is written to a hidden
temporary name, fsynced and renamed (a reader never sees half an image); the number is
claimed with ``O_EXCL`` so concurrent jobs never overwrite each other.

Quota and usage belong to FileBrowser, which ModelZoo never imports: the service edge
(``atelier/service.py``) passes a :class:`Storage` whose ``open_outputs(user)`` opens
the owner's outputs folder through FileBrowser's path jail, whose ``room(user)`` says how
many bytes the owner may still add (None: no quota) and whose ``record(user, rel,
nbytes)`` books an image like an upload. A request is refused at submit (507) when its images
could not fit (each counted at its raw RGB size, an upper bound for a PNG), and each
image is checked again with its real size just before it is written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import StorageQuotaExceeded

_NUMBERED = re.compile(r"[0-9]{5}-.*\.png")


@dataclass
class Storage:
    """``open_outputs(user)``: a directory descriptor of the owner's outputs folder,
    opened by FileBrowser beneath its root within what the owner may write (the caller
    closes it); ``record(user, rel, nbytes)`` books an image, ``rel`` relative to it."""

    open_outputs: Callable[[Any], int]
    room: Callable[[Any], int | None] = lambda user: None
    record: Callable[[Any, str, int], None] = lambda user, rel, nbytes: None

    def check(self, user: Any, nbytes: int) -> None:
        room = self.room(user)
        if room is not None and nbytes > room:
            raise StorageQuotaExceeded(
                f"the images need up to {nbytes} bytes and your quota leaves {max(0, room)}",
                needed_bytes=nbytes, room_bytes=max(0, room))


def estimate(width: int, height: int, images: int) -> int:
    """Upper bound of the bytes a request's PNGs take (raw RGB; PNG only compresses)."""
    return width * height * 3 * images


def png_bytes(image: Any, text: str) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", text)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(outputs_fd: int, kind: str, data: bytes, seed: int,
             today: dt.date | None = None) -> str:
    """Write ``<kind>-images/<date>/NNNNN-seed.png`` below the outputs folder open as
    ``outputs_fd``; return its path relative to that folder.

    Every step goes through descriptors: each sub-folder is opened with ``O_NOFOLLOW``
    and the file created with ``O_EXCL`` beside it, so a symlink someone put in the
    outputs folder (to another user's home, say) is refused, never written through.
    The number is claimed with ``O_EXCL``: a concurrent save takes the next one.
    """
    names = [f"{kind}-images", (today or dt.date.today()).isoformat()]
    fd = os.dup(outputs_fd)
    try:
        for name in names:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=fd)
            try:
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=fd)
            except OSError as exc:  # ELOOP/ENOTDIR: a link or a file where a folder goes
                raise NotADirectoryError(f"{'/'.join(names)}: not a folder ({exc.strerror})") \
                    from None
            os.close(fd)
            fd = sub
        taken = [int(n[:5]) for n in os.listdir(fd) if _NUMBERED.fullmatch(n)]
        n = max(taken, default=-1) + 1
        while True:
            final = f"{n:05d}-{seed}.png"
            try:  # claim the name; O_EXCL never follows a link
                os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                 0o644, dir_fd=fd))
                break
            except FileExistsError:
                n += 1
        tmp = f".{final}.tmp"
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644,
                          dir_fd=fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view):]
                os.fsync(out)
            finally:
                os.close(out)
            os.rename(tmp, final, src_dir_fd=fd, dst_dir_fd=fd)
            os.fsync(fd)
        except BaseException:
            for name in (tmp, final):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)
            raise
    finally:
        os.close(fd)
    return "/".join([*names, final])
