"""The path jail: every user path is checked here before anything touches the disk.

A *virtual path* is what clients send: relative to the NAS root, '/'-separated,
``""`` for the root itself (``models/Lora/x.safetensors``, ``users/ann/outputs``).

1. :func:`clean` refuses what can never be valid (400): NUL and control characters,
   backslashes, absolute paths and drive letters, ``.``/``..`` components, names
   over 255 bytes or paths over 4096, Windows reserved names, and our own internal
   names (``.atelier*``). The text is NFC-normalised first, so look-alike
   decompositions of one name are one name.
2. :class:`Scope` says what a caller may see and write: a user reads and writes
   ``users/<name>/`` and reads the shared ``models/``; a viewer only reads; an admin
   has everything. Ancestors of a permitted folder are listable but show only the
   children that lead to it. Anything else answers :class:`NotFound`, exactly like
   a missing path.
3. :func:`resolve` joins with the root, resolves symlinks with ``realpath`` and checks
   with ``commonpath`` that the result is still inside the root (starlette's
   ``StaticFiles.lookup_path``); the *real* location is checked against the scope
   again, so a symlink cannot lead into another user's home either.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadPath, NotFound, ReadOnly

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
INTERNAL_PREFIX = ".atelier"
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")


def clean(path: str) -> str:
    """Validate and normalise a virtual path; raise :class:`BadPath` if it is invalid."""
    path = unicodedata.normalize("NFC", path)
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise BadPath("path contains NUL or control characters")
    if "\\" in path:
        raise BadPath("backslashes are not allowed in paths")
    if path.startswith("/") or _DRIVE.match(path):
        raise BadPath("absolute paths are not allowed; paths are relative to the root")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise BadPath("path too long")
    if path in ("", "."):
        return ""
    parts = [p for p in path.split("/") if p != ""]
    for part in parts:
        if part in (".", ".."):
            raise BadPath("'.' and '..' are not allowed in paths")
        if len(part.encode()) > MAX_NAME_BYTES:
            raise BadPath("name too long")
        if _WINDOWS_RESERVED.match(part):
            raise BadPath(f"reserved name: {part}")
        if part.lower().startswith(INTERNAL_PREFIX):
            raise BadPath(f"reserved name: {part}")
    return "/".join(parts)


def check_name(name: str) -> str:
    """A single file or folder name (no '/')."""
    name = clean(name)
    if name == "" or "/" in name:
        raise BadPath("a single, non-empty name is required")
    return name


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def is_within(path: str, prefix: str) -> bool:
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class Scope:
    """Where a caller may read and write, as virtual-path prefixes."""

    read: tuple[str, ...]
    write: tuple[str, ...]

    @classmethod
    def for_user(cls, name: str, role: str) -> Scope:
        if role == "admin":
            return cls(read=("",), write=("",))
        home = f"users/{name}"
        if role == "viewer":
            return cls(read=(home, "models"), write=())
        return cls(read=(home, "models"), write=(home,))

    def can_read(self, path: str) -> bool:
        return any(is_within(path, p) for p in self.read)

    def can_write(self, path: str) -> bool:
        return any(is_within(path, p) for p in self.write)

    def can_see(self, path: str) -> bool:
        """Readable, or an ancestor folder of something readable."""
        return self.can_read(path) or any(is_within(p, path) for p in self.read)

    def visible_child(self, folder: str, name: str) -> bool:
        return self.can_see(join(folder, name))

    def children_of(self, folder: str) -> frozenset[str] | None:
        """Names visible in ``folder``: None for all (it is readable), else the next
        component of each readable root below it."""
        if self.can_read(folder):
            return None
        depth = len(folder.split("/")) if folder else 0
        return frozenset(p.split("/")[depth] for p in self.read
                         if p and is_within(p, folder) and p != folder)


class Jail:
    """Maps checked virtual paths to real paths under one root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))

    def real(self, path: str) -> Path:
        """The real path of a cleaned virtual path, refusing anything that leaves the root."""
        candidate = os.path.realpath(os.path.join(self.root, path))
        if os.path.commonpath([candidate, self.root]) != str(self.root):
            raise NotFound()
        return Path(candidate)

    def virtual(self, real: Path | str) -> str:
        rel = os.path.relpath(real, self.root)
        return "" if rel == "." else rel.replace(os.sep, "/")

    def resolve(self, scope: Scope, raw: str, *, write: bool = False,
                must_exist: bool = True) -> tuple[str, Path]:
        """Check ``raw`` fully and return ``(virtual path, real path)``.

        Out of scope, outside the root and missing all answer :class:`NotFound`;
        in scope for reading but not for writing answers :class:`ReadOnly`.
        """
        path = clean(raw)
        real = self.real(path)
        real_virtual = self.virtual(real)
        for p in (path, real_virtual):
            if not scope.can_see(p):
                raise NotFound()
        if must_exist and not os.path.lexists(real):
            raise NotFound()
        if write:
            for p in (path, real_virtual):
                if not scope.can_write(p):
                    raise ReadOnly()
        return path, real
