"""WebDAV at ``/dav/``: WsgiDAV (class 1 and 2) behind our users, jail and accounting.

Mount it from Finder, Explorer, rclone or davfs2 with your user name and your password,
or an API token (``atl_...``) as the password. Layers, outermost first::

    DavApp (ASGI)   who: Basic (password or token), Bearer or session  -> 401 + Basic realm
                    where: every path (and Destination) through the jail; writes need
                    write scope (403 read-only), unseen paths answer 404
                    PUT: streamed natively to a hidden temp file, fsync, atomic rename
                    (no half file ever visible; WsgiDAV would write in place), with
                    quota, free space and WsgiDAV's locks checked first
                    GET/HEAD of a file: served natively (Range, ETag), counted as dav_get
    a2wsgi          everything else, in its thread pool
    WsgiDAV         PROPFIND/PROPPATCH/MKCOL/COPY/MOVE/DELETE/LOCK/UNLOCK; the user comes
                    from a header only this layer sets (``trusted_auth_header``); locks
                    and dead properties persist in shelves under ``state_dir``
    JailProvider    lists only what the caller may see, hides ``.atelier*`` names

The research (upload-measure.md) found WsgiDAV under a2wsgi at 0.31x of dd for PUT:
a2wsgi's queue and WsgiDAV's small blocks; the native PUT avoids both.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from a2wsgi import WSGIMiddleware
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from wsgidav import util as dav_util
from wsgidav.dav_error import DAVError
from wsgidav.dc.base_dc import BaseDomainController
from wsgidav.fs_dav_provider import FileResource, FilesystemProvider, FolderResource
from wsgidav.lock_man.lock_storage import LockStorageShelve
from wsgidav.prop_man.property_manager import ShelvePropertyManager
from wsgidav.wsgidav_app import WsgiDAVApp

from atelier_io.diskwrite import Appender, DiskFull, receive_into, use_direct

from .. import db
from ..access.auth import TOKEN_PREFIX, Principal
from ..access.jail import INTERNAL_PREFIX, clean, parent_of
from ..errors import (
    AtelierError,
    BadPath,
    Conflict,
    Forbidden,
    InsufficientStorage,
    Locked,
    NotFound,
    Unauthorized,
    error_response,
)
from ..files import fs

MOUNT = "/dav"
USER_HEADER = b"x-atelier-dav-user"
USER_ENVIRON = "HTTP_X_ATELIER_DAV_USER"
WRITE_METHODS = frozenset({"PUT", "DELETE", "MKCOL", "MOVE", "PROPPATCH", "LOCK", "UNLOCK"})
_CACHE_SECONDS = 60.0


def _principal(environ: dict[str, Any]) -> Principal:
    p: Principal = environ["asgi.scope"]["atelier.principal"]
    return p


class _Visible:
    """Mixin: resources that know the caller and list only what they may see."""

    environ: dict[str, Any]
    path: str

    def get_member_names(self) -> list[str]:
        names: list[str] = FolderResource.get_member_names(self)
        p = _principal(self.environ)
        folder = self.path.strip("/")
        return [n for n in names if not n.lower().startswith(INTERNAL_PREFIX)
                and p.scope.visible_child(folder, n)]


class _Trashing:
    """Mixin: DELETE (and an overwritten MOVE/COPY target) goes to the caller's trash,
    exactly as ``POST /api/fs/delete`` does, so a stray delete from a mounted drive is
    recoverable."""

    environ: dict[str, Any]
    path: str
    provider: Any

    def delete(self) -> None:
        p = _principal(self.environ)
        fb = self.provider.fb
        vpath, real = fb.jail.resolve(p.scope, self.path.strip("/"), write=True)
        fb.trash.put(p.name, vpath, real)
        self.remove_all_properties(recursive=True)  # type: ignore[attr-defined]
        self.remove_all_locks(recursive=True)  # type: ignore[attr-defined]


class JailFolder(_Trashing, _Visible, FolderResource):
    pass


class JailFile(_Trashing, FileResource):
    pass


class JailProvider(FilesystemProvider):
    """WsgiDAV's filesystem provider, seen through the caller's scope."""

    def __init__(self, fb: Any) -> None:
        super().__init__(str(fb.root), fs_opts={"follow_symlinks": False})
        self.fb = fb

    def get_resource_inst(self, path: str, environ: dict) -> Any:
        p = _principal(environ)
        try:
            _, real = self.fb.jail.resolve(p.scope, path.strip("/"), must_exist=False)
        except (NotFound, BadPath):
            return None
        if not os.path.lexists(real) or os.path.islink(real):
            return None
        if real.is_dir():
            return JailFolder(path, environ, str(real))
        return JailFile(path, environ, str(real))


class TrustedDC(BaseDomainController):
    """The user was authenticated by :class:`DavApp`; WsgiDAV takes it from a header."""

    def get_domain_realm(self, path_info: str, environ: dict) -> str:
        return "atelier"

    def require_authentication(self, realm: str, environ: dict) -> bool:
        return True

    def basic_auth_user(self, realm: str, user_name: str, password: str,
                        environ: dict) -> bool:
        return False  # only the trusted header gets in

    def supports_http_digest_auth(self) -> bool:
        return False


class DavApp:
    """The ASGI app mounted at ``/dav``."""

    def __init__(self, fb: Any) -> None:
        self.fb = fb
        state = Path(fb.settings.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        config = {
            "mount_path": MOUNT,
            "provider_mapping": {"/": JailProvider(fb)},
            "http_authenticator": {
                "domain_controller": TrustedDC, "accept_basic": True, "accept_digest": False,
                "default_to_digest": False, "trusted_auth_header": USER_ENVIRON},
            "lock_storage": LockStorageShelve(str(state / "dav-locks.shelve")),
            "property_manager": ShelvePropertyManager(str(state / "dav-props.shelve")),
            "block_size": 1024 * 1024,  # WsgiDAV's 8 KiB default costs ~40% (research)
            "verbose": 1,
            "logging": {"enable_loggers": []},
            "dir_browser": {"enable": True, "response_trailer": "Atelier WebDAV"},
            "cors": {"allow_origin": None},
        }
        self.dav = WsgiDAVApp(config)
        self.wsgi = WSGIMiddleware(self.dav, workers=8)
        self._cache: dict[str, tuple[float, int, str]] = {}
        self._cache_lock = threading.Lock()

    # -- who ------------------------------------------------------------------------

    def _identify(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return self.fb.auth.identify(request)  # Bearer, session or gateway
        try:
            name, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic credentials") from None
        if secret.startswith(TOKEN_PREFIX):
            p = self.fb.auth._from_token(secret)
            if p is None or (name and name != p.name):
                raise Unauthorized("invalid or revoked token")
            return p
        # Clients resend the password on every request (Finder: hundreds a minute); an
        # argon2 check each time would cost ~50 ms. Remember a success briefly, bound to
        # the stored hash, so a password change ends it at once.
        key = hashlib.sha256(header.encode()).hexdigest()
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit and hit[0] > time.monotonic():
            with self.fb.engine.connect() as conn:
                row = conn.execute(sa.select(db.users.c.password_hash).where(
                    db.users.c.id == hit[1])).first()
            user = self.fb.users.get_by_id(hit[1])
            if row is not None and user is not None and \
                    hmac.compare_digest(row.password_hash or "", hit[2]):
                return self.fb.auth.principal(user, "basic")
        addr = request.client.host if request.client else "-"
        user = self.fb.auth.check_password(name, secret, addr)
        with self.fb.engine.connect() as conn:
            stored = conn.execute(sa.select(db.users.c.password_hash).where(
                db.users.c.id == user.id)).scalar_one()
        with self._cache_lock:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[key] = (time.monotonic() + _CACHE_SECONDS, user.id, stored or "")
        return self.fb.auth.principal(user, "basic")

    # -- where --------------------------------------------------------------------------

    @staticmethod
    def _rel(scope: Scope) -> str:
        """The DAV path after the mount, as WsgiDAV sees it: '/' + virtual path."""
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        elif path.startswith(MOUNT):
            path = path[len(MOUNT):]
        return "/" + path.strip("/")

    def _destination(self, request: Request) -> str | None:
        dest = request.headers.get("destination")
        if dest is None:
            return None
        path = unquote(urlsplit(dest).path)
        if not path.startswith(MOUNT + "/") and path != MOUNT:
            raise Forbidden("Destination must be inside /dav/")
        return "/" + path[len(MOUNT):].strip("/")

    def _guard(self, p: Principal, method: str, rel: str, request: Request) -> None:
        """Jail checks before WsgiDAV sees the request (raises 403/404/400/507)."""
        jail = self.fb.jail
        vpath = clean(rel.strip("/"))
        if method in WRITE_METHODS or method == "COPY":
            write = method != "COPY"
            jail.resolve(p.scope, vpath, write=write, must_exist=False)
            if write and method in ("DELETE", "MOVE") and (
                    vpath == "" or vpath in p.scope.read or vpath in p.scope.write):
                raise Forbidden("this folder cannot be moved or removed")
            dest = self._destination(request)
            if method in ("MOVE", "COPY"):
                if dest is None:
                    raise BadPath("Destination header required")
                dest_v, _ = jail.resolve(p.scope, clean(dest.strip("/")), write=True,
                                         must_exist=False)
                if method == "COPY":
                    _, src_real = jail.resolve(p.scope, vpath)
                    self.fb.check_quota(p, fs.tree_size(src_real))
        else:
            jail.resolve(p.scope, vpath, must_exist=False)

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        method = scope["method"]
        rel = self._rel(scope)
        try:
            p = await run_in_threadpool(self._identify, request)
            if method == "PUT":
                try:
                    response = await self._put(request, p, rel)
                except DiskFull:
                    raise InsufficientStorage("the disk is full") from None
            elif method in ("GET", "HEAD"):
                response = await run_in_threadpool(self._get, request, p, rel)  # type: ignore[arg-type]
            else:
                await run_in_threadpool(self._guard, p, method, rel, request)
                response = None
        except AtelierError as exc:
            if isinstance(exc, Unauthorized):
                exc.headers["WWW-Authenticate"] = 'Basic realm="atelier", charset="UTF-8"'
            response = error_response(exc)
        if response is not None:
            await response(scope, receive, send)
            return
        await self._forward(scope, receive, send, p, method, rel)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, p: Principal,
                       method: str, rel: str) -> None:
        headers = [(k, v) for k, v in scope["headers"]
                   if k not in (b"authorization", USER_HEADER, b"cookie")]
        headers.append((USER_HEADER, p.name.encode()))
        inner = {**scope, "headers": headers, "atelier.principal": p}
        status = 0

        async def watch(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.wsgi(inner, receive, watch)  # type: ignore[arg-type]
        if 200 <= status < 300 and method in ("MKCOL", "MOVE", "COPY", "DELETE"):
            op = {"MKCOL": "mkdir", "MOVE": "move", "COPY": "copy", "DELETE": "delete"}[method]
            await run_in_threadpool(self.fb.usage.record, p.name, op, rel.strip("/"))

    # -- GET/HEAD: files natively ------------------------------------------------------------

    def _get(self, request: Request, p: Principal, rel: str) -> Response | None:
        from ..files.responses import file_response, range_bytes

        try:
            vpath, real = self.fb.jail.resolve(p.scope, clean(rel.strip("/")))
        except NotFound:
            return None  # WsgiDAV answers (404, or OPTIONS-style for the root)
        if not real.is_file() or os.path.islink(real):
            return None  # folders: WsgiDAV's directory page
        nbytes = 0
        if request.method == "GET":
            nbytes = range_bytes(request.headers.get("range"), os.stat(real).st_size)
        task = BackgroundTask(self.fb.usage.record, p.name, "dav_get", vpath, nbytes)
        return file_response(request, real, inline=False, on_sent=task)

    # -- PUT: streamed to a temp file, placed atomically --------------------------------------

    def _put_begin(self, request: Request, p: Principal, rel: str) -> tuple[str, Path, Path,
                                                                             bool, int | None]:
        vpath = clean(rel.strip("/"))
        vpath, real = self.fb.jail.resolve(p.scope, vpath, write=True, must_exist=False)
        folder_v = parent_of(vpath)
        try:
            _, folder = self.fb.jail.resolve(p.scope, folder_v, write=True)
        except NotFound:
            raise Conflict("the parent folder does not exist") from None  # RFC 4918 9.7.1
        if not vpath or not folder.is_dir() or real.is_dir():
            raise Conflict("cannot PUT to a folder")
        exists = os.path.lexists(real)
        # Class 2: a locked resource (or one inside a locked folder) needs the lock token.
        env = {"HTTP_IF": request.headers["if"]} if "if" in request.headers else {}
        dav_util.parse_if_header_dict(env)
        try:
            self.dav.lock_manager.check_write_permission(
                url="/" + vpath, depth="0", token_list=env.get("wsgidav.ifLockTokenList", []),
                principal=p.name)
        except DAVError:
            raise Locked("this resource is locked") from None
        length = request.headers.get("content-length")
        size = int(length) if length and length.isdigit() else None
        old = os.stat(real).st_size if exists else 0
        if size is not None:
            self.fb.check_quota(p, size - old)
            fs.check_free_space(folder, size)
        room = None
        if p.user.quota_bytes is not None:
            room = p.user.quota_bytes - self.fb.usage.stored_bytes(p.name) + old
        return vpath, folder, fs.tmp_name(folder, real.name), exists, room

    async def _put(self, request: Request, p: Principal, rel: str) -> Response:
        vpath, folder, tmp, existed, room = await run_in_threadpool(
            self._put_begin, request, p, rel)
        fd = await run_in_threadpool(os.open, tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        length = request.headers.get("content-length")
        direct = use_direct(self.fb.settings.upload_direct_io, folder,
                            int(length) if length and length.isdigit() else None)
        out = Appender(tmp, fd, 0, direct)

        def write(chunks: list[bytes]) -> None:
            n = sum(len(c) for c in chunks)
            if room is not None and out.written + n > room:
                raise InsufficientStorage("this would exceed your storage quota")
            out.write(chunks)

        def close() -> None:
            out.flush()
            os.fsync(fd)

        complete = False
        try:
            # a cut PUT leaves nothing: the temp file goes
            if await receive_into(request, write):
                await run_in_threadpool(close)
                complete = True
        finally:
            out.close()
            os.close(fd)
            if not complete:
                await run_in_threadpool(_unlink, tmp)
        if not complete:
            return Response(status_code=400)
        written = out.written

        def finish() -> None:
            try:
                fs.place(tmp, folder, Path(vpath).name, "overwrite")
                fs.fsync_dir(folder)
            finally:
                _unlink(tmp)
            self.fb.usage.set_owner(p.name, vpath)
            self.fb.usage.record(p.name, "dav_put", vpath, written)

        try:
            await run_in_threadpool(finish)
        except BaseException:
            await run_in_threadpool(_unlink, tmp)
            raise
        return Response(status_code=204 if existed else 201)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def build(fb: Any) -> DavApp:
    return DavApp(fb)
