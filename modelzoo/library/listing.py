"""``GET /api/models/library``: the models a caller can see, filtered, a page at a time.

Rows come from the library table (files the scan hashed, and every completed download),
only those still on disk. A caller sees the shared models/ and their own home; admins
see every home too. Pages are keyed by path (``cursor`` = the last path returned).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from .. import db
from ..placement import within

F = db.files


def query(engine: sa.Engine, *, prefixes: list[str], type: str | None = None,
          base_model: str | None = None, q: str | None = None, updates: bool = False,
          limit: int = 100, cursor: str | None = None,
          preview_link: Callable[[str | None], str | None] = lambda p: None,
          exists: Callable[[str], bool] = lambda p: True) -> dict[str, Any]:
    stmt = sa.select(F).order_by(F.c.path)
    if type:
        stmt = stmt.where(F.c.type == type)
    if base_model:
        stmt = stmt.where(F.c.base_model == base_model)
    if q:
        like = f"%{q.lower()}%"
        stmt = stmt.where(sa.func.lower(F.c.path).like(like) | sa.func.lower(
            sa.func.coalesce(F.c.name, "")).like(like))
    if updates:
        stmt = stmt.where(F.c.update_version_id.is_not(None))
    scope = [F.c.path.like(p.replace("%", r"\%").replace("_", r"\_") + "/%", escape="\\")
             for p in prefixes]
    if scope:
        stmt = stmt.where(sa.or_(*scope))
    models: list[dict[str, Any]] = []
    after = cursor
    while True:
        page = stmt.where(F.c.path > after) if after else stmt
        with engine.connect() as conn:
            rows = conn.execute(page.limit(limit * 2)).all()
        if not rows:
            return {"models": models, "next": None}
        for row in rows:
            after = row.path
            if any(within(row.path, p) for p in prefixes) and exists(row.path):
                models.append(item(row, preview_link))
                if len(models) >= limit:
                    return {"models": models, "next": after}


def item(row: Any, preview_link: Callable[[str | None], str | None]) -> dict[str, Any]:
    civitai = ({"model_id": row.civitai_model_id, "version_id": row.civitai_version_id}
               if row.civitai_model_id else None)
    update = ({"version_id": row.update_version_id, "name": row.update_name}
              if row.update_version_id else None)
    return {"path": row.path, "name": row.name or row.path.rsplit("/", 1)[-1],
            "type": row.type, "base_model": row.base_model, "size": row.size,
            "sha256": row.sha256, "preview": preview_link(row.preview),
            "trigger_words": list(row.trigger_words or []), "civitai": civitai,
            "update_available": update}
