"""The file API under ``/api/fs``: list, stat, mkdir, move, copy, trash, download, upload.

Every path goes through :meth:`Jail.resolve` first. Handlers are plain ``def`` so
FastAPI runs their disk work in its thread pool, never on the event loop.
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
from ..access.jail import check_name, join, parent_of
from ..core import FileBrowser
from ..deps import FB
from ..errors import Conflict, Forbidden, InvalidInput, NotFound, ReadOnly
from . import fs
from .responses import file_response, range_bytes

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


def _writable_target(fb: FileBrowser, p: Principal, dst: str) -> tuple[str, Path, str]:
    """(virtual folder, real folder, name) of a path to create; the folder must exist."""
    vpath, _ = fb.jail.resolve(p.scope, dst, write=True, must_exist=False)
    folder_v, _, name = vpath.rpartition("/")
    check_name(name)
    folder_v, folder_real = fb.jail.resolve(p.scope, folder_v, write=True)
    if not folder_real.is_dir():
        raise NotFound("the target folder does not exist")
    return folder_v, folder_real, name


def _json_entry(fb: FileBrowser, vpath: str, real: Path) -> dict:
    return fs.stat_entry(real).to_json(parent_of(vpath)) | {"path": vpath}


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
    vpath, real = fb.jail.resolve(p.scope, path)
    root = str(fb.jail.root)

    def link_ok(target_path: str) -> bool:
        target = os.path.realpath(target_path)
        if os.path.commonpath([target, root]) != root:
            return False
        return p.scope.can_see(fb.jail.virtual(target))

    entries, nxt, total = fs.list_dir(
        real, sort=sort, reverse=order == "desc", kinds=frozenset(kind) if kind else None,
        limit=min(limit, fb.settings.list_page_max), cursor=cursor,
        only=p.scope.children_of(vpath), link_ok=link_ok)
    return {"path": vpath, "entries": [e.to_json(vpath) for e in entries], "next": nxt,
            "total": total, "writable": p.scope.can_write(vpath)}


@router.get("/stat")
def stat(p: CurrentUser, fb: FB, path: str = Query(..., max_length=8192)) -> dict:
    vpath, real = fb.jail.resolve(p.scope, path)
    return _json_entry(fb, vpath, real) | {"writable": p.scope.can_write(vpath)}


@router.post("/mkdir", status_code=201)
def mkdir(body: PathBody, p: CurrentUser, fb: FB) -> dict:
    """Create a folder and any missing parents (``mkdir -p``)."""
    vpath, real = fb.jail.resolve(p.scope, body.path, write=True, must_exist=False)
    if not vpath:
        raise Conflict("the root exists")
    if real.exists() and not real.is_dir():
        raise Conflict(f"{vpath!r} exists and is not a folder")
    real.mkdir(parents=True, exist_ok=True)
    fb.usage.record(p.name, "mkdir", vpath)
    return _json_entry(fb, vpath, real)


def _src(fb: FileBrowser, p: Principal, path: str, write: bool) -> tuple[str, Path]:
    vpath, real = fb.jail.resolve(p.scope, path, write=write)
    if not vpath or vpath in p.scope.read or vpath in p.scope.write:
        raise Forbidden("this folder cannot be moved or removed")
    return vpath, real


@router.post("/move")
def move(body: TransferBody, p: CurrentUser, fb: FB) -> dict:
    """Rename or move a file or folder within what you may write."""
    src_v, src = _src(fb, p, body.src, write=True)
    folder_v, folder, name = _writable_target(fb, p, body.dst)
    if src.is_dir() and (folder == src or str(folder).startswith(str(src) + os.sep)):
        raise InvalidInput("cannot move a folder into itself")
    final = fs.move(src, folder, name, body.conflict)
    dst_v = join(folder_v, final)
    fb.usage.move_owner(src_v, dst_v)
    fb.usage.record(p.name, "move", dst_v)
    return _json_entry(fb, dst_v, folder / final)


@router.post("/copy", status_code=201)
def copy(body: TransferBody, p: CurrentUser, fb: FB) -> dict:
    """Server-side copy; counts against the caller's quota."""
    src_v, src = fb.jail.resolve(p.scope, body.src)
    folder_v, folder, name = _writable_target(fb, p, body.dst)
    size = fs.tree_size(src)
    fb.check_quota(p, size)
    final = fs.copy(src, folder, name, body.conflict)
    dst_v = join(folder_v, final)
    fb.usage.set_owner(p.name, dst_v)
    fb.usage.record(p.name, "copy", dst_v, size)
    return _json_entry(fb, dst_v, folder / final)


@router.post("/delete")
def delete(body: PathBody, p: CurrentUser, fb: FB) -> dict:
    """Move a file or folder to your trash (restore or purge it later)."""
    vpath, real = _src(fb, p, body.path, write=True)
    item = fb.trash.put(p.name, vpath, real)
    fb.usage.record(p.name, "delete", vpath, item["size"])
    return item


@router.get("/trash")
def trash_list(p: CurrentUser, fb: FB, all_users: bool = False) -> list[dict]:
    return fb.trash.list(None if (all_users and p.is_admin) else p.name)


@router.post("/trash/{item_id}/restore")
def trash_restore(item_id: str, body: RestoreBody, p: CurrentUser, fb: FB) -> dict:
    item = fb.trash.get(item_id, None if p.is_admin else p.name)
    folder_v = parent_of(item["orig_path"])
    try:
        folder_v, folder = fb.jail.resolve(p.scope, folder_v, write=True)
    except NotFound:
        raise NotFound("the original folder is gone; recreate it to restore") from None
    final = fb.trash.restore(item, folder, body.conflict)
    fb.usage.record(p.name, "restore", join(folder_v, final), item["size"])
    return _json_entry(fb, join(folder_v, final), folder / final)


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


@router.get("/download")
def download(request: Request, p: CurrentUser, fb: FB,
             path: str = Query(..., max_length=8192), inline: bool = False) -> Response:
    """The raw file; resumable with Range. ``inline=true`` shows safe image types in place."""
    vpath, real = fb.jail.resolve(p.scope, path)
    if real.is_dir():
        raise InvalidInput("this is a folder")
    nbytes = range_bytes(request.headers.get("range"), os.stat(real).st_size)
    task = BackgroundTask(fb.usage.record, p.name, "download", vpath, nbytes)
    return file_response(request, real, inline=inline, on_sent=task)


@router.post("/upload", status_code=201)
def upload(
    p: CurrentUser, fb: FB,
    files: Annotated[list[UploadFile], File(description="One or more files")],
    path: str = Query("", max_length=8192, description="Target folder"),
    conflict: Conflicts = "fail",
) -> dict:
    """Small uploads (multipart). Each file lands atomically or not at all."""
    folder_v, folder = fb.jail.resolve(p.scope, path, write=True)
    if not folder.is_dir():
        raise InvalidInput("the target is not a folder")
    sizes = [f.size or 0 for f in files]
    if sum(sizes) > fb.settings.upload_max_bytes:
        raise InvalidInput(f"multipart uploads are limited to {fb.settings.upload_max_bytes} "
                           "bytes; use the resumable (tus) upload for large files")
    fb.check_quota(p, sum(sizes))
    fs.check_free_space(folder, sum(sizes))
    saved = []
    for f in files:
        name = check_name(os.path.basename(f.filename or ""))
        if os.path.lexists(folder / name) and conflict == "overwrite" and \
                not p.scope.can_write(join(folder_v, name)):
            raise ReadOnly()

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
        saved.append(_json_entry(fb, vfinal, folder / final))
    return {"files": saved}
