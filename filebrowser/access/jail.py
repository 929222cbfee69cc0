"""The path jail: every user path is checked here before anything touches the disk.

A *virtual path* is what clients send: relative to the NAS root, '/'-separated,
``""`` for the root itself (``models/Lora/x.safetensors``, ``users/ann/outputs``).

1. :func:`clean` refuses what can never be valid (400): NUL and control characters,
   backslashes, characters XML cannot carry (lone surrogates from undecodable names,
   U+FFFE/U+FFFF), absolute paths and drive letters, ``.``/``..`` components, names
   over 255 bytes or paths over 4096, and our own internal names (``.atelier*``).
   The text is kept as sent: a name written NFD by another program is reachable
   exactly as listed (the lookup also accepts its NFC spelling, see
   :mod:`.beneath`). Names on disk that :func:`clean` would refuse are left out of
   every listing and walk (:func:`addressable`), so what is listed is reachable.
   A *new* name must also not be a Windows reserved name (``CON``, ``nul.txt``):
   :func:`check_new_name`; existing ones written by other programs stay reachable.
2. :class:`Scope` says what a caller may see and write: a user reads and writes
   ``users/<name>/`` and reads the shared ``models/``; a viewer only reads; an admin
   has everything. Ancestors of a permitted folder are listable but show only the
   children that lead to it. Anything else answers :class:`NotFound`, exactly like
   a missing path.
3. :meth:`Jail.open` opens the path beneath the root through descriptors, component
   by component, never following a symlink it has not checked (:mod:`.beneath`): the
   scope holds for the path asked and for every real location reached on the way,
   so a symlink cannot lead into another home and a folder swapped for a symlink
   after the check is never followed. The :class:`Handle` it returns names the
   checked object through ``/proc/self/fd``; every read and write that follows uses
   it. :meth:`Jail.resolve` is the same check returning path strings, for code that
   has not moved to handles yet.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat as st
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadPath, Conflict, NotFound, ReadOnly
from . import beneath

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
INTERNAL_PREFIX = ".atelier"
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")
# control characters, backslash, lone surrogates (undecodable bytes), and the two
# non-characters XML 1.0 cannot carry (a WebDAV listing holding one would not parse)
_BAD_CHARS = re.compile("[\x00-\x1f\x7f\\\\\ud800-\udfff\ufffe\uffff]")


def clean(path: str) -> str:
    """Validate a virtual path; raise :class:`BadPath` if it is invalid. The text is
    returned as sent (no normalisation), with empty components dropped."""
    bad = _BAD_CHARS.search(path)
    if bad:
        c = bad.group()
        if c == "\\":
            raise BadPath("backslashes are not allowed in paths")
        raise BadPath("path contains NUL, control or invalid characters")
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
        if part.lower().startswith(INTERNAL_PREFIX):
            raise BadPath(f"reserved name: {part}")
    return "/".join(parts)


def check_name(name: str) -> str:
    """A single file or folder name (no '/')."""
    name = clean(name)
    if name == "" or "/" in name:
        raise BadPath("a single, non-empty name is required")
    return name


def check_new_name(name: str) -> str:
    """A name about to be created: also not a Windows reserved name, which Windows
    clients of the WebDAV mount could neither open nor delete."""
    name = check_name(name)
    if _WINDOWS_RESERVED.match(name):
        raise BadPath(f"reserved name: {name}")
    return name


def addressable(name: str) -> bool:
    """Whether a name found on disk can be named by a client (listed, walked): what
    :func:`clean` refuses is left out everywhere, consistently."""
    return not (name.lower().startswith(INTERNAL_PREFIX) or _BAD_CHARS.search(name)
                or name in (".", ".."))


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


_PROC_FD = "/proc/self/fd"


class Handle:
    """A checked location, held open (see :meth:`Jail.open`); close it, or use ``with``.

    ``vpath`` is the path as asked (its last name as spelled on disk), ``real`` the
    virtual path of the real location (links resolved). ``path`` names the opened
    object, ``entry`` its name in the real folder holding it (what rename, link and
    unlink act on), ``folder`` that folder: all through ``/proc/self/fd``, valid
    while the handle is open.
    """

    def __init__(self, vpath: str, r: beneath.Resolved) -> None:
        self.vpath = vpath
        self.real = "/".join(r.real)
        self.name = r.name
        self.stat = r.stat
        self._r = r

    # -- what it is --------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return self._r.fd is not None

    @property
    def has_folder(self) -> bool:
        """Whether the folder holding it exists (False: a missing path's parent is
        missing too)."""
        return self._r.parent is not None

    @property
    def is_dir(self) -> bool:
        return self.stat is not None and st.S_ISDIR(self.stat.st_mode)

    @property
    def is_file(self) -> bool:
        return self.stat is not None and st.S_ISREG(self.stat.st_mode)

    @property
    def is_link(self) -> bool:
        return self.stat is not None and st.S_ISLNK(self.stat.st_mode)

    # -- descriptors and their /proc names ---------------------------------------------

    @property
    def fd(self) -> int:
        if self._r.fd is None:
            raise NotFound()
        return self._r.fd

    @property
    def parent_fd(self) -> int:
        if self._r.parent is None:
            raise NotFound()
        return self._r.parent

    @property
    def path(self) -> Path:
        return Path(f"{_PROC_FD}/{self.fd}")

    @property
    def folder(self) -> Path:
        return Path(f"{_PROC_FD}/{self.parent_fd}")

    @property
    def entry(self) -> Path:
        return self.folder / self.name

    def open_file(self) -> int:
        """A read descriptor of this regular file (the very object that was checked)."""
        if not self.is_file:
            raise NotFound()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            raise NotFound() from None
        return fd

    def restat(self) -> os.stat_result:
        self.stat = os.fstat(self.fd)
        return self.stat

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        self._r.close()

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a backstop: a response that never ran still frees them
        with contextlib.suppress(Exception):
            self._r.close()


class Jail:
    """Checks virtual paths and opens them beneath one root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        if not os.path.isdir(_PROC_FD):
            raise RuntimeError("/proc is not mounted: the path jail needs /proc/self/fd")
        self._aliases = {str(self.root), os.path.abspath(root)}
        self._root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def real(self, path: str) -> Path:
        """The real path of a cleaned virtual path, refusing anything that leaves the root."""
        candidate = os.path.realpath(os.path.join(self.root, path))
        if os.path.commonpath([candidate, self.root]) != str(self.root):
            raise NotFound()
        return Path(candidate)

    def virtual(self, real: Path | str) -> str:
        rel = os.path.relpath(real, self.root)
        return "" if rel == "." else rel.replace(os.sep, "/")

    def makedirs(self, scope: Scope, path: str) -> None:
        """``mkdir -p``: each missing folder created, in turn, in its checked parent."""
        parts = clean(path).split("/")
        for i in range(1, len(parts) + 1):
            with self.open(scope, "/".join(parts[:i]), must_exist=False) as h:
                if h.exists:
                    if not h.is_dir:
                        raise Conflict(f"{h.vpath!r} exists and is not a folder")
                    continue
            with self.open(scope, "/".join(parts[:i]), write=True, must_exist=False) as h:
                if not h.has_folder:
                    raise NotFound()  # removed meanwhile
                with contextlib.suppress(FileExistsError):
                    os.mkdir(h.name, dir_fd=h.parent_fd)

    def open(self, scope: Scope, raw: str, *, write: bool = False, follow: bool = True,
             must_exist: bool = True) -> Handle:
        """Check ``raw`` fully and open it (see the module docstring).

        Out of scope, outside the root and missing all answer :class:`NotFound`; in
        scope for reading but not for writing answers :class:`ReadOnly`. ``follow``:
        a symlink as the last component is followed (if its target is in scope), else
        the handle is the link itself. ``must_exist=False``: a missing last name gives
        a handle without ``fd`` whose ``name`` is the one to create (NFC, or the
        spelling of an entry that differs from it only by normalisation), and
        ``has_folder`` False if its folder is missing too.
        """
        path = clean(raw)
        if not scope.can_see(path):
            raise NotFound()
        parts = path.split("/") if path else []
        try:
            r = beneath.resolve(self._root_fd, self._aliases, parts, scope.can_see,
                                follow=follow, must_exist=must_exist)
        except beneath.Unreachable:
            raise NotFound() from None
        h = Handle(join(parent_of(path), r.asked_name) if path else "", r)
        try:
            if not scope.can_see(h.vpath):
                raise NotFound()
            if r.fd is None:
                check_new_name(r.name)
            if write:
                for p in (h.vpath, h.real):
                    if not scope.can_write(p):
                        raise ReadOnly()
        except BaseException:
            h.close()
            raise
        return h

    def resolve(self, scope: Scope, raw: str, *, write: bool = False,
                must_exist: bool = True) -> tuple[str, Path]:
        """The checks of :meth:`open`, answered as ``(virtual path, real path)``
        strings. The answer is only as good as the next lookup of that string: prefer
        :meth:`open` and the handle's ``/proc`` names."""
        with self.open(scope, raw, write=write, must_exist=must_exist) as h:
            return h.vpath, self.root / h.real
