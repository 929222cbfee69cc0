"""The HTTP ingress of the Ray Serve edition: the single service's credentials, then the
request goes to the GPU replica our router picks for its model.

Auth: the ingress opens FileBrowser on the same root and database as the file service
and checks every request with FileBrowser's own ``current_user`` dependency (bearer
session and API tokens, cookies with their CSRF header, a trusted gateway's user header;
HTTP Basic too on ``/sdapi/v1``, as WebUI clients send it), so a token works on both and
a revoked one on neither. An unauthenticated request gets 401 here, before any replica
sees it. The replica is told who the caller is (through Ray, never over HTTP) and reads
their role from the database; credential headers are not forwarded.

Routes forwarded, the same as ``atelier serve`` answers them:

    POST /api/generate, GET /api/generate[/{id}], POST /api/generate/{id}/cancel
    /sdapi/v1/*  (txt2img, img2img, options, sd-models, progress, samplers, ...)
    /api/gpu*    (GET: the replica that answers; load/unload/pin: the one the model's
                 routing picks, so an unload reaches the replica holding it)

Every answer names its replica (``X-Atelier-Replica``: its rank). The model of a
request (``model``, ``override_settings.sd_model_checkpoint``, the checkpoint of
``POST /sdapi/v1/options``, else the user's chosen checkpoint) becomes the request's
multiplexed model id, which the router ranks replicas by. Job lookups answer from the
shared database on any replica; a running job's live events, progress and cancel are
on the replica running it (a later request may reach another).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.exceptions import RayError

from filebrowser import FileBrowser, current_user, current_user_or_basic

from .errors import ReplicaUnavailable, install, log

# requests whose JSON body names a model: routed by it (the GPU controls too, so that
# an unload reaches the replica holding the model)
MODEL_BODIES = ("/api/generate", "/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/options",
                "/api/gpu/load", "/api/gpu/unload", "/api/gpu/pin")
DEFAULTED = ("/api/generate", "/sdapi/v1/txt2img", "/sdapi/v1/img2img")
MAX_BODY = 64 << 20  # init images are base64 inside the JSON
# request headers not forwarded: hop-by-hop ones, and credentials (the replica takes the
# caller the ingress verified, see replica.py)
_DROP = {"content-length", "transfer-encoding", "connection", "keep-alive", "authorization",
         "cookie", "x-atelier-gateway", "x-csrf-token"}


def model_in(body: bytes) -> str | None:
    """The checkpoint a request body names, if any."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return None  # the replica answers the 422
    if not isinstance(data, dict):
        return None
    override = data.get("override_settings")
    for v in (data.get("model"), override.get("sd_model_checkpoint")
              if isinstance(override, dict) else None, data.get("sd_model_checkpoint")):
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


class Resolver:
    """Names as clients send them (a title with its hash, a file name) to catalog names:
    one model, one multiplexed id."""

    def __init__(self, fb: FileBrowser, models_dir: Any) -> None:
        from modelzoo.residency import ModelCatalog

        self.engine = fb.engine
        self.catalog = ModelCatalog(models_dir)

    def canonical(self, name: str) -> str:
        import re

        from modelzoo import ModelZooError

        bare = re.sub(r"\s*\[[0-9a-fA-F]{8,64}\]$", "", name)
        for cand in (name, bare, bare.removesuffix(".safetensors")):
            try:
                return str(self.catalog.get(cand).name)
            except (ModelZooError, ValueError, OSError):
                continue
        return name  # unknown: the replica answers the 404

    def default_for(self, user: str) -> str | None:
        from modelzoo.residency import chosen_checkpoint

        return chosen_checkpoint(self.engine, user)


async def _read_body(request: Request) -> bytes | None:
    """The body, or None past MAX_BODY (stops reading there: never buffers more)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def build_ingress_app(fb: FileBrowser, gpu: Any, resolver: Resolver) -> FastAPI:
    app = FastAPI(title="Atelier (Ray Serve)")
    app.state.fb = fb
    app.state.auth = fb.auth

    install(app)

    async def forward(request: Request) -> Response:
        from fastapi.concurrency import run_in_threadpool

        path = request.url.path
        basic = path.startswith("/sdapi/")
        user = await run_in_threadpool(current_user_or_basic if basic else current_user,
                                       request)
        body = await _read_body(request)
        if body is None:
            return JSONResponse({"error": "payload_too_large",
                                 "message": f"request bodies are limited to {MAX_BODY} bytes"},
                                status_code=413)
        model = None
        if request.method == "POST" and path in MODEL_BODIES:
            model = model_in(body)
            if model is None and path in DEFAULTED:
                model = await run_in_threadpool(resolver.default_for, user.name)
            if model is not None:
                model = await run_in_threadpool(resolver.canonical, model)
        handle = gpu.options(multiplexed_model_id=model) if model else gpu
        drop = _DROP | {fb.settings.proxy_user_header.lower()}
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in drop]
        try:
            status, out, content = await handle.forward.remote(
                (user.name, user.via), request.method, path, request.url.query, headers, body)
        except RayError as exc:  # the replica died or raised outside its routes
            log.error("GPU replica failed on %s %s: %s", request.method, path, exc)
            raise ReplicaUnavailable() from None
        return Response(content, status_code=status, headers=dict(out))

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    for prefix in ("/api/generate", "/sdapi/v1", "/api/gpu"):
        app.add_api_route(prefix, forward, methods=methods, include_in_schema=False)
        app.add_api_route(prefix + "/{rest:path}", forward, methods=methods,
                          include_in_schema=False)

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "edition": "ray-serve"}

    return app


@serve.ingress()
class Ingress:
    def __init__(self, gpu: Any, fb_settings: Any, models_dir: Any) -> None:
        self.gpu = gpu
        self.fb = FileBrowser(fb_settings)
        self.resolver = Resolver(self.fb, models_dir)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_ingress_app(self.fb, self.gpu, self.resolver)
