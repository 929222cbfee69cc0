"""The API edition's routes: generate through the residency manager, inspect and steer it.

    POST /api/generate        txt2img on the diffusers backend; image + A1111 infotext,
                              saved under the caller's outputs, recorded for usage
    GET  /api/gpu             devices, free/total memory, models per tier, queues
    POST /api/gpu/load        {model, device?, tier: gpu|ram, dry_run?}  (users, admins)
    POST /api/gpu/unload      {model, to: ram|disk, dry_run?}            (admins)
    POST /api/gpu/pin         {model, pinned}                            (admins)
    GET  /api/gpu/usage       GPU and switch seconds and bytes per user  (admins: everyone)
    GET  /metrics             Prometheus text                            (any signed-in user)

The router brings its own error rendering (``{"error", "message"}`` with the status on
the error class), because an APIRouter cannot install app-wide handlers. Loading and
inference run on the per-GPU worker threads and everything else that touches disk or
the database on the thread pool: the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import io
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from ..errors import InvalidGenerateRequest, ModelZooError, ResidencyForbidden
from . import db
from .backends.diffusers import SAMPLERS, Txt2Img, infotext, short_hash
from .devices import Device
from .plan import Tier
from .service import ResidencyService
from .settings import ResidencySettings

VERSION = "atelier"


class _JsonErrors(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ModelZooError as exc:
                body = exc.to_json() if hasattr(exc, "to_json") else {
                    "error": exc.code, "message": str(exc)}
                return JSONResponse(body, status_code=exc.status)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
                return JSONResponse({"error": "invalid_request",
                                     "message": f"{where}: {first.get('msg', 'invalid')}",
                                     "details": jsonable(exc.errors())}, status_code=422)

        return route


def jsonable(errors: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(errors, custom_encoder={Exception: str})


class GenerateBody(BaseModel):
    model: str = Field(min_length=1, max_length=1024)
    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    width: int = 512
    height: int = 512
    size: str | None = Field(None, description="'WxH', instead of width and height")
    seed: int = -1
    sampler: str | None = None
    cfg_scale: float = Field(7.0, ge=0, le=50)
    device: str | None = None


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


def _role(user: Any, *allowed: str) -> None:
    role = getattr(user, "role", None)
    if role not in allowed:
        raise ResidencyForbidden(f"role {role!r} may not do this (needs {' or '.join(allowed)})",
                                 role=role)


def _request(body: GenerateBody, s: ResidencySettings) -> Txt2Img:
    width, height = body.width, body.height
    if body.size is not None:
        try:
            w, _, h = body.size.lower().partition("x")
            width, height = int(w), int(h)
        except ValueError:
            raise InvalidGenerateRequest(f"size must look like 512x768, not {body.size!r}",
                                         field="size") from None
    for name, v in (("width", width), ("height", height)):
        if not s.min_size <= v <= s.max_size:
            raise InvalidGenerateRequest(
                f"{name} {v} is out of range {s.min_size}..{s.max_size}", field=name)
        if v % 8:
            raise InvalidGenerateRequest(f"{name} {v} must be a multiple of 8", field=name)
    if not 1 <= body.steps <= s.max_steps:
        raise InvalidGenerateRequest(f"steps {body.steps} is out of range 1..{s.max_steps}",
                                     field="steps")
    if len(body.prompt) > s.max_prompt_chars or len(body.negative_prompt) > s.max_prompt_chars:
        raise InvalidGenerateRequest(f"prompts are limited to {s.max_prompt_chars} characters",
                                     field="prompt")
    if not -1 <= body.seed < 2**32:
        raise InvalidGenerateRequest("seed must be -1 (random) or 0..4294967295", field="seed")
    sampler = body.sampler or s.default_sampler
    if sampler not in SAMPLERS:
        raise InvalidGenerateRequest(
            f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}", field="sampler")
    return Txt2Img(body.prompt, body.negative_prompt, body.steps, width, height, body.seed,
                   sampler, body.cfg_scale)


def _save_png(folder: Path, image: Any, text: str, seed: int) -> tuple[Path, int]:
    """Write ``NNNNN-seed.png`` (A1111's naming) atomically, with the infotext chunk."""
    from PIL.PngImagePlugin import PngInfo

    folder.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text("parameters", text)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    data = buf.getvalue()
    existing = [int(p.name[:5]) for p in folder.glob("[0-9][0-9][0-9][0-9][0-9]-*.png")]
    n = max(existing, default=-1) + 1
    while True:
        final = folder / f"{n:05d}-{seed}.png"
        try:  # claim the name; a concurrent save takes the next number
            fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            n += 1
            continue
        os.close(fd)
        break
    tmp = folder / f".{final.name}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        raise
    return final, len(data)


def build_router(settings: ResidencySettings, *, engine: sa.Engine, current_user: Any,
                 outputs_dir: Callable[[Any], Path]) -> APIRouter:
    """Routes of the GPU residency service; ``router.service`` holds the running service."""
    db.create(engine)
    service = ResidencyService.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(service.close)

    router = APIRouter(route_class=_JsonErrors, lifespan=lifespan)
    router.service = service  # type: ignore[attr-defined]
    User = Depends(current_user)

    @router.post("/api/generate")
    async def generate(body: GenerateBody, user: Any = User) -> dict[str, Any]:
        _role(user, "admin", "user")
        req = _request(body, settings)
        spec = await run_in_threadpool(service.catalog.get, body.model)
        backend = service.backend

        def job(pipe: Any, device: Device) -> tuple[Any, int, float]:
            t0 = time.perf_counter()
            image, seed = backend.generate(pipe, device, req)
            return image, seed, time.perf_counter() - t0

        fut = await run_in_threadpool(service.placement.submit, spec.name, job,
                                      device=body.device, width=req.width, height=req.height)
        (image, seed, gpu_seconds), switch = await asyncio.wrap_future(fut)

        def save() -> dict[str, Any]:
            text = infotext(req, seed, spec.name, short_hash(spec.path), VERSION)
            root = Path(outputs_dir(user))
            folder = root / "txt2img-images" / dt.date.today().isoformat()
            path, nbytes = _save_png(folder, image, text, seed)
            rel = path.relative_to(root).as_posix()
            db.record(engine, user=user.name, model=spec.name, device=switch.device,
                      gpu_seconds=gpu_seconds, switch_seconds=switch.seconds,
                      switched_from=switch.source.value, width=req.width, height=req.height,
                      steps=req.steps, seed=seed, image_path=rel, image_bytes=nbytes)
            png = path.read_bytes()
            return {"image": base64.b64encode(png).decode("ascii"), "infotext": text,
                    "seed": seed, "model": spec.name, "device": switch.device, "path": rel,
                    "gpu_seconds": gpu_seconds, "switch_seconds": switch.seconds,
                    "switched_from": switch.source.value}

        return await run_in_threadpool(save)

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
        _role(user, "admin", "user")
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
        _role(user, "admin")
        manager = service.manager
        to = Tier(body.to)
        if body.dry_run:
            plan = await run_in_threadpool(manager.plan_unload, body.model, to)
        else:
            plan = await run_in_threadpool(manager.unload, body.model, to)
        return {"plan": plan.to_json()}

    @router.post("/api/gpu/pin")
    async def pin(body: PinBody, user: Any = User) -> dict[str, Any]:
        _role(user, "admin")
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

    @router.get("/metrics", response_class=PlainTextResponse)
    async def metrics(user: Any = User) -> Response:
        text = await run_in_threadpool(
            lambda: service.manager.metrics.render(service.gauges()))
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    return router
