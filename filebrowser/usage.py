"""Usage accounting: what each user stores and moves, by day, for splitting bills.

Every write and transfer is an event row (user, operation, path, bytes, time). Stored
bytes are measured, not summed from events: the user's home, plus the files they
put into shared folders (``file_owners``), plus their trash.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import db, fs
from .trash import Trash

UPLOAD_OPS = ("upload", "tus", "dav_put", "copy")
DOWNLOAD_OPS = ("download", "zip", "dav_get", "share_download")


class Usage:
    def __init__(self, engine: Engine, root: Path, trash: Trash) -> None:
        self.engine = engine
        self.root = root
        self.trash = trash

    def record(self, user: str, op: str, path: str, nbytes: int = 0) -> None:
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

    def stored_bytes(self, user: str) -> int:
        total = fs.tree_size(self.root / "users" / user)
        with self.engine.connect() as conn:
            owned = conn.execute(sa.select(db.file_owners.c.path)
                                 .where(db.file_owners.c.user == user)).scalars().all()
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
