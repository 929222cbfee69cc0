"""Saving generated images under the owner's outputs, counted against their quota.

    <outputs>/txt2img-images/2025-06-01/00012-1234567.png     (the WebUI's naming:
    <outputs>/img2img-images/2025-06-01/00013-1234568.png      number, then seed)

Each PNG carries the infotext in its ``parameters`` chunk. It is written to a hidden
temporary name, fsynced and renamed (a reader never sees half an image); the number is
claimed with ``O_EXCL`` so concurrent jobs never overwrite each other.

Quota and usage belong to FileBrowser, which ModelZoo never imports: the service edge
(``atelier/service.py``) passes a :class:`Storage` whose ``room(user)`` says how many
bytes the owner may still add (None: no quota) and whose ``record(user, path, nbytes)``
books an image like an upload. A request is refused at submit (507) when its images
could not fit (each counted at its raw RGB size, an upper bound for a PNG), and each
image is checked again with its real size just before it is written.
"""

from __future__ import annotations

import datetime as dt
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import StorageQuotaExceeded


@dataclass
class Storage:
    outputs_dir: Callable[[Any], Path]
    room: Callable[[Any], int | None] = lambda user: None
    record: Callable[[Any, Path, int], None] = lambda user, path, nbytes: None

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


def folder_for(root: Path, kind: str, today: dt.date | None = None) -> Path:
    return root / f"{kind}-images" / (today or dt.date.today()).isoformat()


def save_png(folder: Path, data: bytes, seed: int) -> Path:
    """Write ``NNNNN-seed.png`` atomically; the number is claimed with O_EXCL."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = [int(p.name[:5]) for p in folder.glob("[0-9][0-9][0-9][0-9][0-9]-*.png")]
    n = max(existing, default=-1) + 1
    while True:
        final = folder / f"{n:05d}-{seed}.png"
        try:  # claim the name; a concurrent save takes the next number
            fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            n += 1
            continue
        os.close(fd)
        break
    tmp = folder / f".{final.name}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        raise
    return final
