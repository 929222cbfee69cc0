"""Database engines for every package's tables (SQLAlchemy Core).

SQLite by default (WAL mode, on local disk: SQLite's locking is unsafe on NFS), or any
SQLAlchemy URL such as PostgreSQL when replicas share state. Each package declares its
tables on its own ``MetaData`` and creates them on the engine it is given; this module
only makes engines the same way for all of them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def make_engine(url: str, *metadatas: sa.MetaData) -> Engine:
    """An engine for ``url`` (its SQLite folder made), with the tables of ``metadatas``
    created where missing."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    for metadata in metadatas:
        metadata.create_all(engine)
    return engine


def now() -> float:
    """Wall-clock seconds, the one time base stored in every table."""
    return time.time()
