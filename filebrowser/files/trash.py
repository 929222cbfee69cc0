"""Per-user trash: deletion is a rename, restore renames back, purge frees the space.

On disk (under the NAS root, so the rename never crosses filesystems)::

    <root>/.atelier/trash/<user>/<id>/<original name>

The database row remembers where it came from. Items are listed, restored and
purged by id; a user sees only their own trash, an admin everyone's.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .. import db
from ..errors import Conflict, NotFound
from . import fs

trash_items = sa.Table(
    "trash", db.metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False, index=True),
    sa.Column("orig_path", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("is_dir", sa.Boolean, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("trashed_at", sa.Float, nullable=False),
)


class Trash:
    def __init__(self, engine: Engine, root: Path) -> None:
        self.engine = engine
        self.base = root / ".atelier" / "trash"

    def put(self, user: str, virtual: str, real: Path) -> dict:
        item_id = secrets.token_hex(8)
        folder = self.base / user / item_id
        folder.mkdir(parents=True)
        size = fs.tree_size(real)
        is_dir = real.is_dir() and not real.is_symlink()
        os.rename(real, folder / real.name)
        row = {"id": item_id, "user": user, "orig_path": virtual, "name": real.name,
               "is_dir": is_dir, "size": size, "trashed_at": db.now()}
        with self.engine.begin() as conn:
            conn.execute(trash_items.insert().values(**row))
        return row

    def list(self, user: str | None) -> list[dict]:
        q = sa.select(trash_items).order_by(trash_items.c.trashed_at.desc())
        if user is not None:
            q = q.where(trash_items.c.user == user)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def get(self, item_id: str, user: str | None) -> dict:
        q = sa.select(trash_items).where(trash_items.c.id == item_id)
        if user is not None:
            q = q.where(trash_items.c.user == user)
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            raise NotFound("no such item in the trash")
        return dict(row._mapping)

    def stored(self, item: dict) -> Path:
        return self.base / item["user"] / item["id"] / item["name"]

    def restore(self, item: dict, dest_folder: Path, policy: fs.ConflictPolicy) -> str:
        src = self.stored(item)
        if policy == "overwrite":
            policy = "fail"  # restoring never destroys what is there now
        try:
            final = fs.move(src, dest_folder, item["name"], policy)
        except Conflict:
            raise Conflict(f"{item['name']!r} exists again at the original place; "
                           "restore with conflict=rename") from None
        self._forget(item)
        return final

    def purge(self, item: dict) -> None:
        fs.remove_tree(self.base / item["user"] / item["id"])
        self._forget(item)

    def used_bytes(self, user: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(trash_items.c.size), 0))
                                    .where(trash_items.c.user == user)).scalar_one())

    def _forget(self, item: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(trash_items.delete().where(trash_items.c.id == item["id"]))
        with_folder = self.base / item["user"] / item["id"]
        if with_folder.exists() and not any(with_folder.iterdir()):
            with_folder.rmdir()
