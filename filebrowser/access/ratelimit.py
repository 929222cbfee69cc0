"""Failed-attempt limits kept in the database (so replicas sharing it share the count).

A key is what is being guessed at (``user:ann``, ``share:7``) or who guesses
(``addr:10.0.0.5``); each has its own limit within one sliding window.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .. import db
from ..errors import TooManyRequests


class FailureLimit:
    def __init__(self, engine: Engine, window_seconds: int) -> None:
        self.engine = engine
        self.window = window_seconds

    def check(self, limits: dict[str, int]) -> None:
        """Raise 429 if any key has reached its limit within the window."""
        lf = db.login_failures
        since = db.now() - self.window
        with self.engine.connect() as conn:
            for key, limit in limits.items():
                n = conn.execute(sa.select(sa.func.count()).select_from(lf).where(
                    lf.c.key == key, lf.c.at > since)).scalar_one()
                if n >= limit:
                    raise TooManyRequests(headers={"Retry-After": str(self.window)})

    def record(self, keys: list[str]) -> None:
        t = db.now()
        with self.engine.begin() as conn:
            conn.execute(db.login_failures.insert(), [{"key": k, "at": t} for k in keys])
            conn.execute(db.login_failures.delete().where(db.login_failures.c.at < t - self.window))
