"""Bulk download: ``GET /api/fs/zip?path=a&path=b`` streams a zip (see :mod:`..zipstream`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.responses import StreamingResponse

from ..access.auth import CurrentUser, Principal
from ..core import FileBrowser
from ..deps import FB
from ..errors import InvalidInput
from .responses import SAFE_HEADERS, content_disposition
from .zipstream import Member, safe_component, stream_zip, walk

router = APIRouter(prefix="/api/fs", tags=["files"])
MAX_SELECTION = 10_000


class ZipBody(BaseModel):
    paths: list[str] = Field(min_length=1, max_length=MAX_SELECTION)
    name: str | None = Field(None, max_length=200)


def _zip(fb: FileBrowser, p: Principal, paths: list[str], name: str | None) -> StreamingResponse:
    tops = []
    for raw in paths:
        vpath, real = fb.jail.resolve(p.scope, raw)  # 404 before anything is streamed
        tops.append((vpath, real))
    if not name:
        name = (os.path.basename(tops[0][0]) or "atelier") if len(tops) == 1 else "atelier"
        name += ".zip"
    sent = 0

    def members() -> Iterator[Member]:
        seen: set[str] = set()
        for vpath, real in tops:
            base = safe_component(os.path.basename(vpath) or "root")
            arc, n = base, 1
            while arc in seen:  # two selections with one name: "x (1)"
                stem, ext = os.path.splitext(base)
                arc, n = f"{stem} ({n}){ext}", n + 1
            seen.add(arc)
            yield from walk(real, arc)

    def body() -> Iterator[bytes]:
        nonlocal sent
        try:
            for chunk in stream_zip(members()):
                sent += len(chunk)
                yield chunk
        finally:
            fb.usage.record(p.name, "zip", ",".join(v for v, _ in tops)[:4000], sent)

    headers = {**SAFE_HEADERS, "Content-Disposition": content_disposition(name, False),
               "Cache-Control": "no-store"}
    return StreamingResponse(body(), media_type="application/zip", headers=headers)


@router.get("/zip")
def zip_get(p: CurrentUser, fb: FB,
            path: Annotated[list[str], Query(max_length=MAX_SELECTION)],
            name: str | None = Query(None, max_length=200)) -> StreamingResponse:
    """Folders and files streamed as one zip (ZIP64; images and models stored)."""
    if not path:
        raise InvalidInput("give at least one path")
    return _zip(fb, p, path, name)


@router.post("/zip")
def zip_post(body: ZipBody, p: CurrentUser, fb: FB) -> StreamingResponse:
    """The same for a selection too long for a URL."""
    return _zip(fb, p, body.paths, body.name)
