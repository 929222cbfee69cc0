"""The ModelZoo service object: settings, sources, library, previews and the job queue,
built once on the engine and NAS root the service passes.

It holds the operations the HTTP API exposes, in plain blocking code (the API runs them
in the thread pool), with the caller's rights checked here rather than in the routes:

    resolve(caller, request)       -> (Resolution, Plan)       nothing downloaded
    submit(caller, request)        -> job (queued, or done with reused=True)
    job actions                    pause / resume / cancel / retry / delete
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from . import db, download, placement
from .access import Caller
from .errors import JobNotFound, QuotaExceeded
from .jobs.events import EventHub
from .jobs.metrics import JobsCollector
from .jobs.runner import JobRunner
from .jobs.store import JobStore
from .library.index import Index
from .library.scan import Scanner
from .previews import Previews
from .settings import ZooSettings
from .sources import remote
from .sources.model import Resolution
from .sources.resolve import Sources
from .store import SettingsStore

log = logging.getLogger("atelier.modelzoo")

QuotaCheck = Callable[[Any, int], None]


@dataclass
class Request:
    ref: str
    file: str | None = None
    include: list[str] | None = None
    exclude: list[str] | None = None
    to: str | None = None
    conflict: str = "rename"
    base_subfolder: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ModelZoo:
    def __init__(self, settings: ZooSettings, engine: sa.Engine, root: Path, *,
                 fetch_settings: Any = None, owner: str | None = None) -> None:
        db.create(engine)
        self.settings = settings
        self.engine = engine
        self.root = Path(os.path.realpath(root))
        self.fetch_settings = fetch_settings
        self.store = SettingsStore(engine, settings)
        self.index = Index(engine, self.root)
        self.previews = Previews(engine, settings.state_dir / "model-previews",
                                 settings.models_preview_max_side,
                                 settings.models_preview_max_bytes,
                                 trusted=[settings.civitai_url, settings.hf_endpoint,
                                          settings.modelscope_url])
        self.jobs = JobStore(engine)
        self.hub = EventHub()
        self.owner = owner or settings.models_replica_id or (
            f"{socket.gethostname()}:{settings.state_dir}")
        self.runner = JobRunner(self.jobs, self.hub, self._execute, owner=self.owner,
                                concurrency=settings.models_concurrency,
                                lease=settings.models_lease_seconds,
                                poll=settings.models_poll_seconds,
                                on_cancelled=self.remove_partials)
        self.scanner = Scanner(self)
        self.closing = threading.Event()   # set when the service stops: streams end
        self.metrics = JobsCollector(self.jobs)  # the queue's figures, for /metrics
        self._local = threading.local()

    # -- pieces -------------------------------------------------------------------------

    def sources(self) -> Sources:
        """Sources with the settings of this moment (an admin may have set a token)."""
        sess = getattr(self._local, "sess", None)
        if sess is None:
            sess = self._local.sess = remote.session()
        return Sources.from_settings(self.store.effective(), sess,
                                     fetch_settings=self.fetch_settings)

    def caller(self, user: Any, home: str) -> Caller:
        return Caller.of(user, home, self.store.shared_writers())

    def start(self) -> None:
        self.runner.start()

    def close(self) -> None:
        self.closing.set()
        self.runner.stop()
        self.scanner.stop()

    # -- resolve and plan ---------------------------------------------------------------

    def resolve(self, caller: Caller, req: Request) -> tuple[Resolution, download.Plan]:
        res = self.sources().resolve(req.ref, file=req.file, include=req.include,
                                     exclude=req.exclude)
        return res, self.plan(caller, res, req)

    def plan(self, caller: Caller, res: Resolution, req: Request) -> download.Plan:
        base_sub = (self.settings.models_base_subfolder if req.base_subfolder is None
                    else req.base_subfolder)
        if req.to is not None:
            vfolder, allowed = caller.destination(req.to)
            relocate = None
        else:
            vfolder = placement.folder_for(res.type, res.base_model, caller.models_root,
                                           base_sub)
            allowed = caller.models_root
            relocate = {"models_root": caller.models_root, "base_subfolder": base_sub}
        folder = placement.real_path(self.root, vfolder, allowed)
        readable = caller.readable()
        return download.plan(res, folder, root=self.root, index=self.index,
                             readable=readable, conflict=req.conflict, relocate=relocate)

    def describe(self, res: Resolution, plan: download.Plan) -> dict[str, Any]:
        """The resolve answer of the API contract."""
        return {
            "ref": res.ref, "source": res.source, "name": res.name, "version": res.version,
            "model_id": res.model_id, "version_id": res.version_id, "type": res.type,
            "base_model": res.base_model, "files": [f.to_json() for f in res.files],
            "size": res.size, "sha256": res.primary.sha256,
            "preview": Previews.link(self.previews.for_url(res.preview_url)),
            "trigger_words": res.trigger_words, "description": res.description,
            "destination": plan.destination, "existing": plan.existing,
            "update_available": res.update, "reused": plan.reused,
            "sniffed": res.sniffed, "page": res.page,
        }

    # -- jobs ---------------------------------------------------------------------------

    def submit(self, caller: Caller, req: Request, quota: QuotaCheck | None = None,
               user: Any = None) -> tuple[dict[str, Any], bool]:
        """A job for the request; (job, created) where created is False for a reuse, or
        for the active job of the same request queued before."""
        caller.check_fetch()
        res, plan = self.resolve(caller, req)
        size = plan.size
        if quota is not None and size and plan.vfolder and placement.within(
                plan.vfolder, caller.home):
            try:
                quota(user, size)
            except QuotaExceeded:
                raise
            except Exception as e:  # the service's own quota error, in our terms
                raise QuotaExceeded(str(e)) from None
        preview = self.previews.for_url(res.preview_url)
        fields: dict[str, Any] = {"name": res.name, "type": res.type, "base_model": res.base_model,
                  "destination": plan.destination, "size": size, "preview": preview}
        if plan.reused:
            outcome = download.Outcome(plan, reused=True)
            download.complete(plan, outcome, self.index, self.preview_png)
            job = self.jobs.create(user=caller.name, ref=res.ref, request=req.to_dict(),
                                   plan=plan.to_dict(), state="done", reused=True,
                                   done=0, **fields)
            self.hub.publish(job, force=True)
            return job, False
        # the same request of the same user, queued twice (two tabs, two replicas behind
        # a balancer) while the first is still active, is that one job
        key = hashlib.sha256(json.dumps(
            [caller.name, res.ref, plan.destination, req.to_dict()], sort_keys=True,
            default=str).encode()).hexdigest()
        job, created = self.jobs.create_once(key, user=caller.name, ref=res.ref,
                                             request=req.to_dict(), plan=plan.to_dict(),
                                             **fields)
        if created:
            self.hub.publish(job, force=True)
            self.runner.wake()
        return job, created

    def job_for(self, caller: Caller, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job["user"] != caller.name and not caller.admin:
            raise JobNotFound(f"no job {job_id}")
        return job

    def act(self, caller: Caller, job_id: str, action: str) -> dict[str, Any]:
        self.job_for(caller, job_id)
        if action in ("pause", "resume", "cancel", "retry"):
            caller.check_fetch()
        if action == "pause":
            if self.jobs.pause(job_id) == "pausing":
                self.runner.stop_job(job_id, "pause")
        elif action == "resume":
            self.jobs.resume(job_id)
            self.runner.wake()
        elif action == "cancel":
            if self.jobs.cancel(job_id) == "cancelling":
                self.runner.stop_job(job_id, "cancel")
            else:
                row = self.jobs.row(job_id)
                if row.plan:
                    self.remove_partials(download.Plan.from_dict(row.plan))
        elif action == "retry":
            self.jobs.retry(job_id)
            self.runner.wake()
        elif action == "delete":
            self.jobs.delete(job_id)
            return {"id": job_id, "deleted": True}
        else:
            raise JobNotFound(f"no action {action}")
        job = self.jobs.get(job_id)
        self.hub.publish(job, force=True)
        return job

    def remove_partials(self, plan: download.Plan) -> None:
        from .fetch import placement as parts

        for t in plan.targets:
            if t.reuse is not None:
                continue
            dest = Path(t.path)
            for p in (parts.part_path(dest), parts.control_path(dest)):
                p.unlink(missing_ok=True)

    # -- the runner's side --------------------------------------------------------------

    def preview_png(self, url: str) -> bytes | None:
        return self.previews.png_for(url, remote.session())

    def _execute(self, job: dict[str, Any], plan: download.Plan, cancel: threading.Event,
                 progress: Callable[[download.Progress], None]) -> download.Outcome:
        sources = self.sources()
        return download.execute(plan, origin_headers=sources.origin_headers,
                                fetch_settings=self.fetch_settings, progress=progress,
                                cancel=cancel, index=self.index, root=self.root,
                                preview_png=self.preview_png)
