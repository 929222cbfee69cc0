"""The image and model index: a rebuildable cache in the database, kept current.

Tables (declared on :data:`filebrowser.db.metadata`)::

    image_index    one row per image or model file: path (root-relative), folder, name,
                   kind, size, mtime, dimensions, the generator (source), parsed
                   parameters (prompt, negative, model, sampler, loras and embeddings
                   "|a|b|", the rest as JSON) and their words for search (terms, see
                   :mod:`.terms`)
    image_fts      SQLite only: FTS5 over (prompt, negative, terms, path), rowid =
                   image_index.id; CJK characters are indexed one per token (see
                   :func:`fts_text`). Contentless: the texts are image_index's, so a
                   doc is taken out with the texts it went in with (:func:`_fts_doc`)
    index_folders  folder path -> mtime_ns when it was last listed (-1: list again)
    index_meta     schema version; a mismatch drops and rebuilds the cache

Keeping it current: filesystem events (watchdog, inotify) for local writes, and a
periodic rescan that stats every known folder and re-lists only those whose mtime
moved, because inotify does not see what other NFS clients write. A file rewritten in
place leaves its folder's mtime alone, so a deep rescan (stat every file) runs less
often. A folder modified within the last :data:`RACY_SECONDS` is listed again next
time (mtime granularity, git's "racy" problem).

Writing: one thread writes. Rows go in batches, one transaction each (the first batch
small so search answers early); a folder's mtime is stored in the transaction that
holds its last rows, so a crash leaves a consistent index whose unfinished folders
are simply listed again. Readers use WAL snapshots and are never blocked.

PostgreSQL has no FTS5: the same tables without ``image_fts``, and words match with
``ILIKE`` on the same four columns.

Searching: filters (:mod:`.query`) and words make one WHERE clause, shared with the
facet counts (:mod:`.facets`); totals are counted exactly only up to
:attr:`Index.count_limit` matches (past it, ``total_exact`` is false), since counting
every match of a common word cost more than the page itself.

Symlinks are not followed and dot-files are skipped: what is indexed is what the
path jail shows, so scope filtering on ``path`` is exact.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import queue
import random
import re
import stat as st_mod
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .. import db
from ..access.jail import Scope, addressable
from ..files.fs import IMAGE_EXTS, MODEL_EXTS
from .formats.fooocus import FolderLog
from .meta import FOLDER_LOG
from .query import FIELDS, BadQuery, condition, random_key, values_of
from .rows import _INSERT_COLS, Parsers, default_workers, make_row, make_rows, params_of
from .rows import params_dict as params_dict  # (their home before rows.py)
from .rows import params_value as params_value

log = logging.getLogger("atelier.index")

SCHEMA_VERSION = "3"  # 3: image_fts contentless
RACY_SECONDS = 2.0
FIRST_BATCH = 200
BATCH = 2000
PARALLEL_AFTER = 512  # a scan that has queued this many files to read starts workers
GROUP = 512  # files per call to a worker
MAX_PENDING = 8  # groups out at once, at most

image_index = sa.Table(
    "image_index", db.metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("path", sa.Text, nullable=False, unique=True),
    sa.Column("folder", sa.Text, nullable=False, index=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime", sa.Float, nullable=False, index=True),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("source", sa.String(16)),
    sa.Column("prompt", sa.Text),
    sa.Column("negative", sa.Text),
    sa.Column("model", sa.Text),
    sa.Column("model_hash", sa.String(80)),
    sa.Column("sampler", sa.Text),
    sa.Column("steps", sa.Integer),
    sa.Column("cfg", sa.Float),
    sa.Column("seed", sa.BigInteger),
    sa.Column("loras", sa.Text),
    sa.Column("embeddings", sa.Text),
    sa.Column("params", sa.Text),
    sa.Column("terms", sa.Text),
)

index_folders = sa.Table(
    "index_folders", db.metadata,
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
)

index_meta = sa.Table(
    "index_meta", db.metadata,
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# Contentless (content=''): no second copy of the texts (one cost a tenth of the
# writes). Searches read only rowid and bm25, which such a table has.
_FTS_DDL = ("CREATE VIRTUAL TABLE IF NOT EXISTS image_fts USING fts5("
            "prompt, negative, terms, path, content='', "
            "tokenize = 'unicode61 remove_diacritics 2')")
# FTS5 merges a level's segments once it has this many (default 4, at most 16): each
# batch's commit writes one, so the default rewrote the index's words over and over
# while a tree was indexed (an eighth of the writes); searches measured no slower.
_FTS_AUTOMERGE = "INSERT INTO image_fts (image_fts, rank) VALUES ('automerge', 16)"
_FTS_INSERT = ("INSERT INTO image_fts (rowid, prompt, negative, terms, path) VALUES "
               "((SELECT id FROM image_index WHERE path = ?), ?, ?, ?, ?)")
_FTS_FORGET = ("INSERT INTO image_fts (image_fts, rowid, prompt, negative, terms, path) "
               "VALUES ('delete', ?, ?, ?, ?, ?)")
_IN_CHUNK = 500  # paths per "path IN (...)" (well under SQLite's variable limit)
# bm25 weights of (prompt, negative, terms, path): a word in the prompt counts most
_BM25 = "bm25(image_fts, 4.0, 1.0, 2.0, 2.0)"
# Han, kana, hangul and CJK punctuation: no spaces between words, so one token each.
_CJK = re.compile("([\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
                  "\uf900-\ufaff\uff00-\uffef])")
_PROMPT, _NEGATIVE = _INSERT_COLS.index("prompt"), _INSERT_COLS.index("negative")
_TERMS = _INSERT_COLS.index("terms")


def fts_text(text: str) -> str:
    """Text as FTS5 indexes it: each CJK character its own token."""
    if not text or text.isascii():
        return text
    return _CJK.sub(r" \1 ", text)


def _fts_doc(path: str, prompt: str | None, negative: str | None, terms: str | None
             ) -> tuple[str, str, str, str]:
    """(prompt, negative, terms, path) as image_fts indexes a row's columns. Inserting
    and deleting a doc both go through here: a contentless table must be told the
    very texts a doc went in with, or its index is silently wrong."""
    prompt, negative, terms = prompt or "", negative or "", terms or ""
    if path.isascii() and prompt.isascii() and negative.isascii() and terms.isascii():
        return prompt, negative, terms, path
    return fts_text(prompt), fts_text(negative), fts_text(terms), fts_text(path)


def kind_of_name(name: str) -> str | None:
    ext = os.path.splitext(name)[1].lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in MODEL_EXTS:
        return "model"
    return None


def _skip(name: str) -> bool:
    """Dot-files, and names no client could address (as listings and walks leave out)."""
    return name.startswith(".") or not addressable(name)


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name




@dataclass
class IndexStatus:
    scanning: bool = False
    last_scan: float | None = None
    last_deep_scan: float | None = None
    last_scan_seconds: float | None = None
    errors: int = 0
    watcher: str = "off"  # "running" | "restarting" | "off"
    watcher_error: str | None = None  # why it last stopped or could not start
    watcher_restarts: int = 0

    @property
    def watching(self) -> bool:
        return self.watcher == "running"


# -- writing -----------------------------------------------------------------------


class _Writer:
    """Batches row inserts/deletes and folder marks into transactions.

    Files to (re)read are queued as tasks and read in groups; a folder's mark waits
    until every task queued before it has become a row, so it is committed with them.

    A scan with many files to read (:data:`PARALLEL_AFTER`) reads them in worker
    processes (:class:`Parsers`), a group of :data:`GROUP` per call, while this thread
    lists folders and writes rows; groups come back in the order they were queued. A
    pool that breaks (a worker killed) leaves the rest of the scan to this thread.
    (A writer thread beside a parsing one was measured slower: pysqlite releases the
    GIL around each row's ``sqlite3_step`` and must win it back from the parser after
    every row.)
    """

    def __init__(self, index: Index) -> None:
        self.index = index
        self.tasks: list[tuple[bool, tuple[Any, ...]]] = []
        self.waiting_folders: list[tuple[str, int]] = []
        self.rows: list[tuple[Any, ...]] = []
        self.deletes: list[str] = []
        self.prefix_deletes: list[str] = []
        self.folders: list[tuple[str, int]] = []
        self.limit = FIRST_BATCH
        self.written = 0
        self.queued = 0  # files queued for reading so far
        self.parsers: Parsers | None = None
        self.may_start = True  # workers not tried yet in this scan
        # groups in the workers: (future, its tasks, the folder marks that follow it)
        self.pending: deque[tuple[Future[list[tuple[bool, tuple[Any, ...]]]],
                                  list[tuple[bool, tuple[Any, ...]]],
                                  list[tuple[str, int]]]] = deque()

    def add(self, row: tuple[Any, ...], *, new: bool = False) -> None:
        """Queue a row; ``new``: the path had no row when its folder was read, so no
        delete is needed first (if another writer added one since, the insert fails
        and the batch is retried with deletes)."""
        if not new:
            self.deletes.append(row[0])
        self.rows.append(row)
        if len(self.rows) >= self.limit:
            self._commit()

    def task(self, new: bool, *args: Any) -> None:
        """Read a file later, in a group; ``args`` as :func:`make_row` takes them."""
        self.tasks.append((new, args))
        if len(self.tasks) >= (GROUP if self.parsers is not None else 64):
            self.run_tasks()

    def run_tasks(self) -> None:
        tasks, self.tasks = self.tasks, []
        folders, self.waiting_folders = self.waiting_folders, []
        self.queued += len(tasks)
        if self.may_start and self.queued >= PARALLEL_AFTER and self.index.workers > 0:
            self.may_start = False  # (once a scan, whether it works or not)
            self.parsers = Parsers.start(self.index.workers)
        if self.parsers is not None and tasks:
            try:
                future = self.parsers.submit(tasks, self.index.stealth)
            except (BrokenProcessPool, RuntimeError, OSError) as exc:  # (OSError: a
                self._broken(exc)  # worker could not be started)
            else:
                self.pending.append((future, tasks, folders))
                self._collect()
                return
        if self.pending:  # (the end of the scan, or the workers broke): in order
            self._collect(wait=True)
        self._take(make_rows(tasks, self.index.stealth), folders)

    def _collect(self, wait: bool = False) -> None:
        """Take the rows of the groups that are done, oldest first, stopping at the
        first that is not; ``wait``: of all of them. Waits too while more than
        :data:`MAX_PENDING` are out (the rows in flight stay bounded)."""
        while self.pending and (wait or len(self.pending) > MAX_PENDING
                                or self.pending[0][0].done()):
            future, tasks, folders = self.pending.popleft()
            try:
                rows = future.result()
            except (BrokenProcessPool, CancelledError) as exc:  # (cancelled: by _broken)
                self._broken(exc)
                rows = make_rows(tasks, self.index.stealth)
            self._take(rows, folders)

    def _take(self, rows: list[tuple[bool, tuple[Any, ...]]],
              folders: list[tuple[str, int]]) -> None:
        for new, row in rows:
            if not new:
                self.deletes.append(row[0])
            self.rows.append(row)
        self.folders += folders
        if len(self.rows) >= self.limit or len(self.folders) >= BATCH:
            self._commit()

    def _broken(self, exc: BaseException) -> None:
        if self.parsers is None:  # (the groups still out fail too: said once)
            return
        log.warning("index: the parsing workers failed (%s: %s); reading the rest of this "
                    "scan in the indexing thread", type(exc).__name__, exc)
        self.parsers.close()
        self.parsers = None

    def delete(self, path: str) -> None:
        self.deletes.append(path)

    def delete_prefix(self, folder: str) -> None:
        self.prefix_deletes.append(folder)

    def folder_done(self, folder: str, mtime_ns: int) -> None:
        if self.tasks or self.pending:
            self.waiting_folders.append((folder, mtime_ns))
            return
        self.folders.append((folder, mtime_ns))
        if len(self.folders) >= BATCH:
            self._commit()

    def flush(self) -> None:
        """Read what is queued and write everything."""
        if self.tasks or self.waiting_folders:
            self.run_tasks()
        self._collect(wait=True)
        self._commit()

    def close(self) -> None:
        """Stop the workers, if any (after :meth:`flush`, or when a scan failed)."""
        if self.parsers is not None:
            self.parsers.close()
            self.parsers = None

    def _commit(self) -> None:
        if not (self.rows or self.deletes or self.prefix_deletes or self.folders):
            return
        rows, deletes, prefix_deletes, folders = (self.rows, self.deletes,
                                                  self.prefix_deletes, self.folders)
        for attempt in range(3):
            try:
                with self.index.engine.begin() as conn:
                    self.index.apply(conn, rows, deletes, prefix_deletes, folders,
                                     replace=attempt > 0)
                break
            except sa.exc.IntegrityError:
                # Another replica sharing this database indexed the same paths since we
                # read the folder (or between our delete and insert); the retry deletes
                # every path it inserts, and now sees those rows.
                if attempt == 2:
                    raise
        self.written += len(rows)
        self.rows, self.deletes, self.prefix_deletes, self.folders = [], [], [], []
        self.limit = BATCH
        if self.index.on_flush is not None:
            self.index.on_flush(self.written)


class Index:
    """The index tables and every read and write on them."""

    def __init__(self, engine: Engine, root: Path, *, stealth: bool = False,
                 count_limit: int = 1000, facet_limit: int = 20_000,
                 workers: int | None = None) -> None:
        self.engine = engine
        self.root = Path(os.path.realpath(root))
        self.fts = engine.dialect.name == "sqlite"
        self.stealth = stealth  # read stealth info from pixels (slow; opt-in)
        # processes that read files in a large scan (None: rows.default_workers())
        self.workers = default_workers() if workers is None else workers
        self.count_limit = count_limit  # totals are exact up to this many matches
        self.facet_limit = facet_limit  # facets count at most this many matches
        self.status = IndexStatus()
        self._stop = threading.Event()
        # called on the writer thread after each committed batch (rows so far)
        self.on_flush: Callable[[int], None] | None = None
        self.ensure_schema()

    # -- schema ----------------------------------------------------------------------

    def _tables(self) -> list[sa.Table]:
        return [image_index, index_folders, index_meta]

    def ensure_schema(self) -> None:
        """Create what is missing; drop and rebuild a cache of another version."""
        db.metadata.create_all(self.engine, tables=self._tables())
        with self.engine.begin() as conn:
            version = conn.execute(sa.select(index_meta.c.value).where(
                index_meta.c.key == "schema")).scalar()
            fts_ok = True
            if self.fts:
                fts_ok = conn.exec_driver_sql(
                    "SELECT 1 FROM sqlite_master WHERE name = 'image_fts'").first() is not None
        if version != SCHEMA_VERSION or not fts_ok:
            self.reset()

    def reset(self) -> None:
        """Drop everything the index holds; the next scan rebuilds it.

        One transaction, so a concurrent search sees the old index or the new empty
        one, never missing tables. pysqlite runs DDL outside a transaction unless one
        was opened explicitly, hence the BEGIN (SQLite's DDL itself is transactional).
        """
        with self.engine.connect() as conn:
            if self.fts:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                conn.exec_driver_sql("DROP TABLE IF EXISTS image_fts")
            db.metadata.drop_all(conn, tables=self._tables())
            db.metadata.create_all(conn, tables=self._tables())
            if self.fts:
                conn.exec_driver_sql(_FTS_DDL)
                conn.exec_driver_sql(_FTS_AUTOMERGE)
            conn.execute(index_meta.insert().values(key="schema", value=SCHEMA_VERSION))
            conn.commit()

    # -- low-level writes --------------------------------------------------------------

    def apply(self, conn: Connection, rows: list[tuple[Any, ...]], deletes: list[str],
              prefix_deletes: list[str], folders: list[tuple[str, int]], *,
              replace: bool = True) -> None:
        """One batch. Changed files are deleted and inserted again: one path, one row,
        one FTS doc. ``deletes`` lists paths to drop (gone or about to be rewritten);
        ``replace`` also drops every path in ``rows`` first."""
        gone = deletes + [r[0] for r in rows] if replace else deletes
        if gone:
            if self.fts:  # plain DB-API executemany: no per-row SQLAlchemy work
                unique = list(dict.fromkeys(gone))  # a doc deleted twice would corrupt
                for i in range(0, len(unique), _IN_CHUNK):
                    chunk = tuple(unique[i:i + _IN_CHUNK])
                    _fts_forget(conn, f"path IN ({', '.join('?' * len(chunk))})", chunk)
                conn.exec_driver_sql("DELETE FROM image_index WHERE path = ?",
                                     [(p,) for p in unique])
            else:
                conn.execute(image_index.delete().where(
                    image_index.c.path == sa.bindparam("p")), [{"p": p} for p in gone])
        for folder in prefix_deletes:
            cond = _under(folder, self.fts)
            if self.fts and folder:
                _fts_forget(conn, "path > ? AND path < ?", (folder + "/", folder + "0"))
            elif self.fts:
                conn.exec_driver_sql("INSERT INTO image_fts (image_fts) VALUES ('delete-all')")
            conn.execute(image_index.delete().where(cond(image_index.c.path)))
            conn.execute(index_folders.delete().where(
                sa.or_(index_folders.c.path == folder, cond(index_folders.c.path))))
        if rows:
            if self.fts:
                placeholders = ", ".join("?" * len(_INSERT_COLS))
                conn.exec_driver_sql(
                    f"INSERT INTO image_index ({', '.join(_INSERT_COLS)}) "
                    f"VALUES ({placeholders})", rows)
                conn.exec_driver_sql(_FTS_INSERT, [
                    (r[0], *_fts_doc(r[0], r[_PROMPT], r[_NEGATIVE], r[_TERMS]))
                    for r in rows])
            else:
                conn.execute(image_index.insert(), [dict(zip(_INSERT_COLS, r, strict=True))
                                                    for r in rows])
        if folders:
            conn.execute(index_folders.delete().where(
                index_folders.c.path == sa.bindparam("p")), [{"p": f} for f, _ in folders])
            conn.execute(index_folders.insert(), [{"path": f, "mtime_ns": m}
                                                  for f, m in folders])

    # -- scanning ----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def _known_folders(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {r.path: r.mtime_ns for r in conn.execute(sa.select(index_folders))}

    def _rows_of(self, folder: str) -> dict[str, tuple[int, int, bool]]:
        """name -> (size, mtime_ns, whether parameters were found) of a folder's rows."""
        with self.engine.connect() as conn:
            q = sa.select(image_index.c.name, image_index.c.size, image_index.c.mtime_ns,
                          image_index.c.source).where(image_index.c.folder == folder)
            return {r.name: (r.size, r.mtime_ns, r.source is not None)
                    for r in conn.execute(q)}

    def _list(self, real: Path) -> tuple[list[tuple[os.DirEntry[str], str, str]], list[str],
                                         set[str]]:
        """(indexable files as (entry, kind, name without extension), subfolder names,
        all names) of one folder; no symlinks."""
        files, dirs, names = [], [], set()
        with os.scandir(real) as it:
            for e in it:
                name = e.name
                names.add(name)
                if _skip(name):
                    continue
                try:
                    if e.is_dir(follow_symlinks=False):
                        dirs.append(name)
                    elif e.is_file(follow_symlinks=False):
                        # os.path.splitext, for a name without leading dots (skipped)
                        dot = name.rfind(".")
                        if dot < 0:
                            continue
                        ext = name[dot:].lower()
                        if ext in IMAGE_EXTS:
                            files.append((e, "image", name[:dot]))
                        elif ext in MODEL_EXTS:
                            files.append((e, "model", name[:dot]))
                except OSError:
                    continue
        return files, dirs, names

    def _sync_folder(self, w: _Writer, folder: str, real: Path, force: bool) -> list[str]:
        """Bring one folder's rows up to date; return its subfolders."""
        files, dirs, names = self._list(real)
        known = self._rows_of(folder)
        prefix = folder + "/" if folder else ""
        log_path, log_mtime = self._folder_log(real, names)
        log = FolderLog(log_path) if log_path else None  # read once, if an image needs it
        for e, kind, stem in files:
            name = e.name
            old = known.pop(name, None)
            side = None
            if kind == "image" and stem + ".txt" in names:
                side = os.path.join(real, stem + ".txt")
            if old is None and kind == "image":
                # new: read whatever its stat, which comes with the read (an fstat of the
                # open file costs a third of an lstat by path first)
                w.task(True, e.path, prefix + name, folder, name, kind, None, None, side, log)
                continue
            try:
                s = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if not force and old is not None and old[:2] == (s.st_size, s.st_mtime_ns) and (
                    old[2] or log_mtime <= s.st_mtime_ns):
                # unchanged; (an image without parameters is read again once the Fooocus
                # log beside it is newer: Fooocus writes the image, then the log)
                continue
            w.task(old is None, e.path, prefix + name, folder, name, kind,
                   s.st_size, s.st_mtime_ns, side, log)
        for name in known:  # rows whose file is gone
            w.delete(_join(folder, name))
        return dirs

    @staticmethod
    def _folder_log(real: Path, names: set[str]) -> tuple[str | None, int]:
        """(path, mtime_ns) of a Fooocus log.html in a folder; (None, 0) if none."""
        if FOLDER_LOG not in names:
            return None, 0
        path = os.path.join(real, FOLDER_LOG)
        try:
            s = os.lstat(path)
        except OSError:
            return None, 0
        return (path, s.st_mtime_ns) if st_mod.S_ISREG(s.st_mode) else (None, 0)

    def scan(self, start: str = "", *, deep: bool = False, force_start: bool = False) -> int:
        """Rescan the tree below ``start``; folders whose mtime is unchanged are skipped
        unless ``deep``. Returns the number of rows written."""
        w = _Writer(self)
        try:
            return self._scan(start, deep, force_start, self._known_folders(), w)
        finally:
            w.close()

    def _scan(self, start: str, deep: bool, force_start: bool, known: dict[str, int],
              w: _Writer) -> int:
        children: dict[str, list[str]] = {}
        for f in known:
            if f:
                children.setdefault(f.rpartition("/")[0], []).append(f)
        seen: set[str] = set()
        stack = [start]
        now = time.time()
        while stack and not self._stop.is_set():
            folder = stack.pop()
            real = self.root / folder if folder else self.root
            try:
                s = os.lstat(real)
            except OSError:
                s = None
            if s is None or not st_mod.S_ISDIR(s.st_mode):
                if folder in known or folder == start:
                    w.delete_prefix(folder)
                    if s is not None and folder:  # a folder became a file
                        self._sync_file(w, folder)
                continue
            seen.add(folder)
            changed = deep or known.get(folder) != s.st_mtime_ns or (
                force_start and folder == start)
            if not changed:
                stack.extend(children.get(folder, ()))
                continue
            try:
                dirs = self._sync_folder(w, folder, real, force=False)
            except OSError:
                self.status.errors += 1
                continue
            racy = now - s.st_mtime_ns / 1e9 < RACY_SECONDS
            w.folder_done(folder, -1 if racy else s.st_mtime_ns)
            subs = {_join(folder, d) for d in dirs}
            for old in children.get(folder, ()):
                if old not in subs:
                    w.delete_prefix(old)
            stack.extend(sorted(subs, reverse=True))
        w.flush()
        return w.written

    def _sync_file(self, w: _Writer, vpath: str) -> None:
        folder, _, name = vpath.rpartition("/")
        real = self.root / vpath
        kind = kind_of_name(name)
        try:
            s = os.lstat(real)
        except OSError:
            s = None
        if s is None or not st_mod.S_ISREG(s.st_mode) or kind is None:
            w.delete(vpath)
            return
        known = self._rows_of_path(vpath)
        if known == (s.st_size, s.st_mtime_ns):
            return
        side = log = None
        if kind == "image":
            cand = real.with_suffix(".txt")
            side = cand if cand.is_file() else None
            log = self._folder_log(real.parent, {FOLDER_LOG})[0]
        row = make_row(real, vpath, folder, name, kind, s.st_size, s.st_mtime_ns, side, log,
                       stealth=self.stealth)
        if row is not None:
            w.add(row)

    def _rows_of_path(self, vpath: str) -> tuple[int, int] | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(image_index.c.size, image_index.c.mtime_ns).where(
                image_index.c.path == vpath)).first()
        return (r.size, r.mtime_ns) if r else None

    def update_paths(self, paths: Iterable[str]) -> int:
        """Apply filesystem events: each root-relative path is re-read, listed or dropped."""
        w = _Writer(self)
        folders: list[str] = []
        for vpath in sorted(set(paths)):
            if any(_skip(part) for part in vpath.split("/")):
                # a sidecar .txt or a hidden temp file: the image beside it may change
                continue
            real = self.root / vpath if vpath else self.root
            try:
                s = os.lstat(real)
            except OSError:
                w.delete(vpath)
                w.delete_prefix(vpath)
                continue
            if st_mod.S_ISDIR(s.st_mode):
                folders.append(vpath)
            elif vpath.lower().endswith(".txt"):
                for ext in IMAGE_EXTS:
                    img = vpath[:-4] + ext
                    if os.path.isfile(self.root / img):
                        self._sync_file_forced(w, img)
            elif vpath.rpartition("/")[2] == FOLDER_LOG:
                # Fooocus appended to its log: read again the images it may now describe
                folder = vpath.rpartition("/")[0]
                for name, (_size, _mtime, found) in self._rows_of(folder).items():
                    if not found and kind_of_name(name) == "image":
                        self._sync_file_forced(w, _join(folder, name))
            else:
                self._sync_file(w, vpath)
        w.flush()
        for folder in folders:
            w.written += self.scan(folder, force_start=True)
        return w.written

    def _sync_file_forced(self, w: _Writer, vpath: str) -> None:
        w.delete(vpath)
        w.flush()
        self._sync_file(w, vpath)

    # -- reading ---------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(image_index.c.kind, sa.func.count())
                                .group_by(image_index.c.kind)).all()
        return {k: int(n) for k, n in rows}


def _fts_forget(conn: Connection, where: str, params: tuple[Any, ...]) -> None:
    """Take the image_fts docs of the image_index rows ``where`` selects (before those
    rows go): a contentless table needs each doc's texts to forget it."""
    docs = [(r[0], *_fts_doc(r[1], r[2], r[3], r[4])) for r in conn.exec_driver_sql(
        f"SELECT id, path, prompt, negative, terms FROM image_index WHERE {where}", params)]
    if docs:
        conn.exec_driver_sql(_FTS_FORGET, docs)


def _under(folder: str, sqlite: bool) -> Any:
    """A condition builder: column lies strictly below ``folder`` (byte-exact prefix)."""
    if not folder:
        return lambda col: col != ""
    if sqlite:
        # A range on the path index; BINARY collation, so exact. ('0' follows '/'.)
        return lambda col: sa.and_(col > folder + "/", col < folder + "0")
    return lambda col: col.startswith(folder + "/", autoescape=True)


# -- search ------------------------------------------------------------------------


Filter = str | list[str] | tuple[str, ...] | None  # one value or several (see .query)


@dataclass
class SearchQuery:
    q: str | None = None
    prompt: str | None = None
    negative: str | None = None
    model: Filter = None
    lora: Filter = None
    embedding: Filter = None
    sampler: Filter = None
    size: Filter = None
    source: Filter = None
    date: Filter = None
    folder: Filter = None  # root-relative folders, resolved by the caller
    name: str | None = None  # glob
    kind: str | None = None
    after: float | None = None
    before: float | None = None
    min_size: int | None = None
    max_size: int | None = None
    tz: int = 0  # minutes east of UTC, for date filters and facets
    sort: str = "mtime"  # mtime (alias date), name, size, relevance, random
    order: str = "desc"
    seed: int | None = None  # the random order's; stable across pages
    limit: int = 100
    cursor: str | None = None
    exact_total: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


_TERM = re.compile(r'(-?)"([^"]*)"|(-?)(\S+)')


def parse_terms(text: str) -> list[tuple[bool, str, bool]]:
    """Words and "quoted phrases"; ``-word`` excludes, ``word*`` is a prefix.
    Returns (negated, text, prefix)."""
    out = []
    for m in _TERM.finditer(text):
        if m.group(2) is not None:
            neg, word, prefix = bool(m.group(1)), m.group(2), False
        else:
            neg, word = bool(m.group(3)), m.group(4)
            prefix = word.endswith("*")
            word = word.rstrip("*")
        word = word.strip()
        if word and any(c.isalnum() for c in word):
            out.append((neg, word, prefix))
    return out


def _fts_phrase(word: str, prefix: bool) -> str:
    quoted = '"' + fts_text(word).replace('"', '""') + '"'
    return quoted + ("*" if prefix else "")


def fts_match(terms: list[tuple[bool, str, bool]], column: str | None) -> tuple[str, str]:
    """(positive, negative) FTS5 expressions; either may be ''."""
    pos = " AND ".join(_fts_phrase(w, p) for n, w, p in terms if not n)
    neg = " OR ".join(_fts_phrase(w, p) for n, w, p in terms if n)
    if column:
        pos = f"{column} : ({pos})" if pos else ""
        neg = f"{column} : ({neg})" if neg else ""
    return pos, neg


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _glob_to_like(g: str) -> str:
    return _like_escape(g).replace("*", "%").replace("?", "_")


def parse_time(value: str | None) -> float | None:
    """Epoch seconds, or an ISO date/time (UTC unless it names a zone)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise BadQuery(f"not a time: {value!r}; use epoch seconds or ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _enc_cursor(value: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def _dec_cursor(cursor: str) -> list[Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, UnicodeDecodeError):
        raise BadQuery("invalid cursor") from None
    if not isinstance(value, list) or len(value) != 3:
        raise BadQuery("invalid cursor")
    return value


_SORT_COLS = {"mtime": image_index.c.mtime, "name": image_index.c.name,
              "size": image_index.c.size}


@dataclass
class Where:
    """A search's WHERE clause: conditions, plus the FTS5 match they need (SQLite)."""

    conds: list[Any]
    match: str | None = None  # joined with image_fts when set


def conditions(index: Index, scope: Scope, sq: SearchQuery, *, skip: str | None = None
               ) -> Where:
    """Every condition of ``sq`` within ``scope``; ``skip``: leave that filter field out
    (a facet counting its own field, so its other values keep their counts)."""
    t = image_index
    sqlite = index.fts
    conds: list[Any] = []
    # -- scope: only rows the caller may read
    if "" not in scope.read:
        ors = []
        for prefix in scope.read:
            ors.append(t.c.path == prefix)
            ors.append(_under(prefix, sqlite)(t.c.path))
        conds.append(sa.or_(*ors) if ors else sa.false())
    under = lambda f: _under(f, sqlite)  # noqa: E731
    for name in FIELDS:
        if name == skip:
            continue
        cond = condition(t, name, values_of(getattr(sq, name)), under, sq.tz)
        if cond is not None:
            conds.append(cond)
    if sq.kind:
        conds.append(t.c.kind == sq.kind)
    if sq.after is not None:
        conds.append(t.c.mtime >= sq.after)
    if sq.before is not None:
        conds.append(t.c.mtime < sq.before)
    if sq.min_size is not None:
        conds.append(t.c.size >= sq.min_size)
    if sq.max_size is not None:
        conds.append(t.c.size <= sq.max_size)
    if sq.name:
        if sqlite:
            conds.append(sa.func.lower(t.c.name).op("GLOB")(sq.name.lower()))
        else:
            conds.append(t.c.name.ilike(_glob_to_like(sq.name), escape="\\"))

    text_filters = [(sq.q, None), (sq.prompt, "prompt"), (sq.negative, "negative")]
    fts_pos: list[str] = []
    fts_neg: list[str] = []
    for text, column in text_filters:
        if not text:
            continue
        terms = parse_terms(text)
        if not terms:
            continue
        if sqlite:
            pos, neg = fts_match(terms, column)
            if pos:
                fts_pos.append(pos)
            if neg:
                fts_neg.append(neg)
        else:
            cols = ([t.c.prompt, t.c.negative, t.c.terms, t.c.path] if column is None
                    else [getattr(t.c, column)])
            for neg_, word, _prefix in terms:
                pat = f"%{_like_escape(word)}%"
                hit = sa.or_(*[c.ilike(pat, escape="\\") for c in cols])
                conds.append(sa.not_(sa.func.coalesce(hit, False)) if neg_ else hit)
    where = Where(conds)
    if fts_pos:
        match = " AND ".join(f"({p})" for p in fts_pos)
        if fts_neg:  # FTS5's NOT is binary: (wanted) NOT (unwanted)
            match = f"({match}) NOT ({' OR '.join(f'({n})' for n in fts_neg)})"
        where.match = match
    elif fts_neg:
        unwanted: Any = sa.select(sa.literal_column("rowid")).select_from(
            sa.table("image_fts")).where(sa.text("image_fts MATCH :fts_neg").bindparams(
                fts_neg=" OR ".join(f"({n})" for n in fts_neg)))
        conds.append(t.c.id.not_in(unwanted))
    return where


def select_where(where: Where, *cols: Any) -> Any:
    """``SELECT cols FROM image_index [JOIN image_fts] WHERE ...``."""
    q = sa.select(*cols).select_from(image_index)
    if where.match is not None:
        q = q.join(sa.text("image_fts"), sa.text("image_fts.rowid = image_index.id"))
        q = q.where(sa.text("image_fts MATCH :fts_match").bindparams(fts_match=where.match))
    return q.where(*where.conds)


def _fts_errors(exc: sa.exc.OperationalError) -> None:
    if "fts5" in str(exc).lower() or "syntax" in str(exc).lower():
        raise BadQuery("could not understand the search words") from None


def count(index: Index, where: Where, limit: int | None) -> tuple[int, bool]:
    """(matches, exact): counted up to ``limit`` (None: all) and no further."""
    q = select_where(where, sa.literal(1))
    if limit is not None:
        q = q.limit(limit + 1)
    try:
        with index.engine.connect() as conn:
            n = int(conn.execute(sa.select(sa.func.count()).select_from(q.subquery()))
                    .scalar_one())
    except sa.exc.OperationalError as exc:
        _fts_errors(exc)
        raise
    if limit is not None and n > limit:
        return limit, False
    return n, True


RANDOM_SEEDS = 1 << 31


def _check_cursor(c: list[Any], sort: str) -> None:
    ok_value = isinstance(c[1], int | float | str) and not isinstance(c[1], bool)
    last = c[2][1] if sort == "random" and isinstance(c[2], list) and len(c[2]) == 2 else c[2]
    if not ok_value or not isinstance(last, int) or isinstance(last, bool):
        raise BadQuery("invalid cursor")


def search(index: Index, scope: Scope, sq: SearchQuery) -> dict[str, Any]:
    """One page of matches that ``scope`` may read; ``total`` is exact up to
    ``index.count_limit`` matches (``total_exact``), unless ``sq.exact_total``."""
    t = image_index
    where = conditions(index, scope, sq)
    sort = "mtime" if sq.sort == "date" else sq.sort
    relevance = sort == "relevance" and where.match is not None
    desc = sq.order != "asc"
    limit = max(1, min(sq.limit, 1000))
    offset = 0
    seed = sq.seed
    cursor = _dec_cursor(sq.cursor) if sq.cursor else None
    if relevance:
        if cursor is not None:
            if cursor[0] != "offset" or not isinstance(cursor[1], int) or cursor[1] < 0:
                raise BadQuery("invalid cursor")
            offset = cursor[1]
        col: Any = sa.literal_column(_BM25)
        keys = select_where(where, t.c.id, col.label("sort_key")).order_by(
            col, t.c.id).offset(offset).limit(limit + 1)
        desc = False
        key_of: Callable[[Any], list[Any]] = lambda r: ["offset", offset + limit, 0]  # noqa: E731
    else:
        if sort == "random":
            if cursor is not None:
                if cursor[0] != "random" or not isinstance(cursor[2], list) \
                        or len(cursor[2]) != 2:
                    raise BadQuery("cursor from another sort order")
                seed = int(cursor[2][0])
            if seed is None:
                seed = random.randrange(1, RANDOM_SEEDS)
            col = random_key(t, seed)
        else:
            sort = sort if sort in _SORT_COLS else "mtime"
            col = _SORT_COLS[sort]
        keys = select_where(where, t.c.id, col.label("sort_key"))
        if cursor is not None:
            if cursor[0] != sort:
                raise BadQuery("cursor from another sort order")
            _check_cursor(cursor, sort)
            last_id = cursor[2][1] if sort == "random" else cursor[2]
            key = sa.tuple_(col, t.c.id)
            after = sa.tuple_(sa.literal(cursor[1]), sa.literal(last_id))
            keys = keys.where(key < after if desc else key > after)
        keys = keys.order_by(col.desc() if desc else col.asc(),
                             t.c.id.desc() if desc else t.c.id.asc()).limit(limit + 1)

        def key_of(r: Any) -> list[Any]:
            return [sort, r.sort_key, [seed, r.id] if sort == "random" else r.id]
    # Two steps: the page's ids are chosen reading only the sort key (a sort that carried
    # whole rows through thousands of matches cost 3x as much), then those rows are read,
    # and put in order here (sorting them again in SQL cost as much as the rest).
    k = keys.subquery("k")
    page_q = sa.select(t, k.c.sort_key).select_from(k).join(t, t.c.id == k.c.id)
    try:
        with index.engine.connect() as conn:
            rows = list(conn.execute(page_q).all())
    except sa.exc.OperationalError as exc:
        _fts_errors(exc)
        raise
    rows.sort(key=lambda r: (r.sort_key, r.id), reverse=desc)
    more = len(rows) > limit
    rows = rows[:limit]
    if cursor is None and not more:
        total, exact = len(rows), True  # the whole answer is in hand: no count needed
    else:
        total, exact = count(index, where, None if sq.exact_total or not index.count_limit
                             else index.count_limit)
    nxt = _enc_cursor(key_of(rows[-1])) if more and rows else None
    out = {"results": [row_json(r) for r in rows], "next": nxt, "total": total,
           "total_exact": exact}
    if sort == "random":
        out["seed"] = seed
    return out


def row_json(r: Any) -> dict[str, Any]:
    params = params_of(r)
    loras = params.pop("loras", [])
    embeddings = params.pop("embeddings", [])
    return {
        "path": r.path, "name": r.name, "folder": r.folder, "kind": r.kind, "size": r.size,
        "mtime": r.mtime, "version": f"{r.mtime_ns:x}-{r.size:x}",
        "width": r.width, "height": r.height, "source": r.source,
        "prompt": r.prompt or "", "negative_prompt": r.negative or "", "model": r.model,
        "model_hash": r.model_hash, "sampler": r.sampler, "steps": r.steps,
        "cfg_scale": r.cfg, "seed": r.seed, "loras": loras, "embeddings": embeddings,
        "params": params,
    }


# -- keeping it current ----------------------------------------------------------------


WATCH_CHECK_SECONDS = 2.0  # a dead watcher is noticed within this long
RETRY_FIRST, RETRY_MAX = 60.0, 3600.0  # a watcher that cannot start is retried, backing off


class _OverflowSignal(logging.Handler):
    """watchdog reports an inotify queue overflow only in its log: 7.x rebuilds its
    watches and goes on with the events lost, older versions' threads died of it.
    Either way the index must rescan: listen where watchdog says so."""

    def __init__(self, service: IndexService) -> None:
        super().__init__(logging.WARNING)
        self.service = service

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.service.overflowed()


_WATCHDOG_LOG = logging.getLogger("watchdog.observers")


class IndexService:
    """The writer thread: initial scan, watchdog events, periodic and deep rescans.

    The watcher is supervised: when its threads die or the kernel's event queue
    overflows (``max_queued_events``), it is restarted and everything is rescanned
    deeply, since events were lost. ``status.watcher`` says where it stands: ``running``,
    ``restarting`` (until the new watcher is up and the rescan done; a watcher that
    cannot start, e.g. at the inotify watch limit, is retried with backoff) or ``off``.
    """

    def __init__(self, index: Index, *, watch: bool = True, rescan_seconds: float = 60.0,
                 deep_seconds: float = 3600.0, debounce: float = 0.25) -> None:
        self.index = index
        self.watch = watch
        self.rescan_seconds = rescan_seconds
        self.deep_seconds = deep_seconds
        self.debounce = debounce
        self._commands: queue.Queue[str] = queue.Queue()
        self._events: set[str] = set()
        self._events_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        self._overflowed = False
        self._retry_at = 0.0
        self._retry_wait = RETRY_FIRST
        self._signal = _OverflowSignal(self)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self.index.status.scanning = True  # until the first scan is done: no early "done"
        if self.watch:
            _WATCHDOG_LOG.addHandler(self._signal)
            if _WATCHDOG_LOG.getEffectiveLevel() > logging.WARNING:
                _WATCHDOG_LOG.setLevel(logging.WARNING)  # the overflow warning must reach us
            self._start_watcher()
        self._thread = threading.Thread(target=self._run, name="atelier-index", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.index.stop()
        self._wake.set()
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout)
            except Exception:  # watchdog teardown races are not worth a failed shutdown
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        _WATCHDOG_LOG.removeHandler(self._signal)

    def overflowed(self) -> None:
        """The kernel dropped events (called from watchdog's thread)."""
        self._overflowed = True
        self._wake.set()

    def request(self, command: str) -> None:
        """``"rescan"``, ``"deep"`` or ``"reset"``; runs on the writer thread."""
        self._commands.put(command)
        self._wake.set()

    def _start_watcher(self) -> bool:
        st = self.index.status
        try:
            from watchdog import events as ev
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            st.watcher, st.watcher_error = "off", "watchdog is not installed"
            return False
        service = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                paths = [event.src_path]
                dest = getattr(event, "dest_path", "")
                if dest:
                    paths.append(dest)
                service._on_paths([p if isinstance(p, str) else p.decode("utf-8",
                                                                        "surrogateescape")
                                   for p in paths])

        # watchdog warns from its inotify thread when nested folders appear at once
        # ("Callback with id ... already exists"); harmless, but a warnings-as-errors
        # setting would kill that thread.
        warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
        try:
            obs = Observer()
            # Changes only: the kernel then queues no open/close-without-write events, so
            # the index's own reads (a rescan reads every new file) cannot fill the queue.
            changes = [ev.FileCreatedEvent, ev.DirCreatedEvent, ev.FileModifiedEvent,
                       ev.DirModifiedEvent, ev.FileDeletedEvent, ev.DirDeletedEvent,
                       ev.FileMovedEvent, ev.DirMovedEvent, ev.FileClosedEvent]
            obs.schedule(Handler(), str(self.index.root), recursive=True, event_filter=changes)
            obs.daemon = True
            obs.start()
        except OSError as exc:  # inotify watch limit, unsupported filesystem
            st.watcher, st.watcher_error = "restarting", f"the watcher cannot start: {exc}"
            self._retry_at = time.monotonic() + self._retry_wait
            log.warning("index: not watching %s (%s); relying on rescans, retrying in %.0f s",
                        self.index.root, exc, self._retry_wait)
            self._retry_wait = min(self._retry_wait * 2, RETRY_MAX)
            return False
        self._observer = obs
        self._retry_wait = RETRY_FIRST
        if st.watcher != "restarting":  # a restart stays so until its rescan is done
            st.watcher = "running"
        return True

    def _check_watcher(self) -> bool:
        """Restart a watcher that died or lost events; True when a deep rescan is due."""
        st = self.index.status
        if not self.watch or st.watcher == "off":
            return False
        obs = self._observer
        overflowed, self._overflowed = self._overflowed, False
        dead = obs is not None and (not obs.is_alive()
                                    or not all(e.is_alive() for e in obs.emitters))
        retry = obs is None and time.monotonic() >= self._retry_at
        if not (overflowed or dead or retry):
            return False
        if overflowed or dead:
            st.watcher_error = ("the inotify event queue overflowed; events were lost"
                                if overflowed else "the file watcher stopped")
            st.watcher_restarts += 1
            log.warning("index: %s; restarting the watcher and rescanning", st.watcher_error)
        st.watcher = "restarting"
        if obs is not None:
            with contextlib.suppress(Exception):
                obs.stop()
        self._observer = None
        started = self._start_watcher()
        return overflowed or dead or started  # a retry that failed again scans nothing new

    def _on_paths(self, paths: list[str]) -> None:
        root = str(self.index.root)
        rel = []
        for p in paths:
            p = os.path.normpath(p)
            if p == root:
                rel.append("")
            elif p.startswith(root + os.sep):
                rel.append(p[len(root) + 1:].replace(os.sep, "/"))
        if rel:
            with self._events_lock:
                self._events.update(rel)
            self._wake.set()

    # -- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        last = last_deep = 0.0
        first = True
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                while True:
                    cmd = self._commands.get_nowait()
                    if cmd == "reset":
                        self.index.reset()
                        first = True
                    elif cmd == "deep":
                        last_deep = 0.0
                    last = 0.0
            except queue.Empty:
                pass
            restarted = self._check_watcher()
            try:
                if restarted or first or now - last >= self.rescan_seconds:
                    deep = restarted or first or now - last_deep >= self.deep_seconds
                    self._scan(deep=deep)
                    last = time.monotonic()
                    if deep:
                        last_deep = last
                    first = False
                events = self._take_events()
                if events:
                    self.index.update_paths(events)
            except Exception:  # keep the writer alive; the next rescan repairs
                self.index.status.errors += 1
                log.exception("index update failed")
            if restarted and self._observer is not None:
                self.index.status.watcher = "running"  # up again, and nothing missed
            wait = max(0.0, self.rescan_seconds - (time.monotonic() - last))
            if self.watch:
                wait = min(wait, WATCH_CHECK_SECONDS)
            self._wake.wait(wait)
            self._wake.clear()
            if self._events and not self._stop.is_set():
                time.sleep(self.debounce)  # let a burst of events for one write settle

    def _take_events(self) -> set[str]:
        with self._events_lock:
            events, self._events = self._events, set()
        return events

    def _scan(self, deep: bool) -> None:
        st = self.index.status
        st.scanning = True
        t0 = time.monotonic()
        try:
            self.index.scan(deep=deep)
        finally:
            st.scanning = False
            st.last_scan = time.time()
            st.last_scan_seconds = time.monotonic() - t0
            if deep:
                st.last_deep_scan = st.last_scan

    def iter_status(self) -> Iterator[tuple[str, Any]]:
        s = self.index.status
        yield from (("scanning", s.scanning), ("watching", s.watching),
                    ("watcher", s.watcher), ("watcher_error", s.watcher_error),
                    ("watcher_restarts", s.watcher_restarts),
                    ("last_scan", s.last_scan), ("last_deep_scan", s.last_deep_scan),
                    ("last_scan_seconds", s.last_scan_seconds), ("errors", s.errors))
