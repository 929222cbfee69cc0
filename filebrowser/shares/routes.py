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
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from ..access.auth import CurrentUser
from ..access.jail import Handle
from ..db import BIGINT_MAX
from ..deps import FB
from ..errors import InvalidInput
from ..files import fs
from ..files.responses import FILE_RESPONSES, file_response, range_bytes
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
def revoke_share(share_id: Annotated[int, PathParam(ge=1, le=BIGINT_MAX)], p: CurrentUser,
                 fb: FB) -> dict:
    fb.shares.revoke(p, share_id)
    return {"ok": True}


# -- public ------------------------------------------------------------------------


def _cookie(share_id: int) -> str:
    return f"atelier_share_{share_id}"


def _addr(request: Request) -> str:
    addr: str = request.app.state.auth.client_addr(request)  # the forwarded client behind
    return addr  # a trusted proxy, else the peer (access/peers.py)


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


def _entry(h: Handle, rel: str) -> dict:
    out = fs.entry_of(h).to_json("")
    out["name"] = h.name if not rel else rel.rpartition("/")[2]
    out["path"] = rel
    return out


def _thumb(token: str, rel: str, h: Handle, name: str | None = None) -> str | None:
    """The thumbnail URL of the opened file, or of ``name`` in the opened folder."""
    try:
        s = os.stat(name, dir_fd=h.fd) if name is not None else h.stat
    except OSError:
        return None
    if s is None:
        return None
    return thumb_url(rel, version_of(s), base=f"/s/{token}/thumb")


@public.get("/{token}")
def share_root(token: str, share: Share, fb: FB) -> dict:
    """What the link shows."""
    h, _ = fb.shares.open_in(share, "")
    with h:
        out = _entry(h, "") | {"name": share.name, "expires": share.expires,
                               "needs_password": share.locked}
        if out["kind"] == "image":
            out["thumb"] = _thumb(token, "", h)
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
    h, rel = fb.shares.open_in(share, path)
    with h:
        if not h.is_dir:
            raise InvalidInput("not a folder")
        store = fb.shares
        entries, nxt, total = fs.list_dir(h, share.scope, sort=sort,
                                          reverse=order == "desc", limit=limit, cursor=cursor,
                                          link_ok=lambda name: store.link_ok(share, rel, name))
        out = []
        for e in entries:
            item = e.to_json(rel)
            if item["kind"] == "image":
                item["thumb"] = _thumb(token, str(item["path"]), h, e.name)
            out.append(item)
    return {"path": rel, "entries": out, "next": nxt, "total": total}


@public.get("/{token}/file", response_class=Response, responses=FILE_RESPONSES)
def share_file(request: Request, share: Share, fb: FB,
               path: str = Query("", max_length=8192), inline: bool = False) -> Response:
    """Download a shared file (Range supported); counted as the owner's download."""
    h, _ = fb.shares.open_in(share, path)
    with h:
        if h.is_dir:
            raise InvalidInput("this is a folder")
        vpath = h.vpath
        nbytes = range_bytes(request.headers.get("range"), h.stat.st_size if h.stat else 0)

        def sent() -> None:
            fb.usage.record(share.owner.name, "share_download", vpath, nbytes)
            fb.shares.touch(share, download=True)

        return file_response(request, h, inline=inline, on_sent=BackgroundTask(sent))


@public.get("/{token}/thumb", response_class=Response,
            responses={200: {"content": {"image/webp": {}}}})
def share_thumb(request: Request, share: Share, fb: FB, images: ImagesDep,
                path: str = Query("", max_length=8192),
                size: Literal["256", "1024"] = "256",
                v: str | None = Query(None, max_length=64)) -> Response:
    h, _ = fb.shares.open_in(share, path)
    with h:
        return thumb_response(request, images.thumbs, h, int(size), v, fb.root)


@public.get("/{token}/info")
def share_info(share: Share, fb: FB,
               path: str = Query("", max_length=8192)) -> dict:
    h, rel = fb.shares.open_in(share, path)
    with h:
        if not h.is_file:
            raise InvalidInput("this is a folder" if h.is_dir else "not a regular file")
        return image_info(h, _entry(h, rel))
