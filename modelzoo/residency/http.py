"""HTTP plumbing shared by the residency routers: JSON errors and role checks.

An APIRouter cannot install app-wide exception handlers, so each route renders the
package's errors itself (``{"error", "message", ...}`` with the status on the error
class), and request validation errors in the same shape (422 ``invalid_request``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from ..errors import ModelZooError, ResidencyForbidden


def jsonable(errors: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(errors, custom_encoder={Exception: str})


def error_response(exc: ModelZooError) -> JSONResponse:
    body = exc.to_json() if hasattr(exc, "to_json") else {"error": exc.code,
                                                          "message": str(exc)}
    headers = {"Retry-After": "5"} if exc.status == 429 else None
    return JSONResponse(jsonable(body), status_code=exc.status, headers=headers)


class JsonErrors(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ModelZooError as exc:
                return error_response(exc)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
                return JSONResponse({"error": "invalid_request",
                                     "message": f"{where}: {first.get('msg', 'invalid')}",
                                     "details": jsonable(exc.errors())}, status_code=422)

        return route


def require_role(user: Any, *allowed: str) -> None:
    role = getattr(user, "role", None)
    if role not in allowed:
        raise ResidencyForbidden(f"role {role!r} may not do this (needs {' or '.join(allowed)})",
                                 role=role)
