"""Errors of the Ray Serve edition in the service's shape: ``{"error", "message"}``.

FileBrowser's own handler installer is internal to it; these render the same answers
for the two small apps here (the ingress and the in-process app of each replica).
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from filebrowser import AtelierError

log = logging.getLogger("atelier.cluster")


class ReplicaUnavailable(AtelierError):
    """The GPU replica chosen for a request failed or went away before answering."""

    status = 503
    code = "replica_unavailable"
    message = "no GPU replica could answer; try again"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


def install(app: FastAPI) -> None:
    async def on_atelier(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AtelierError)
        return JSONResponse(exc.to_json(), status_code=exc.status, headers=exc.headers)

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        # Starlette's own answers (no such route: 404, wrong method: 405)
        assert isinstance(exc, StarletteHTTPException)
        phrase = _phrase(exc.status_code)
        return JSONResponse({"error": phrase.replace(" ", "_").replace("-", "_"),
                             "message": str(exc.detail) if exc.detail else phrase},
                            status_code=exc.status_code, headers=dict(exc.headers or {}))

    app.add_exception_handler(AtelierError, on_atelier)
    app.add_exception_handler(StarletteHTTPException, on_http)
