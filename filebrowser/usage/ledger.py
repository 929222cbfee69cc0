"""Usage accounting: what each user stores and moves, by day, for splitting bills.

Every write and transfer is an event row (user, operation, path, bytes, time). Stored
bytes are measured, not summed from events: the user's home, plus the files they
put into shared folders (``file_owners``), plus their trash, plus what their unfinished
resumable uploads hold (their stored offsets, wherever the partial files are).

A walk of a big home takes a while, and a 7 GB tus upload in 32 MiB PATCHes checks the
quota 220 times: callers may reuse a recent walk (``max_age``). The service's own writes
drop the user's walk at once; other programs' (the WebUI's images, another replica) count
after at most ``max_age``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .. import db
from ..files import fs
from ..files.trash import Trash

UPLOAD_OPS = ("upload", "tus", "dav_put", "copy", "generate")  # generate: saved images
DOWNLOAD_OPS = ("download", "zip", "dav_get", "share_download")


class Usage:
    def __init__(self, engine: Engine, root: Path, trash: Trash) -> None:
        self.engine = engine
        self.root = root
        self.trash = trash
        self._walks: dict[str, tuple[float, int]] = {}  # user -> (when, home bytes)
        self._walks_lock = threading.Lock()

    def record(self, user: str, op: str, path: str, nbytes: int = 0) -> None:
        if op not in DOWNLOAD_OPS:
            with self._walks_lock:
                self._walks.pop(user, None)
        t = time.time()
        with self.engine.begin() as conn:
            conn.execute(db.usage_events.insert().values(
                user=user, op=op, path=path, bytes=nbytes, at=t,
                day=time.strftime("%Y-%m-%d", time.gmtime(t))))

    def set_owner(self, user: str, path: str) -> None:
        """Remember who put ``path`` into a shared folder (outside their home)."""
        if path.startswith(f"users/{user}/"):
            return
        with self.engine.begin() as conn:
            conn.execute(db.file_owners.delete().where(db.file_owners.c.path == path))
            conn.execute(db.file_owners.insert().values(path=path, user=user))

    def move_owner(self, old: str, new: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(db.file_owners.update().where(db.file_owners.c.path == old)
                         .values(path=new))

    def _home_bytes(self, user: str, max_age: float) -> int:
        now = time.monotonic()
        with self._walks_lock:
            cached = self._walks.get(user)
        if cached is not None and now - cached[0] <= max_age:
            return cached[1]
        # temporary files never count: tus partials by their stored offsets (below), the
        # others are in-flight writes or what a killed writer left (files/tmpsweep.py)
        total = fs.tree_size(self.root / "users" / user, skip_prefix=fs.TMP_PREFIX)
        with self._walks_lock:
            self._walks[user] = (now, total)
        return total

    def stored_bytes(self, user: str, max_age: float = 0.0) -> int:
        """Bytes ``user`` stores; ``max_age``: seconds a walk of the home may be reused."""
        total = self._home_bytes(user, max_age)
        with self.engine.connect() as conn:
            owned = conn.execute(sa.select(db.file_owners.c.path)
                                 .where(db.file_owners.c.user == user)).scalars().all()
            total += int(conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(db.tus_uploads.c.offset), 0))
                .where(db.tus_uploads.c.user == user, db.tus_uploads.c.final_path.is_(None))
            ).scalar_one())
        for p in owned:
            try:
                total += os.lstat(self.root / p).st_size
            except OSError:
                continue
        return total + self.trash.used_bytes(user)

    def report(self, users: list[str], since_day: str | None = None) -> list[dict]:
        out = []
        with self.engine.connect() as conn:
            for name in users:
                q = (sa.select(db.usage_events.c.day, db.usage_events.c.op,
                               sa.func.sum(db.usage_events.c.bytes), sa.func.count())
                     .where(db.usage_events.c.user == name)
                     .group_by(db.usage_events.c.day, db.usage_events.c.op)
                     .order_by(db.usage_events.c.day))
                if since_day:
                    q = q.where(db.usage_events.c.day >= since_day)
                days: dict[str, dict[str, int]] = {}
                up = down = 0
                for day, op, total, count in conn.execute(q):
                    nbytes = int(total or 0)  # PostgreSQL sums bigints as numeric
                    d = days.setdefault(day, {"uploaded": 0, "downloaded": 0, "operations": 0})
                    d["operations"] += int(count)
                    if op in UPLOAD_OPS:
                        d["uploaded"] += nbytes
                        up += nbytes
                    elif op in DOWNLOAD_OPS:
                        d["downloaded"] += nbytes
                        down += nbytes
                out.append({
                    "user": name, "stored_bytes": self.stored_bytes(name),
                    "uploaded_bytes": up, "downloaded_bytes": down,
                    "by_day": [{"day": k, **v} for k, v in sorted(days.items())],
                })
        return out
