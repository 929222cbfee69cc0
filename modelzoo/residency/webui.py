"""The WebUI's own checkpoints, as its Atelier extension reports them, and commands for it.

The WebUI (A1111/Forge) loads checkpoints in its own process; the extension's adapter
(``extensions/atelier/atelier_ext/residency.py``) measures them and reports here over
loopback with the gateway secret. Commands from the "Models on GPU" tab are queued here
and taken by the adapter with a long poll, which runs them under the WebUI's queue lock
and posts the result back: the WebUI needs no route of its own and the service no way
into the WebUI process::

    tab ── POST /api/gpu/webui/load {model} ──▶ queue ◀── GET /api/gpu/webui/poll ── adapter
    tab ◀── GET /api/gpu/webui/events (SSE) ── state ◀── POST .../commands/{id}/result ──┘

    GET  /api/gpu/webui                   the last report, connection, recent commands (users)
    GET  /api/gpu/webui/events            the same as Server-Sent Events, on every change
    POST /api/gpu/webui/load {model}      make a checkpoint the WebUI's current one (users)
    POST /api/gpu/webui/unload {model}    drop a loaded checkpoint (admins)
    POST /api/gpu/webui/pin {model, pinned}  keep a checkpoint loaded (admins)
    GET  /api/gpu/webui/commands/{id}     one command's state
    gateway only (the extension): POST /api/gpu/webui/report, GET /api/gpu/webui/poll,
    POST /api/gpu/webui/commands/{id}/result

State lives in memory: the WebUI re-reports on its next poll after a service restart.
Standard library plus the web stack only; no torch.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from ..errors import (
    ModelZooError,
    ResidencyForbidden,
    UnknownCommand,
    WebUINotConnected,
    WebUIRefused,
)

CONNECTED_WITHIN = 60.0  # seconds since the adapter's last poll or report
COMMAND_TIMEOUT = 600.0  # a command the WebUI took but never answered
KEEP_COMMANDS = 50
KEEPALIVE = 15.0


class _JsonErrors(APIRoute):
    """ModelZoo errors as ``{"error", "message"}`` (a router cannot add app-wide handlers;
    residency/api.py does the same, but importing it would need torch's stack)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ModelZooError as exc:
                body = exc.to_json() if hasattr(exc, "to_json") else {
                    "error": exc.code, "message": str(exc)}
                return JSONResponse(body, status_code=exc.status)

        return route


class Report(BaseModel):
    """What the adapter sends; kept as sent (fields beyond these are passed on)."""

    model_config = ConfigDict(extra="allow")
    webui: dict[str, Any] = Field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)
    devices: list[dict[str, Any]] = Field(default_factory=list, max_length=64)
    limits: dict[str, Any] | None = None


class LoadBody(BaseModel):
    model: str = Field(min_length=1, max_length=1024)
    wait: float = Field(0, ge=0, le=300, description="seconds to wait for the result")


class PinBody(LoadBody):
    pinned: bool = True


class ResultBody(BaseModel):
    ok: bool
    message: str = Field("", max_length=4000)
    error: str | None = Field(None, max_length=100)
    status: int = Field(409, ge=400, le=599)


@dataclass
class Command:
    id: int
    action: Literal["load", "unload", "pin"]
    model: str
    user: str
    pinned: bool | None = None
    status: Literal["queued", "running", "done", "failed"] = "queued"
    created: float = field(default_factory=time.time)
    taken: float | None = None
    finished: float | None = None
    message: str = ""
    error: str | None = None
    http_status: int | None = None

    def for_webui(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "model": self.model,
                "pinned": self.pinned, "user": self.user}


class WebUILink:
    """The last report and the command queue, shared by the routes (one event loop)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.report: dict[str, Any] | None = None
        self.reported_at: float | None = None
        self.seen_at: float | None = None
        self.commands: OrderedDict[int, Command] = OrderedDict()
        self._ids = itertools.count(1)
        self.version = 0
        self.closing = False
        self._changed: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def changed(self) -> asyncio.Condition:
        if self._changed is None:  # made on first use, inside the serving loop
            self._changed = asyncio.Condition()
            self._loop = asyncio.get_running_loop()
        return self._changed

    def close(self) -> None:
        """A stop began (any thread): long polls answer now and event streams end, so
        the server's graceful stop is not held up by the WebUI's open requests."""
        self.closing = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: loop.create_task(self.bump()))

    async def bump(self) -> None:
        async with self.changed:
            self.version += 1
            self.changed.notify_all()

    def connected(self) -> bool:
        return self.seen_at is not None and self.clock() - self.seen_at < CONNECTED_WITHIN

    def expire(self) -> None:
        now = time.time()
        for cmd in self.commands.values():
            if cmd.status == "running" and cmd.taken and now - cmd.taken > COMMAND_TIMEOUT:
                cmd.status, cmd.finished = "failed", now
                cmd.error, cmd.message = "timeout", "the WebUI did not answer"
        while len(self.commands) > KEEP_COMMANDS:
            oldest = next(iter(self.commands.values()))
            if oldest.status in ("queued", "running"):
                break
            self.commands.popitem(last=False)

    def state(self) -> dict[str, Any]:
        self.expire()
        age = None if self.reported_at is None else round(self.clock() - self.reported_at, 1)
        checkpoints = (self.report or {}).get("checkpoints") or []
        current = next((c for c in checkpoints if isinstance(c, dict) and c.get("current")),
                       None)
        # checkpoints/current on top: what the Models on GPU page lists
        return {"connected": self.connected(), "report_age": age, "checkpoints": checkpoints,
                "current": current, "report": self.report,
                "commands": [asdict(c) for c in reversed(self.commands.values())]}

    def queue(self, action: Literal["load", "unload", "pin"], model: str, user: str,
              pinned: bool | None = None) -> Command:
        if not self.connected():
            raise WebUINotConnected("the WebUI is not connected to the service (not "
                                    "started, or its Atelier extension cannot reach it)")
        report = self.report or {}
        if action == "pin" and report.get("webui", {}).get("single_model"):
            raise WebUIRefused(str(report["webui"].get("notice") or
                                   "this WebUI keeps a single checkpoint: nothing to pin"))
        cmd = Command(next(self._ids), action, model, user, pinned)
        self.commands[cmd.id] = cmd
        return cmd

    def take(self) -> list[Command]:
        now = time.time()
        taken = [c for c in self.commands.values() if c.status == "queued"]
        for c in taken:
            c.status, c.taken = "running", now
        return taken

    def finish(self, cid: int, body: ResultBody) -> Command:
        cmd = self.commands.get(cid)
        if cmd is None:
            raise UnknownCommand(f"no command {cid}", command=cid)
        cmd.status = "done" if body.ok else "failed"
        cmd.finished, cmd.message = time.time(), body.message
        if not body.ok:
            cmd.error, cmd.http_status = body.error or "webui_refused", body.status
        return cmd


def _role(user: Any, *allowed: str) -> str:
    role = getattr(user, "role", None)
    if role not in allowed:
        raise ResidencyForbidden(f"role {role!r} may not do this (needs {' or '.join(allowed)})",
                                 role=role)
    return str(getattr(user, "name", "?"))


def build_webui_router(*, current_user: Any, require_gateway: Any,
                 link: WebUILink | None = None) -> APIRouter:
    """``current_user`` authenticates people; ``require_gateway`` the WebUI's extension."""
    link = link or WebUILink()
    router = APIRouter(route_class=_JsonErrors)
    router.link = link  # type: ignore[attr-defined]
    User = Depends(current_user)
    Gateway = Depends(require_gateway)

    async def wait_for(cmd: Command, seconds: float) -> None:
        deadline = link.clock() + seconds
        async with link.changed:
            while cmd.status in ("queued", "running"):
                left = deadline - link.clock()
                if left <= 0:
                    return
                try:
                    await asyncio.wait_for(link.changed.wait(), left)
                except TimeoutError:
                    return

    async def command(action: Literal["load", "unload", "pin"], body: LoadBody, name: str,
                      pinned: bool | None = None) -> Any:
        cmd = link.queue(action, body.model, name, pinned)
        await link.bump()
        if body.wait:
            await wait_for(cmd, body.wait)
        if cmd.status == "failed":
            raise WebUIRefused(cmd.message or "the WebUI refused the command",
                               command=asdict(cmd))
        return asdict(cmd)

    @router.get("/api/gpu/webui")
    async def webui_state(user: Any = User) -> dict[str, Any]:
        return link.state()

    @router.get("/api/gpu/webui/events", response_class=StreamingResponse,
                responses={200: {"description": "Server-Sent Events: the WebUI's state",
                                 "content": {"text/event-stream": {}}}})
    async def webui_events(user: Any = User) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            seen = -1
            while not link.closing:
                async with link.changed:
                    if link.version == seen:
                        try:
                            await asyncio.wait_for(link.changed.wait(), KEEPALIVE)
                        except TimeoutError:
                            pass
                    changed = link.version != seen
                    seen = link.version
                if changed:
                    data = json.dumps(link.state(), separators=(",", ":"))
                    yield f"id: {seen}\nevent: state\ndata: {data}\n\n".encode()
                else:
                    yield b": keep-alive\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    @router.post("/api/gpu/webui/load", status_code=202)
    async def webui_load(body: LoadBody, user: Any = User) -> Any:
        return await command("load", body, _role(user, "admin", "user"))

    @router.post("/api/gpu/webui/unload", status_code=202)
    async def webui_unload(body: LoadBody, user: Any = User) -> Any:
        return await command("unload", body, _role(user, "admin"))

    @router.post("/api/gpu/webui/pin", status_code=202)
    async def webui_pin(body: PinBody, user: Any = User) -> Any:
        return await command("pin", body, _role(user, "admin"), body.pinned)

    @router.get("/api/gpu/webui/commands/{cid}")
    async def webui_command(cid: int, user: Any = User) -> dict[str, Any]:
        link.expire()
        cmd = link.commands.get(cid)
        if cmd is None:
            raise UnknownCommand(f"no command {cid}", command=cid)
        return asdict(cmd)

    # -- the extension's side (gateway secret only) ------------------------------------

    @router.post("/api/gpu/webui/report")
    async def webui_report(body: Report, _: None = Gateway) -> dict[str, Any]:
        link.report = body.model_dump()
        link.reported_at = link.seen_at = link.clock()
        await link.bump()
        return {"ok": True}

    @router.get("/api/gpu/webui/poll")
    async def webui_poll(wait: float = Query(25.0, ge=0, le=60),
                         _: None = Gateway) -> dict[str, Any]:
        link.seen_at = link.clock()
        deadline = link.clock() + wait
        async with link.changed:
            while True:
                taken = link.take()
                if taken or link.closing or link.clock() >= deadline:
                    break
                try:
                    await asyncio.wait_for(link.changed.wait(), deadline - link.clock())
                except TimeoutError:
                    pass
        link.seen_at = link.clock()
        if taken:
            await link.bump()
        return {"commands": [c.for_webui() for c in taken]}

    @router.post("/api/gpu/webui/commands/{cid}/result")
    async def webui_result(cid: int, body: ResultBody, _: None = Gateway) -> dict[str, Any]:
        cmd = link.finish(cid, body)
        link.seen_at = link.clock()
        await link.bump()
        return asdict(cmd)

    return router
