"""The library's memory: every model file's sha256, valid while (size, mtime) hold.

Hashing a 7 GB checkpoint costs seconds, so it happens once per version of a file:
the row keeps ``size`` and ``mtime_ns`` and is believed only while both match what
``stat`` says. Paths are virtual (relative to the NAS root), so every replica shares
the rows through the database.

``find`` answers "is this sha256 already somewhere the caller can read?" from the rows,
then, for files never hashed, by hashing only those of exactly the expected size:
a model already on the NAS is reused, never downloaded twice.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .. import db
from ..placement import MODEL_SUFFIXES, within

CHUNK = 4 * 1024 * 1024


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = memoryview(bytearray(CHUNK))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(buf[:n])
    return h.hexdigest()


def is_model_file(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(MODEL_SUFFIXES)


class Index:
    def __init__(self, engine: sa.Engine, root: Path) -> None:
        self.engine = engine
        self.root = root

    def real(self, vpath: str) -> Path:
        return self.root / vpath

    def virtual(self, path: Path) -> str | None:
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return None

    # -- rows ---------------------------------------------------------------------------

    def row(self, vpath: str) -> sa.Row[Any] | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(db.files).where(db.files.c.path == vpath)).first()

    def current(self, vpath: str, st: os.stat_result | None = None) -> sa.Row[Any] | None:
        """The row, if it still describes the file on disk."""
        row = self.row(vpath)
        if row is None:
            return None
        if st is None:
            try:
                st = os.stat(self.real(vpath))
            except OSError:
                return None
        return row if (row.size, row.mtime_ns) == (st.st_size, st.st_mtime_ns) else None

    def record(self, vpath: str, sha256: str | None = None, **meta: Any) -> None:
        """Insert or update a file's row from its current stat (and what we know)."""
        st = os.stat(self.real(vpath))
        values = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "seen": time.time(),
                  **({"sha256": sha256} if sha256 else {}), **meta}
        with self.engine.begin() as conn:
            old = conn.execute(sa.select(db.files.c.size, db.files.c.mtime_ns)
                               .where(db.files.c.path == vpath)).first()
            if old is None:
                conn.execute(db.files.insert().values(path=vpath, **values))
                return
            if (old.size, old.mtime_ns) != (st.st_size, st.st_mtime_ns) and not sha256:
                values["sha256"] = None  # the file changed: its old hash is void
            conn.execute(db.files.update().where(db.files.c.path == vpath).values(**values))

    def forget(self, vpath: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(db.files.delete().where(db.files.c.path == vpath))

    def sha256(self, vpath: str) -> str:
        """The file's sha256, from the row when it is current, else hashed and stored."""
        st = os.stat(self.real(vpath))
        row = self.current(vpath, st)
        if row is not None and row.sha256:
            return str(row.sha256)
        digest = hash_file(self.real(vpath))
        self.record(vpath, digest)
        return digest

    # -- lookups ------------------------------------------------------------------------

    def find(self, sha256: str, prefixes: Iterable[str], size: int | None = None
             ) -> str | None:
        """A file under one of ``prefixes`` (virtual folders) whose content has this
        sha256. Rows first; then files of exactly ``size`` bytes that were never hashed."""
        prefixes = list(prefixes)
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(db.files.c.path).where(
                db.files.c.sha256 == sha256.lower())).all()
        for (vpath,) in rows:
            if any(within(vpath, p) for p in prefixes) and self.current(vpath) is not None:
                return str(vpath)
        if size is None:
            return None
        for vpath, st in self.walk(prefixes):
            if st.st_size != size:
                continue
            row = self.current(vpath, st)
            if row is not None and row.sha256:
                continue  # hashed already, and not this one
            if self.sha256(vpath) == sha256.lower():
                return vpath
        return None

    def walk(self, prefixes: Iterable[str]) -> Iterator[tuple[str, os.stat_result]]:
        """Model files (virtual path, stat) below the prefixes; hidden entries and
        symlinks leading outside the root are skipped."""
        root_real = os.path.realpath(self.root)
        for prefix in prefixes:
            top = self.real(prefix)
            if not top.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not is_model_file(name):
                        continue
                    full = os.path.join(dirpath, name)
                    try:
                        st = os.stat(full)
                    except OSError:
                        continue
                    real = os.path.realpath(full)
                    if os.path.commonpath([real, root_real]) != root_real:
                        continue
                    yield Path(full).relative_to(self.root).as_posix(), st
