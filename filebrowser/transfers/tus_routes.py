"""The tus 1.0.0 endpoint at ``/api/tus/`` (protocol and state: :mod:`filebrowser.tus`).

PATCH bodies are streamed into the partial file by :mod:`atelier_io.diskwrite`: ~8 MiB
batches written (and hashed) in a worker thread while the next batch arrives, big
uploads with O_DIRECT. Memory per upload is bounded by two batches and one buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from atelier_io.diskwrite import DiskFull, receive_into

from ..access.auth import CurrentUser, Principal
from ..errors import (
    AtelierError,
    BadRequest,
    InsufficientStorage,
    PayloadTooLarge,
    PreconditionFailed,
    QuotaExceeded,
    UnsupportedMediaType,
    error_response,
)
from .tus import (
    CHECKSUMS,
    EXTENSIONS,
    TUS_VERSION,
    TusStore,
    Upload,
    _AlreadyDone,
    http_date,
    parse_checksum,
    parse_int,
)

OFFSET_TYPE = "application/offset+octet-stream"


class TusRoute(APIRoute):
    """Every answer, errors included, carries ``Tus-Resumable`` (tus core)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except AtelierError as exc:
                response = error_response(exc)
            response.headers["Tus-Resumable"] = TUS_VERSION
            return response

        return route


def store_of(app: Any) -> TusStore:
    store: TusStore | None = getattr(app.state, "tus", None)
    if store is None:
        store = app.state.tus = TusStore(app.state.fb)
    return store


async def _sweep(store: TusStore) -> None:
    while True:
        with contextlib.suppress(Exception):  # a failed sweep is retried next round
            await run_in_threadpool(store.cleanup)
        await asyncio.sleep(store.settings.tus_cleanup_seconds)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Sweep expired uploads while the service runs (also once at start)."""
    task = asyncio.create_task(_sweep(store_of(app)))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


router = APIRouter(prefix="/api/tus", tags=["uploads"], route_class=TusRoute,
                   lifespan=lifespan)


def _check_version(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise PreconditionFailed(f"this server speaks tus {TUS_VERSION}",
                                 headers={"Tus-Version": TUS_VERSION})


def _location(request: Request, uid: str) -> str:
    return f"{request.scope.get('root_path', '')}/api/tus/{uid}"


def _no_content(headers: dict[str, str]) -> Response:
    return Response(status_code=204, headers=headers)


@router.options("/", status_code=204, include_in_schema=True)
@router.options("/{uid}", status_code=204, include_in_schema=False)
def options(request: Request, p: CurrentUser) -> Response:
    """Server capabilities: version, extensions, checksum algorithms, largest size."""
    store = store_of(request.app)
    return _no_content({"Tus-Version": TUS_VERSION, "Tus-Extension": ",".join(EXTENSIONS),
                        "Tus-Max-Size": str(store.settings.tus_max_size),
                        "Tus-Checksum-Algorithm": ",".join(CHECKSUMS)})


@router.get("/")
def list_uploads(request: Request, p: CurrentUser) -> JSONResponse:
    """Your uploads that are unfinished or recently finished."""
    return JSONResponse([u.to_json() for u in store_of(request.app).list(p)])


@router.post("/", status_code=201)
async def create(request: Request, p: CurrentUser) -> Response:
    """creation (+ creation-with-upload, creation-defer-length): 201 and ``Location``.

    Headers: ``Upload-Length`` or ``Upload-Defer-Length: 1``; ``Upload-Metadata`` with
    ``filename``, ``folder``, ``conflict``.
    """
    _check_version(request)
    store = store_of(request.app)
    h = request.headers
    length = parse_int(h.get("upload-length"), "Upload-Length")
    defer = h.get("upload-defer-length")
    if defer is not None and defer != "1":
        raise BadRequest("Upload-Defer-Length must be 1")
    if (length is None) == (defer is None):
        raise BadRequest("send exactly one of Upload-Length and Upload-Defer-Length")
    up = await run_in_threadpool(store.create, p, length, h.get("upload-metadata"))
    location = _location(request, up.id)
    headers = {"Location": location}
    has_body = h.get("content-type") == OFFSET_TYPE and (
        (parse_int(h.get("content-length"), "Content-Length") or 0) > 0
        or "chunked" in h.get("transfer-encoding", ""))
    if has_body and not up.done:
        try:
            up = await _patch(request, store, p, up.id, 0)
        except AtelierError as exc:
            exc.headers.update(headers)
            raise
    headers |= store.headers(up)
    return Response(status_code=201, headers=headers)


@router.head("/{uid}", include_in_schema=False)  # HEAD answers carry no body
async def head(uid: str, request: Request, p: CurrentUser) -> Response:
    """The stored offset (and length, metadata, expiry) to resume from."""
    _check_version(request)
    store = store_of(request.app)
    up = await run_in_threadpool(store.status, p, uid)
    return Response(status_code=200, headers=store.headers(up))


@router.patch("/{uid}", status_code=204)
async def patch(uid: str, request: Request, p: CurrentUser) -> Response:
    """Append the body at ``Upload-Offset`` (``application/offset+octet-stream``)."""
    _check_version(request)
    return await _patch_answer(request, p, uid)


@router.delete("/{uid}", status_code=204)
async def terminate(uid: str, request: Request, p: CurrentUser) -> Response:
    """termination: forget the upload and remove its partial bytes."""
    _check_version(request)
    await run_in_threadpool(store_of(request.app).terminate, p, uid)
    return _no_content({})


@router.post("/{uid}", status_code=204)
async def method_override(uid: str, request: Request, p: CurrentUser) -> Response:
    """``X-HTTP-Method-Override: PATCH|DELETE|HEAD`` for clients behind strict proxies."""
    _check_version(request)
    method = request.headers.get("x-http-method-override", "").upper()
    if method == "PATCH":
        return await _patch_answer(request, p, uid)
    if method == "DELETE":
        await run_in_threadpool(store_of(request.app).terminate, p, uid)
        return _no_content({})
    if method == "HEAD":
        store = store_of(request.app)
        up = await run_in_threadpool(store.status, p, uid)
        return Response(status_code=200, headers=store.headers(up))
    raise BadRequest("POST to an upload needs X-HTTP-Method-Override")


async def _patch_answer(request: Request, p: Principal, uid: str) -> Response:
    if request.headers.get("content-type") != OFFSET_TYPE:
        raise UnsupportedMediaType(f"PATCH needs Content-Type: {OFFSET_TYPE}")
    offset = parse_int(request.headers.get("upload-offset"), "Upload-Offset")
    if offset is None:
        raise BadRequest("Upload-Offset is required")
    store = store_of(request.app)
    up = await _patch(request, store, p, uid, offset)
    headers = {"Upload-Offset": str(up.offset)}
    if up.done:
        headers["X-Atelier-Path"] = store.headers(up)["X-Atelier-Path"]
    else:
        headers["Upload-Expires"] = http_date(up.expires)
    return _no_content(headers)


async def _patch(request: Request, store: TusStore, p: Principal, uid: str,
                 offset: int) -> Upload:
    h = request.headers
    new_length = parse_int(h.get("upload-length"), "Upload-Length")
    checksum = parse_checksum(h.get("upload-checksum"))
    content_length = parse_int(h.get("content-length"), "Content-Length")
    try:
        patch = await run_in_threadpool(store.begin_patch, p, uid, offset, new_length,
                                        checksum, content_length)
    except _AlreadyDone as done:
        return done.up
    try:
        complete = await receive_into(request, patch.write)
        if not complete:
            await run_in_threadpool(patch.abort)
            return patch.up
        return await run_in_threadpool(patch.finish, new_length)
    except (InsufficientStorage, DiskFull) as exc:
        if isinstance(exc, DiskFull):
            exc = InsufficientStorage()
        if isinstance(exc, QuotaExceeded):
            await run_in_threadpool(patch.rollback)
        else:  # the disk is full: free what this upload holds, say so, forget it
            await run_in_threadpool(store.fail_full, patch.up)
            exc.message = "the disk is full; the upload was cancelled and its data removed"
        raise exc from None
    except PayloadTooLarge:
        await run_in_threadpool(patch.rollback)
        raise
    finally:
        patch.close()
