"""WebDAV at ``/dav/``: WsgiDAV (class 1 and 2) behind our users, jail and accounting.

Mount it from Finder, Explorer, rclone or davfs2 with your user name and your password,
or an API token (``atl_...``) as the password. Layers, outermost first::

    DavApp (ASGI)   who: Basic (password or token), Bearer or session  -> 401 + Basic realm
                    where: every path (and Destination) through the jail; writes need
                    write scope (403 read-only), unseen paths answer 404
                    PUT: streamed natively to a hidden temp file, fsync, atomic rename
                    (no half file ever visible; WsgiDAV would write in place), with
                    quota, free space, the If/If-Match conditions and WsgiDAV's locks
                    checked first (litmus: 104 of 104)
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
import errno
import fcntl
import hashlib
import hmac
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import sqlalchemy as sa
from a2wsgi import WSGIMiddleware
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from wsgidav import util as dav_util
from wsgidav.dav_error import (
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_INSUFFICIENT_STORAGE,
    HTTP_NOT_FOUND,
    DAVError,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection
from wsgidav.dc.base_dc import BaseDomainController
from wsgidav.fs_dav_provider import FileResource, FilesystemProvider, FolderResource
from wsgidav.lock_man.lock_storage import LockStorageShelve
from wsgidav.prop_man.property_manager import ShelvePropertyManager
from wsgidav.wsgidav_app import WsgiDAVApp

from atelier_io.diskwrite import Appender, DiskFull, receive_into, use_direct

from .. import db
from ..access.auth import TOKEN_PREFIX, Principal
from ..access.jail import Handle, clean, is_within, parent_of
from ..errors import (
    AtelierError,
    BadPath,
    Conflict,
    Forbidden,
    InsufficientStorage,
    Locked,
    NotFound,
    PreconditionFailed,
    Unauthorized,
    error_response,
)
from ..files import fs, walk
from ..files.responses import etag_of

MOUNT = "/dav"
USER_HEADER = b"x-atelier-dav-user"
USER_ENVIRON = "HTTP_X_ATELIER_DAV_USER"
WRITE_METHODS = frozenset({"PUT", "DELETE", "MKCOL", "MOVE", "PROPPATCH", "LOCK", "UNLOCK"})
_CACHE_SECONDS = 60.0
_CONDITIONALS = ("if", "if-match", "if-none-match", "if-unmodified-since")


def _principal(environ: dict[str, Any]) -> Principal:
    p: Principal = environ["asgi.scope"]["atelier.principal"]
    return p


@contextlib.contextmanager
def _as_dav_errors() -> Iterator[None]:
    """Our errors (and the OS's, when a path changed under a request) as WsgiDAV's, so
    it answers their status instead of a 500."""
    try:
        yield
    except AtelierError as exc:
        raise DAVError(exc.status, exc.message) from None
    except FileNotFoundError:
        raise DAVError(HTTP_NOT_FOUND) from None
    except FileExistsError:
        raise DAVError(HTTP_CONFLICT) from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DAVError(HTTP_INSUFFICIENT_STORAGE) from None
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise DAVError(HTTP_CONFLICT) from None
        raise


class _Jailed:
    """Mixin: a resource built from a checked handle, whose every disk access goes
    through the jail again with the caller's scope (WsgiDAV's own code would open its
    path string, which a folder swapped for a symlink could redirect)."""

    environ: dict[str, Any]
    path: str
    provider: Any
    file_stat: os.stat_result
    _file_path: str

    def _from(self, h: Handle) -> None:
        # what FileResource/FolderResource.__init__ set, without their os.stat(path)
        self._file_path = str(Path(self.provider.fb.root) / h.real)
        assert h.stat is not None
        self.file_stat = h.stat
        self.name = h.vpath.rpartition("/")[2]

    def _open(self, vpath: str | None = None, **kw: Any) -> Handle:
        with _as_dav_errors():
            h: Handle = self.provider.fb.jail.open(
                _principal(self.environ).scope, (vpath if vpath is not None else self.path)
                .strip("/"), **kw)
        return h

    def _dest(self, dest_path: str) -> Handle:
        """A destination: the name itself, in an existing folder the caller may write."""
        return self._open(dest_path, write=True, must_exist=False, follow=False)

    def get_etag(self) -> str:
        s = self.file_stat
        return f"{s.st_ino:x}-{s.st_mtime_ns:x}-{s.st_size:x}"

    def delete(self) -> None:
        """DELETE (and an overwritten MOVE/COPY target) goes to the caller's trash,
        exactly as ``POST /api/fs/delete`` does, so a stray delete from a mounted drive
        is recoverable."""
        p = _principal(self.environ)
        fb = self.provider.fb
        with self._open(write=True, follow=False) as h, _as_dav_errors():
            fb.trash.put(p.name, h.vpath, h.entry)
        self.remove_all_properties(recursive=True)  # type: ignore[attr-defined]
        self.remove_all_locks(recursive=True)  # type: ignore[attr-defined]

    def move_recursive(self, dest_path: str) -> None:
        with self._open(write=True, follow=False) as src, self._dest(dest_path) as dst, \
                _as_dav_errors():
            if src.is_dir and is_within(parent_of(dst.real), src.real):
                raise DAVError(HTTP_FORBIDDEN)
            fs.move(src.entry, dst.folder, dst.name, "fail")
        self._copy_props(dest_path, True, with_children=True)

    def _copy_props(self, dest_path: str, is_move: bool, with_children: bool = False) -> None:
        """Dead properties follow the copy or move (as WsgiDAV's own resources do)."""
        pm = self.provider.prop_manager
        dest = self.provider.get_resource_inst(dest_path, self.environ)
        if not pm or dest is None:
            return
        src = self.get_ref_url()  # type: ignore[attr-defined]
        if is_move:
            pm.move_properties(src, dest.get_ref_url(), with_children=with_children,
                               environ=self.environ)
        else:
            pm.copy_properties(src, dest.get_ref_url(), self.environ)

    def set_last_modified(self, dest_path: str, time_stamp: Any, *, dry_run: bool) -> bool:
        secs = time_stamp if isinstance(time_stamp, int) else \
            dav_util.parse_time_string(time_stamp)
        if not dry_run:
            with self._open(dest_path, write=True) as h, _as_dav_errors():
                os.utime(h.path, (secs, secs))
        return True


class JailFolder(_Jailed, FolderResource):
    def __init__(self, path: str, environ: dict[str, Any], h: Handle) -> None:
        DAVCollection.__init__(self, path, environ)
        self._from(h)

    def get_member_names(self) -> list[str]:
        """The folder's entries the caller may see (:func:`walk.listing`: scope, no
        symlinks, no internal or unaddressable names, folders and regular files only)."""
        try:
            with self._open() as h:
                return [name for name, _, _ in walk.listing(h, _principal(self.environ).scope)]
        except (NotFound, BadPath):
            return []

    def create_collection(self, name: str) -> None:
        with self._open(dav_util.join_uri(self.path, name), write=True,
                        must_exist=False) as h, _as_dav_errors():
            os.mkdir(h.name, dir_fd=h.parent_fd)

    def create_empty_resource(self, name: str) -> Any:
        path = dav_util.join_uri(self.path, name)
        with self._open(path, write=True, must_exist=False, follow=False) as h, \
                _as_dav_errors():
            os.close(os.open(h.name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644,
                             dir_fd=h.parent_fd))
        return self.provider.get_resource_inst(path, self.environ)

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        with self._dest(dest_path) as dst, _as_dav_errors():
            if not dst.exists:
                os.mkdir(dst.name, dir_fd=dst.parent_fd)
        self._copy_props(dest_path, is_move)


class JailFile(_Jailed, FileResource):
    def __init__(self, path: str, environ: dict[str, Any], h: Handle) -> None:
        DAVNonCollection.__init__(self, path, environ)
        self._from(h)

    def get_etag(self) -> str:
        # the ETag our native GET and PUT send, so a client's If-Match or If header
        # means the same thing whichever layer answers
        return dav_etag(self.file_stat)

    def get_content(self) -> Any:
        with self._open() as h, _as_dav_errors():
            return os.fdopen(h.open_file(), "rb")

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        p = _principal(self.environ)
        with self._open() as src, self._dest(dest_path) as dst, _as_dav_errors():
            fs.copy(src, p.scope, dst.folder, dst.name, "overwrite")
        self._copy_props(dest_path, is_move)


def dav_etag(st: os.stat_result) -> str:
    """A file's entity tag without quotes (WsgiDAV's form): the quoted one is the ETag."""
    return etag_of(st).strip('"')


def ref_url(vpath: str) -> str:
    """A path as WsgiDAV keys its locks: quoted, from the share root (``get_ref_url``)."""
    return quote("/" + vpath.strip("/"))


class _Validated:
    """What WsgiDAV's condition checks ask of a resource: a file has both validators."""

    @staticmethod
    def support_etag() -> bool:
        return True

    @staticmethod
    def support_modified() -> bool:
        return True


class JailProvider(FilesystemProvider):
    """WsgiDAV's filesystem provider, seen through the caller's scope."""

    def __init__(self, fb: Any) -> None:
        super().__init__(str(fb.root), fs_opts={"follow_symlinks": False})
        self.fb = fb

    def get_resource_inst(self, path: str, environ: dict) -> Any:
        p = _principal(environ)
        try:
            h = self.fb.jail.open(p.scope, path.strip("/"))
        except (NotFound, BadPath):
            return None
        with h:
            if h.is_dir:
                return JailFolder(path, environ, h)
            if h.is_file:
                return JailFile(path, environ, h)
        return None  # sockets, devices, FIFOs: not served


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
        user = self.fb.auth.check_password(name, secret, self.fb.auth.client_addr(request))
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
                    with jail.open(p.scope, vpath) as src:
                        self.fb.check_quota(p, walk.size(src, p.scope))
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
            h = self.fb.jail.open(p.scope, clean(rel.strip("/")))
        except NotFound:
            # answered here: WsgiDAV would look again, and might find something else
            return error_response(NotFound())
        with h:
            if not h.is_file:
                return None  # folders: WsgiDAV's directory page
            nbytes = 0
            if request.method == "GET" and h.stat is not None:
                nbytes = range_bytes(request.headers.get("range"), h.stat.st_size)
            task = BackgroundTask(self.fb.usage.record, p.name, "dav_get", h.vpath, nbytes)
            return file_response(request, h, inline=False, on_sent=task)

    # -- PUT: streamed to a temp file, placed atomically --------------------------------------

    def _put_begin(self, request: Request, p: Principal, rel: str
                   ) -> tuple[str, Path, Path, bool, int | None, list[str]]:
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
        tokens = self._check_conditions(request, p, vpath, real if exists else None)
        self._check_lock(p, vpath, tokens)
        size = _content_length(request)
        old = os.stat(real).st_size if exists else 0
        if size is not None:
            self.fb.check_quota(p, size - old)
            fs.check_free_space(folder, size)
        room = None
        if p.user.quota_bytes is not None:
            room = p.user.quota_bytes - self.fb.usage.stored_bytes(p.name) + old
        return vpath, folder, fs.tmp_name(folder, real.name), exists, room, tokens

    def _check_conditions(self, request: Request, p: Principal, vpath: str,
                          real: Path | None) -> list[str]:
        """The PUT's preconditions, as WsgiDAV evaluates them for its own methods: the HTTP
        conditionals (If-Match, If-None-Match, If-Unmodified-Since; RFC 9110 13) and the
        WebDAV ``If`` header (lock tokens and entity tags, RFC 4918 10.4): 412 when they
        fail. Returns the lock tokens the request submitted."""
        environ: dict[str, Any] = {"REQUEST_METHOD": "PUT"}
        for name in _CONDITIONALS:
            if name in request.headers:
                environ["HTTP_" + name.upper().replace("-", "_")] = request.headers[name]
        dav_util.parse_if_header_dict(environ)
        tokens: list[str] = environ["wsgidav.ifLockTokenList"]
        if real is None:
            if "HTTP_IF_MATCH" in environ:
                raise PreconditionFailed("If-Match: there is no such file")
            return tokens
        st = os.stat(real)
        etag = dav_etag(st)
        url = ref_url(vpath)
        try:
            dav_util.evaluate_http_conditionals(_Validated(), int(st.st_mtime), etag, environ)
        except DAVError as exc:
            raise PreconditionFailed(exc.context_info or "a precondition failed") from None
        if_dict = environ["wsgidav.conditions.if"]
        if if_dict:
            # tagged lists name their resource by URL: compare as lock URLs do
            lists: dict[str, list[Any]] = {}
            for key, value in if_dict.items():
                lists.setdefault(key if key == "*" else self._if_resource(key), []).extend(value)
            held = [lock["token"] for lock in self.dav.lock_manager.get_indirect_url_lock_list(
                url, principal=p.name)]
            if not dav_util.test_if_header_dict(_Validated(), lists, url, held, etag):
                raise PreconditionFailed("the If header's condition failed")
        return tokens

    @staticmethod
    def _if_resource(tag: str) -> str:
        path = unquote(urlsplit(tag).path)
        if path == MOUNT or path.startswith(MOUNT + "/"):
            path = path[len(MOUNT):]
        return ref_url(path.strip("/"))

    def _check_lock(self, p: Principal, vpath: str, tokens: list[str]) -> None:
        """Class 2: a locked file (or one inside a locked folder) needs its lock token."""
        try:
            self.dav.lock_manager.check_write_permission(
                url=ref_url(vpath), depth="0", token_list=tokens, principal=p.name)
        except DAVError:
            raise Locked("this resource is locked") from None

    async def _put(self, request: Request, p: Principal, rel: str) -> Response:
        vpath, folder, tmp, existed, room, tokens = await run_in_threadpool(
            self._put_begin, request, p, rel)
        fd = await run_in_threadpool(os.open, tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: at once. The stale-file sweep keeps off
        direct = use_direct(self.fb.settings.upload_direct_io, folder,
                            _content_length(request))
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

        def finish() -> str:
            try:
                # a lock taken by someone else while the body arrived wins over this PUT
                self._check_lock(p, vpath, tokens)
                fs.place(tmp, folder, Path(vpath).name, "overwrite")
                fs.fsync_dir(folder)
            finally:
                _unlink(tmp)
            self.fb.usage.set_owner(p.name, vpath)
            self.fb.usage.record(p.name, "dav_put", vpath, written)
            return dav_etag(os.stat(folder / Path(vpath).name))

        try:
            etag = await run_in_threadpool(finish)
        except BaseException:
            await run_in_threadpool(_unlink, tmp)
            raise
        return Response(status_code=204 if existed else 201, headers={"ETag": f'"{etag}"'})


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "").strip()
    return int(value) if value.isascii() and value.isdigit() else None  # not "²"


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def build(fb: Any) -> DavApp:
    return DavApp(fb)
