"""The resume control file that sits beside a partial download.

Layout (``.NAME.part.ctl`` next to ``.NAME.part``)::

    8 bytes   magic b"ATZFC01\\n"
    4 bytes   header length H, big-endian
    H bytes   JSON {"size", "piece_size", "etag", "last_modified", "url"}, space-padded
    P bytes   one byte per piece: 1 = the piece is written in the partial file

The header is written once, atomically (temporary file, rename; not fsynced there, as that
would hold up the download's start: the first periodic sync makes it durable, and a torn
file after a machine crash fails to load and the download starts over). A finished piece
flips its byte in place with one ``pwrite``: cheap enough to do for every piece, so a
killed process loses only the pieces in flight (aria2 saves its bitfield every 60 s
instead). The kernel keeps those writes when the process dies; for a crash of the whole
machine, the engine fdatasyncs the partial file and then this file every
``sync_interval`` seconds, and the final sha256 guards the rest.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

MAGIC = b"ATZFC01\n"


@dataclass(frozen=True)
class Validators:
    """What identifies the remote bytes: a changed value means start over."""

    size: int
    etag: str | None = None
    last_modified: str | None = None

    def same_as(self, other: Validators) -> bool:
        if self.size != other.size:
            return False
        if self.etag and other.etag and self.etag != other.etag:
            return False
        if self.last_modified and other.last_modified:
            return self.last_modified == other.last_modified
        return True


class ControlFile:
    """An open control file; ``mark(i)`` records piece ``i`` as done."""

    def __init__(self, path: Path, fd: int, offset: int, validators: Validators,
                 piece_size: int, done: list[bool], url: str = "") -> None:
        self.path = path
        self.url = url  # the endpoint whose bytes these are
        self._fd = fd
        self._offset = offset
        self.validators = validators
        self.piece_size = piece_size
        self.done = done

    @classmethod
    def create(cls, path: Path, validators: Validators, piece_size: int,
               url: str) -> ControlFile:
        header = json.dumps({**asdict(validators), "piece_size": piece_size, "url": url})
        raw = header.encode()
        raw += b" " * (-(len(raw)) % 8)
        pieces = -(-validators.size // piece_size)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack(">I", len(raw)) + raw + bytes(pieces))
        os.replace(tmp, path)
        fd = os.open(path, os.O_RDWR)
        return cls(path, fd, len(MAGIC) + 4 + len(raw), validators, piece_size,
                   [False] * pieces, url)

    @classmethod
    def load(cls, path: Path) -> ControlFile | None:
        """The control file at ``path``, or None when it is missing or unreadable."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            if data[:8] != MAGIC or len(data) < 12:
                raise ValueError("bad magic")
            (hlen,) = struct.unpack(">I", data[8:12])
            header = json.loads(data[12:12 + hlen])
            validators = Validators(int(header["size"]), header.get("etag"),
                                    header.get("last_modified"))
            piece_size = int(header["piece_size"])
            pieces = -(-validators.size // piece_size)
            bitmap = data[12 + hlen:]
            if piece_size <= 0 or len(bitmap) != pieces:
                raise ValueError("bitmap length")
            return cls(path, fd, 12 + hlen, validators, piece_size, [b == 1 for b in bitmap],
                       str(header.get("url") or ""))
        except (ValueError, KeyError, TypeError, struct.error):
            os.close(fd)
            return None

    def mark(self, index: int) -> None:
        os.pwrite(self._fd, b"\x01", self._offset + index)

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
