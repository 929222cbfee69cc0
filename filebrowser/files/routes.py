"""The file API under ``/api/fs``: list, stat, mkdir, move, copy, trash, download, upload.

Every path is opened by :meth:`Jail.open` first and used through its handle, never looked
up again by name. Handlers are plain ``def`` so FastAPI runs their disk work in its
thread pool, never on the event loop.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from ..access.auth import CurrentUser, Principal
from ..access.jail import Handle, check_new_name, clean, is_within, join, parent_of
from ..core import FileBrowser
from ..deps import FB
from ..errors import BadPath, Conflict, Forbidden, InvalidInput, NotFound, ReadOnly
from . import fs, walk
from .responses import FILE_RESPONSES, file_response, range_bytes

router = APIRouter(prefix="/api/fs", tags=["files"])

Conflicts = Literal["fail", "overwrite", "rename"]
class PathBody(BaseModel):
    path: str = Field(max_length=8192)


class TransferBody(BaseModel):
    src: str = Field(max_length=8192)
    dst: str = Field(max_length=8192, description="Full new path (folder + name).")
    conflict: Conflicts = "fail"


class RestoreBody(BaseModel):
    conflict: Conflicts = "fail"


def _target(fb: FileBrowser, p: Principal, dst: str) -> Handle:
    """A path to create or replace: the name itself (a link is not followed) in an
    existing folder the caller may write. Its ``name`` is spelled as on disk when an
    entry differing only by Unicode normalisation is there (no look-alike twin)."""
    h = fb.jail.open(p.scope, dst, write=True, must_exist=False, follow=False)
    try:
        if not h.has_folder:
            raise NotFound("the target folder does not exist")
        if not h.vpath or not (p.scope.can_write(parent_of(h.vpath))
                               and p.scope.can_write(parent_of(h.real))):
            raise ReadOnly()
    except BaseException:
        h.close()
        raise
    return h


def _json_entry(vpath: str, real: Path) -> dict:
    return fs.stat_entry(real).to_json(parent_of(vpath)) | {"path": vpath}


def _json_handle(h: Handle) -> dict:
    return fs.entry_of(h).to_json(parent_of(h.vpath)) | {"path": h.vpath}


@router.get("/list")
def list_folder(
    p: CurrentUser, fb: FB,
    path: str = Query("", max_length=8192),
    sort: Literal["name", "mtime", "size"] = "name",
    order: Literal["asc", "desc"] = "asc",
    kind: Annotated[list[Literal["dir", "image", "model", "other"]] | None, Query()] = None,
    limit: int = Query(200, ge=1),
    cursor: str | None = Query(None, max_length=4096),
) -> dict:
    """One page of a folder, folders first; follow ``next`` for the rest."""
    with fb.jail.open(p.scope, path) as folder:
        def link_ok(name: str) -> bool:
            try:
                fb.jail.open(p.scope, join(folder.vpath, name)).close()
            except (NotFound, BadPath):
                return False
            return True

        entries, nxt, total = fs.list_dir(
            folder, p.scope, sort=sort, reverse=order == "desc",
            kinds=frozenset(kind) if kind else None,
            limit=min(limit, fb.settings.list_page_max), cursor=cursor, link_ok=link_ok)
        vpath = folder.vpath
    return {"path": vpath, "entries": [e.to_json(vpath) for e in entries], "next": nxt,
            "total": total, "writable": p.scope.can_write(vpath)}


@router.get("/stat")
def stat(p: CurrentUser, fb: FB, path: str = Query(..., max_length=8192)) -> dict:
    with fb.jail.open(p.scope, path) as h:
        return _json_handle(h) | {"writable": p.scope.can_write(h.vpath)}


@router.post("/mkdir", status_code=201)
def mkdir(body: PathBody, p: CurrentUser, fb: FB) -> dict:
    """Create a folder and any missing parents (``mkdir -p``)."""
    vpath = clean(body.path)
    if not vpath:
        raise Conflict("the root exists")
    if not p.scope.can_see(vpath):
        raise NotFound()
    fb.jail.makedirs(p.scope, vpath)
    with fb.jail.open(p.scope, vpath) as h:
        fb.usage.record(p.name, "mkdir", h.vpath)
        return _json_handle(h)


def _src(fb: FileBrowser, p: Principal, path: str) -> Handle:
    """The entry to move or remove (a symlink is the link itself, never its target)."""
    h = fb.jail.open(p.scope, path, write=True, follow=False)
    if not h.vpath or h.vpath in p.scope.read or h.vpath in p.scope.write or \
            h.real in p.scope.read or h.real in p.scope.write:
        h.close()
        raise Forbidden("this folder cannot be moved or removed")
    return h


@router.post("/move")
def move(body: TransferBody, p: CurrentUser, fb: FB) -> dict:
    """Rename or move a file or folder within what you may write."""
    with _src(fb, p, body.src) as src, _target(fb, p, body.dst) as dst:
        if src.is_dir and is_within(parent_of(dst.real), src.real):
            raise InvalidInput("cannot move a folder into itself")
        final = fs.move(src.entry, dst.folder, dst.name, body.conflict)
        dst_v = join(parent_of(dst.vpath), final)
        fb.usage.move_owner(src.vpath, dst_v)
        fb.usage.record(p.name, "move", dst_v)
        return _json_entry(dst_v, dst.folder / final)


@router.post("/copy", status_code=201)
def copy(body: TransferBody, p: CurrentUser, fb: FB) -> dict:
    """Server-side copy of what you may read, into what you may write; counts against
    your quota. The whole tree's size is checked against the quota and the free space
    before anything is written."""
    with fb.jail.open(p.scope, body.src) as src, _target(fb, p, body.dst) as dst:
        if src.is_dir and (is_within(parent_of(dst.real), src.real)
                           or is_within(parent_of(dst.vpath), src.vpath)):
            raise InvalidInput("cannot copy a folder into itself")
        size = walk.size(src, p.scope)
        fb.check_quota(p, size)
        fs.check_free_space(dst.folder, size)
        final = fs.copy(src, p.scope, dst.folder, dst.name, body.conflict)
        dst_v = join(parent_of(dst.vpath), final)
        fb.usage.set_owner(p.name, dst_v)
        fb.usage.record(p.name, "copy", dst_v, size)
        return _json_entry(dst_v, dst.folder / final)


@router.post("/delete")
def delete(body: PathBody, p: CurrentUser, fb: FB) -> dict:
    """Move a file or folder to your trash (restore or purge it later)."""
    with _src(fb, p, body.path) as h:
        item = fb.trash.put(p.name, h.vpath, h.entry)
    fb.usage.record(p.name, "delete", h.vpath, item["size"])
    return item


@router.get("/trash")
def trash_list(p: CurrentUser, fb: FB, all_users: bool = False) -> list[dict]:
    return fb.trash.list(None if (all_users and p.is_admin) else p.name)


@router.post("/trash/{item_id}/restore")
def trash_restore(item_id: str, body: RestoreBody, p: CurrentUser, fb: FB) -> dict:
    item = fb.trash.get(item_id, None if p.is_admin else p.name)
    folder_v = parent_of(item["orig_path"])
    try:
        folder = fb.jail.open(p.scope, folder_v, write=True)
    except NotFound:
        raise NotFound("the original folder is gone; recreate it to restore") from None
    with folder:
        if not folder.is_dir:
            raise NotFound("the original folder is gone; recreate it to restore")
        final = fb.trash.restore(item, folder.path, body.conflict)
        fb.usage.record(p.name, "restore", join(folder.vpath, final), item["size"])
        return _json_entry(join(folder.vpath, final), folder.path / final)


@router.delete("/trash/{item_id}")
def trash_purge(item_id: str, p: CurrentUser, fb: FB) -> dict:
    item = fb.trash.get(item_id, None if p.is_admin else p.name)
    fb.trash.purge(item)
    fb.usage.record(p.name, "purge", item["orig_path"], item["size"])
    return {"ok": True}


@router.delete("/trash")
def trash_empty(p: CurrentUser, fb: FB) -> dict:
    items = fb.trash.list(p.name)
    for item in items:
        fb.trash.purge(item)
        fb.usage.record(p.name, "purge", item["orig_path"], item["size"])
    return {"purged": len(items)}


@router.get("/download", response_class=Response, responses=FILE_RESPONSES)
def download(request: Request, p: CurrentUser, fb: FB,
             path: str = Query(..., max_length=8192), inline: bool = False) -> Response:
    """The raw file; resumable with Range. ``inline=true`` shows safe image types in place."""
    with fb.jail.open(p.scope, path) as h:
        if h.is_dir:
            raise InvalidInput("this is a folder")
        nbytes = range_bytes(request.headers.get("range"), h.stat.st_size if h.stat else 0)
        task = BackgroundTask(fb.usage.record, p.name, "download", h.vpath, nbytes)
        return file_response(request, h, inline=inline, on_sent=task)


@router.post("/upload", status_code=201)
def upload(
    p: CurrentUser, fb: FB,
    files: Annotated[list[UploadFile], File(description="One or more files")],
    path: str = Query("", max_length=8192, description="Target folder"),
    conflict: Conflicts = "fail",
) -> dict:
    """Small uploads (multipart). Each file lands atomically or not at all."""
    with fb.jail.open(p.scope, path, write=True) as folder_h:
        return _upload(fb, p, folder_h, files, conflict)


def _upload(fb: FileBrowser, p: Principal, folder_h: Handle, files: list[UploadFile],
            conflict: Conflicts) -> dict:
    if not folder_h.is_dir:
        raise InvalidInput("the target is not a folder")
    folder_v, folder = folder_h.vpath, folder_h.path
    sizes = [f.size or 0 for f in files]
    if sum(sizes) > fb.settings.upload_max_bytes:
        raise InvalidInput(f"multipart uploads are limited to {fb.settings.upload_max_bytes} "
                           "bytes; use the resumable (tus) upload for large files")
    fb.check_quota(p, sum(sizes))
    fs.check_free_space(folder, sum(sizes))
    saved = []
    for f in files:
        # the name as it will be on disk (NFC, or an existing look-alike's spelling)
        with fb.jail.open(p.scope, join(folder_v, check_new_name(os.path.basename(
                f.filename or ""))), write=True, must_exist=False, follow=False) as target:
            if target.real != join(folder_h.real, target.name):
                raise NotFound()
            name = target.name

        def chunks(uf: UploadFile = f) -> object:
            while True:
                b = uf.file.read(1024 * 1024)
                if not b:
                    return
                yield b

        final, size = fs.write_stream(folder, name, chunks(), conflict,  # type: ignore[arg-type]
                                      max_bytes=fb.settings.upload_max_bytes)
        vfinal = join(folder_v, final)
        fb.usage.set_owner(p.name, vfinal)
        fb.usage.record(p.name, "upload", vfinal, size)
        saved.append(_json_entry(vfinal, folder / final))
    return {"files": saved}
