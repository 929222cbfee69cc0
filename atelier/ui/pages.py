"""Serve the built web pages under ``/ui/``; ``/`` redirects there.

Layout of the committed build (``web/`` -> ``npm run build``)::

    atelier/ui/static/index.html          the app shell, every page path answers with it
    atelier/ui/static/assets/<name>-<hash>.js|css   content-hashed, cached for a year

Every URL in the pages is relative, so they work below a proxy prefix (``/atelier/ui/``)
as well as at ``/ui/``. A deep link such as ``/ui/files/users/ann/x`` gets the shell with
``<base href="../../../../">`` (one ``../`` per folder below ``/ui/``), so the relative asset
and API URLs resolve from ``/ui/`` whatever the depth and whatever the prefix: the service
never needs to know the prefix.

The pages are public (they are the login page's shell and carry no data); every API call
they make is authenticated. They run under a strict CSP: scripts and styles only from
files of our own origin, nothing inline, no framing by other origins.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.responses import FileResponse

from filebrowser import AtelierError

STATIC = Path(__file__).resolve().parent / "static"
PAGES = ("login", "files", "images", "models", "gpu", "admin", "share")

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'self'",
])
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
ASSET_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
}
_ASSET_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.(js|css|svg|png|webp|woff2)$")
_BASE_MARK = "<head>"


@lru_cache(maxsize=1)
def _shell() -> str:
    return (STATIC / "index.html").read_text(encoding="utf-8")


def shell_for(rest: str) -> str:
    """The app shell for the page ``/ui/<rest>``, with a relative ``<base>``."""
    depth = rest.count("/")
    base = "../" * depth or "./"
    return _shell().replace(_BASE_MARK, f'{_BASE_MARK}<base href="{html.escape(base)}">', 1)


def page(rest: str) -> Response:
    return HTMLResponse(shell_for(rest), headers=PAGE_HEADERS)


# Optional APIs the pages offer when the service has them (other packages add them).
FEATURES = {"models": "/api/models/jobs", "gpu": "/api/gpu", "gpu_webui": "/api/gpu/webui",
            "sessions": "/api/sessions", "metrics": "/metrics"}


def features(app: FastAPI) -> dict[str, bool]:
    # From the OpenAPI document (built once, cached by FastAPI): it lists the routes of
    # every included router, whatever the FastAPI version's internal route layout.
    paths = app.openapi().get("paths", {})
    return {name: path in paths for name, path in FEATURES.items()}


def session_json(request: Request) -> dict:
    """Who the browser is, or ``signed_in: false``: always 200, so that a visitor who is
    not signed in costs no failed request (the browser logs every 401 and 404 to its
    console). Which optional APIs exist comes from the routes, not from probing them."""
    try:
        p = request.app.state.auth.identify(request)
    except AtelierError:
        return {"signed_in": False}
    me = {"name": p.name, "role": p.role, "quota_bytes": p.user.quota_bytes, "via": p.via,
          "home": f"users/{p.name}", "readable": list(p.scope.read),
          "writable": list(p.scope.write)}
    return {"signed_in": True, "me": me, "features": features(request.app)}


def install(app: FastAPI) -> None:
    """Add the page routes to ``app`` (kept out of the OpenAPI document: they are not API)."""
    if not (STATIC / "index.html").is_file():  # a source checkout without a build
        return

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        # Relative, so that a proxy's prefix survives: /atelier/ -> /atelier/ui/
        return RedirectResponse("ui/", status_code=307)

    @app.get("/ui", include_in_schema=False)
    def ui_no_slash() -> Response:
        return RedirectResponse("ui/", status_code=307)

    @app.get("/ui/", include_in_schema=False)
    def ui_index() -> Response:
        return page("")

    @app.get("/ui/session", include_in_schema=False)
    def ui_session(request: Request) -> Response:
        return JSONResponse(session_json(request), headers={"Cache-Control": "no-store"})

    @app.get("/ui/assets/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if not _ASSET_NAME.match(name) or not (STATIC / "assets" / name).is_file():
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(STATIC / "assets" / name, headers=ASSET_HEADERS)

    @app.get("/ui/{rest:path}", include_in_schema=False)
    def ui_page(rest: str, request: Request) -> Response:
        first = rest.split("/", 1)[0]
        if first not in PAGES:
            return HTMLResponse(shell_for(rest), status_code=404, headers=PAGE_HEADERS)
        return page(rest)
