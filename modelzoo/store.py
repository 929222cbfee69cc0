"""Settings an admin changes at run time, stored in the database over the environment's.

    civitai_token, hf_token     write-only through the API (shown as "..._set": bool)
    hf_mirrors                  a list of endpoints
    allow_shared_write          users (besides admins) who may fetch into the shared models/

Every replica reads the same rows, so a token set on one works on all; each read is one
small query, cached for ``ttl`` seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa

from . import db
from .settings import ZooSettings

KEYS = ("civitai_token", "hf_token", "hf_mirrors", "allow_shared_write")


class SettingsStore:
    def __init__(self, engine: sa.Engine, base: ZooSettings, ttl: float = 2.0) -> None:
        self.engine = engine
        self.base = base
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: tuple[float, dict[str, Any]] | None = None

    def stored(self) -> dict[str, Any]:
        with self._lock:
            if self._cache is not None and time.monotonic() - self._cache[0] < self.ttl:
                return dict(self._cache[1])
        with self.engine.connect() as conn:
            rows = {r.key: r.value for r in conn.execute(sa.select(db.settings))}
        with self._lock:
            self._cache = (time.monotonic(), rows)
        return dict(rows)

    def put(self, **values: Any) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            for key, value in values.items():
                if key not in KEYS:
                    raise KeyError(key)
                conn.execute(db.settings.delete().where(db.settings.c.key == key))
                conn.execute(db.settings.insert().values(key=key, value=value, updated=now))
        with self._lock:
            self._cache = None

    def effective(self) -> ZooSettings:
        """The environment's settings with the stored values on top (empty = unset)."""
        stored = self.stored()
        update: dict[str, Any] = {}
        for key in ("civitai_token", "hf_token"):
            if key in stored:
                update[key] = stored[key] or None
        if isinstance(stored.get("hf_mirrors"), list):
            update["hf_mirrors"] = [str(m).rstrip("/") for m in stored["hf_mirrors"]]
        return self.base.model_copy(update=update)

    def shared_writers(self) -> list[str]:
        value = self.stored().get("allow_shared_write")
        return [str(v) for v in value] if isinstance(value, list) else []
