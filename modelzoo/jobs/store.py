"""The job queue's rows: states, claims, progress, and the moves between states.

    queued --claim--> running --> done | failed
      ^  \\              |  \\
      |   pause          |   pause/cancel (asked through ``control``; the runner
      |    v             v    that owns the job stops it: partial kept / removed)
      +-- paused      cancelled
    retry: failed/cancelled -> queued      resume: paused -> queued

A claim is one UPDATE guarded by ``state = 'queued'``: of two replicas racing for a job,
exactly one sees a row changed. The winner holds a lease it renews with every progress
write; a job whose lease ran out (its replica died) goes back to ``queued`` for anyone,
and a replica restarting takes its own ``running`` jobs back at once.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import sqlalchemy as sa

from .. import db
from ..errors import JobConflict, JobNotFound

STATES = ("queued", "running", "paused", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
ACTIVE = ("queued", "running", "paused")
J = db.jobs
K = db.job_keys


def new_id() -> str:
    return "j_" + secrets.token_hex(8)


def to_json(row: Any) -> dict[str, Any]:
    m = row._mapping if hasattr(row, "_mapping") else row
    preview = m["preview"]
    return {
        "id": m["id"], "ref": m["ref"], "user": m["user"], "state": m["state"],
        "name": m["name"], "type": m["type"], "base_model": m["base_model"],
        "destination": m["destination"], "size": m["size"], "done": m["done"],
        "resumed": m["resumed"], "speed": m["speed"], "eta": m["eta"],
        "error": m["error"], "error_code": m["error_code"], "reused": bool(m["reused"]),
        "created": m["created"], "started": m["started"], "finished": m["finished"],
        "updated": m["updated"],
        "preview": f"api/models/preview/{preview}" if preview else None,
    }


class JobStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # -- rows ---------------------------------------------------------------------------

    def create(self, *, user: str, ref: str, request: dict[str, Any],
               plan: dict[str, Any] | None, state: str = "queued", **fields: Any
               ) -> dict[str, Any]:
        now = time.time()
        row = {"id": new_id(), "user": user, "ref": ref, "request": request, "plan": plan,
               "state": state, "created": now, "updated": now, "done": 0, "resumed": 0,
               "speed": 0.0, "reused": False, "attempts": 0, "name": "", **fields}
        if state in FINISHED:
            row.setdefault("finished", now)
        with self.engine.begin() as conn:
            conn.execute(J.insert().values(**row))
        return self.get(row["id"])

    def create_once(self, key: str, **kw: Any) -> tuple[dict[str, Any], bool]:
        """``create`` unless a job made for the same ``key`` is still active (queued,
        running or paused): then that job, and False. The key row and the job row go in
        one transaction, so of two replicas queuing the same request at once, the second
        waits on the first's key (PostgreSQL) or fails on it, and finds its job."""
        for _ in range(8):
            job_id = new_id()
            try:
                with self.engine.begin() as conn:
                    conn.execute(K.insert().values(key=key, job_id=job_id))
                    self._insert(conn, job_id, kw)
                return self.get(job_id), True
            except sa.exc.IntegrityError:
                pass
            with self.engine.begin() as conn:
                held = conn.execute(sa.select(K.c.job_id).where(K.c.key == key)).scalar()
                if held is None:
                    continue  # freed meanwhile: try again
                state = conn.execute(sa.select(J.c.state).where(J.c.id == held)).scalar()
                if state in ACTIVE:
                    return self.get(held), False
                # finished or deleted: the key is free again (of two racing, one frees it)
                conn.execute(K.delete().where((K.c.key == key) & (K.c.job_id == held)))
        raise JobConflict("the same request is being queued elsewhere; try again")

    def _insert(self, conn: Any, job_id: str, kw: dict[str, Any]) -> None:
        fields = dict(kw)
        user, ref = fields.pop("user"), fields.pop("ref")
        request, plan = fields.pop("request"), fields.pop("plan")
        now = time.time()
        conn.execute(J.insert().values(
            id=job_id, user=user, ref=ref, request=request, plan=plan, state="queued",
            created=now, updated=now, done=0, resumed=0, speed=0.0, reused=False,
            attempts=0, **{"name": "", **fields}))

    def row(self, job_id: str) -> Any:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(J).where(J.c.id == job_id)).first()
        if r is None:
            raise JobNotFound(f"no job {job_id}")
        return r

    def get(self, job_id: str) -> dict[str, Any]:
        return to_json(self.row(job_id))

    def list(self, user: str | None = None, state: str | None = None, limit: int = 100,
             since: float | None = None) -> list[dict[str, Any]]:
        q = sa.select(J)
        if user is not None:
            q = q.where(J.c.user == user)
        if state:
            q = q.where(J.c.state == state)
        if since is not None:
            q = q.where(J.c.updated > since).order_by(J.c.updated)
        else:
            q = q.order_by(J.c.created.desc())
        with self.engine.connect() as conn:
            return [to_json(r) for r in conn.execute(q.limit(limit))]

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per state: (jobs, bytes downloaded so far), every user's."""
        q = sa.select(J.c.state, sa.func.count(), sa.func.coalesce(sa.func.sum(J.c.done), 0)
                      ).group_by(J.c.state)
        with self.engine.connect() as conn:
            return {state: (int(n), int(done)) for state, n, done in conn.execute(q)}

    def _update(self, where: Any, **values: Any) -> int:
        values["updated"] = time.time()
        with self.engine.begin() as conn:
            return int(conn.execute(J.update().where(where).values(**values)).rowcount)

    # -- claims -------------------------------------------------------------------------

    def claim_next(self, owner: str, lease: float) -> Any | None:
        with self.engine.connect() as conn:
            ids = [r.id for r in conn.execute(
                sa.select(J.c.id).where(J.c.state == "queued").order_by(J.c.created).limit(8))]
        now = time.time()
        for job_id in ids:
            n = self._update((J.c.id == job_id) & (J.c.state == "queued"), state="running",
                             owner=owner, lease_until=now + lease, control=None,
                             started=now, error=None, error_code=None,
                             attempts=J.c.attempts + 1)
            if n == 1:
                return self.row(job_id)
        return None

    def requeue_expired(self) -> int:
        return self._update((J.c.state == "running") & (J.c.lease_until < time.time()),
                            state="queued", owner=None, lease_until=None, speed=0.0, eta=None)

    def release(self, owner: str, job_id: str | None = None) -> int:
        """Give running jobs of ``owner`` back to the queue (a restart, a shutdown)."""
        where = (J.c.state == "running") & (J.c.owner == owner)
        if job_id is not None:
            where = where & (J.c.id == job_id)
        return self._update(where, state="queued", owner=None, lease_until=None, speed=0.0,
                            eta=None)

    def heartbeat(self, job_id: str, owner: str, lease: float, **progress: Any) -> bool:
        """Renew the lease (and store progress); False when the job is no longer ours."""
        n = self._update((J.c.id == job_id) & (J.c.owner == owner) & (J.c.state == "running"),
                         lease_until=time.time() + lease, **progress)
        return n == 1

    def controls(self, owner: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {r.id: r.control for r in conn.execute(
                sa.select(J.c.id, J.c.control).where(
                    (J.c.owner == owner) & (J.c.state == "running") & J.c.control.is_not(None)))}

    def finish(self, job_id: str, owner: str, state: str, **values: Any) -> bool:
        now = time.time()
        if state in FINISHED:
            values.setdefault("finished", now)
        n = self._update((J.c.id == job_id) & (J.c.owner == owner) & (J.c.state == "running"),
                         state=state, owner=None, lease_until=None, control=None, speed=0.0,
                         eta=None, **values)
        return n == 1

    # -- what users ask -----------------------------------------------------------------

    def pause(self, job_id: str) -> str:
        """'paused' at once for a queued job, 'pausing' for a running one."""
        if self._update((J.c.id == job_id) & (J.c.state == "queued"), state="paused"):
            return "paused"
        if self._update((J.c.id == job_id) & (J.c.state == "running"), control="pause"):
            return "pausing"
        raise JobConflict(f"job {job_id} is {self.row(job_id).state}: only queued or running "
                          f"jobs pause")

    def resume(self, job_id: str) -> None:
        if not self._update((J.c.id == job_id) & (J.c.state == "paused"), state="queued",
                            error=None, error_code=None):
            raise JobConflict(f"job {job_id} is {self.row(job_id).state}: only paused jobs "
                              f"resume")

    def cancel(self, job_id: str) -> str:
        if self._update((J.c.id == job_id) & J.c.state.in_(("queued", "paused")),
                        state="cancelled", finished=time.time(), speed=0.0, eta=None):
            return "cancelled"
        if self._update((J.c.id == job_id) & (J.c.state == "running"), control="cancel"):
            return "cancelling"
        raise JobConflict(f"job {job_id} is {self.row(job_id).state}: it cannot be cancelled")

    def retry(self, job_id: str) -> None:
        if not self._update((J.c.id == job_id) & J.c.state.in_(("failed", "cancelled")),
                            state="queued", error=None, error_code=None, finished=None,
                            speed=0.0, eta=None):
            raise JobConflict(f"job {job_id} is {self.row(job_id).state}: only failed or "
                              f"cancelled jobs are retried")

    def delete(self, job_id: str) -> None:
        with self.engine.begin() as conn:
            n = conn.execute(J.delete().where((J.c.id == job_id) & J.c.state.in_(FINISHED)))
        if n.rowcount != 1:
            raise JobConflict(f"job {job_id} is {self.row(job_id).state}: only finished jobs "
                              f"are removed (cancel it first)")
