"""The residency tables (SQLAlchemy Core, own MetaData).

    residency_generations   one row per finished generation: who used which GPU for how
                            long (inference vs switch seconds) and the image bytes written,
                            for bill splitting
    residency_jobs          generation jobs: queued -> running -> done | failed |
                            cancelled | interrupted; the request, progress and result
    residency_file_hashes   sha256 / addnet / legacy hashes per file version (hashes.py)
    residency_options       per-user A1111 options (/sdapi/v1/options): the checkpoint,
                            VAE and clip skip a user's requests default to
    residency_recent        model -> when a job last ran on it (recent.py): what a
                            replica that starts warms first
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

generations = sa.Table(
    "residency_generations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user", sa.String(255), nullable=False, index=True),
    sa.Column("model", sa.String(1024), nullable=False),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("gpu_seconds", sa.Float, nullable=False),
    sa.Column("switch_seconds", sa.Float, nullable=False),
    sa.Column("switched_from", sa.String(8), nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("steps", sa.Integer, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("image_path", sa.String(4096), nullable=False),
    sa.Column("image_bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
)


jobs = sa.Table(
    "residency_jobs", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("user", sa.String(255), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # txt2img | img2img
    sa.Column("model", sa.String(1024), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("request", sa.JSON, nullable=False),  # without init images (they can be MBs)
    sa.Column("step", sa.Integer, nullable=False, default=0),
    sa.Column("total", sa.Integer, nullable=False, default=0),
    sa.Column("device", sa.String(64)),
    sa.Column("result", sa.JSON),
    sa.Column("error", sa.JSON),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("replica", sa.String(255), nullable=False, default=""),  # who runs it
)

file_hashes = sa.Table(
    "residency_file_hashes", metadata,
    sa.Column("path", sa.String(4096), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("addnet", sa.String(64)),
    sa.Column("legacy", sa.String(8)),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
)

options = sa.Table(
    "residency_options", metadata,
    sa.Column("user", sa.String(255), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.JSON),
)

recent = sa.Table(
    "residency_recent", metadata,
    sa.Column("model", sa.String(1024), primary_key=True),
    sa.Column("used_at", sa.Float, nullable=False, index=True),
)


def create(engine: sa.Engine) -> None:
    metadata.create_all(engine)


create_tables = create  # the public name (modelzoo.residency.create_tables)


def chosen_checkpoint(engine: sa.Engine, user: str) -> str | None:
    """The checkpoint a user's requests default to (their ``/sdapi/v1/options``), if set."""
    with engine.connect() as conn:
        v = conn.execute(sa.select(options.c.value).where(
            options.c.user == user, options.c.key == "sd_model_checkpoint")).scalar()
    return str(v) if v else None


def record(engine: sa.Engine, **row: Any) -> int:
    row.setdefault("created_at", dt.datetime.now(dt.UTC))
    with engine.begin() as conn:
        result = conn.execute(generations.insert().values(**row))
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def usage(engine: sa.Engine, *, user: str | None = None,
          since: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Per user, totals of generations, seconds and bytes, per model (``models``) and per
    UTC day (``by_day``: what bill splitting by day needs)."""
    g = generations
    query = sa.select(
        g.c.user, g.c.model, sa.func.count().label("generations"),
        sa.func.sum(g.c.gpu_seconds).label("gpu_seconds"),
        sa.func.sum(g.c.switch_seconds).label("switch_seconds"),
        sa.func.sum(g.c.image_bytes).label("image_bytes"),
    ).group_by(g.c.user, g.c.model).order_by(g.c.user, g.c.model)
    if user is not None:
        query = query.where(g.c.user == user)
    if since is not None:
        query = query.where(g.c.created_at >= since)
    users: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for r in conn.execute(query):
            u = users.setdefault(r.user, {"user": r.user, "generations": 0, "gpu_seconds": 0.0,
                                          "switch_seconds": 0.0, "image_bytes": 0,
                                          "models": []})
            item = {"model": r.model, "generations": int(r.generations),
                    "gpu_seconds": float(r.gpu_seconds or 0),
                    "switch_seconds": float(r.switch_seconds or 0),
                    "image_bytes": int(r.image_bytes or 0)}
            u["models"].append(item)
            for k in ("generations", "gpu_seconds", "switch_seconds", "image_bytes"):
                u[k] += item[k]
        day = sa.func.date(g.c.created_at).label("day")
        daily = sa.select(
            g.c.user, day, sa.func.count().label("generations"),
            sa.func.sum(g.c.gpu_seconds).label("gpu_seconds"),
            sa.func.sum(g.c.switch_seconds).label("switch_seconds"),
        ).where(query.whereclause if query.whereclause is not None else sa.true()
                ).group_by(g.c.user, day).order_by(g.c.user, day)
        for r in conn.execute(daily):
            users[r.user].setdefault("by_day", []).append({
                "day": str(r.day)[:10], "generations": int(r.generations),
                "gpu_seconds": float(r.gpu_seconds or 0),
                "switch_seconds": float(r.switch_seconds or 0)})
    return list(users.values())
