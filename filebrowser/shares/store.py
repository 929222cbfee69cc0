"""Share links: a public, read-only, revocable view of one file or folder.

A link is ``/s/<token>``; the token is 192 random bits and only its sha256 is stored,
so the database cannot give links away and the owner sees a link once, at creation.
A share may expire and may need a password (argon2). Unlocking with the password
gives a short-lived *key* (also only stored hashed), so a gallery of thumbnails costs
one argon2 verification, not one per image. Failed passwords are counted like failed
logins (per share and per client address) and answered 429 past the limit.

Who may share what: viewers create no shares; a user shares what lies in their own
home (the path asked and its real location); an admin anything but the root.

Every access re-checks, from scratch (filebrowser's 2026 share bugs are the list):

1. the share exists (revoked: 404) and has not expired (410);
2. the owner still exists (an account deletion cascades) and the owner's *current*
   role and scope still allow sharing the path (GHSA-v9w4-gm2x-6rvf: permissions
   revoked later; a user demoted to viewer ends their shares);
3. the shared path is still the same object (device and inode; for a file also its
   ctime, since a freed inode number is reused at once), so a file deleted and
   replaced by another at the same name is not exposed (a chmod also ends a file share);
4. a path inside a folder share is opened by the jail with the owner's scope (no
   ``..``, no absolute, no backslash, decoded once by the server; every symlink hop
   checked) and its *real* location must lie inside the share's real root: never the
   parent or a sibling (GHSA-mr74-928f-rw69), not through a symlink either. What is
   served is read from the descriptor that was checked.

Downloads are recorded as the owner's ``share_download`` usage.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Engine

from .. import db
from ..access.auth import Principal
from ..access.jail import Handle, Jail, Scope, clean, is_within, join
from ..access.ratelimit import FailureLimit
from ..access.users import User, UserStore
from ..errors import (
    BadPath,
    Forbidden,
    InvalidInput,
    NotFound,
    ShareExpired,
    SharePasswordRequired,
)
from ..settings import Settings

TOKEN_BYTES = 24  # 192 bits
KEY_SECONDS = 12 * 3600
_hasher = PasswordHasher()

shares = sa.Table(
    "shares", db.metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("is_dir", sa.Boolean, nullable=False),
    sa.Column("dev", sa.BigInteger, nullable=False),
    sa.Column("ino", sa.BigInteger, nullable=False),
    # files only: inode numbers are reused at once, a new file's ctime is new
    sa.Column("ctime_ns", sa.BigInteger, nullable=True),
    sa.Column("password_hash", sa.String(256), nullable=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=True),
    sa.Column("downloads", sa.Integer, nullable=False, default=0),
    sa.Column("last_access", sa.Float, nullable=True),
)

share_keys = sa.Table(
    "share_keys", db.metadata,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("share_id", sa.Integer, sa.ForeignKey("shares.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("expires", sa.Float, nullable=False),
)

TABLES = [shares, share_keys]


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def may_share(user: User, vpath: str, real: str) -> bool:
    """Viewers share nothing, users what lies in their home, admins anything but the
    root (``vpath`` as asked, ``real`` its real location)."""
    if user.role == "admin":
        return vpath != ""
    if user.role != "user":
        return False
    home = f"users/{user.name}"
    return is_within(vpath, home) and is_within(real, home)


@dataclass(frozen=True)
class ShareAccess:
    """One checked access: the share row, its owner now, and the share root."""

    id: int
    owner: User
    scope: Scope
    vpath: str  # the owner's virtual path of the share root
    real: str   # the virtual path of its real location
    ino: tuple[int, int]  # (device, inode) of the shared file or folder
    name: str
    is_dir: bool
    expires: float | None
    locked: bool  # has a password


class ShareStore:
    def __init__(self, engine: Engine, jail: Jail, users: UserStore, settings: Settings) -> None:
        self.engine = engine
        self.jail = jail
        self.users = users
        self.settings = settings
        self.failures = FailureLimit(engine, settings.login_window_seconds)
        db.metadata.create_all(engine, tables=TABLES)

    # -- management (authenticated) ----------------------------------------------------

    def create(self, p: Principal, path: str, *, password: str | None = None,
               expires_in: float | None = None, expires_at: float | None = None) -> dict:
        if p.role == "viewer":
            raise Forbidden("viewers cannot create share links")
        with self.jail.open(p.scope, path) as h:
            vpath, is_dir, s = h.vpath, h.is_dir, h.stat
            if not vpath or not p.scope.can_read(vpath) or s is None:
                raise InvalidInput("this folder cannot be shared; share a file or a folder "
                                   "in it")
            if not may_share(p.user, vpath, h.real):
                raise Forbidden("you can share what lies in your own home")
        if password is not None and len(password) < 4:
            raise InvalidInput("a share password needs at least 4 characters")
        now = db.now()
        if expires_in is not None and expires_at is not None:
            raise InvalidInput("give expires_in or expires_at, not both")
        expires = now + expires_in if expires_in is not None else expires_at
        if expires is not None and expires <= now:
            raise InvalidInput("the expiry must be in the future")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self.engine.begin() as conn:
            result = conn.execute(shares.insert().values(
                token_hash=_sha(token), user_id=p.user.id, path=vpath, is_dir=is_dir,
                dev=s.st_dev, ino=s.st_ino, ctime_ns=None if is_dir else s.st_ctime_ns,
                password_hash=_hasher.hash(password) if password else None,
                created=now, expires=expires, downloads=0))
            sid = result.inserted_primary_key[0] if result.inserted_primary_key else None
        row = self._row(int(sid)) if sid is not None else None
        assert row is not None
        return self._json(row) | {"token": token, "url": f"/s/{token}"}

    def _row(self, share_id: int) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(shares).where(shares.c.id == share_id)).first()

    @staticmethod
    def _json(r: Any) -> dict:
        return {"id": r.id, "path": r.path, "is_dir": r.is_dir, "created": r.created,
                "expires": r.expires, "expired": r.expires is not None and r.expires < db.now(),
                "has_password": r.password_hash is not None, "downloads": r.downloads,
                "last_access": r.last_access}

    def list(self, p: Principal, *, all_users: bool = False) -> list[dict]:
        q = sa.select(shares, db.users.c.name.label("owner")).join(
            db.users, db.users.c.id == shares.c.user_id).order_by(shares.c.id)
        if not (all_users and p.is_admin):
            q = q.where(shares.c.user_id == p.user.id)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [self._json(r) | {"owner": r.owner} for r in rows]

    def revoke(self, p: Principal, share_id: int) -> None:
        """Delete the share (its unlock keys cascade); owners and admins only."""
        q = shares.delete().where(shares.c.id == share_id)
        if not p.is_admin:
            q = q.where(shares.c.user_id == p.user.id)
        with self.engine.begin() as conn:
            if not conn.execute(q).rowcount:
                raise NotFound("no such share")

    # -- public access -----------------------------------------------------------------

    def open(self, token: str) -> tuple[ShareAccess, Any]:
        """Check a token from scratch (see the module docstring); (access, row)."""
        if not token or len(token) > 128:
            raise NotFound("no such share")
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(shares).where(
                shares.c.token_hash == _sha(token))).first()
        if row is None:
            raise NotFound("no such share")
        if row.expires is not None and row.expires < db.now():
            raise ShareExpired()
        owner = self.users.get_by_id(row.user_id)
        if owner is None:
            raise NotFound("no such share")
        scope = Scope.for_user(owner.name, owner.role)
        if not scope.can_read(row.path):
            raise NotFound("no such share")
        with self.jail.open(scope, row.path) as h:
            s = h.stat
            if s is None or not may_share(owner, h.vpath, h.real) or (
                    s.st_dev, s.st_ino) != (row.dev, row.ino) or h.is_dir != row.is_dir or (
                    row.ctime_ns is not None and s.st_ctime_ns != row.ctime_ns):
                raise NotFound("no such share")
            return ShareAccess(row.id, owner, scope, h.vpath, h.real, (row.dev, row.ino),
                               h.name, row.is_dir, row.expires,
                               row.password_hash is not None), row

    def authorize(self, access: ShareAccess, row: Any, *, key: str | None,
                  password: str | None, addr: str) -> None:
        """Pass if the share has no password, or a valid key or password is given."""
        if not access.locked:
            return
        if key:
            with self.engine.connect() as conn:
                k = conn.execute(sa.select(share_keys).where(
                    share_keys.c.hash == _sha(key), share_keys.c.share_id == access.id)).first()
            if k is not None and k.expires > db.now():
                return
        if password is not None:
            self.check_password(access, row, password, addr)
            return
        raise SharePasswordRequired()

    def check_password(self, access: ShareAccess, row: Any, password: str, addr: str) -> None:
        limits = {f"share:{access.id}": self.settings.login_max_failures_user,
                  f"addr:{addr}": self.settings.login_max_failures_addr}
        self.failures.check(limits)
        try:
            _hasher.verify(row.password_hash, password)
        except (VerificationError, InvalidHashError):
            self.failures.record(list(limits))
            raise SharePasswordRequired("wrong share password") from None

    def unlock(self, access: ShareAccess, row: Any, password: str, addr: str) -> dict:
        """Verify the password once; return a key for the following requests."""
        if not access.locked:
            return {"key": None, "expires": access.expires}
        self.check_password(access, row, password, addr)
        key = secrets.token_urlsafe(32)
        expires = db.now() + KEY_SECONDS
        if access.expires is not None:
            expires = min(expires, access.expires)
        with self.engine.begin() as conn:
            conn.execute(share_keys.delete().where(share_keys.c.expires < db.now()))
            conn.execute(share_keys.insert().values(hash=_sha(key), share_id=access.id,
                                                    expires=expires))
        return {"key": key, "expires": expires}

    def open_in(self, access: ShareAccess, sub: str) -> tuple[Handle, str]:
        """A path inside the share, opened with the owner's scope and checked to lie in
        the share's real root: (handle, share-relative path). Close the handle."""
        rel = clean(sub)
        if not access.is_dir and rel:
            raise NotFound()
        h = self.jail.open(access.scope, join(access.vpath, rel))
        try:
            s = h.stat
            if not is_within(h.real, access.real) or s is None or (
                    not access.is_dir and (s.st_dev, s.st_ino) != access.ino):
                raise NotFound()
        except BaseException:
            h.close()
            raise
        return h, rel

    def link_ok(self, access: ShareAccess, folder: str, name: str) -> bool:
        """Whether a symlink listed in a share's folder leads somewhere inside the share."""
        try:
            h, _ = self.open_in(access, join(folder, name))
        except (NotFound, BadPath):
            return False
        h.close()
        return True

    def touch(self, access: ShareAccess, download: bool) -> None:
        values: dict[str, Any] = {"last_access": db.now()}
        if download:
            values["downloads"] = shares.c.downloads + 1
        with self.engine.begin() as conn:
            conn.execute(shares.update().where(shares.c.id == access.id).values(**values))

