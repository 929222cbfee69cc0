"""Opening a path beneath the NAS root: every step checked, no path string trusted twice.

A check of a path string followed by an open of the same string is a race: in between,
another process may swap a folder for a symlink (``renameat2(RENAME_EXCHANGE)``) and
the open follows it into another home. So nothing here opens a path as a string:

1. The folders of a path are opened from a descriptor of the root without following
   any symlink: one ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` where the kernel
   has it (Linux 5.6+, and not refused by a seccomp filter), else one
   ``openat(O_PATH | O_NOFOLLOW)`` per component from its parent's descriptor.
2. A symlink met on the way is read from its own descriptor (``readlinkat(fd, "")``)
   and followed by hand: its target is resolved as text against the *real* folder it
   sits in (a chain of opened folders, so it holds no link), and the walk starts again
   from the root, at most :data:`MAX_HOPS` times (the kernel's limit). ``check`` is
   asked about every real location reached, so a link is followed only when its
   target is somewhere the caller may see.
3. The result holds ``O_PATH`` descriptors of exactly the objects that were checked.
   Everything after uses them: ``/proc/self/fd/N`` names the object itself (a "magic
   link" the kernel does not look up again by path) and ``/proc/self/fd/N/name`` a
   name inside an opened folder, so path-taking code (open, rename, link, statvfs,
   Pillow) works on the checked object without a second lookup.

Names: a component that does not exist byte for byte is looked up by its NFC form
among the folder's entries (macOS and rsync write NFD names; clients may send either),
so a name is reachable exactly as listed and under its NFC spelling. A missing name
(to be created) is returned NFC, unless an entry equal to it after normalisation
exists: then that entry is the answer, so a write never creates a look-alike twin.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat as st
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

MAX_HOPS = 40
PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC

# openat2(2): struct open_how and the RESOLVE_* flags (linux/openat2.h). Syscall 437 on
# every architecture (new syscalls share one number since 5.x).
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


class _Openat2:
    """``openat2`` through ctypes; switched off for good at its first ENOSYS/EPERM."""

    def __init__(self) -> None:
        self.enabled = True
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            self._libc.syscall.restype = ctypes.c_long
        except OSError:
            self.enabled = False

    def open_dirs(self, dir_fd: int, rel: str) -> int | None:
        """A descriptor of folder ``rel`` beneath ``dir_fd`` if no component is a
        symlink; None when that is not so (or the kernel cannot tell us)."""
        if not self.enabled:
            return None
        how = _OpenHow(os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0,
                       _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
        fd = self._libc.syscall(_SYS_OPENAT2, dir_fd, os.fsencode(rel), ctypes.byref(how),
                                ctypes.sizeof(how))
        if fd >= 0:
            return int(fd)
        if ctypes.get_errno() in (errno.ENOSYS, errno.EPERM, errno.E2BIG):
            self.enabled = False  # old kernel or a seccomp filter: per-component opens
        return None  # ELOOP (a link), ENOENT (maybe an NFD name), ...: the slow walk


openat2 = _Openat2()


class Unreachable(Exception):
    """The path does not lead to anything the caller may see (answered as 404)."""


@dataclass
class Resolved:
    """What :func:`resolve` found. The descriptors belong to the caller."""

    fd: int | None             # O_PATH descriptor of the object; None if it is missing
    parent: int | None         # O_PATH descriptor of the real folder holding it
    name: str                  # its name in that folder, as on disk ('' for the root)
    real: tuple[str, ...]      # components of its real location below the root
    stat: os.stat_result | None
    asked_name: str            # the last asked component as spelled on disk

    def close(self) -> None:
        for fd in (self.fd, self.parent):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fd = self.parent = None


# The only characters whose NFC form is ASCII (Unicode 14: GREEK QUESTION MARK, GREEK
# VARIA, KELVIN SIGN). An ASCII name without ';', '`' or 'K' has no other spelling.
_ASCII_FROM = frozenset(";`K")


def nfc_match(dir_fd: int, name: str) -> str | None:
    """The entry of the folder whose NFC form equals ``name``'s (``name`` itself is
    missing), if there is exactly one."""
    want = unicodedata.normalize("NFC", name)
    if want != name:
        try:
            os.stat(want, dir_fd=dir_fd, follow_symlinks=False)
            return want
        except OSError:
            pass
    if want.isascii() and not _ASCII_FROM.intersection(want):
        return None  # no entry can be a look-alike: skip reading a big folder
    found = None
    try:
        rd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        for other in os.listdir(rd):
            if other.isascii() or other == name:
                continue  # an ASCII entry is its own NFC form: checked above
            if unicodedata.normalize("NFC", other) == want:
                if found is not None:
                    return None  # two look-alikes already: only the exact name counts
                found = other
    finally:
        os.close(rd)
    return found


def _split(text: str) -> list[str]:
    return [p for p in text.split("/") if p not in ("", ".")]


class _Walk:
    """The folders opened so far: ``fds[i + 1]`` is the folder ``real[:i + 1]`` and
    ``fds[0]`` the root. Each was opened with O_NOFOLLOW from the one before it (or by
    one ``openat2`` refusing links, which leaves the ones above it -1 until needed),
    so ``real`` is a real location and '..' is its textual parent."""

    def __init__(self, root_fd: int) -> None:
        self.fds = [os.dup(root_fd)]
        self.real: list[str] = []

    def fd(self, i: int = -1) -> int:
        """Descriptor ``i`` (negative: from the end), opened now if it was skipped."""
        i %= len(self.fds)
        if self.fds[i] < 0:
            j = max(k for k in range(i) if self.fds[k] >= 0)
            for k in range(j + 1, i + 1):
                self.fds[k] = os.open(self.real[k - 1], PATH_FLAGS | os.O_DIRECTORY,
                                      dir_fd=self.fds[k - 1])
        return self.fds[i]

    def push(self, name: str, fd: int) -> None:
        self.real.append(name)
        self.fds.append(fd)

    def skip_to(self, names: list[str], fd: int) -> None:
        """``names`` opened at once; ``fd`` is the last one's."""
        for name in names[:-1]:
            self.real.append(name)
            self.fds.append(-1)
        self.push(names[-1], fd)

    def up(self) -> None:
        if not self.real:
            raise Unreachable()  # above the root
        self.real.pop()
        fd = self.fds.pop()
        if fd >= 0:
            os.close(fd)

    def take(self, i: int) -> int:
        """Descriptor ``i``, now the caller's."""
        fd = self.fd(i)
        self.fds[i] = -2  # owned elsewhere: neither reopened nor closed here
        return fd

    def close(self) -> None:
        for fd in self.fds:
            if fd >= 0:
                os.close(fd)
        self.fds = []


def resolve(root_fd: int, root_aliases: Iterable[str], parts: list[str],
            check: Callable[[str], bool], *, follow: bool = True,
            must_exist: bool = True) -> Resolved:
    """Open ``parts`` (clean components) beneath ``root_fd``; see the module docstring.

    ``check(real virtual path)`` must hold for every real location reached (folders on
    the way, link targets, the result). ``follow``: whether a symlink as the last
    component is followed (False: the link itself, for rename and delete).
    ``must_exist=False``: a missing last component is returned with ``fd=None`` and
    its name to create (and ``parent=None`` if a folder before it is missing too).
    Raises :class:`Unreachable` for everything else.
    """
    aliases = tuple(a.rstrip("/") for a in root_aliases)
    # (component, is the asked last one); the flag survives the links followed
    pending: deque[tuple[str, bool]] = deque((p, i == len(parts) - 1)
                                             for i, p in enumerate(parts))
    hops = 0
    asked_name = ""
    w = _Walk(root_fd)
    try:
        _fast_forward(w, pending, check)
        while pending:
            name, is_asked_last = pending.popleft()
            last = not pending
            if name == "..":  # only ever from a link's target, as the kernel reads it
                w.up()
                continue
            try:
                fd = os.open(name, PATH_FLAGS, dir_fd=w.fd())
            except FileNotFoundError:
                spelled = nfc_match(w.fd(), name)
                if spelled is None:
                    return _missing(w, name, is_asked_last, last, pending, check,
                                    must_exist, asked_name)
                name = spelled
                fd = os.open(name, PATH_FLAGS, dir_fd=w.fd())
            if is_asked_last:
                asked_name = name
            s = os.fstat(fd)
            if st.S_ISLNK(s.st_mode) and (follow or not last):
                hops += 1
                try:
                    target = os.readlink("", dir_fd=fd)
                finally:
                    os.close(fd)
                if hops > MAX_HOPS:
                    raise Unreachable()
                if target.startswith("/"):  # from the root (if it is inside the root)
                    target = _under_root(target, aliases)
                    while w.real:
                        w.up()
                pending.extendleft(reversed([(p, False) for p in _split(target)]))
                _fast_forward(w, pending, check)
                continue
            if not check("/".join([*w.real, name])):
                os.close(fd)
                raise Unreachable()
            if last:
                return Resolved(fd, w.take(-1), name, (*w.real, name), s,
                                asked_name or name)
            if not st.S_ISDIR(s.st_mode):
                os.close(fd)
                raise Unreachable()
            w.push(name, fd)
        # the walk ended on a folder (the root, or a link's '..'): that is the result
        if not check("/".join(w.real)):
            raise Unreachable()
        fd = w.take(-1)
        parent = w.take(-2) if w.real else None
        return Resolved(fd, parent, w.real[-1] if w.real else "", tuple(w.real),
                        os.fstat(fd), asked_name)
    except OSError:
        raise Unreachable() from None
    finally:
        w.close()


def _fast_forward(w: _Walk, pending: deque[tuple[str, bool]],
                  check: Callable[[str], bool]) -> None:
    """Open every plain folder component before the last in one ``openat2`` call."""
    folders: list[str] = []
    for name, _ in list(pending)[:-1]:
        if name == "..":
            break
        folders.append(name)
    if not folders:
        return
    prefixes = ["/".join([*w.real, *folders[:i + 1]]) for i in range(len(folders))]
    if not all(check(p) for p in prefixes):
        return  # the slow walk refuses at the right place
    fd = openat2.open_dirs(w.fd(), "/".join(folders))
    if fd is None:
        return
    w.skip_to(folders, fd)
    for _ in folders:
        pending.popleft()


def _missing(w: _Walk, name: str, is_asked_last: bool, last: bool,
             pending: deque[tuple[str, bool]], check: Callable[[str], bool],
             must_exist: bool, asked_name: str) -> Resolved:
    """A name not found: the place to create it (``must_exist=False``), else refused."""
    if must_exist:
        raise Unreachable()
    rest = [unicodedata.normalize("NFC", p) for p in (name, *(q for q, _ in pending))]
    if ".." in rest or not check("/".join([*w.real, *rest])):
        raise Unreachable()
    if not last:  # a missing folder on the way: no parent to create in
        return Resolved(None, None, rest[-1], (*w.real, *rest), None, rest[-1])
    new = rest[0]
    return Resolved(None, w.take(-1), new, (*w.real, new), None,
                    new if is_asked_last else (asked_name or new))


def _under_root(target: str, aliases: tuple[str, ...]) -> str:
    """An absolute link target as a path below the root; refused if it is not."""
    for alias in aliases:
        if target == alias or target.startswith(alias + "/"):
            return target[len(alias):]
    raise Unreachable()
