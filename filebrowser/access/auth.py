"""Who is calling: browser sessions, API tokens, HTTP Basic, and a trusted gateway.

- Browser: ``POST /api/login`` creates a server-side session; the cookie
  ``atelier_session`` (HttpOnly, SameSite=Lax) holds a random id whose sha256 is the
  row key. Expiry slides with use (``session_idle_hours``) up to ``session_max_days``.
  State-changing requests authenticated by the cookie must echo the session's CSRF
  token in ``X-CSRF-Token`` (also readable from the ``atelier_csrf`` cookie).
- CLI and desktop: ``Authorization: Bearer <token>`` with tokens from ``POST /api/tokens``;
  only their sha256 is stored. Revocation deletes the row, so it acts at once.
- HTTP Basic: accepted where a route asks for it (token creation, WebDAV).
- Gateway: the ``proxy_user_header`` is believed only when the TCP peer itself is one
  of ``trusted_proxies`` (never an address taken from a header: :mod:`.peers`), or from
  a request carrying ``X-Atelier-Gateway: <gateway_secret>`` whatever its address (the
  WebUI extension's proxy: loopback is shared by every local process, so the address
  alone proves nothing). A wrong secret is refused (401).

Failed logins are counted per user name and per client address in the database
(so replicas sharing PostgreSQL share the limit) and answered 429 past the limit; the
address is the peer's, or the forwarded client's behind a trusted proxy (:mod:`.peers`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from .. import db
from ..errors import CsrfFailed, NotFound, Unauthorized
from ..settings import Settings
from .jail import Scope
from .peers import Peers
from .ratelimit import FailureLimit
from .users import User, UserStore

SESSION_COOKIE = "atelier_session"
CSRF_COOKIE = "atelier_csrf"
CSRF_HEADER = "X-CSRF-Token"
GATEWAY_HEADER = "X-Atelier-Gateway"
TOKEN_PREFIX = "atl_"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_TOUCH_EVERY = 60.0  # seconds between last_seen writes for one session
SESSION_HANDLE = 16  # hex digits of a session's row key that name it in the API


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    user: User
    via: str  # "session" | "token" | "basic" | "proxy"
    scope: Scope = field(compare=False)
    session_hash: str | None = None
    home: Path | None = None

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def role(self) -> str:
        return self.user.role

    @property
    def is_admin(self) -> bool:
        return self.user.role == "admin"


class Authenticator:
    def __init__(self, engine: Engine, users: UserStore, settings: Settings) -> None:
        self.engine = engine
        self.users = users
        self.settings = settings
        self.peers = Peers(settings.trusted_proxies)
        self.failures = FailureLimit(engine, settings.login_window_seconds)

    # -- principals ---------------------------------------------------------------

    def principal(self, user: User, via: str, session_hash: str | None = None) -> Principal:
        return Principal(user, via, Scope.for_user(user.name, user.role), session_hash,
                         self.users.home(user.name))

    # -- failed-login limit -------------------------------------------------------

    def _limits(self, name: str, addr: str) -> dict[str, int]:
        return {f"user:{name}": self.settings.login_max_failures_user,
                f"addr:{addr}": self.settings.login_max_failures_addr}

    def check_password(self, name: str, password: str, addr: str) -> User:
        limits = self._limits(name, addr)
        self.failures.check(limits)
        user = self.users.verify(name, password)
        if user is None:
            self.failures.record(list(limits))
            raise Unauthorized("wrong user name or password")
        return user

    # -- sessions -----------------------------------------------------------------

    def open_session(self, user: User) -> tuple[str, str]:
        """Create a session; return (cookie value, csrf token)."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        t = db.now()
        with self.engine.begin() as conn:
            conn.execute(db.sessions.insert().values(
                id_hash=_sha(sid), user_id=user.id, csrf=csrf, created=t, last_seen=t))
        return sid, csrf

    def close_session(self, session_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(db.sessions.delete().where(db.sessions.c.id_hash == session_hash))

    def list_sessions(self, user: User | None, current: str | None = None) -> list[dict]:
        """Live browser sessions of ``user`` (everyone's for None). The id is the first
        16 hex digits of the row key, a handle that can end a session but never open one."""
        t = db.now()
        q = sa.select(db.sessions, db.users.c.name.label("user")).join(
            db.users, db.users.c.id == db.sessions.c.user_id).where(
            db.sessions.c.last_seen > t - self.settings.session_idle_hours * 3600,
            db.sessions.c.created > t - self.settings.session_max_days * 86400,
        ).order_by(db.sessions.c.last_seen.desc())
        if user is not None:
            q = q.where(db.sessions.c.user_id == user.id)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [{"id": r.id_hash[:SESSION_HANDLE], "user": r.user, "created": r.created,
                 "last_seen": r.last_seen, "current": r.id_hash == current} for r in rows]

    def end_session(self, user: User | None, handle: str) -> None:
        """End the session ``handle`` names, if it is ``user``'s (anyone's for None)."""
        if len(handle) != SESSION_HANDLE or not all(c in "0123456789abcdef" for c in handle):
            raise NotFound("no such session")
        q = db.sessions.delete().where(db.sessions.c.id_hash.startswith(handle))
        if user is not None:
            q = q.where(db.sessions.c.user_id == user.id)
        with self.engine.begin() as conn:
            n = conn.execute(q).rowcount
        if not n:
            raise NotFound("no such session")

    def _from_session(self, request: Request, sid: str) -> Principal | None:
        h = _sha(sid)
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(db.sessions).where(db.sessions.c.id_hash == h)).first()
        if row is None:
            return None
        t = db.now()
        idle = self.settings.session_idle_hours * 3600
        if t - row.last_seen > idle or t - row.created > self.settings.session_max_days * 86400:
            self.close_session(h)
            return None
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), row.csrf.encode()):
                raise CsrfFailed()
        if t - row.last_seen > _TOUCH_EVERY:
            with self.engine.begin() as conn:
                conn.execute(db.sessions.update().where(db.sessions.c.id_hash == h)
                             .values(last_seen=t))
        user = self.users.get_by_id(row.user_id)
        return self.principal(user, "session", h) if user else None

    # -- tokens -------------------------------------------------------------------

    def create_token(self, user: User, name: str, ttl_days: float | None = None) -> dict:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        t = db.now()
        expires = t + ttl_days * 86400 if ttl_days else None
        with self.engine.begin() as conn:
            result = conn.execute(db.tokens.insert().values(
                hash=_sha(token), user_id=user.id, name=name, created=t, expires=expires))
            tid = result.inserted_primary_key[0] if result.inserted_primary_key else None
        return {"id": tid, "token": token, "name": name, "created": t, "expires": expires}

    def list_tokens(self, user: User | None) -> list[dict]:
        """``user``'s tokens; everyone's (with a ``user`` field) for None."""
        q = sa.select(db.tokens, db.users.c.name.label("user")).join(
            db.users, db.users.c.id == db.tokens.c.user_id).order_by(db.tokens.c.id)
        if user is not None:
            q = q.where(db.tokens.c.user_id == user.id)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [{"id": r.id, "name": r.name, "created": r.created, "last_used": r.last_used,
                 "expires": r.expires, **({} if user is not None else {"user": r.user})}
                for r in rows]

    def revoke_token(self, user: User | None, token_id: int) -> None:
        """Revoke one of ``user``'s tokens (anyone's for None)."""
        q = db.tokens.delete().where(db.tokens.c.id == token_id)
        if user is not None:
            q = q.where(db.tokens.c.user_id == user.id)
        with self.engine.begin() as conn:
            n = conn.execute(q).rowcount
        if not n:
            raise NotFound("no such token")

    def _from_token(self, token: str) -> Principal | None:
        h = _sha(token)
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(db.tokens).where(db.tokens.c.hash == h)).first()
        t = db.now()
        if row is None or (row.expires is not None and row.expires < t):
            return None
        if row.last_used is None or t - row.last_used > _TOUCH_EVERY:
            with self.engine.begin() as conn:
                conn.execute(db.tokens.update().where(db.tokens.c.id == row.id)
                             .values(last_used=t))
        user = self.users.get_by_id(row.user_id)
        return self.principal(user, "token") if user else None

    # -- gateway ------------------------------------------------------------------

    def _trusted(self, addr: str | None) -> bool:
        return self.peers.trusted(addr)

    def client_addr(self, request: Request) -> str:
        """The address failed attempts are counted by (see :mod:`.peers`)."""
        return self.peers.client(request)

    def is_gateway(self, request: Request) -> bool:
        """True if the request carries the gateway secret; a wrong one is refused."""
        sent = request.headers.get(GATEWAY_HEADER)
        if sent is None:
            return False
        secret = self.settings.gateway_secret
        if not secret or not hmac.compare_digest(sent.encode(), secret.encode()):
            raise Unauthorized("wrong gateway secret")
        return True

    def _from_proxy(self, name: str) -> Principal | None:
        try:
            user = self.users.get(name)
        except NotFound:
            if not self.settings.proxy_auto_create:
                return None
            try:
                user = self.users.create(name, None, "user", self.settings.default_quota_bytes)
            except Exception:  # a concurrent request created it, or the name is invalid
                try:
                    user = self.users.get(name)
                except NotFound:
                    return None
        return self.principal(user, "proxy")

    # -- one request ----------------------------------------------------------------

    def basic(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic credentials") from None
        return self.principal(self.check_password(name, password, self.client_addr(request)),
                              "basic")

    def identify(self, request: Request, *, allow_basic: bool = False) -> Principal:
        addr = Peers.peer(request)  # the TCP peer, never a forwarded address
        proxy_name = request.headers.get(self.settings.proxy_user_header)
        if proxy_name and (self.is_gateway(request) or self._trusted(addr)):
            p = self._from_proxy(proxy_name)
            if p:
                return p
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            p = self._from_token(header[7:].strip())
            if p is None:
                raise Unauthorized("invalid or revoked token")
            return p
        if allow_basic and header.lower().startswith("basic "):
            p = self.basic(request)
            if p:
                return p
        sid = request.cookies.get(SESSION_COOKIE)
        if sid:
            p = self._from_session(request, sid)
            if p:
                return p
        raise Unauthorized(headers={"WWW-Authenticate": 'Bearer realm="atelier"'})


def _auth(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def current_user(request: Request) -> Principal:
    """FastAPI dependency: the caller, or 401."""
    return _auth(request).identify(request)


def current_user_or_basic(request: Request) -> Principal:
    return _auth(request).identify(request, allow_basic=True)


def require_gateway(request: Request) -> None:
    """FastAPI dependency: the caller must carry the gateway secret (401 otherwise)."""
    if not _auth(request).is_gateway(request):
        raise Unauthorized(headers={"WWW-Authenticate": 'Bearer realm="atelier"'})


def require_admin(p: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not p.is_admin:
        from ..errors import Forbidden

        raise Forbidden("administrators only")
    return p


CurrentUser = Annotated[Principal, Depends(current_user)]
AdminUser = Annotated[Principal, Depends(require_admin)]
