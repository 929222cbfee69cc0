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


def nfc_match(dir_fd: int, name: str) -> str | None:
    """The entry of the folder whose NFC form equals ``name``'s, if exactly one."""
    want = unicodedata.normalize("NFC", name)
    found = None
    try:
        rd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        for other in os.listdir(rd):
            if other == name or (other.isascii() and want.isascii()):
                continue  # an ASCII name is its own NFC form
            if unicodedata.normalize("NFC", other) == want:
                if found is not None:
                    return None  # two look-alikes already: only the exact name counts
                found = other
    finally:
        os.close(rd)
    return found


def _split(text: str) -> list[str]:
    return [p for p in text.split("/") if p not in ("", ".")]


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
    # (component, is the asked last one); the flag survives restarts after links
    pending: deque[tuple[str, bool]] = deque((p, i == len(parts) - 1)
                                             for i, p in enumerate(parts))
    hops = 0
    asked_name = ""
    while True:  # one pass from the root; a symlink starts another
        cur = os.dup(root_fd)
        real: list[str] = []
        try:
            # fast path: every folder before the last component in one openat2
            if len(pending) > 1:
                folders = [p for p, _ in list(pending)[:-1]]
                prefixes = ["/".join(folders[:i + 1]) for i in range(len(folders))]
                if all(check(p) for p in prefixes):
                    fd = openat2.open_dirs(cur, prefixes[-1])
                    if fd is not None:
                        os.close(cur)
                        cur = fd
                        real = folders
                        for _ in folders:
                            pending.popleft()
            restart = False
            while pending:
                name, is_asked_last = pending.popleft()
                last = not pending
                try:
                    fd = os.open(name, PATH_FLAGS, dir_fd=cur)
                except FileNotFoundError:
                    spelled = nfc_match(cur, name)
                    if spelled is None:
                        if last and not must_exist:
                            new = unicodedata.normalize("NFC", name)
                            if is_asked_last:
                                asked_name = new
                            if not check("/".join([*real, new])):
                                raise Unreachable() from None
                            out = Resolved(None, cur, new, (*real, new), None,
                                           asked_name or new)
                            cur = -1
                            return out
                        if not must_exist:  # a missing folder on the way: no parent
                            rest = [unicodedata.normalize("NFC", p)
                                    for p in (name, *(q for q, _ in pending))]
                            if not check("/".join([*real, *rest])):
                                raise Unreachable() from None
                            return Resolved(None, None, rest[-1], (*real, *rest), None,
                                            rest[-1])
                        raise Unreachable() from None
                    name = spelled
                    try:
                        fd = os.open(name, PATH_FLAGS, dir_fd=cur)
                    except OSError:
                        raise Unreachable() from None
                except OSError:
                    raise Unreachable() from None
                if is_asked_last:
                    asked_name = name
                s = os.fstat(fd)
                if st.S_ISLNK(s.st_mode) and (follow or not last):
                    hops += 1
                    try:
                        target = os.readlink("", dir_fd=fd)
                    except OSError:
                        raise Unreachable() from None
                    finally:
                        os.close(fd)
                    if hops > MAX_HOPS:
                        raise Unreachable()
                    pending.extendleft(reversed(_follow(real, target, aliases)))
                    restart = True
                    break
                real.append(name)
                if not check("/".join(real)):
                    os.close(fd)
                    raise Unreachable()
                if last:
                    out = Resolved(fd, cur, name, tuple(real), s, asked_name or name)
                    cur = -1
                    return out
                if not st.S_ISDIR(s.st_mode):
                    os.close(fd)
                    raise Unreachable()
                os.close(cur)
                cur = fd
            if not restart:  # nothing asked: the root itself
                if not check(""):
                    raise Unreachable()
                out = Resolved(cur, None, "", (), os.fstat(cur), "")
                cur = -1
                return out
        finally:
            if cur >= 0:
                os.close(cur)


def _follow(real: list[str], target: str, aliases: tuple[str, ...]) -> list[tuple[str, bool]]:
    """The components, from the root, of a link's target; ``real`` is the folder the link
    sits in (no links in it, so '..' is its textual parent). Raises if it leaves the root."""
    if target.startswith("/"):
        for alias in aliases:
            if target == alias or target.startswith(alias + "/"):
                base: list[str] = []
                target = target[len(alias):]
                break
        else:
            raise Unreachable()
    else:
        base = list(real)
    for part in _split(target):
        if part == "..":
            if not base:
                raise Unreachable()
            base.pop()
        else:
            base.append(part)
    # the target's components, then whatever followed the link (kept by the caller)
    return [(p, False) for p in base]
