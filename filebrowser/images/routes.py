"""Image routes: ``/api/fs/info``, ``/api/fs/thumb``, ``/api/search``.

Handlers are plain ``def``: metadata reads, renders (waiting on the bounded thumbnail
pool) and queries run in FastAPI's thread pool, never on the event loop.
"""

from __future__ import annotations

import os
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ..access.auth import AdminUser, CurrentUser
from ..access.jail import parent_of
from ..deps import FB
from ..errors import InvalidInput, Unavailable
from ..files import fs
from .index import BadQuery, SearchQuery, parse_time, search
from .responses import image_info, thumb_response, thumb_url
from .service import ImagesDep
from .thumbs import SIZES, version_of

router = APIRouter(tags=["images"])



@router.get("/api/fs/info")
def info(p: CurrentUser, fb: FB, path: str = Query(..., max_length=8192)) -> dict:
    """A file's details; for images the dimensions and generation parameters (A1111,
    ComfyUI, sidecar .txt), read from metadata chunks only, never the pixels."""
    vpath, real = fb.jail.resolve(p.scope, path)
    if real.is_dir():
        raise InvalidInput("this is a folder")
    entry = fs.stat_entry(real).to_json(parent_of(vpath)) | {"path": vpath}
    out = image_info(real, entry)
    if entry["kind"] == "image":
        out["thumb"] = thumb_url(vpath, version_of(os.stat(real)))
    return out


@router.get("/api/fs/thumb", responses={200: {"content": {"image/webp": {}}}})
def thumb(request: Request, p: CurrentUser, fb: FB, images: ImagesDep,
          path: str = Query(..., max_length=8192),
          size: Literal["256", "1024"] = Query("256", description=f"one of {SIZES}"),
          v: str | None = Query(None, max_length=64,
                                description="the file's version; makes the URL cacheable"),
          ) -> Response:
    """A WebP thumbnail (256 px grid or 1024 px preview), or a placeholder if the image
    cannot be read."""
    _, real = fb.jail.resolve(p.scope, path)
    return thumb_response(request, images.thumbs, real, int(size), v)


@router.get("/api/search")
def search_images(
    p: CurrentUser, fb: FB, images: ImagesDep,
    q: str | None = Query(None, max_length=1000,
                          description='words in prompt or negative; "a phrase", -exclude, '
                          'prefix*'),
    prompt: str | None = Query(None, max_length=1000, description="words in the prompt"),
    negative: str | None = Query(None, max_length=1000,
                                 description="words in the negative prompt"),
    model: str | None = Query(None, max_length=300, description="model name part or hash"),
    lora: str | None = Query(None, max_length=300, description="LoRA name part"),
    sampler: str | None = Query(None, max_length=100),
    name: str | None = Query(None, max_length=300, description="file name glob, e.g. 0001*"),
    folder: str | None = Query(None, max_length=8192, description="below this folder"),
    kind: Literal["image", "model"] | None = None,
    after: str | None = Query(None, max_length=40, description="mtime >=, epoch or ISO"),
    before: str | None = Query(None, max_length=40, description="mtime <, epoch or ISO"),
    min_size: int | None = Query(None, ge=0),
    max_size: int | None = Query(None, ge=0),
    sort: Literal["mtime", "relevance", "name", "size"] = "mtime",
    order: Literal["asc", "desc"] = "desc",
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=1000),
) -> dict:
    """Indexed images and models you may read; follow ``next`` for more."""
    if images.index is None or images.service is None:
        raise Unavailable()
    vfolder = None
    if folder:
        vfolder, _ = fb.jail.resolve(p.scope, folder)
    try:
        sq = SearchQuery(q=q, prompt=prompt, negative=negative, model=model, lora=lora,
                         sampler=sampler, name=name, folder=vfolder or None, kind=kind,
                         after=parse_time(after), before=parse_time(before),
                         min_size=min_size, max_size=max_size, sort=sort, order=order,
                         limit=limit, cursor=cursor)
        out = search(images.index, p.scope, sq)
    except BadQuery as exc:
        raise InvalidInput(str(exc)) from None
    for r in out["results"]:
        if r["kind"] == "image":
            r["thumb"] = thumb_url(r["path"], r["version"])
    out["indexing"] = images.index.status.scanning
    return out


@router.get("/api/search/status")
def index_status(p: CurrentUser, images: ImagesDep) -> dict:
    if images.index is None or images.service is None:
        return {"enabled": False}
    return {"enabled": True, "counts": images.index.counts(), **dict(images.service.iter_status())}


@router.post("/api/search/reindex", status_code=202)
def reindex(p: AdminUser, images: ImagesDep,
            reset: bool = Query(False, description="drop the index and rebuild it")) -> dict:
    """Rescan every file now (``reset``: rebuild from nothing); runs in the background."""
    if images.service is None:
        raise Unavailable()
    images.service.request("reset" if reset else "deep")
    return {"accepted": True}
