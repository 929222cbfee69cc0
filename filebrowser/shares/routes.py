"""Share routes: management under ``/api/shares``, public access under ``/s/{token}``.

The public routes are the only unauthenticated ones besides login and health: the
token (and the password, when set) is the credential. They answer with paths
relative to the share root and never reveal the owner's folders.

    GET  /s/{token}                  what is shared (name, folder or file, size)
    POST /s/{token}/unlock           {password} -> {key}; also sets a cookie
    GET  /s/{token}/list?path=       a folder share's listing, paginated
    GET  /s/{token}/file?path=       download (Range, ETag), or inline=true for images
    GET  /s/{token}/thumb?path=      thumbnail
    GET  /s/{token}/info?path=       image details and generation parameters

A locked share takes the key as ``X-Share-Key`` header, ``key`` query parameter or the
``atelier_share_<id>`` cookie, or the password itself as ``X-Share-Password``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from ..access.auth import CurrentUser
from ..deps import FB
from ..errors import InvalidInput
from ..files import fs
from ..files.responses import file_response, range_bytes
from ..images.responses import image_info, thumb_response, thumb_url
from ..images.service import ImagesDep
from ..images.thumbs import version_of
from .store import ShareAccess, ShareStore

router = APIRouter(prefix="/api/shares", tags=["shares"])
public = APIRouter(prefix="/s", tags=["public-shares"])

KEY_HEADER = "X-Share-Key"
PASSWORD_HEADER = "X-Share-Password"


class ShareBody(BaseModel):
    path: str = Field(max_length=8192)
    password: str | None = Field(None, max_length=1024)
    expires_in: float | None = Field(None, gt=0, description="seconds from now")
    expires_at: float | None = Field(None, description="epoch seconds")


class UnlockBody(BaseModel):
    password: str = Field(max_length=1024)


@router.post("", status_code=201)
def create_share(body: ShareBody, p: CurrentUser, fb: FB) -> dict:
    """A read-only link to a file or folder you may read. The token is shown only now."""
    return fb.shares.create(p, body.path, password=body.password,
                                expires_in=body.expires_in, expires_at=body.expires_at)


@router.get("")
def list_shares(p: CurrentUser, fb: FB, all_users: bool = False) -> list[dict]:
    """Your shares (admins: everyone's with ``all_users=true``)."""
    return fb.shares.list(p, all_users=all_users)


@router.delete("/{share_id}")
def revoke_share(share_id: int, p: CurrentUser, fb: FB) -> dict:
    fb.shares.revoke(p, share_id)
    return {"ok": True}


# -- public ------------------------------------------------------------------------


def _cookie(share_id: int) -> str:
    return f"atelier_share_{share_id}"


def _addr(request: Request) -> str:
    return request.client.host if request.client else "-"


def _open(request: Request, token: str, store: ShareStore) -> tuple[ShareAccess, Any]:
    access, row = store.open(token)
    key = (request.headers.get(KEY_HEADER) or request.query_params.get("key")
           or request.cookies.get(_cookie(access.id)))
    store.authorize(access, row, key=key, password=request.headers.get(PASSWORD_HEADER),
                    addr=_addr(request))
    return access, row


def get_share(request: Request, token: str, fb: FB) -> ShareAccess:
    return _open(request, token, fb.shares)[0]


Share = Annotated[ShareAccess, Depends(get_share)]


def _entry(real: Path, rel: str) -> dict:
    e = fs.stat_entry(real)
    out = e.to_json("")
    out["path"] = rel
    return out


def _thumb(token: str, rel: str, real: Path) -> str | None:
    try:
        version = version_of(os.stat(real))
    except OSError:
        return None
    return thumb_url(rel, version, base=f"/s/{token}/thumb")


@public.get("/{token}")
def share_root(token: str, share: Share) -> dict:
    """What the link shows."""
    out = _entry(share.real, "") | {"name": share.name, "expires": share.expires,
                                    "needs_password": share.locked}
    if out["kind"] == "image":
        out["thumb"] = _thumb(token, "", share.real)
    return out


@public.post("/{token}/unlock")
def share_unlock(request: Request, token: str, body: UnlockBody,
                 fb: FB) -> Response:
    access, row = fb.shares.open(token)
    out = fb.shares.unlock(access, row, body.password, _addr(request))
    resp = JSONResponse(out)
    if out["key"]:
        resp.set_cookie(_cookie(access.id), out["key"], max_age=int(
            max(1, out["expires"] - time.time())), path=f"/s/{token}",
            httponly=True, samesite="lax", secure=fb.settings.cookie_secure)
    return resp


@public.get("/{token}/list")
def share_list(token: str, share: Share, fb: FB,
               path: str = Query("", max_length=8192),
               sort: Literal["name", "mtime", "size"] = "name",
               order: Literal["asc", "desc"] = "asc",
               limit: int = Query(200, ge=1, le=1000),
               cursor: str | None = Query(None, max_length=4096)) -> dict:
    """One page of a folder inside a folder share."""
    if not share.is_dir:
        raise InvalidInput("this share is a single file")
    _, real, rel = fb.shares.resolve(share, path)
    if not real.is_dir():
        raise InvalidInput("not a folder")
    store = fb.shares
    entries, nxt, total = fs.list_dir(real, sort=sort, reverse=order == "desc", limit=limit,
                                      cursor=cursor,
                                      link_ok=lambda path: store.inside(share, path))
    out = []
    for e in entries:
        item = e.to_json(rel)
        if item["kind"] == "image":
            item["thumb"] = _thumb(token, str(item["path"]), real / e.name)
        out.append(item)
    return {"path": rel, "entries": out, "next": nxt, "total": total}


@public.get("/{token}/file")
def share_file(request: Request, share: Share, fb: FB,
               path: str = Query("", max_length=8192), inline: bool = False) -> Response:
    """Download a shared file (Range supported); counted as the owner's download."""
    vpath, real, _ = fb.shares.resolve(share, path)
    if real.is_dir():
        raise InvalidInput("this is a folder")
    nbytes = range_bytes(request.headers.get("range"), os.stat(real).st_size)

    def sent() -> None:
        fb.usage.record(share.owner.name, "share_download", vpath, nbytes)
        fb.shares.touch(share, download=True)

    return file_response(request, real, inline=inline, on_sent=BackgroundTask(sent))


@public.get("/{token}/thumb", responses={200: {"content": {"image/webp": {}}}})
def share_thumb(request: Request, share: Share, fb: FB, images: ImagesDep,
                path: str = Query("", max_length=8192),
                size: Literal["256", "1024"] = "256",
                v: str | None = Query(None, max_length=64)) -> Response:
    _, real, _ = fb.shares.resolve(share, path)
    return thumb_response(request, images.thumbs, real, int(size), v)


@public.get("/{token}/info")
def share_info(share: Share, fb: FB,
               path: str = Query("", max_length=8192)) -> dict:
    _, real, rel = fb.shares.resolve(share, path)
    if real.is_dir():
        raise InvalidInput("this is a folder")
    return image_info(real, _entry(real, rel))
