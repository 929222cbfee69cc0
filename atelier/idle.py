"""Idle scale-down: after ``ATELIER_IDLE_MINUTES`` with no request and no running job,
give back GPU and pinned memory and run ``ATELIER_IDLE_COMMAND`` once.

    request ──► IdleMiddleware ──► Activity.begin/end     (/api/health and /metrics are
                                                           not activity: autoscalers poll)
    jobs    ──► busy() hooks (fetch downloads, generation queue) ──► Activity.mark
    IdleWatch (an asyncio task, every ~second)
        idle_seconds >= limit, first time ──► release (thread pool) ──► command (async
                                              subprocess, no shell; exit code and output
                                              logged) ── once per idle period
    GET /api/health ──► {"idle_seconds", "idle", "idle_after_seconds"}

A request in flight is activity for as long as it runs (a tus PATCH streaming a model),
except an event stream (``text/event-stream``): a forgotten browser tab watching job
progress must not keep a GPU container alive; its start counts, its hours open do not.
Index rescans are maintenance, not work, and do not count either.

Off unless set: a standalone user's service must not drop its models from the GPU
behind their back, and nothing here knows what scale-to-zero means on their platform.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("atelier.idle")

# autoscalers' probes, and the WebUI extension's heartbeats (its long poll for commands
# every 25 s, its lifeline): a WebUI left open with nobody at it must still go idle.
# The extension's report (a checkpoint loaded in the WebUI) does count: someone is using it.
NOT_ACTIVITY = frozenset({"/api/health", "/metrics", "/api/gpu/webui/poll",
                          "/api/gateway/lifeline", "/api/gateway/proof"})
OUTPUT_LOGGED = 4000  # characters of the command's output kept in the log


class IdleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_", extra="ignore")

    idle_minutes: float | None = Field(
        None, gt=0,
        description="After this many minutes with no request (health checks and /metrics "
                    "aside) and no running job (model downloads, generation), release GPU "
                    "and pinned memory and run idle_command once; fractions allowed. "
                    "Unset: never (the standalone default).")
    idle_command: str | None = Field(
        None,
        description="Command run once when idle is reached, e.g. the platform's "
                    "scale-to-zero call; split like a shell would (shlex) but run without "
                    "one. Its exit code and output go to the log.")


class Activity:
    """The last moment of activity, and what is going on now (thread-safe, monotonic)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = clock()
        self.in_flight = 0
        self.busy: list[Callable[[], int]] = []  # jobs running elsewhere: > 0 is busy
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.last = self.clock()

    def end(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.last = self.clock()

    def mark(self) -> None:
        with self._lock:
            self.last = self.clock()

    def jobs(self) -> int:
        n = 0
        for count in self.busy:
            try:
                n += count()
            except Exception:  # a hook that fails must not make a busy service look idle
                log.exception("idle: a job count failed")
                return 1
        return n

    def idle_seconds(self) -> float:
        """Seconds since the last activity; 0 while a request or a job runs."""
        if self.jobs():
            self.mark()
        with self._lock:
            if self.in_flight:
                return 0.0
            return max(0.0, self.clock() - self.last)


class IdleMiddleware:
    """Pure ASGI (streams pass through untouched): counts requests as activity."""

    def __init__(self, app: Any, activity: Activity) -> None:
        self.app = app
        self.activity = activity

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in NOT_ACTIVITY:
            await self.app(scope, receive, send)
            return
        self.activity.begin()
        ended = False

        async def watch(message: Any) -> None:
            nonlocal ended
            if message["type"] == "http.response.start" and not ended:
                ctype = dict(message.get("headers") or []).get(b"content-type", b"")
                if ctype.startswith(b"text/event-stream"):
                    ended = True  # an open event stream is not work going on
                    self.activity.end()
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if not ended:
                self.activity.end()


class IdleWatch:
    """Notices idle, then releases memory and runs the command, once per idle period."""

    def __init__(self, activity: Activity, settings: IdleSettings,
                 release: Callable[[], Any] | None = None) -> None:
        self.activity = activity
        self.limit = None if settings.idle_minutes is None else settings.idle_minutes * 60
        self.command = shlex.split(settings.idle_command) if settings.idle_command else []
        self.release = release
        self.reached = False
        self.times_reached = 0

    def health(self) -> dict[str, Any]:
        idle = self.activity.idle_seconds()
        return {"idle_seconds": round(idle, 3), "idle": self.reached,
                "idle_after_seconds": self.limit}

    async def run(self) -> None:
        if self.limit is None:
            return
        tick = min(1.0, max(0.05, self.limit / 4))
        while True:
            await asyncio.sleep(tick)
            try:
                await self.check()
            except Exception:
                log.exception("idle check failed")

    async def check(self) -> None:
        assert self.limit is not None
        idle = await asyncio.to_thread(self.activity.idle_seconds)  # job hooks read DBs
        if idle < self.limit:
            self.reached = False  # activity since: the next idle period counts again
            return
        if self.reached:
            return
        self.reached = True
        self.times_reached += 1
        log.info("idle for %.0f s: releasing memory", idle)
        if self.release is not None:
            try:
                await asyncio.to_thread(self.release)
            except Exception:
                log.exception("idle: releasing memory failed")
        if self.command:
            await run_command(self.command)


async def run_command(argv: list[str]) -> int | None:
    """Run ``argv`` without a shell and log its exit code and output; None if it could
    not start."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
    except OSError as exc:
        log.error("idle command %s could not start: %s", argv[0], exc)
        return None
    out, _ = await proc.communicate()
    text = out.decode(errors="replace").strip()[-OUTPUT_LOGGED:]
    level = logging.INFO if proc.returncode == 0 else logging.ERROR
    log.log(level, "idle command %s exited with %s%s", argv[0], proc.returncode,
            f": {text}" if text else "")
    return proc.returncode
