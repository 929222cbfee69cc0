"""ModelZoo's tables (SQLAlchemy Core, own MetaData), created on the engine it is given.

    modelzoo_jobs       the download queue: one row per job, its plan (JSON, no secrets),
                        state, progress, and the claim (owner + lease) that keeps two
                        replicas from running one job
    modelzoo_job_keys   one identical request (user, model, destination, options) ->
                        its job: while that job is active, queuing the same again on
                        any replica answers with it instead of a second job
    modelzoo_files      the local library and hash cache: a model file by virtual path,
                        its sha256 valid for (size, mtime), what it is and where it came from
    modelzoo_settings   admin-set values (tokens, mirrors, shared-write users) over the
                        environment's defaults
    modelzoo_previews   preview keys handed to browsers -> remote URL or local sidecar
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

jobs = sa.Table(
    "modelzoo_jobs", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("user", sa.String(255), nullable=False, index=True),
    sa.Column("ref", sa.Text, nullable=False),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("plan", sa.JSON, nullable=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("name", sa.Text, nullable=False, default=""),
    sa.Column("type", sa.String(64), nullable=True),
    sa.Column("base_model", sa.String(128), nullable=True),
    sa.Column("destination", sa.Text, nullable=True),
    sa.Column("preview", sa.String(80), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("done", sa.BigInteger, nullable=False, default=0),
    sa.Column("resumed", sa.BigInteger, nullable=False, default=0),
    sa.Column("speed", sa.Float, nullable=False, default=0.0),
    sa.Column("eta", sa.Float, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("reused", sa.Boolean, nullable=False, default=False),
    sa.Column("control", sa.String(16), nullable=True),   # pause | cancel, for the owner
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("created", sa.Float, nullable=False, index=True),
    sa.Column("started", sa.Float, nullable=True),
    sa.Column("finished", sa.Float, nullable=True),
    sa.Column("updated", sa.Float, nullable=False, index=True),
)

job_keys = sa.Table(
    "modelzoo_job_keys", metadata,
    sa.Column("key", sa.String(64), primary_key=True),   # sha256 of the request
    sa.Column("job_id", sa.String(40), nullable=False),
)

files = sa.Table(
    "modelzoo_files", metadata,
    sa.Column("path", sa.String(4096), primary_key=True),   # virtual, relative to the root
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=True, index=True),
    sa.Column("type", sa.String(64), nullable=True),
    sa.Column("base_model", sa.String(128), nullable=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("trigger_words", sa.JSON, nullable=True),
    sa.Column("preview", sa.Text, nullable=True),           # virtual path of the sidecar
    sa.Column("civitai_model_id", sa.String(32), nullable=True, index=True),
    sa.Column("civitai_version_id", sa.String(32), nullable=True),
    sa.Column("update_version_id", sa.String(32), nullable=True),
    sa.Column("update_name", sa.Text, nullable=True),
    sa.Column("identified", sa.Float, nullable=True),       # when Civitai was asked
    sa.Column("seen", sa.Float, nullable=False),
)

settings = sa.Table(
    "modelzoo_settings", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.JSON, nullable=True),
    sa.Column("updated", sa.Float, nullable=False),
)

previews = sa.Table(
    "modelzoo_previews", metadata,
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("url", sa.Text, nullable=True),      # a remote image, fetched once and cached
    sa.Column("path", sa.Text, nullable=True),     # or a local sidecar (virtual path)
    sa.Column("created", sa.Float, nullable=False),
)


def create(engine: sa.Engine) -> None:
    metadata.create_all(engine)
