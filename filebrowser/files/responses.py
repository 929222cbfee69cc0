"""Files as HTTP responses: Range/ETag downloads with the safe headers every route uses.

Stored HTML or SVG must never run in our origin (filebrowser CVE-2021-37794,
CVE-2023-39612): only the image and text types below are ever shown inline, everything
else is an attachment, and every file answer carries ``nosniff`` and a sandboxing CSP.

A file is served from the descriptor the jail opened and checked (:class:`Handle`),
never by opening its path again: starlette's ``FileResponse`` (Range, multiple ranges,
If-Range, HEAD) with its one file-opening hook pointed at that descriptor.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import Response
from starlette.background import BackgroundTask
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from ..access.jail import Handle

# Types a browser may show inline; everything else (HTML, SVG, ...) is an attachment.
INLINE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                ".webp": "image/webp", ".gif": "image/gif", ".avif": "image/avif",
                ".txt": "text/plain; charset=utf-8"}
# Stored HTML/SVG must never run in our origin (filebrowser CVE-2021-37794, CVE-2023-39612).
SAFE_HEADERS = {"X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
                "Cross-Origin-Resource-Policy": "same-origin"}


# What a file download documents in the OpenAPI (its type depends on the file).
FILE_RESPONSES: dict[int | str, dict] = {
    200: {"description": "The file's bytes",
          "content": {t: {} for t in ("application/octet-stream", *INLINE_TYPES.values())}},
    206: {"description": "The ranges asked for (Range)",
          "content": {"application/octet-stream": {}, "multipart/byteranges": {}}},
    304: {"description": "Not modified (If-None-Match)"},
}


class _DescriptorResponse(FileResponse):
    """``FileResponse`` reading an open descriptor it owns (closed when sent, or when
    the response is dropped unsent)."""

    chunk_size = 1024 * 1024  # starlette's 64 KiB costs a thread hop per 64 KiB

    def __init__(self, fd: int, **kw: Any) -> None:
        self._file = os.fdopen(fd, "rb", buffering=0)
        super().__init__(f"/proc/self/fd/{fd}", **kw)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # a server offering "pathsend" would reopen the path: always send the bytes
        extensions = {k: v for k, v in scope.get("extensions", {}).items()
                      if k != "http.response.pathsend"}
        try:
            await super().__call__({**scope, "extensions": extensions}, receive, send)
        finally:
            self._file.close()

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        yield anyio.AsyncFile(self._file)


def etag_of(st: os.stat_result) -> str:
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


def content_disposition(name: str, inline: bool) -> str:
    """The header for a download named ``name``: user input (a zip's ``name``, a file
    another program wrote), so control characters go first; CR/LF/NUL in a header
    would split it or make the server drop the connection."""
    kind = "inline" if inline else "attachment"
    name = "".join("_" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 else c for c in name)
    ascii_name = name.encode("ascii", "replace").decode()
    for c in '"?\\':
        ascii_name = ascii_name.replace(c, "_")
    return (f"{kind}; filename=\"{ascii_name}\"; "
            f"filename*=UTF-8''{urllib.parse.quote(name, safe='')}")


def file_response(request: Request, src: Handle, *, inline: bool,
                  on_sent: BackgroundTask | None = None) -> Response:
    """The opened file with Range/If-Range (206/416), ETag/If-None-Match (304),
    Last-Modified. ``src.name`` is the download's file name."""
    fd = src.open_file()
    try:
        st = os.fstat(fd)
        etag = etag_of(st)
        ext = os.path.splitext(src.name)[1].lower()
        show_inline = inline and ext in INLINE_TYPES
        headers = {**SAFE_HEADERS, "ETag": etag,
                   "Content-Disposition": content_disposition(src.name, show_inline),
                   "Cache-Control": "private, no-cache"}
        inm = request.headers.get("if-none-match")
        if inm and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
            os.close(fd)
            return Response(status_code=304, headers=headers)
    except BaseException:
        os.close(fd)
        raise
    media = INLINE_TYPES[ext] if show_inline else "application/octet-stream"
    return _DescriptorResponse(fd, media_type=media, headers=headers, stat_result=st,
                               background=on_sent)


def range_bytes(header: str | None, size: int) -> int:
    """Bytes a Range header asks for (for accounting; starlette validates it)."""
    if not header or not header.startswith("bytes="):
        return size
    total = 0
    for part in header[6:].split(","):
        a, _, b = part.strip().partition("-")
        try:
            if a == "":
                total += min(int(b), size)
            else:
                end = min(int(b), size - 1) if b else size - 1
                total += max(0, end - int(a) + 1)
        except ValueError:
            return 0
    return min(total, size)
