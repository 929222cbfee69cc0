"""The one walker: every read of many entries on behalf of a caller goes through here.

Zip downloads, copies (and their size for the quota), WebDAV and API listings take
their entries from :func:`walk` or :func:`listing`, which apply one rule to every
entry, so a new feature that walks a tree cannot forget it
(``tests/filebrowser/security/test_walkers.py`` fails on any other module calling
``os.walk``, ``os.scandir``, ``shutil.copytree``... on user paths):

- only what the caller may see: an entry is yielded if the caller may read it, both
  under the path asked and under its real location; a folder the caller may only
  *see* (an ancestor of their home, like ``users/``) is entered, but yields only the
  children that lead to what they may read, so ``zip users`` is the caller's home;
- symlinks are never followed below the top (a link as the top was followed, and
  checked, by the jail): they are left out of walks, and a listing shows one only if
  ``link_ok`` says its target is in scope;
- our internal names (``.atelier*``) and names the jail cannot address (control
  characters, backslashes, undecodable bytes: :func:`~..access.jail.addressable`) are
  left out, so what a walk yields is exactly what a listing shows and a client can name;
- through descriptors: each folder is opened from its parent's descriptor with
  ``O_NOFOLLOW | O_DIRECTORY`` and each file from its folder's with ``O_NOFOLLOW``,
  checked to be the inode the walk saw, so a folder swapped for a symlink mid-walk
  is skipped, never followed.

Folders nested deeper than :data:`MAX_DEPTH` below the top are refused
(:class:`~..errors.InvalidInput`): one descriptor is held per level.
"""

from __future__ import annotations

import os
import stat as st
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..access.jail import Handle, Scope, addressable, join
from ..errors import InvalidInput

MAX_DEPTH = 256
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC


class Changed(OSError):
    """The entry is no longer the one the walk saw (replaced, or turned into a link)."""


@dataclass(frozen=True)
class Item:
    """One entry of a walk. ``dir_fd`` (and so :meth:`open`) is valid only until the walk
    moves on: read the file before asking for the next item."""

    rel: tuple[str, ...]   # components below the top; () for the top itself
    is_dir: bool
    stat: os.stat_result
    dir_fd: int            # O_PATH descriptor of the folder holding it (or the top's own)
    name: str              # its name there ('' for the top: dir_fd is the object itself)

    def open(self) -> int:
        """A read descriptor of this regular file, never through a symlink."""
        if self.name:
            fd = os.open(self.name, _READ_FLAGS | os.O_NOFOLLOW, dir_fd=self.dir_fd)
        else:
            fd = os.open(f"/proc/self/fd/{self.dir_fd}", _READ_FLAGS)
        s = os.fstat(fd)
        if not st.S_ISREG(s.st_mode) or (s.st_dev, s.st_ino) != (self.stat.st_dev,
                                                                  self.stat.st_ino):
            os.close(fd)
            raise Changed(f"{self.name!r} changed during the walk")
        return fd


def _names(dir_fd: int) -> list[str]:
    """A folder's entries, sorted, without what no client may name."""
    rd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        names = os.listdir(rd)
    finally:
        os.close(rd)
    return sorted(n for n in names if addressable(n))


def walk(top: Handle, scope: Scope, *, max_depth: int = MAX_DEPTH) -> Iterator[Item]:
    """``top`` and, for a folder, everything below it the caller may see, depth first,
    parents before children, names sorted (see the module docstring)."""
    s = top.stat
    if s is None:
        return
    if st.S_ISREG(s.st_mode):
        if scope.can_read(top.vpath) and scope.can_read(top.real):
            yield Item((), False, s, top.fd, "")
        return
    if not st.S_ISDIR(s.st_mode):
        return
    readable = scope.can_read(top.vpath) and scope.can_read(top.real)
    yield Item((), True, s, top.fd, "")
    yield from _below(top, scope, top.fd, (), readable, max_depth)


def _below(top: Handle, scope: Scope, dir_fd: int, rel: tuple[str, ...], readable: bool,
           max_depth: int) -> Iterator[Item]:
    if len(rel) >= max_depth:
        raise InvalidInput(f"folders nested more than {max_depth} levels deep")
    try:
        names = _names(dir_fd)
    except OSError:
        return  # vanished or unreadable since it was opened: nothing below
    for name in names:
        sub = (*rel, name)
        if not readable:
            vp, rp = join(top.vpath, "/".join(sub)), join(top.real, "/".join(sub))
            if not (scope.can_see(vp) and scope.can_see(rp)):
                continue
        try:
            s = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        if st.S_ISREG(s.st_mode):
            if readable or (scope.can_read(vp) and scope.can_read(rp)):
                yield Item(sub, False, s, dir_fd, name)
        elif st.S_ISDIR(s.st_mode):
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                continue  # gone, or swapped for a link: not followed
            try:
                yield Item(sub, True, os.fstat(fd), dir_fd, name)
                yield from _below(top, scope, fd, sub,
                                  readable or (scope.can_read(vp) and scope.can_read(rp)),
                                  max_depth)
            finally:
                os.close(fd)
        # symlinks, sockets, devices, FIFOs: never part of a walk


def size(top: Handle, scope: Scope) -> int:
    """Bytes of the regular files a walk of ``top`` yields (what a copy would write)."""
    return sum(i.stat.st_size for i in walk(top, scope) if not i.is_dir)


def listing(folder: Handle, scope: Scope, link_ok: Callable[[str], bool] | None = None,
            ) -> Iterator[tuple[str, bool, bool]]:
    """``(name, is_dir, is_link)`` of each folder and regular file of one folder the
    caller may see, unsorted, in one ``getdents`` pass (the kernel's entry types:
    nothing is stat'ed but links; ``is_dir`` of a link is its target's).
    ``link_ok(name)`` decides whether a symlink is shown (whether its target is in
    scope); without it links are left out."""
    only = scope.children_of(folder.vpath)
    if only is not None:
        only_real = scope.children_of(folder.real)
        only = only if only_real is None else only & only_real
    rd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=folder.fd)
    try:
        with os.scandir(rd) as it:
            for e in it:
                name = e.name
                if (only is not None and name not in only) or not addressable(name):
                    continue
                try:
                    if e.is_symlink():
                        if link_ok is None or not link_ok(name):
                            continue
                        is_dir, link = e.is_dir(), True
                    else:
                        is_dir, link = e.is_dir(follow_symlinks=False), False
                    if not is_dir and not e.is_file():
                        continue  # sockets, devices, FIFOs: nothing a client can open
                except OSError:
                    continue
                yield name, is_dir, link
    finally:
        os.close(rd)
