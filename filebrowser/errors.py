"""The FileBrowser error tree.

Every error the service raises on purpose is an ``AtelierError``; one handler
(:func:`install_handlers`) renders them all as JSON ``{"error", "message"}`` with
the status carried on the class. Anything else that goes wrong is a logged 500
``internal_error`` in the same shape (:mod:`filebrowser.guards`). Errors also subclass
the matching built-in, so plain Python code can catch them without knowing this module::

    AtelierError
    ├── BadRequest (400, ValueError)
    │   ├── BadPath            a path that can never be valid: NUL, "..", absolute, too long
    │   └── InvalidInput
    ├── Unauthorized (401, PermissionError)
    ├── Forbidden (403, PermissionError)
    │   ├── ReadOnly           shared models/ for a non-admin, anything for a viewer
    │   └── CsrfFailed
    ├── NotFound (404, FileNotFoundError)   also what an out-of-scope path answers
    ├── Conflict (409, FileExistsError)
    ├── PreconditionFailed (412)
    ├── PayloadTooLarge (413)
    ├── RangeNotSatisfiable (416)
    ├── TooManyRequests (429)
    └── InsufficientStorage (507, OSError)
        └── QuotaExceeded

Transfer errors (tus, WebDAV): Gone (410), UnsupportedMediaType (415), Locked (423),
ChecksumMismatch (460, the tus checksum extension's status).
Image errors: SharePasswordRequired (401), ShareExpired (410), Unavailable (503).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from atelier_io.diskwrite import DiskFull


class AtelierError(Exception):
    status: int = 500
    code: str = "internal_error"
    message: str = "internal error"

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        self.message = message or self.message
        self.headers = headers or {}
        self.extra = extra
        super().__init__(self.message)

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


class BadRequest(AtelierError, ValueError):
    status, code, message = 400, "bad_request", "bad request"


class BadPath(BadRequest):
    code, message = "bad_path", "invalid path"


class InvalidInput(BadRequest):
    code = "invalid_input"


class Unauthorized(AtelierError, PermissionError):
    status, code, message = 401, "unauthorized", "authentication required"


class Forbidden(AtelierError, PermissionError):
    status, code, message = 403, "forbidden", "not allowed"


class ReadOnly(Forbidden):
    code, message = "read_only", "this location is read-only for you"


class CsrfFailed(Forbidden):
    code, message = "csrf_failed", "missing or wrong X-CSRF-Token header"


class NotFound(AtelierError, FileNotFoundError):
    status, code, message = 404, "not_found", "no such file or folder"


class Conflict(AtelierError, FileExistsError):
    status, code, message = 409, "conflict", "already exists"


class PreconditionFailed(AtelierError):
    status, code, message = 412, "precondition_failed", "precondition failed"


class PayloadTooLarge(AtelierError):
    status, code, message = 413, "payload_too_large", "payload too large"


class RangeNotSatisfiable(AtelierError):
    status, code, message = 416, "range_not_satisfiable", "requested range not satisfiable"


class TooManyRequests(AtelierError):
    status, code, message = 429, "too_many_requests", "too many attempts; try again later"


class InsufficientStorage(AtelierError, OSError):
    status, code, message = 507, "insufficient_storage", "not enough free space"


class QuotaExceeded(InsufficientStorage):
    code, message = "quota_exceeded", "this would exceed your storage quota"


# TRANSFER ERRORS (issue 3: tus, WebDAV, zip) -------------------------------------------


class Gone(AtelierError, FileNotFoundError):
    status, code, message = 410, "gone", "this upload expired or was removed"


class UnsupportedMediaType(AtelierError):
    status, code, message = 415, "unsupported_media_type", "unsupported content type"


class Locked(AtelierError):
    status, code, message = 423, "locked", "another request is writing this upload"


class ChecksumMismatch(AtelierError, ValueError):
    status, code, message = 460, "checksum_mismatch", "the chunk's checksum does not match"


# END TRANSFER ERRORS --------------------------------------------------------------------


# IMAGE ERRORS (issue 4: thumbnails, index, shares) ----------------------------------------


class SharePasswordRequired(Unauthorized):
    code, message = "share_password_required", "this share needs its password"


class ShareExpired(AtelierError, FileNotFoundError):
    status, code, message = 410, "share_expired", "this share link has expired"


class Unavailable(AtelierError):
    status, code, message = 503, "unavailable", "the image index is switched off"


# END IMAGE ERRORS -----------------------------------------------------------------------


def error_response(exc: AtelierError) -> JSONResponse:
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=exc.headers)


_CODES = {cls.status: cls.code for cls in (
    BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PreconditionFailed,
    PayloadTooLarge, RangeNotSatisfiable, TooManyRequests, InsufficientStorage, Gone,
    UnsupportedMediaType, Locked, Unavailable)} | {422: "invalid_input", 500: "internal_error"}


def code_for_status(status: int) -> str:
    """The ``error`` code of a status our tree has no class for here (a framework's
    404/405, a WebDAV layer's 412): the tree's own code, else the reason in snake case."""
    if status in _CODES:
        return _CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "internal_error" if status >= 500 else "bad_request"


def status_json(status: int, message: str | None = None,
                headers: dict[str, str] | None = None) -> JSONResponse:
    """An ``{error, message}`` answer for a bare status."""
    if not message:
        try:
            message = HTTPStatus(status).phrase.lower()
        except ValueError:
            message = "error"
    return JSONResponse({"error": code_for_status(status), "message": message},
                        status_code=status, headers=headers)


INTERNAL_MESSAGE = "internal error; the server log has the details"


class ErrorBody(BaseModel):
    """What every 4xx/5xx answer holds (some add fields, e.g. ``needed`` on a quota)."""

    model_config = ConfigDict(extra="allow")
    error: str = Field(description="a stable code: not_found, read_only, quota_exceeded...")
    message: str = Field(description="what went wrong, for a person")


# Documented on every route (the app's ``responses``), so the OpenAPI says what clients
# get, and a schema check (tests/atelier/test_api_fuzz.py) holds every error to it.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "The request cannot be served as sent"},
    "5XX": {"model": ErrorBody, "description": "The service failed (logged) or is short "
            "of space or a backend"},
}


def install_handlers(app: FastAPI) -> None:
    """Render our errors, validation errors and disk-full errors as ``{error, message}``."""

    async def on_atelier(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AtelierError)
        return error_response(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        msg = f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request"
        return JSONResponse({"error": "invalid_input", "message": msg}, status_code=422)

    async def on_disk_full(_: Request, exc: Exception) -> JSONResponse:
        return error_response(InsufficientStorage("the disk is full"))

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        # Starlette's own answers (no such route: 404, wrong method: 405) in our shape
        assert isinstance(exc, StarletteHTTPException)
        return status_json(exc.status_code, str(exc.detail) if exc.detail else None,
                           dict(exc.headers or {}))

    async def on_internal(_: Request, exc: Exception) -> JSONResponse:
        # Last resort, for errors outside the guards (filebrowser.guards.JsonErrors,
        # which logs them); Starlette re-raises afterwards so the server logs it too.
        return status_json(500, INTERNAL_MESSAGE)

    app.add_exception_handler(AtelierError, on_atelier)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(DiskFull, on_disk_full)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_internal)
