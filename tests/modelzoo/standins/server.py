"""Run an ASGI app on 127.0.0.1 in a thread, and serve bytes with Range like a CDN does.

Shared by the Civitai, Hugging Face and ModelScope stand-ins (and by the web UI tests).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    """An app under uvicorn on a free loopback port; ``stop()`` ends it."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("stand-in did not start")
            time.sleep(0.01)

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class Traffic:
    """What a stand-in saw: requests (path, query, headers) and body bytes sent."""

    log: list[dict[str, Any]] = field(default_factory=list)
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request: Request) -> None:
        with self.lock:
            self.log.append({"method": request.method, "path": request.url.path,
                             "query": str(request.url.query),
                             "host": request.headers.get("host", ""),
                             "headers": dict(request.headers), "t": time.monotonic()})

    def requests(self, prefix: str = "") -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.log if r["path"].startswith(prefix)]

    def add(self, n: int) -> None:
        with self.lock:
            self.sent += n


def send_bytes(request: Request, data: bytes, *, traffic: Traffic, name: str | None = None,
               content_type: str = "application/octet-stream", etag: str | None = None,
               rate: int = 0, disposition: str | None = None,
               extra: dict[str, str] | None = None) -> Response:
    """A file with Range (206, or 416 past the end), ETag and Content-Disposition;
    ``rate`` bytes/s per response throttles it (a CDN capping each connection)."""
    size = len(data)
    start, end, status = 0, size, 200
    rng = request.headers.get("range")
    if rng and rng.startswith("bytes="):
        lo, _, hi = rng[6:].partition("-")
        if lo.isdigit():
            start = int(lo)
            end = min(size, int(hi) + 1) if hi.isdigit() else size
            if start >= size:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
            status = 206
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start)}
    if etag:
        headers["ETag"] = etag
    if disposition is not None:
        headers["Content-Disposition"] = disposition
    elif name:
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers.update(extra or {})
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=content_type)
    body = data[start:end]

    async def chunks() -> AsyncIterator[bytes]:
        t0 = time.monotonic()
        sent = 0
        for i in range(0, len(body), 64 * 1024):
            chunk = body[i:i + 64 * 1024]
            yield chunk
            traffic.add(len(chunk))
            sent += len(chunk)
            if rate:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)

    return StreamingResponse(chunks(), status_code=status, headers=headers,
                             media_type=content_type)
