"""The job runner: claims queued jobs, downloads them, and answers pause and cancel.

One thread per replica polls the queue (or is woken when a job is added), keeps at most
``concurrency`` downloads going, renews their leases, and passes on pause/cancel asked
through the database (from any replica) as the download's ``cancel`` event. A download
thread runs ``download.execute`` on the job's stored plan; the engine turns the event
into KeyboardInterrupt with the partial file kept, so:

    pause       -> state paused, partial kept (resume continues from it)
    cancel      -> state cancelled, partial and control file removed
    shutdown    -> state queued again, partial kept (the next start resumes it)
    lease lost  -> the job went to another replica: stop, touch nothing

Progress goes to subscribers at ~4/s (``EventHub``) and to the database at most once a
second, which is also the heartbeat.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..download import Plan, Progress
from ..errors import ModelZooError
from .events import EventHub
from .store import JobStore, to_json

log = logging.getLogger("atelier.modelzoo.jobs")

Execute = Callable[[dict[str, Any], Plan, threading.Event, Callable[[Progress], None]], Any]


@dataclass
class Active:
    job_id: str
    thread: threading.Thread
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None          # pause | cancel | shutdown | lost
    last_db: float = 0.0
    snapshot: dict[str, Any] = field(default_factory=dict)


class JobRunner:
    def __init__(self, store: JobStore, hub: EventHub, execute: Execute, *, owner: str,
                 concurrency: int = 2, lease: float = 30.0, poll: float = 1.0,
                 on_cancelled: Callable[[Plan], None] | None = None) -> None:
        self.store = store
        self.hub = hub
        self.execute = execute
        self.owner = owner
        self.concurrency = concurrency
        self.lease = lease
        self.poll = poll
        self.on_cancelled = on_cancelled
        self.active: dict[str, Active] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        # our own jobs left running by a previous process of this replica resume now
        n = self.store.release(self.owner)
        if n:
            log.info("%d job(s) of %s back in the queue after a restart", n, self.owner)
        self._thread = threading.Thread(target=self._loop, name="modelzoo-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the downloads (partials kept) and give their jobs back to the queue."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            actives = list(self.active.values())
        for a in actives:
            a.reason = a.reason or "shutdown"
            a.cancel.set()
        deadline = time.monotonic() + timeout
        for a in actives:
            a.thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self.store.release(self.owner)

    def wake(self) -> None:
        self._wake.set()

    def stop_job(self, job_id: str, reason: str) -> bool:
        """Stop a job running here (pause/cancel asked on this replica)."""
        with self._lock:
            a = self.active.get(job_id)
        if a is None:
            return False
        a.reason = reason
        a.cancel.set()
        return True

    # -- the loop -----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # the database may be briefly away: try again next tick
                log.exception("job runner tick failed")
            self._wake.wait(self.poll)
            self._wake.clear()

    def _tick(self) -> None:
        self.store.requeue_expired()
        for job_id, control in self.store.controls(self.owner).items():
            self.stop_job(job_id, control)
        now = time.monotonic()
        with self._lock:
            actives = list(self.active.values())
        for a in actives:
            if now - a.last_db >= min(self.lease / 3, 5.0):
                self._write(a, force=True)
        while not self._stop.is_set():
            with self._lock:
                if len(self.active) >= self.concurrency:
                    return
            row = self.store.claim_next(self.owner, self.lease)
            if row is None:
                return
            self._start(row)

    def _start(self, row: Any) -> None:
        job = to_json(row)
        a = Active(row.id, threading.Thread(), snapshot=job)
        a.thread = threading.Thread(target=self._run, args=(a, row), daemon=True,
                                    name=f"modelzoo-{row.id}")
        with self._lock:
            self.active[row.id] = a
        self.hub.publish(job, force=True)
        a.thread.start()

    def _write(self, a: Active, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - a.last_db < 1.0:
            return
        a.last_db = now
        s = a.snapshot
        ours = self.store.heartbeat(a.job_id, self.owner, self.lease, done=s.get("done", 0),
                                    size=s.get("size"), speed=s.get("speed", 0.0),
                                    eta=s.get("eta"))
        if not ours and a.reason is None:
            a.reason = "lost"
            a.cancel.set()

    def _run(self, a: Active, row: Any) -> None:
        try:
            self._download(a, row)
        except Exception:
            log.exception("job %s crashed", a.job_id)
            self._finish(a, "failed", error="internal error (see the service log)",
                         error_code="internal_error")
        finally:
            with self._lock:
                self.active.pop(a.job_id, None)
            self._wake.set()

    def _download(self, a: Active, row: Any) -> None:
        plan = Plan.from_dict(row.plan)

        def progress(p: Progress) -> None:
            s = a.snapshot
            s["done"], s["speed"] = p.done, p.speed
            if p.total is not None:
                s["size"] = p.total
            total = s.get("size")
            s["eta"] = ((total - p.done) / p.speed) if total and p.speed > 0 else None
            s["updated"] = time.time()
            self.hub.publish(dict(s))
            self._write(a)

        try:
            outcome = self.execute(to_json(row), plan, a.cancel, progress)
        except KeyboardInterrupt:
            self._stopped(a, plan)
            return
        except ModelZooError as e:
            if a.cancel.is_set() and a.reason in ("cancel", "lost", "shutdown", "pause"):
                self._stopped(a, plan)
                return
            self._finish(a, "failed", error=str(e), error_code=e.code)
            return
        dest = outcome.paths[0] if plan.single and outcome.paths else plan.destination
        self._finish(a, "done", destination=dest, done=a.snapshot.get("size") or
                     a.snapshot.get("done", 0), resumed=outcome.resumed,
                     reused=outcome.reused, type=plan.resolution.type,
                     base_model=plan.resolution.base_model, plan=plan.to_dict())

    def _stopped(self, a: Active, plan: Plan) -> None:
        reason = a.reason or "shutdown"
        if reason == "pause":
            self._finish(a, "paused")
        elif reason == "cancel":
            if self.on_cancelled is not None:
                self.on_cancelled(plan)
            self._finish(a, "cancelled", done=0)
        elif reason == "shutdown":
            self.store.release(self.owner, a.job_id)
            self.hub.publish(self.store.get(a.job_id), force=True)
        # "lost": another replica owns the job now; its row is not ours to touch

    def _finish(self, a: Active, state: str, **values: Any) -> None:
        s = a.snapshot
        values.setdefault("done", s.get("done", 0))
        if s.get("size") is not None:
            values.setdefault("size", s["size"])
        if self.store.finish(a.job_id, self.owner, state, **values):
            self.hub.publish(self.store.get(a.job_id), force=True)
