"""Generation jobs: submit at once, run on a GPU worker, watch, cancel, survive restarts.

    submit ──► queued (FairQueue, bounded) ──dispatch──► placement worker queue ──► running
                  │  cancel: removed               cancel: skipped        cancel: stops at
                  ▼                                                        the next step
              cancelled        done | interrupted | failed | cancelled ◄──────┘

The dispatcher hands the GPU workers at most two jobs per GPU (the one running and the
next, so the prefetcher can warm the next model into RAM meanwhile); the rest wait in
the fair queue, where users take turns (``fairqueue.py``). ``position`` is the number
of jobs that start before a job.

Every state change is written to ``residency_jobs``; progress (step/total, a preview)
lives in memory and reaches listeners over SSE. A process that dies leaves its queued and
running rows behind: at start the manager marks its own replica's leftovers
``interrupted`` ("the service restarted"), so nobody waits on a job that cannot finish.

Finished jobs' images are written by a small pool of finisher threads (PNG encoding
takes a while at 1024x1024), not by the GPU worker, which goes on to the next job.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ...errors import JobNotFinished, QueueFull, ResidencyError, UnknownJob
from .. import db
from ..hashes import HashStore
from .fairqueue import FairQueue
from .images import Storage, png_bytes, save_png
from .request import GenerationRequest
from .runner import Cancelled, Control, Runner, RunResult

log = logging.getLogger(__name__)
FINAL = ("done", "failed", "cancelled", "interrupted")
KEEP_FINISHED = 300.0  # seconds a finished job stays in memory (then the database answers)
PING = 15.0


class Job:
    def __init__(self, jid: str, principal: Any, req: GenerationRequest, *, save: bool,
                 keep_images: bool = False) -> None:
        self.id = jid
        self.principal = principal
        self.user: str = principal.name
        self.req = req
        self.model = req.model
        self.save = save
        self.state = "queued"
        self.step = 0
        self.total = 0
        self.preview: bytes | None = None
        self.preview_step = 0
        self.device: str | None = None
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.status = 200  # the HTTP status a waiting caller gets for an error
        self.keep_images = keep_images  # a caller waits for the PNG bytes (wait=true, sdapi)
        self.pngs: list[bytes] = []
        self.control = Control(self._on_progress)
        self.placement_future: Future[Any] | None = None
        self.version = 0
        self._lock = threading.Lock()
        self._subs: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    # ---- listeners -----------------------------------------------------------------
    def changed(self) -> None:
        with self._lock:
            self.version += 1
            subs = list(self._subs)
        for loop, ev in subs:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # the listener's loop is gone
                pass

    def subscribe(self) -> asyncio.Event:
        ev = asyncio.Event()
        with self._lock:
            self._subs.append((asyncio.get_running_loop(), ev))
        return ev

    def unsubscribe(self, ev: asyncio.Event) -> None:
        with self._lock:
            self._subs = [(lp, e) for lp, e in self._subs if e is not ev]

    async def wait(self) -> None:
        ev = self.subscribe()
        try:
            while self.state not in FINAL:
                await ev.wait()
                ev.clear()
        finally:
            self.unsubscribe(ev)

    def _on_progress(self, step: int, total: int, preview: Any) -> None:
        self.step, self.total = step, total
        if preview is not None:
            import io

            buf = io.BytesIO()
            preview.save(buf, format="PNG")
            self.preview, self.preview_step = buf.getvalue(), step
        self.changed()

    # ---- views ---------------------------------------------------------------------
    @property
    def progress(self) -> float:
        if self.state in ("done", "interrupted"):
            return 1.0
        return self.step / self.total if self.total else 0.0

    def to_json(self, position: int | None = None) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "kind": self.req.kind, "model": self.model,
                "state": self.state, "position": position if self.state == "queued" else None,
                "step": self.step, "total": self.total, "progress": round(self.progress, 4),
                "device": self.device, "created": self.created, "started": self.started,
                "finished": self.finished, "error": self.error, "result": self.result,
                "request": self.req.to_json()}


def _row_json(row: Any) -> dict[str, Any]:
    total = row.total or 0
    done = row.state in ("done", "interrupted")
    return {"id": row.id, "user": row.user, "kind": row.kind, "model": row.model,
            "state": row.state, "position": None, "step": row.step, "total": total,
            "progress": 1.0 if done else (row.step / total if total else 0.0),
            "device": row.device, "created": row.created_at, "started": row.started_at,
            "finished": row.finished_at, "error": row.error, "result": row.result,
            "request": row.request}


class JobManager:
    def __init__(self, *, placement: Any, catalog: Any, engine: sa.Engine, storage: Storage,
                 hashes: HashStore, queue_max: int, queue_max_per_user: int,
                 version: str = "atelier", replica: str | None = None) -> None:
        self.placement = placement
        self.catalog = catalog
        self.engine = engine
        self.storage = storage
        self.hashes = hashes
        self.queue_max = queue_max
        self.queue_max_per_user = queue_max_per_user
        self.version = version
        self.replica = replica or socket.gethostname()
        self.queue = FairQueue()
        self.jobs: dict[str, Job] = {}
        self.dispatched: list[str] = []  # handed to a GPU worker, not started yet
        self.in_flight = 0
        self.max_in_flight = 2 * max(1, len(placement.workers))
        self._cond = threading.Condition()
        self._closed = False
        self._finisher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gen-finish")
        self.recovered = self._recover()
        self._thread = threading.Thread(target=self._dispatch_loop, name="gen-dispatch",
                                        daemon=True)
        self._thread.start()

    # ---- persistence ---------------------------------------------------------------
    def _recover(self) -> int:
        t = db.jobs
        err = {"error": "interrupted", "message": "the service restarted before this job "
                                                  "finished; submit it again"}
        with self.engine.begin() as conn:
            return int(conn.execute(
                t.update().where(t.c.state.in_(("queued", "running")),
                                 t.c.replica == self.replica)
                .values(state="interrupted", error=err, finished_at=time.time())).rowcount)

    def _insert(self, job: Job) -> None:
        with self.engine.begin() as conn:
            conn.execute(db.jobs.insert().values(
                id=job.id, user=job.user, kind=job.req.kind, model=job.model, state=job.state,
                request=job.req.to_json(), step=0, total=0, created_at=job.created,
                replica=self.replica))

    def _update(self, job: Job, **extra: Any) -> None:
        values = {"state": job.state, "step": job.step, "total": job.total,
                  "device": job.device, "started_at": job.started,
                  "finished_at": job.finished, "result": job.result, "error": job.error}
        values.update(extra)
        try:
            with self.engine.begin() as conn:
                conn.execute(db.jobs.update().where(db.jobs.c.id == job.id).values(**values))
        except sa.exc.SQLAlchemyError:  # the job goes on; its row catches up next time
            log.exception("could not record job %s", job.id)

    # ---- positions -----------------------------------------------------------------
    def _positions(self) -> dict[str, int]:
        order = list(self.dispatched) + self.queue.order()
        return {jid: i for i, jid in enumerate(order)}

    def position(self, job: Job) -> int | None:
        with self._cond:
            return self._positions().get(job.id)

    def snapshot(self, job: Job) -> dict[str, Any]:
        return job.to_json(self.position(job))

    def _notify_waiting(self) -> None:
        with self._cond:
            waiting = [self.jobs[j] for j in (*self.dispatched, *self.queue.order())
                       if j in self.jobs]
        for job in waiting:
            job.changed()

    # ---- submit / dispatch ---------------------------------------------------------
    def submit(self, principal: Any, req: GenerationRequest, *, save: bool = True,
               keep_images: bool = False) -> Job:
        """Queue a checked request (blocking: database write; call from a thread).
        ``keep_images``: hold the PNG bytes for a caller that waits (it releases them)."""
        job = Job("g_" + secrets.token_urlsafe(12), principal, req, save=save,
                  keep_images=keep_images or not save)
        with self._cond:
            if self._closed:
                raise QueueFull("the service is shutting down")
            waiting = len(self.queue) + len(self.dispatched)
            if waiting >= self.queue_max:
                raise QueueFull(f"{waiting} jobs are waiting (the limit is {self.queue_max}); "
                                "retry later", waiting=waiting, limit=self.queue_max)
            mine = self.queue.count(job.user) + sum(
                self.jobs[j].user == job.user for j in self.dispatched if j in self.jobs)
            if mine >= self.queue_max_per_user:
                raise QueueFull(f"you have {mine} jobs waiting (the limit per user is "
                                f"{self.queue_max_per_user})", waiting=mine,
                                limit=self.queue_max_per_user)
            self._prune()
            self.jobs[job.id] = job
        try:
            self._insert(job)
        except BaseException:
            with self._cond:
                self.jobs.pop(job.id, None)
            raise
        with self._cond:
            self.queue.push(job.user, job.id)
            self._cond.notify_all()
        return job

    def _prune(self) -> None:
        now = time.time()
        for jid in [j for j, job in self.jobs.items() if job.state in FINAL
                    and job.finished is not None and now - job.finished > KEEP_FINISHED]:
            del self.jobs[jid]

    def _dispatch_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not len(self.queue)
                                            or self.in_flight >= self.max_in_flight):
                    self._cond.wait()
                if self._closed:
                    return
                popped = self.queue.pop()
                assert popped is not None
                job = self.jobs[popped[1]]
                self.in_flight += 1
                self.dispatched.append(job.id)
            w, h = job.req.out_size
            try:
                fut = self.placement.submit(job.model, self._work(job), width=w, height=h,
                                            batch=job.req.batch_size, device=job.req.device)
            except BaseException as exc:  # e.g. the model was deleted since submit
                failed: Future[Any] = Future()
                failed.set_exception(exc)
                self._finisher.submit(self._finish, job, failed)
                continue
            job.placement_future = fut
            fut.add_done_callback(lambda f, job=job: self._after(job, f))
            self._notify_waiting()

    def _after(self, job: Job, fut: Future[Any]) -> None:
        try:
            self._finisher.submit(self._finish, job, fut)
        except RuntimeError:  # closing: finish inline
            self._finish(job, fut)

    def _work(self, job: Job) -> Callable[[Any, Any], RunResult]:
        def work(pipe: Any, device: Any) -> RunResult:
            with self._cond:
                if job.id in self.dispatched:
                    self.dispatched.remove(job.id)
            if job.control.cancelled:
                raise Cancelled()
            job.state, job.device, job.started = "running", device.name, time.time()
            self._update(job)
            job.changed()
            self._notify_waiting()
            spec = self.catalog.get(job.model)
            mh = self.hashes.get(spec.path) if spec.path.is_file() else None
            loras = {}
            for ref, path in job.req.networks.loras:
                h = self.hashes.get(path)
                if h is not None and h.addnet_short:
                    loras[ref.name] = h.addnet_short
            vae_hash = None
            if job.req.networks.vae is not None and job.req.networks.vae[1].is_file():
                vh = self.hashes.get(job.req.networks.vae[1])
                vae_hash = vh.short if vh else None
            runner = Runner(pipe, job.req, job.control, model_name=Path(spec.name).name,
                            model_hash=mh.short if mh else None, version=self.version,
                            lora_hashes=loras, vae_hash=vae_hash)
            return runner.run()

        return work

    # ---- finishing -----------------------------------------------------------------
    def _finish(self, job: Job, fut: Future[Any]) -> None:
        with self._cond:
            self.in_flight -= 1
            if job.id in self.dispatched:
                self.dispatched.remove(job.id)
            self._cond.notify_all()
        try:
            run, switch = fut.result()
        except (CancelledError, Cancelled):
            if self._closed and not job.control.cancelled:  # the service stopped
                self._end(job, "interrupted", error={"error": "interrupted",
                                                     "message": "the service stopped"})
            else:
                self._end(job, "cancelled")
            return
        except ResidencyError as exc:
            job.status = exc.status
            self._end(job, "failed", error=exc.to_json())
            return
        except Exception as exc:
            log.exception("generation job %s failed", job.id)
            job.status = 500
            self._end(job, "failed", error={"error": "generation_failed",
                                            "message": f"{type(exc).__name__}: {exc}"})
            return
        self._save(job, run, switch)

    def _save(self, job: Job, run: RunResult, switch: Any) -> None:
        images: list[dict[str, Any]] = []
        error = None
        outputs: int | None = None
        try:
            if job.save:
                outputs = self.storage.open_outputs(job.principal)
            for out in run.outputs:
                data = png_bytes(out.image, out.infotext)
                if job.keep_images:
                    job.pngs.append(data)
                item: dict[str, Any] = {"seed": out.seed, "subseed": out.subseed,
                                        "infotext": out.infotext, "bytes": len(data),
                                        "path": None}
                if outputs is not None:
                    self.storage.check(job.principal, len(data))
                    rel = save_png(outputs, job.req.kind, data, out.seed)
                    self.storage.record(job.principal, rel, len(data))
                    item["path"] = rel
                images.append(item)
        except ResidencyError as exc:
            job.status = exc.status
            error = exc.to_json()
        except OSError as exc:
            job.status = 507
            error = {"error": "write_failed", "message": f"could not save the image: {exc}"}
        finally:
            if outputs is not None:
                os.close(outputs)
        result = {"images": images, "model": job.model, "device": switch.device,
                  "seeds": [i["seed"] for i in images],
                  "subseeds": [i["subseed"] for i in images],
                  "interrupted": run.interrupted, "gpu_seconds": run.seconds,
                  "switch_seconds": switch.seconds, "switched_from": switch.source.value}
        if images:
            w, h = job.req.out_size
            try:
                db.record(self.engine, user=job.user, model=job.model, device=switch.device,
                          gpu_seconds=run.seconds, switch_seconds=switch.seconds,
                          switched_from=switch.source.value, width=w, height=h,
                          steps=job.req.steps, seed=images[0]["seed"],
                          image_path=images[0]["path"] or "",
                          image_bytes=sum(i["bytes"] for i in images))
            except sa.exc.SQLAlchemyError:
                log.exception("could not record usage of job %s", job.id)
        state = "failed" if error else ("interrupted" if run.interrupted else "done")
        self._end(job, state, result=result, error=error)

    def _end(self, job: Job, state: str, *, result: dict[str, Any] | None = None,
             error: dict[str, Any] | None = None) -> None:
        job.state, job.result, job.error, job.finished = state, result, error, time.time()
        if state in ("done", "interrupted") and job.total:
            job.step = job.step if state == "interrupted" else job.total
        self._update(job)
        job.changed()
        self._notify_waiting()

    # ---- queries and control -------------------------------------------------------
    def _visible(self, job_user: str, principal: Any) -> bool:
        return job_user == principal.name or getattr(principal, "role", None) == "admin"

    def live(self, jid: str, principal: Any) -> Job | None:
        with self._cond:
            job = self.jobs.get(jid)
        if job is not None and not self._visible(job.user, principal):
            raise UnknownJob(f"no job {jid!r}", id=jid)
        return job

    def get(self, jid: str, principal: Any) -> dict[str, Any]:
        """A job as JSON, from memory if it is live, else from the database (blocking)."""
        job = self.live(jid, principal)
        if job is not None:
            return self.snapshot(job)
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(db.jobs).where(db.jobs.c.id == jid)).first()
        if row is None or not self._visible(row.user, principal):
            raise UnknownJob(f"no job {jid!r}", id=jid)
        return _row_json(row)

    def list_jobs(self, principal: Any, *, state: str | None = None, limit: int = 50
                  ) -> list[dict[str, Any]]:
        t = db.jobs
        q = sa.select(t).order_by(t.c.created_at.desc()).limit(max(1, min(limit, 500)))
        if getattr(principal, "role", None) != "admin":
            q = q.where(t.c.user == principal.name)
        if state:
            q = q.where(t.c.state == state)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        out = []
        for r in rows:
            with self._cond:
                job = self.jobs.get(r.id)
            out.append(self.snapshot(job) if job is not None else _row_json(r))
        return out

    def cancel(self, jid: str, principal: Any) -> dict[str, Any]:
        job = self.live(jid, principal)
        if job is None:
            self.get(jid, principal)  # 404 if unknown, else it is finished:
            raise JobNotFinished(f"job {jid} has already finished", id=jid)
        if job.state in FINAL:
            raise JobNotFinished(f"job {jid} has already finished ({job.state})", id=jid,
                                 state=job.state)
        job.control.cancelled = True
        with self._cond:
            removed = self.queue.remove(job.id)
        if removed:
            self._end(job, "cancelled")
        elif job.placement_future is not None:
            job.placement_future.cancel()  # not started yet: the worker skips it
        return self.snapshot(job)

    def running(self, principal: Any) -> list[Job]:
        with self._cond:
            jobs = list(self.jobs.values())
        return [j for j in jobs if j.user == principal.name and j.state not in FINAL]

    def interrupt(self, principal: Any) -> int:
        """A1111's interrupt: the caller's running jobs stop and keep what they made."""
        n = 0
        for job in self.running(principal):
            if job.state == "running":
                job.control.interrupted = True
                n += 1
        return n

    async def events(self, job: Job) -> AsyncIterator[str]:
        """Server-Sent Events for one job until it ends (``event: job`` / ``preview``)."""
        import json

        ev = job.subscribe()
        try:
            sent, sent_preview = -1, -1
            while True:
                version = job.version
                if version != sent:
                    sent = version
                    yield f"event: job\ndata: {json.dumps(self.snapshot(job))}\n\n"
                    if job.preview is not None and job.preview_step != sent_preview:
                        sent_preview = job.preview_step
                        img = base64.b64encode(job.preview).decode("ascii")
                        data = json.dumps({"id": job.id, "step": job.preview_step,
                                           "image": img})
                        yield f"event: preview\ndata: {data}\n\n"
                if job.state in FINAL and job.version == sent:
                    yield "event: end\ndata: {}\n\n"
                    return
                try:
                    await asyncio.wait_for(ev.wait(), PING)
                except TimeoutError:
                    yield ": ping\n\n"
                ev.clear()
        finally:
            job.unsubscribe(ev)

    def close(self) -> None:
        """Stop: queued jobs end ``interrupted``; a running one stops at its next step and
        keeps the images it made (the GPU workers stop after this)."""
        with self._cond:
            self._closed = True
            queued = [self.jobs[j] for j in self.queue.order() if j in self.jobs]
            for j in queued:
                self.queue.remove(j.id)
            for job in self.jobs.values():
                if job.state == "running":
                    job.control.interrupted = True
            self._cond.notify_all()
        for job in queued:
            self._end(job, "interrupted", error={"error": "interrupted",
                                                 "message": "the service stopped"})
        self._thread.join(10)
        self._finisher.shutdown(wait=True)
