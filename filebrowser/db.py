"""The metadata database, SQLAlchemy Core.

SQLite by default (WAL mode, on local disk: SQLite's locking is unsafe on NFS), or
any SQLAlchemy URL such as PostgreSQL when replicas share state. Every feature
module declares its tables on :data:`metadata`; :func:`connect` creates what is
missing. The database holds state and caches, never file contents.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from atelier_io.db import make_engine
from atelier_io.db import now as now  # the time base of every table

metadata = sa.MetaData()
BIGINT_MAX = 2**63 - 1  # what an integer column holds (SQLite and PostgreSQL): inputs stop here

users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(256), nullable=True),  # None: proxy-only account
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("quota_bytes", sa.BigInteger, nullable=True),
    sa.Column("created", sa.Float, nullable=False),
)

sessions = sa.Table(
    "sessions", metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),  # sha256 of the cookie value
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), index=True),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
)

tokens = sa.Table(
    "tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),  # sha256 of the token
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), index=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("last_used", sa.Float, nullable=True),
    sa.Column("expires", sa.Float, nullable=True),
)

login_failures = sa.Table(
    "login_failures", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("key", sa.String(200), nullable=False, index=True),  # "user:x" or "addr:1.2.3.4"
    sa.Column("at", sa.Float, nullable=False),
)

usage_events = sa.Table(
    "usage_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user", sa.String(64), nullable=False, index=True),
    sa.Column("op", sa.String(32), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False, default=0),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("day", sa.String(10), nullable=False, index=True),
)

# Who put a file into a shared folder (outside their home): their stored bytes.
file_owners = sa.Table(
    "file_owners", metadata,
    sa.Column("path", sa.Text, primary_key=True),  # root-relative, '/'-separated
    sa.Column("user", sa.String(64), nullable=False, index=True),
)


# Resumable uploads (filebrowser.tus): the partial file's size is the truth.
tus_uploads = sa.Table(
    "tus_uploads", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False, index=True),
    sa.Column("folder", sa.Text, nullable=False),        # virtual target folder
    sa.Column("name", sa.Text, nullable=False),          # requested file name
    sa.Column("policy", sa.String(16), nullable=False),
    sa.Column("length", sa.BigInteger, nullable=True),   # None: deferred
    sa.Column("offset", sa.BigInteger, nullable=False),  # cache; the file size is the truth
    sa.Column("verify_from", sa.BigInteger, nullable=True),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False, index=True),
    sa.Column("final_path", sa.Text, nullable=True),     # set once placed
)


def connect(url: str) -> Engine:
    """An engine for ``url`` with every declared table created."""
    return make_engine(url, metadata)
