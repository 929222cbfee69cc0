"""The API edition's routes: generation jobs, the WebUI's /sdapi/v1, and the GPU controls.

    /api/generate...          generation as jobs (generate/routes.py)
    /sdapi/v1/...             the A1111 API subset its clients use (generate/sdapi.py)
    GET  /api/gpu             devices, free/total memory, models per tier, queues
    POST /api/gpu/load        {model, device?, tier: gpu|ram, dry_run?}  (users, admins)
    POST /api/gpu/unload      {model, to: ram|disk, dry_run?}            (admins)
    POST /api/gpu/pin         {model, pinned}                            (admins)
    GET  /api/gpu/usage       GPU and switch seconds and bytes per user  (admins: everyone)

Every route needs the service's credentials (the ``current_user`` dependency the service
edge passes in; ``sdapi_user`` may also accept HTTP Basic, which WebUI clients send).
Loading and inference run on the per-GPU worker threads and everything else that touches
disk or the database on the thread pool: the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from ..errors import ResidencyForbidden
from . import db
from .generate.images import Storage
from .generate.routes import build_generate_router
from .generate.sdapi import build_sdapi_router
from .generate.service import GenerateService
from .http import JsonErrors, require_role
from .plan import Tier
from .recent import RecentModels, warm
from .service import ResidencyService
from .settings import ResidencySettings

VERSION = "atelier"
log = logging.getLogger("atelier.residency")


class LoadBody(BaseModel):
    model: str = Field(min_length=1, max_length=1024)
    device: str | None = None
    tier: Literal["gpu", "ram"] = "gpu"
    dry_run: bool = False


class UnloadBody(BaseModel):
    model: str = Field(min_length=1, max_length=1024)
    to: Literal["ram", "disk"] = "ram"
    dry_run: bool = False


class PinBody(BaseModel):
    model: str = Field(min_length=1, max_length=1024)
    pinned: bool = True


def build_router(settings: ResidencySettings, *, engine: sa.Engine, current_user: Any,
                 open_outputs: Callable[[Any], int],
                 quota_room: Callable[[Any], int | None] | None = None,
                 record_image: Callable[[Any, str, int], None] | None = None,
                 sdapi_user: Any = None) -> APIRouter:
    """Routes of the GPU residency service; ``router.service`` holds the running service,
    ``router.generate`` the job queue.

    ``open_outputs(user)`` (a directory descriptor of the user's outputs folder, opened
    beneath the NAS root within what they may write), ``quota_room(user)`` (bytes the
    user may still store, None: unlimited) and ``record_image(user, rel, nbytes)`` (book
    a saved image like an upload; ``rel`` relative to the outputs folder) come from
    FileBrowser through the service edge; modelzoo never imports it.
    """
    db.create(engine)
    service = ResidencyService.from_settings(settings)
    service.manager.metrics.sample_with(service.gauges)  # read at each /metrics scrape
    storage = Storage(open_outputs, quota_room or (lambda user: None),
                      record_image or (lambda user, rel, nbytes: None))
    gen = GenerateService(settings, service, engine, storage, version=VERSION)

    recent = RecentModels(engine)
    service.manager.on_use = recent.touch
    stop_warm = threading.Event()

    def warm_up() -> None:
        try:
            names = recent.names(settings.warm_recent)
            if names:
                done = warm(service.manager, service.placement, names, stop_warm)
                log.info("warmed the recently used models: %s", done)
        except Exception:  # a cold start is still a start
            log.exception("warming the recently used models failed")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.warm_recent:  # in the background: start-up does not wait for it
            threading.Thread(target=warm_up, name="residency-warm", daemon=True).start()
        try:
            yield
        finally:
            stop_warm.set()
            await run_in_threadpool(gen.close)
            await run_in_threadpool(service.close)

    router = APIRouter(route_class=JsonErrors, lifespan=lifespan)
    router.service = service  # type: ignore[attr-defined]
    router.recent = recent  # type: ignore[attr-defined]
    router.generate = gen  # type: ignore[attr-defined]
    router.include_router(build_generate_router(gen, current_user))
    router.include_router(build_sdapi_router(gen, sdapi_user or current_user))
    User = Depends(current_user)

    @router.get("/api/gpu")
    async def gpu(user: Any = User) -> dict[str, Any]:
        def snap() -> dict[str, Any]:
            out = service.manager.snapshot()
            queues = service.placement.queue_lengths()
            for d in out["devices"]:
                d["queue"] = queues.get(d["device"], 0)
            out["available"] = service.catalog.names()
            return out

        return await run_in_threadpool(snap)

    @router.post("/api/gpu/load")
    async def load(body: LoadBody, user: Any = User) -> dict[str, Any]:
        require_role(user, "admin", "user")
        manager = service.manager
        if body.tier == "ram":
            if body.dry_run:
                plan = await run_in_threadpool(manager.plan_load, body.model, tier=Tier.RAM)
            else:
                plan = await run_in_threadpool(manager.load, body.model, tier=Tier.RAM)
            return {"plan": plan.to_json()}
        spec = await run_in_threadpool(service.catalog.get, body.model)
        device = body.device or await run_in_threadpool(service.placement.choose, spec.name)
        if body.dry_run:
            plan = await run_in_threadpool(manager.plan_load, spec.name, device)
            return {"plan": plan.to_json()}
        fut = await run_in_threadpool(service.placement.submit, spec.name, lambda h, d: None,
                                      device=device)
        _, switch = await asyncio.wrap_future(fut)
        return {"model": spec.name, "device": switch.device, "switched_from": switch.source.value,
                "seconds": switch.seconds,
                "plan": switch.plan.to_json() if switch.plan is not None else None}

    @router.post("/api/gpu/unload")
    async def unload(body: UnloadBody, user: Any = User) -> dict[str, Any]:
        require_role(user, "admin")
        manager = service.manager
        to = Tier(body.to)
        if body.dry_run:
            plan = await run_in_threadpool(manager.plan_unload, body.model, to)
        else:
            plan = await run_in_threadpool(manager.unload, body.model, to)
        return {"plan": plan.to_json()}

    @router.post("/api/gpu/pin")
    async def pin(body: PinBody, user: Any = User) -> dict[str, Any]:
        require_role(user, "admin")
        entry = await run_in_threadpool(service.manager.pin, body.model, body.pinned)
        return entry.to_json()

    @router.get("/api/gpu/usage")
    async def usage(user: Any = User, since: dt.datetime | None = None,
                    name: str | None = None) -> dict[str, Any]:
        if getattr(user, "role", None) != "admin":
            if name not in (None, user.name):
                raise ResidencyForbidden("only admins see other users' usage")
            name = user.name
        rows = await run_in_threadpool(lambda: db.usage(engine, user=name, since=since))
        return {"users": rows}

    return router
