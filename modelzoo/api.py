"""The ModelZoo HTTP API (``/api/models/...``), as the web UI and scripts use it.

    POST   /api/models/resolve                 what a reference is; nothing downloaded
    POST   /api/models/jobs                    queue a download (200 + reused when the
                                               same sha256 is already there)
    GET    /api/models/jobs[/{id}]             yours; admins see everyone's
    POST   /api/models/jobs/{id}/pause|resume|cancel|retry, DELETE /api/models/jobs/{id}
    GET    /api/models/events                  Server-Sent Events: ``event: job``
    GET    /api/models/library, /library/status, POST /library/scan (admins)
    GET    /api/models/preview/{key}           a preview image we fetched and keep
    GET|PUT /api/models/settings               tokens (write-only), mirrors, who may
                                               write the shared models/ (admins)

The service composes it (``atelier/service.py``) and passes FileBrowser's
``current_user`` dependency, the caller's home folder and a quota check; ModelZoo never
imports FileBrowser. Blocking work (HTTP to the catalogues, hashing, the database) runs
in the thread pool; the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from .errors import JobError, ModelZooError, NotAllowed, RemoteNotFound
from .library import listing
from .previews import Previews
from .settings import ZooSettings
from .sources import remote
from .zoo import ModelZoo
from .zoo import Request as ZooRequest

SAFE_IMAGE_HEADERS = {"X-Content-Type-Options": "nosniff",
                      "Content-Security-Policy": "default-src 'none'; sandbox",
                      "Cache-Control": "private, max-age=86400"}
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".webp": "image/webp"}
_KEY = re.compile(r"^[rl][0-9a-f]{40}$")


class _JsonErrors(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ModelZooError as exc:
                message = getattr(exc, "message", None) or str(exc)
                return JSONResponse({"error": exc.code, "message": message},
                                    status_code=exc.status)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
                return JSONResponse({"error": "invalid_request",
                                     "message": f"{where}: {first.get('msg', 'invalid')}"},
                                    status_code=422)

        return route


class RefBody(BaseModel):
    ref: str = Field(max_length=4096, description="what to fetch (see the accepted forms)")
    file: str | None = Field(None, max_length=1024,
                             description="a Civitai version's file by name or id")
    include: list[str] | None = Field(None, max_length=200)
    exclude: list[str] | None = Field(None, max_length=200)
    to: str | None = Field(None, max_length=4096,
                           description="destination folder relative to the NAS root")
    conflict: Literal["rename", "overwrite", "fail"] = "rename"
    base_subfolder: bool | None = None

    def request(self) -> ZooRequest:
        return ZooRequest(self.ref, self.file, self.include, self.exclude, self.to,
                          self.conflict, self.base_subfolder)


class SettingsBody(BaseModel):
    civitai_token: str | None = Field(None, max_length=512)
    hf_token: str | None = Field(None, max_length=512)
    hf_mirrors: list[str] | None = Field(None, max_length=16)
    allow_shared_write: list[str] | None = Field(None, max_length=1000)


def build_router(settings: ZooSettings, *, engine: sa.Engine, root: Path, current_user: Any,
                 home_of: Callable[[Any], str] = lambda u: f"users/{u.name}",
                 check_quota: Callable[[Any, int], None] | None = None,
                 fetch_settings: Any = None, start_runner: bool = True) -> APIRouter:
    """The routes; ``router.zoo`` is the running :class:`ModelZoo`."""
    zoo = ModelZoo(settings, engine, root, fetch_settings=fetch_settings)
    ping_seconds = settings.models_events_ping_seconds

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_runner:
            await run_in_threadpool(zoo.start)
        try:
            yield
        finally:
            await run_in_threadpool(zoo.close)

    router = APIRouter(route_class=_JsonErrors, lifespan=lifespan, tags=["models"])
    router.zoo = zoo  # type: ignore[attr-defined]
    User = Depends(current_user)

    def caller(user: Any) -> Any:
        return zoo.caller(user, home_of(user))

    def admin(user: Any) -> Any:
        c = caller(user)
        if not c.admin:
            raise NotAllowed("administrators only")
        return c

    # -- resolve and jobs ---------------------------------------------------------------

    @router.post("/api/models/resolve")
    async def resolve(body: RefBody, user: Any = User) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            res, plan = zoo.resolve(caller(user), body.request())
            return zoo.describe(res, plan)

        return await run_in_threadpool(work)

    @router.post("/api/models/jobs", status_code=201)
    async def submit(body: RefBody, user: Any = User) -> Response:
        job, created = await run_in_threadpool(zoo.submit, caller(user), body.request(),
                                               check_quota, user)
        return JSONResponse(job, status_code=201 if created else 200)

    @router.get("/api/models/jobs")
    async def jobs(user: Any = User, state: str | None = None,
                   limit: int = 100) -> dict[str, Any]:
        c = caller(user)
        rows = await run_in_threadpool(zoo.jobs.list, None if c.admin else c.name, state,
                                       max(1, min(limit, 1000)))
        return {"jobs": rows}

    @router.get("/api/models/jobs/{job_id}")
    async def job(job_id: str, user: Any = User) -> dict[str, Any]:
        return await run_in_threadpool(zoo.job_for, caller(user), job_id)

    def action(name: str) -> Callable[..., Coroutine[Any, Any, dict[str, Any]]]:
        async def act(job_id: str, user: Any = User) -> dict[str, Any]:
            return await run_in_threadpool(zoo.act, caller(user), job_id, name)

        act.__name__ = f"{name}_job"
        return act

    for name in ("pause", "resume", "cancel", "retry"):
        router.add_api_route(f"/api/models/jobs/{{job_id}}/{name}", action(name),
                             methods=["POST"], name=f"{name}_job")
    router.add_api_route("/api/models/jobs/{job_id}", action("delete"), methods=["DELETE"],
                         name="delete_job")

    @router.get("/api/models/events", response_class=StreamingResponse,
                responses={200: {"description": "Server-Sent Events: `event: job`",
                                 "content": {"text/event-stream": {}}}})
    async def events(request: Request, user: Any = User) -> StreamingResponse:
        c = caller(user)

        def wants(job: dict[str, Any]) -> bool:
            return bool(c.admin or job.get("user") == c.name)

        queue = zoo.hub.subscribe(wants)

        async def stream() -> AsyncIterator[str]:
            sent: dict[str, float] = {}
            since = time.time()
            last_ping = time.monotonic()
            try:
                yield "retry: 3000\n\n"
                while not zoo.closing.is_set() and not await request.is_disconnected():
                    try:
                        job = await asyncio.wait_for(queue.get(), timeout=1.0)
                        sent[job["id"]] = float(job.get("updated") or time.time())
                        yield f"event: job\ndata: {json.dumps(job)}\n\n"
                    except TimeoutError:
                        # changes made by other replicas reach us through the database
                        rows = await run_in_threadpool(
                            zoo.jobs.list, None if c.admin else c.name, None, 200, since)
                        for row in rows:
                            since = max(since, row["updated"])
                            if row["updated"] > sent.get(row["id"], 0.0):
                                sent[row["id"]] = row["updated"]
                                yield f"event: job\ndata: {json.dumps(row)}\n\n"
                    if time.monotonic() - last_ping >= ping_seconds:
                        last_ping = time.monotonic()
                        yield ": ping\n\n"
            finally:
                zoo.hub.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    # -- library and previews -----------------------------------------------------------

    @router.get("/api/models/library")
    async def library(user: Any = User, type: str | None = None,
                      base_model: str | None = None, q: str | None = None,
                      updates: bool = False, limit: int = 100,
                      cursor: str | None = None) -> dict[str, Any]:
        c = caller(user)
        prefixes = ["models", "users"] if c.admin else ["models", c.home]

        def link(vpath: str | None) -> str | None:
            return Previews.link(zoo.previews.for_path(vpath)) if vpath else None

        def exists(vpath: str) -> bool:
            return (zoo.root / vpath).is_file()

        return await run_in_threadpool(lambda: listing.query(
            engine, prefixes=prefixes, type=type, base_model=base_model, q=q, updates=updates,
            limit=max(1, min(limit, 1000)), cursor=cursor, preview_link=link, exists=exists))

    @router.post("/api/models/library/scan")
    async def scan(user: Any = User) -> dict[str, Any]:
        admin(user)
        return {"started": zoo.scanner.start()}

    @router.get("/api/models/library/status")
    async def scan_status(user: Any = User) -> dict[str, Any]:
        return dict(zoo.scanner.status)

    @router.get("/api/models/preview/{key}")
    async def preview(key: str, user: Any = User) -> Response:
        if not _KEY.match(key):
            raise RemoteNotFound("no such preview")
        url, vpath = await run_in_threadpool(zoo.previews.lookup, key)
        if url is not None:
            path = await run_in_threadpool(zoo.previews.remote_png, key, url, remote.session())
            return FileResponse(path, media_type="image/png", headers=SAFE_IMAGE_HEADERS)
        c = caller(user)
        if vpath is None or not c.may_see(vpath):
            raise RemoteNotFound("no such preview")
        full = Path(os.path.realpath(zoo.root / vpath))
        media = IMAGE_TYPES.get(full.suffix.lower())
        if (media is None or os.path.commonpath([full, zoo.root]) != str(zoo.root)
                or not full.is_file()):
            raise RemoteNotFound("no such preview")
        return FileResponse(full, media_type=media, headers=SAFE_IMAGE_HEADERS)

    # -- settings -----------------------------------------------------------------------

    def settings_doc() -> dict[str, Any]:
        s = zoo.store.effective()
        from .sources.resolve import hf_token

        return {"civitai_url": s.civitai_url, "civitai_token_set": bool(s.civitai_token),
                "hf_endpoint": s.hf_endpoint, "hf_token_set": bool(hf_token(s)),
                "hf_mirrors": s.hf_mirrors, "modelscope_url": s.modelscope_url,
                "allow_shared_write": zoo.store.shared_writers(),
                "base_subfolder": s.models_base_subfolder,
                "concurrency": s.models_concurrency}

    @router.get("/api/models/settings")
    async def get_settings(user: Any = User) -> dict[str, Any]:
        admin(user)
        return await run_in_threadpool(settings_doc)

    @router.put("/api/models/settings")
    async def put_settings(body: SettingsBody, user: Any = User) -> dict[str, Any]:
        admin(user)
        values = body.model_dump(exclude_unset=True)
        for m in values.get("hf_mirrors") or []:
            if not re.match(r"^https?://[^/\s]+", m):
                raise JobError(f"a mirror is an http(s) URL, not {m!r}")
        if "allow_shared_write" in values:
            values["allow_shared_write"] = sorted({str(u) for u in
                                                   values["allow_shared_write"] or []})

        def save() -> dict[str, Any]:
            zoo.store.put(**values)
            return settings_doc()

        return await run_in_threadpool(save)

    return router
