"""``/api/generate``: generation as jobs.

    POST /api/generate                 202 {id, state, position}; ?wait=true answers with
                                       the images when done (the old synchronous shape)
    GET  /api/generate                 your jobs, newest first (admins: everyone's)
    GET  /api/generate/{id}            state, position, step/total, result or error
    GET  /api/generate/{id}/events     Server-Sent Events: `job` on every change, `preview`
                                       (base64 PNG) every preview_every steps, `end`
    POST /api/generate/{id}/cancel     queued: removed; running: stops at the next step

The body takes the WebUI's field names (``prompt``, ``negative_prompt``, ``steps``,
``sampler_name``/``scheduler``, ``batch_size``, ``n_iter``, ``enable_hr``..., and
``init_images`` for img2img) plus shorthands: ``model``, ``sampler``, ``size: "WxH"``,
``vae``, ``clip_skip``, ``device``, ``preview_every``. Images are saved under the caller's
``outputs/`` and count against their quota.
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..http import JsonErrors, require_role
from .jobs import Job
from .service import GenerateService

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, min_length=1, max_length=1024)
    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    width: int = 512
    height: int = 512
    size: str | None = Field(None, description="'WxH', instead of width and height")
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    sampler: str | None = None
    sampler_name: str | None = None
    scheduler: str | None = None
    cfg_scale: float = 7.0
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int | None = None
    vae: str | None = None
    enable_hr: bool = False
    init_images: list[str] | None = None
    denoising_strength: float | None = None
    device: str | None = None
    preview_every: int | None = None


def wait_response(job: Job, status: int = 200) -> Response:
    """The finished job as the synchronous API answered before jobs existed."""
    if job.state in ("failed", "cancelled") and not job.pngs:
        err = job.error or {"error": job.state, "message": f"the job was {job.state}"}
        return JSONResponse({**err, "id": job.id, "state": job.state},
                            status_code=job.status if job.state == "failed" else 409)
    result = job.result or {}
    items = result.get("images", [])
    images = [base64.b64encode(p).decode("ascii") for p in job.pngs]
    first = items[0] if items else {}
    body = {"id": job.id, "state": job.state, "image": images[0] if images else None,
            "images": images, "infotext": first.get("infotext"), "seed": first.get("seed"),
            "seeds": result.get("seeds", []), "subseeds": result.get("subseeds", []),
            "infotexts": [i["infotext"] for i in items], "model": job.model,
            "device": result.get("device"), "path": first.get("path"),
            "paths": [i["path"] for i in items], "gpu_seconds": result.get("gpu_seconds"),
            "switch_seconds": result.get("switch_seconds"),
            "switched_from": result.get("switched_from"), "error": job.error}
    return JSONResponse(body, status_code=status)


def build_generate_router(gen: GenerateService, current_user: Any) -> APIRouter:
    router = APIRouter(route_class=JsonErrors)
    User = Depends(current_user)

    @router.post("/api/generate", status_code=202)
    async def generate(body: GenerateBody, user: Any = User,
                       wait: bool = Query(False, description="answer when the job is done")
                       ) -> Response:
        require_role(user, "admin", "user")
        data = body.model_dump()
        kind = "img2img" if data.get("init_images") else "txt2img"

        def submit() -> Job:
            req = gen.build(kind, data, user.name)
            return gen.submit(user, req, save=True, device=body.device, keep_images=wait)

        job = await run_in_threadpool(submit)
        if wait:
            await job.wait()
            try:
                return wait_response(job)
            finally:
                job.pngs = []  # answered: the bytes live on in the saved files
        snap = await run_in_threadpool(gen.jobs.snapshot, job)
        return JSONResponse({"id": snap["id"], "state": snap["state"],
                             "position": snap["position"]}, status_code=202)

    @router.get("/api/generate")
    async def jobs(user: Any = User, state: str | None = None, limit: int = 50
                   ) -> dict[str, Any]:
        rows = await run_in_threadpool(lambda: gen.jobs.list_jobs(user, state=state, limit=limit))
        return {"jobs": rows}

    @router.get("/api/generate/{jid}")
    async def job(jid: str, user: Any = User) -> dict[str, Any]:
        return await run_in_threadpool(gen.jobs.get, jid, user)

    @router.get("/api/generate/{jid}/events", response_class=StreamingResponse,
                responses={200: {"description": "Server-Sent Events: `job`, `preview`, `end`",
                                 "content": {"text/event-stream": {}}}})
    async def events(jid: str, user: Any = User) -> Response:
        live = await run_in_threadpool(gen.jobs.live, jid, user)
        if live is None:  # finished (or unknown: 404): one event with the final state
            import json

            snap = await run_in_threadpool(gen.jobs.get, jid, user)

            async def once() -> Any:
                yield f"event: job\ndata: {json.dumps(snap)}\n\n"
                yield "event: end\ndata: {}\n\n"

            return StreamingResponse(once(), media_type="text/event-stream",
                                     headers=SSE_HEADERS)
        return StreamingResponse(gen.jobs.events(live), media_type="text/event-stream",
                                 headers=SSE_HEADERS)

    @router.post("/api/generate/{jid}/cancel")
    async def cancel(jid: str, user: Any = User) -> dict[str, Any]:
        require_role(user, "admin", "user")
        return await run_in_threadpool(gen.jobs.cancel, jid, user)

    return router
