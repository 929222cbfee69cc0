"""Bulk download: ``GET /api/fs/zip?path=a&path=b`` streams a zip (see :mod:`..zipstream`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.responses import StreamingResponse

from ..access.auth import CurrentUser, Principal
from ..access.jail import Handle
from ..core import FileBrowser
from ..deps import FB
from ..errors import InvalidInput
from .responses import SAFE_HEADERS, content_disposition
from .walk import walk
from .zipstream import Member, members, safe_component, stream_zip

router = APIRouter(prefix="/api/fs", tags=["files"])
MAX_SELECTION = 10_000
ZIP_RESPONSES: dict[int | str, dict] = {
    200: {"description": "A zip, streamed", "content": {"application/zip": {}}}}


class ZipBody(BaseModel):
    paths: list[str] = Field(min_length=1, max_length=MAX_SELECTION)
    name: str | None = Field(None, max_length=200)


def _zip(fb: FileBrowser, p: Principal, paths: list[str], name: str | None) -> StreamingResponse:
    tops: list[Handle] = []
    chosen: set[str] = set()  # a path selected twice is zipped once
    try:
        for raw in paths:
            h = fb.jail.open(p.scope, raw)  # 404 before anything is streamed
            if h.vpath in chosen:
                h.close()
                continue
            chosen.add(h.vpath)
            tops.append(h)
    except BaseException:
        for h in tops:
            h.close()
        raise
    if not name:
        name = (os.path.basename(tops[0].vpath) or "atelier") if len(tops) == 1 else "atelier"
        name += ".zip"
    sent = 0

    def all_members() -> Iterator[Member]:
        seen: set[str] = set()
        tried: dict[str, int] = {}  # per name, the last "(n)" tried: no quadratic search
        for top in tops:
            base = safe_component(os.path.basename(top.vpath) or "root")
            arc, n = base, tried.get(base, 1)
            while arc in seen:  # two selections with one name: "x (1)"
                stem, ext = os.path.splitext(base)
                arc, n = f"{stem} ({n}){ext}", n + 1
            tried[base] = n
            seen.add(arc)
            yield from members(walk(top, p.scope), arc)

    def body() -> Iterator[bytes]:
        nonlocal sent
        try:
            for chunk in stream_zip(all_members()):
                sent += len(chunk)
                yield chunk
        finally:
            for h in tops:
                h.close()
            fb.usage.record(p.name, "zip", ",".join(h.vpath for h in tops)[:4000], sent)

    headers = {**SAFE_HEADERS, "Content-Disposition": content_disposition(name, False),
               "Cache-Control": "no-store"}
    # The first member is opened and read here, before the answer starts: a failure
    # now is still a proper error; once the first byte is out, it can only cut the stream.
    stream = body()
    first = next(stream, b"")

    def primed() -> Iterator[bytes]:
        yield first
        yield from stream

    return StreamingResponse(primed(), media_type="application/zip", headers=headers)


@router.get("/zip", response_class=StreamingResponse, responses=ZIP_RESPONSES)
def zip_get(p: CurrentUser, fb: FB,
            path: Annotated[list[str], Query(max_length=MAX_SELECTION)],
            name: str | None = Query(None, max_length=200)) -> StreamingResponse:
    """Folders and files streamed as one zip (ZIP64; images and models stored)."""
    if not path:
        raise InvalidInput("give at least one path")
    return _zip(fb, p, path, name)


@router.post("/zip", response_class=StreamingResponse, responses=ZIP_RESPONSES)
def zip_post(body: ZipBody, p: CurrentUser, fb: FB) -> StreamingResponse:
    """The same for a selection too long for a URL."""
    return _zip(fb, p, body.paths, body.name)
