"""Usage report: stored and transferred bytes per user, by day."""

from __future__ import annotations

from fastapi import APIRouter, Query

from ..access.auth import CurrentUser
from ..deps import FB
from ..errors import NotFound

router = APIRouter(prefix="/api", tags=["usage"])


@router.get("/usage")
def usage(p: CurrentUser, fb: FB, user: str | None = Query(None),
          since: str | None = Query(None, pattern=r"^\d{4}-\d{2}-\d{2}$")) -> list[dict]:
    """Your own usage; admins see everyone's (or one user's with ``user=``)."""
    if p.is_admin:
        names = [user] if user else [u.name for u in fb.users.list()]
        if user:
            fb.users.get(user)
    else:
        if user and user != p.name:
            raise NotFound(f"no user {user!r}")
        names = [p.name]
    return fb.usage.report(names, since)
