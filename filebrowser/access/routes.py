"""Login, logout, API tokens and user administration."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from ..db import BIGINT_MAX
from ..deps import FB
from ..errors import Forbidden, InvalidInput
from .auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    AdminUser,
    CurrentUser,
    Principal,
    current_user_or_basic,
)
from .users import User

router = APIRouter(prefix="/api", tags=["account"])


class LoginBody(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class TokenBody(BaseModel):
    name: str = Field("cli", min_length=1, max_length=128)
    ttl_days: float | None = Field(None, gt=0, le=36500,
                                   description="Expiry in days; none: until revoked.")


class NewUser(BaseModel):
    name: str
    password: str | None = None
    role: Literal["admin", "user", "viewer"] = "user"
    quota_bytes: int | None = Field(None, ge=0, le=BIGINT_MAX)


class UserPatch(BaseModel):
    password: str | None = None
    role: Literal["admin", "user", "viewer"] | None = None
    quota_bytes: int | None = Field(None, ge=0, le=BIGINT_MAX)
    clear_quota: bool = False


def user_json(u: User) -> dict:
    return {"name": u.name, "role": u.role, "quota_bytes": u.quota_bytes}


@router.get("/health")
def health(request: Request) -> dict:
    """Public liveness check, with what the composed service adds to it (callables in
    ``app.state.health``: the idle time an autoscaler decides by)."""
    out: dict = {"status": "ok"}
    for part in getattr(request.app.state, "health", ()):
        out.update(part())
    return out


@router.post("/login")
def login(body: LoginBody, request: Request, response: Response, fb: FB) -> dict:
    """Check the password and open a browser session (cookie). Public."""
    user = fb.auth.check_password(body.username, body.password, fb.auth.client_addr(request))
    sid, csrf = fb.auth.open_session(user)
    max_age = int(fb.settings.session_max_days * 86400)
    secure = fb.settings.cookie_secure
    response.set_cookie(SESSION_COOKIE, sid, max_age=max_age, httponly=True, samesite="lax",
                        secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, httponly=False, samesite="lax",
                        secure=secure, path="/")
    return {**user_json(user), "csrf_token": csrf}


@router.post("/logout")
def logout(p: CurrentUser, response: Response, fb: FB) -> dict:
    if p.session_hash:
        fb.auth.close_session(p.session_hash)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return {"ok": True}


@router.get("/me")
def me(p: CurrentUser) -> dict:
    return {**user_json(p.user), "via": p.via, "home": f"users/{p.name}",
            "readable": list(p.scope.read), "writable": list(p.scope.write)}


@router.post("/tokens")
def create_token(body: TokenBody, p: Annotated[Principal, Depends(current_user_or_basic)],
                 fb: FB) -> dict:
    """A revocable API token (Bearer) for the CLI and desktop; accepts a session or Basic."""
    return fb.auth.create_token(p.user, body.name, body.ttl_days)


@router.get("/tokens")
def list_tokens(p: CurrentUser, fb: FB, all_users: bool = False) -> list[dict]:
    """Your API tokens; admins with ``all_users=true``: everyone's, with a ``user`` field."""
    return fb.auth.list_tokens(None if all_users and p.is_admin else p.user)


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: Annotated[int, PathParam(ge=1, le=BIGINT_MAX)], p: CurrentUser,
                 fb: FB) -> dict:
    """Revoke one of your tokens (admins: anyone's)."""
    fb.auth.revoke_token(None if p.is_admin else p.user, token_id)
    return {"ok": True}


@router.get("/sessions")
def list_sessions(p: CurrentUser, fb: FB, all_users: bool = False) -> list[dict]:
    """Live browser sessions: yours; admins with ``all_users=true``: everyone's."""
    return fb.auth.list_sessions(None if all_users and p.is_admin else p.user, p.session_hash)


@router.delete("/sessions/{handle}")
def end_session(handle: Annotated[str, PathParam(max_length=64)], p: CurrentUser,
                fb: FB) -> dict:
    """End a browser session: one of yours (admins: anyone's)."""
    fb.auth.end_session(None if p.is_admin else p.user, handle)
    return {"ok": True}


@router.get("/users")
def list_users(_: AdminUser, fb: FB) -> list[dict]:
    return [user_json(u) for u in fb.users.list()]


@router.post("/users", status_code=201)
def add_user(body: NewUser, _: AdminUser, fb: FB) -> dict:
    if body.password is None:
        raise InvalidInput("a password is required")
    quota = body.quota_bytes if body.quota_bytes is not None else fb.settings.default_quota_bytes
    return user_json(fb.users.create(body.name, body.password, body.role, quota))


@router.patch("/users/{name}")
def patch_user(name: str, body: UserPatch, p: CurrentUser, fb: FB) -> dict:
    """Admins change anything; a user may change only their own password."""
    if not p.is_admin:
        if name != p.name or body.role is not None or body.quota_bytes is not None \
                or body.clear_quota:
            raise Forbidden("you may only change your own password")
    quota: int | None | str = "keep"
    if body.clear_quota:
        quota = None
    elif body.quota_bytes is not None:
        quota = body.quota_bytes
    return user_json(fb.users.update(name, password=body.password, role=body.role,
                                     quota_bytes=quota))


@router.delete("/users/{name}")
def remove_user(name: str, p: AdminUser, fb: FB) -> dict:
    if name == p.name:
        raise InvalidInput("you cannot remove your own account")
    fb.users.remove(name)
    return {"ok": True}
