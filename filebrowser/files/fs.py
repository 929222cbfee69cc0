"""File operations on real paths already checked by the jail.

Listing reads one directory with ``os.scandir`` and uses the entry types the kernel
returns, so sorting by name never opens or stats every file: only the page that is
returned is stat'ed. Sorting by size or mtime must stat everything, and does so once.
Pages are addressed by an opaque cursor holding the last key, so a listing stays
consistent while files come and go.

Writes never show half a file under its final name: data goes to a hidden
``.atelier-tmp-*`` name in the target folder (same filesystem), is fsynced, and is
linked or renamed into place. ``os.link`` refuses an existing name atomically, which
is how two writers racing for one name get one winner and one 409.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import stat as st
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..access.jail import Handle, Scope
from ..errors import Conflict, InsufficientStorage, InvalidInput, NotFound
from . import walk

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".avif", ".bmp", ".tif", ".tiff"})
MODEL_EXTS = frozenset({".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".sft"})
TMP_PREFIX = ".atelier-tmp-"
TUS_PARTIAL_PREFIX = f"{TMP_PREFIX}tus-"  # counted by their upload's offset
Kind = Literal["dir", "image", "model", "other"]
SortKey = Literal["name", "mtime", "size"]
ConflictPolicy = Literal["fail", "overwrite", "rename"]


def kind_of(name: str, is_dir: bool) -> Kind:
    if is_dir:
        return "dir"
    ext = os.path.splitext(name)[1].lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in MODEL_EXTS:
        return "model"
    return "other"


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    size: int
    mtime: float

    def to_json(self, folder: str) -> dict[str, object]:
        return {
            "name": self.name,
            "path": f"{folder}/{self.name}" if folder else self.name,
            "type": "dir" if self.is_dir else "file",
            "kind": kind_of(self.name, self.is_dir),
            "size": self.size,
            "mtime": self.mtime,
        }


def entry_of(h: Handle) -> Entry:
    """The entry of an opened location (its stat as opened; the name as asked)."""
    s = h.stat
    if s is None:
        raise NotFound()
    is_dir = st.S_ISDIR(s.st_mode)
    return Entry(h.vpath.rpartition("/")[2], is_dir, 0 if is_dir else s.st_size, s.st_mtime)


def stat_entry(real: Path) -> Entry:
    """The entry itself (a symlink is described, never followed: its target may be
    somewhere the caller may not see)."""
    try:
        s = os.stat(real, follow_symlinks=False)
    except FileNotFoundError:
        raise NotFound() from None
    is_dir = st.S_ISDIR(s.st_mode)
    return Entry(real.name, is_dir, 0 if is_dir else s.st_size, s.st_mtime)


def _encode_cursor(key: list[object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, ensure_ascii=False).encode()).decode()


def _decode_cursor(cursor: str) -> list[object]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("invalid cursor") from None
    if not isinstance(key, list) or len(key) != 3:
        raise InvalidInput("invalid cursor")
    return key


def list_dir(folder: Handle, scope: Scope, *, sort: SortKey = "name", reverse: bool = False,
             kinds: frozenset[str] | None = None, limit: int = 200, cursor: str | None = None,
             link_ok: Callable[[str], bool] | None = None,
             ) -> tuple[list[Entry], str | None, int]:
    """One page of a folder: (entries, next cursor or None, total matching entries).

    Folders come first whatever the order. The entries are those :func:`walk.listing`
    lets the caller see (``link_ok(name)`` vets symlinks: whether they lead somewhere
    the caller may see). With ``sort="name"`` nothing is stat'ed but the returned
    page: a 100,000-file folder costs one ``getdents`` pass and a sort.
    """
    if not folder.is_dir:
        raise InvalidInput("not a folder")
    dfd = folder.fd
    groups: tuple[list[str], list[str]] = ([], [])
    stats: dict[str, os.stat_result] = {}
    links: set[str] = set()
    need_stat = sort != "name"
    for name, is_dir, is_link in walk.listing(folder, scope, link_ok):
        if is_link:
            links.add(name)
        if need_stat:
            try:
                stats[name] = os.stat(name, dir_fd=dfd, follow_symlinks=is_link)
            except OSError:
                continue
        groups[0 if is_dir else 1].append(name)
    dirs, files = groups
    if kinds is not None:
        dirs = dirs if "dir" in kinds else []
        files = [n for n in files if kind_of(n, False) in kinds]

    keyfn: Callable[[str], tuple[object, str]]
    if sort == "name":
        def keyfn(n: str) -> tuple[object, str]:
            return (n.casefold(), n)
        for lst in (dirs, files):  # two C-level sorts instead of a Python key per name
            lst.sort()
            lst.sort(key=str.casefold)
    else:
        if sort == "mtime":
            def keyfn(n: str) -> tuple[object, str]:
                return (stats[n].st_mtime, n)
        else:
            def keyfn(n: str) -> tuple[object, str]:
                return (0 if n in dirset else stats[n].st_size, n)
        dirset = set(dirs)
        dirs.sort(key=keyfn)
        files.sort(key=keyfn)
    if reverse:
        dirs.reverse()
        files.reverse()
    total = len(dirs) + len(files)
    start = 0
    if cursor:
        group, key, mark_name = _decode_cursor(cursor)
        lst = dirs if group == 0 else files
        mark = (key, mark_name)
        try:
            if reverse:  # the list is descending: count the keys >= mark
                pos = len(lst) - bisect.bisect_left(lst[::-1], mark, key=keyfn)
            else:
                pos = bisect.bisect_right(lst, mark, key=keyfn)
        except TypeError:
            raise InvalidInput("invalid cursor") from None
        start = pos if group == 0 else len(dirs) + pos
    page = [(0, n) for n in dirs[start:start + limit]]
    if len(page) < limit:
        fstart = max(0, start - len(dirs))
        page += [(1, n) for n in files[fstart:fstart + limit - len(page)]]
    entries = []
    for group, name in page:
        try:
            s = stats.get(name) or os.stat(name, dir_fd=dfd, follow_symlinks=name in links)
        except OSError:
            continue
        entries.append(Entry(name, group == 0, 0 if group == 0 else s.st_size, s.st_mtime))
    nxt = None
    if page and start + len(page) < total:
        g, n = page[-1]
        k = keyfn(n)[0]
        nxt = _encode_cursor([g, k, n])
    return entries, nxt, total


# -- writing ------------------------------------------------------------------------


def check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise InsufficientStorage(
            f"not enough free space: {needed} bytes needed, {free} free",
            needed=needed, free=free)


def tmp_name(folder: Path, name: str = "") -> Path:
    return folder / f"{TMP_PREFIX}{secrets.token_hex(6)}-{name[:80]}"


def free_name(folder: Path, name: str) -> str:
    """``name``, or ``name (1).ext``, ``name (2).ext``... whichever does not exist yet."""
    if not os.path.lexists(folder / name):
        return name
    stem, ext = os.path.splitext(name)
    for i in range(1, 10_000):
        candidate = f"{stem} ({i}){ext}"
        if not os.path.lexists(folder / candidate):
            return candidate
    raise Conflict("too many files with this name")


def place(tmp: Path, folder: Path, name: str, policy: ConflictPolicy) -> str:
    """Move the finished ``tmp`` to ``folder/name`` atomically; return the final name."""
    try:
        if policy == "overwrite":
            if (folder / name).is_dir():
                raise Conflict(f"{name!r} is a folder")
            os.replace(tmp, folder / name)
            return name
        for _ in range(100):
            final = name if policy == "fail" else free_name(folder, name)
            try:
                if tmp.is_dir():
                    # rename(2) replaces an empty folder; check first, the race is tiny
                    if os.path.lexists(folder / final):
                        raise FileExistsError(final)
                    os.rename(tmp, folder / final)
                else:
                    os.link(tmp, folder / final)
                    os.unlink(tmp)
                return final
            except FileExistsError:
                if policy == "fail":
                    raise Conflict(f"{name!r} already exists") from None
        raise Conflict(f"could not find a free name for {name!r}")
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_stream(folder: Path, name: str, chunks: Iterator[bytes], policy: ConflictPolicy,
                 *, max_bytes: int | None = None) -> tuple[str, int]:
    """Write ``chunks`` to ``folder/name`` atomically; return (final name, size)."""
    if policy == "fail" and os.path.lexists(folder / name):
        raise Conflict(f"{name!r} already exists")
    tmp = tmp_name(folder, name)
    size = 0
    try:
        with open(tmp, "xb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # live: the stale-file sweep keeps off
            for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise InsufficientStorage("upload larger than allowed", limit=max_bytes)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        final = place(tmp, folder, name, policy)
        fsync_dir(folder)
        return final, size
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(exc, InsufficientStorage):
            raise InsufficientStorage("the disk is full") from None
        raise
    finally:
        _remove(tmp)


def copy(src: Handle, scope: Scope, dst_folder: Path, name: str,
         policy: ConflictPolicy) -> str:
    """Server-side copy of what ``scope`` may read under ``src`` (:func:`walk.walk`:
    symlinks and hidden names left out), built in a hidden temporary folder beside
    the target and placed atomically; nothing is left behind if it fails."""
    if policy == "fail" and os.path.lexists(dst_folder / name):
        raise Conflict(f"{name!r} already exists")
    tmp = tmp_name(dst_folder, name)
    try:
        _copy_into(src, scope, tmp)
        return place(tmp, dst_folder, name, policy)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("the disk is full") from None
        raise
    finally:
        _remove(tmp)


def _copy_into(src: Handle, scope: Scope, tmp: Path) -> None:
    """Write the walk of ``src`` to the new name ``tmp``, through descriptors."""
    made: list[tuple[int, os.stat_result]] = []  # destination folders being filled
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        for item in walk.walk(src, scope):
            while len(made) > len(item.rel):
                _close_dir(*made.pop())
            mode = st.S_IMODE(item.stat.st_mode)
            if item.is_dir:
                if made:
                    os.mkdir(item.name, mode | 0o700, dir_fd=made[-1][0])
                    fd = os.open(item.name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW,
                                 dir_fd=made[-1][0])
                else:
                    os.mkdir(tmp, mode | 0o700)
                    fd = os.open(tmp, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
                made.append((fd, item.stat))
                continue
            try:
                sfd = item.open()
            except (FileNotFoundError, walk.Changed):
                continue  # gone since the walk saw it
            try:
                if made:
                    dfd = os.open(item.name, flags, mode, dir_fd=made[-1][0])
                else:
                    dfd = os.open(tmp, flags, mode)
                try:
                    _copy_data(sfd, dfd)
                    os.utime(dfd, ns=(item.stat.st_atime_ns, item.stat.st_mtime_ns))
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            finally:
                os.close(sfd)
    finally:
        while made:
            _close_dir(*made.pop())


def _close_dir(fd: int, s: os.stat_result) -> None:
    """Give a copied folder its source's times (after its content is in), and close it."""
    try:
        os.utime(f"/proc/self/fd/{fd}", ns=(s.st_atime_ns, s.st_mtime_ns))
    except OSError:
        pass
    finally:
        os.close(fd)


def _copy_data(src: int, dst: int) -> None:
    """All of ``src`` into ``dst`` in the kernel (``copy_file_range``: reflinks where the
    filesystem has them), else ``sendfile``, else read/write."""
    try:
        while os.copy_file_range(src, dst, 1 << 30):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    offset = os.lseek(dst, 0, os.SEEK_CUR)
    os.lseek(src, offset, os.SEEK_SET)
    while True:
        chunk = os.read(src, 1 << 20)
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view):]


def move(src: Path, dst_folder: Path, name: str, policy: ConflictPolicy) -> str:
    """Rename ``src`` (the entry itself: a symlink is moved as a link, never followed)."""
    src_is_dir = st.S_ISDIR(os.lstat(src).st_mode)
    if policy == "overwrite":
        if (dst_folder / name).is_dir() and not src_is_dir:
            raise Conflict(f"{name!r} is a folder")
        os.replace(src, dst_folder / name)
        return name
    final = name if policy == "fail" else free_name(dst_folder, name)
    if src_is_dir:
        if os.path.lexists(dst_folder / final):
            raise Conflict(f"{final!r} already exists")
        os.rename(src, dst_folder / final)
    else:
        try:
            os.link(src, dst_folder / final, follow_symlinks=False)
        except FileExistsError:
            raise Conflict(f"{final!r} already exists") from None
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP):
                raise
            # different filesystem or no hard links: fall back to rename semantics
            if os.path.lexists(dst_folder / final):
                raise Conflict(f"{final!r} already exists") from None
            shutil.move(src, dst_folder / final)
            return final
        os.unlink(src)
    return final


def tree_size(path: Path, skip_prefix: str | None = None) -> int:
    """Bytes below ``path`` (or of the file), never following symlinks; files and folders
    whose names start with ``skip_prefix`` are left out."""
    try:
        s = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not st.S_ISDIR(s.st_mode):
        return s.st_size if st.S_ISREG(s.st_mode) else 0
    total = 0
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    if skip_prefix and e.name.startswith(skip_prefix):
                        continue  # a file, or a folder (a copy in progress) and all in it
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        elif e.is_file(follow_symlinks=False):
                            total += e.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def remove_tree(path: Path) -> None:
    _remove(path)
