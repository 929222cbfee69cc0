"""The models used most recently, and warming them again when a replica starts.

Uses are kept in the database (``residency_recent``), not in the state folder: a replica
scaled to zero may come back as a new container with an empty state folder, and replicas
sharing one database learn what the others ran. A use is written at most once per
``every`` seconds per model unless the order changes (a new most recent model), so a
busy GPU does not write a row per image.

Warming (:func:`warm`) runs in a background thread at start: in order of last use, each
model goes onto a GPU while it fits there without evicting a model loaded before it,
then into CPU RAM while that fits; the first that fits nowhere ends it. A request that
arrives meanwhile is served as usual (the manager serialises loads per GPU), so start-up
and the first request never wait for the warm-up as a whole.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import sqlalchemy as sa

from ..errors import ModelZooError
from . import db
from .plan import Tier

log = logging.getLogger("atelier.residency")


class RecentModels:
    def __init__(self, engine: sa.Engine, *, every: float = 30.0) -> None:
        self.engine = engine
        self.every = every
        self._written: dict[str, float] = {}
        self._head: str | None = None
        self._lock = threading.Lock()

    def touch(self, model: str, now: float | None = None) -> bool:
        """Record a use of ``model``; True when it was written to the database."""
        now = time.time() if now is None else now
        with self._lock:
            if self._head == model and now - self._written.get(model, 0.0) < self.every:
                return False
            self._head, self._written[model] = model, now
        t = db.recent
        with self.engine.begin() as conn:
            if not conn.execute(t.update().where(t.c.model == model).values(used_at=now)
                                ).rowcount:
                try:
                    with conn.begin_nested():
                        conn.execute(t.insert().values(model=model, used_at=now))
                except sa.exc.IntegrityError:  # another replica inserted it just now
                    conn.execute(t.update().where(t.c.model == model).values(used_at=now))
        return True

    def names(self, limit: int = 16) -> list[str]:
        """Most recently used first."""
        t = db.recent
        with self.engine.connect() as conn:
            return [r.model for r in conn.execute(
                sa.select(t.c.model).order_by(t.c.used_at.desc(), t.c.model).limit(limit))]


def warm(manager: Any, placement: Any, names: list[str],
         stop: threading.Event | None = None) -> list[tuple[str, str]]:
    """Load ``names`` in order within the memory budgets; [(model, "gpu" | "ram")]."""
    done: list[tuple[str, str]] = []
    for name in names:
        if stop is not None and stop.is_set():
            break
        try:
            spec = manager.spec(name)
            tier = _warm_one(manager, placement, spec.name)
        except ModelZooError as exc:  # gone from the models folder, too large, busy
            log.info("not warming %s: %s", name, exc)
            continue
        if tier is None:
            break
        done.append((spec.name, tier))
    return done


def _warm_one(manager: Any, placement: Any, name: str) -> str | None:
    device = placement.choose(name)
    plan = manager.plan_load(name, device)
    if plan.noop:
        return "gpu"
    if not plan.evictions:
        plan.execute()
        return "gpu"
    plan = manager.plan_load(name, tier=Tier.RAM)
    if plan.noop:
        return "ram"
    if plan.evictions:
        return None
    plan.execute()
    return "ram"
