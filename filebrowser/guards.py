"""ASGI guards around the whole app: every router, the WebDAV mount, ModelZoo's routes.

``JsonErrors`` (outermost): every error answer is JSON ``{"error", "message"}``.

- An exception nobody handled becomes a 500 ``internal_error``, logged with its
  traceback, instead of Starlette's plain-text page (or, deeper in a sub-app, a
  dropped connection).
- A 4xx/5xx that a layer wrote as text, HTML or with no body (Starlette's Range
  errors, WsgiDAV's error pages) is rewritten as JSON with the same status and
  headers. XML bodies (WebDAV preconditions, RFC 4918 section 16) and JSON pass as
  they are.
- Once a response has started its status cannot change: an error in the middle of
  a stream can only end the connection. Streams therefore check everything they
  can before their first byte (see ``files/zip_routes.py``).

``FiniteJson``: JSON request bodies may not hold ``NaN``, ``Infinity`` or numbers
that overflow a float (``1e400``). Python's ``json`` accepts them, pydantic lets them
through ``float`` fields, and they fail only when an answer is encoded, as a 500.
Refused with 422 ``invalid_input`` before any route runs. FastAPI also parses a body
with no ``Content-Type`` as JSON, so those are checked too (outside the WebDAV
mount, whose PUT bodies are files); at most :data:`MAX_CHECKED` bytes are held.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import INTERNAL_MESSAGE, status_json

log = logging.getLogger("atelier.errors")

MAX_CHECKED = 16 * 1024 * 1024  # JSON bodies larger than this are refused (413)
_KEPT_TYPES = ("application/json", "application/problem+json", "application/xml",
               "text/xml")
_MESSAGE_MAX = 500


def _rewritable(headers: list[tuple[bytes, bytes]]) -> bool:
    """An error body we replace: text, HTML or nothing (not JSON, not DAV's XML)."""
    for k, v in headers:
        if k.lower() == b"content-type":
            ctype = v.decode("latin-1").split(";")[0].strip().lower()
            return not (ctype in _KEPT_TYPES or ctype.endswith(("+json", "+xml")))
    return True


class JsonErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False  # a start message went to the client
        held: Message | None = None  # an error's start message, its body being replaced
        body: list[bytes] = []

        async def guarded(message: Message) -> None:
            nonlocal started, held
            if held is not None:
                if message["type"] == "http.response.body":
                    body.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        started = True
                        await self._send_json(scope, receive, send, held, b"".join(body))
                return
            if message["type"] == "http.response.start":
                if message["status"] >= 400 and _rewritable(message.get("headers", [])):
                    held = message
                    return
                started = True
            await send(message)

        try:
            await self.app(scope, receive, guarded)
        except Exception:
            if started:
                raise  # mid-stream: nothing to do but end the connection (uvicorn logs it)
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            await status_json(500, INTERNAL_MESSAGE)(scope, receive, send)
            return
        if held is not None and not started:  # the app ended without the last body part
            await self._send_json(scope, receive, send, held, b"".join(body))

    @staticmethod
    async def _send_json(scope: Scope, receive: Receive, send: Send, start: Message,
                         text: bytes) -> None:
        status = start["status"]
        ctype = Headers(raw=start.get("headers", [])).get("content-type", "")
        message = None
        if ctype.startswith("text/plain") and text.strip():
            message = text.decode("utf-8", "replace").strip()[:_MESSAGE_MAX]
        if status >= 500:
            log.error("%s %s answered %d: %s", scope.get("method"), scope.get("path"),
                      status, text[:_MESSAGE_MAX].decode("utf-8", "replace"))
            message = INTERNAL_MESSAGE if status == 500 else message
        # keep what the layer said besides the body: Allow, Retry-After, Content-Range,
        # WWW-Authenticate, Lock-Token...
        dropped = (b"content-type", b"content-length", b"transfer-encoding")
        headers = {k.decode("latin-1"): v.decode("latin-1")
                   for k, v in start.get("headers", []) if k.lower() not in dropped}
        await status_json(status, message, headers)(scope, receive, send)


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text)
    return value


def non_finite(body: bytes) -> str | None:
    """Why ``body`` (JSON) is refused, or None (also for what is not JSON at all: the
    route says so in its own words)."""
    if not body.strip():
        return None
    try:
        json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except _NonFinite as exc:
        return f"numbers must be finite; got {str(exc)[:40]}"
    except RecursionError:
        return "the JSON body is nested too deeply"
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError) or isinstance(exc, UnicodeDecodeError):
            return None
        return f"a number in the JSON body is too long ({exc})"[:_MESSAGE_MAX]
    return None


def _json_body(scope: Scope) -> bool | None:
    """True: a JSON body to check; None: no content type (checked if small); False: skip."""
    if scope["method"] in ("GET", "HEAD", "OPTIONS"):
        return False
    path: str = scope.get("path", "")
    if path == "/dav" or path.startswith("/dav/"):
        return False
    ctype = Headers(scope=scope).get("content-type")
    if ctype is None:
        return None
    main = ctype.split(";")[0].strip().lower()
    return main == "application/json" or (main.startswith("application/")
                                          and main.endswith("+json"))


class FiniteJson:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = _json_body(scope) if scope["type"] == "http" else False
        if kind is False:
            await self.app(scope, receive, send)
            return
        held: list[Message] = []
        size = 0
        more = True
        while more and size <= MAX_CHECKED:
            message = await receive()
            held.append(message)
            if message["type"] != "http.request":
                break  # the client went away: let the app see it
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        if message["type"] == "http.request" and not more:
            problem = non_finite(b"".join(m.get("body", b"") for m in held))
            if problem:
                await status_json(422, problem)(scope, receive, send)
                return
        elif kind is True and message["type"] == "http.request":
            await status_json(413, f"JSON bodies are limited to {MAX_CHECKED} bytes")(
                scope, receive, send)
            return

        async def replay() -> Message:
            if held:
                return held.pop(0)
            return await receive()

        await self.app(scope, replay, send)
