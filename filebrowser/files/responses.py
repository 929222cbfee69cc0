"""Files as HTTP responses: Range/ETag downloads with the safe headers every route uses.

Stored HTML or SVG must never run in our origin (filebrowser CVE-2021-37794,
CVE-2023-39612): only the image and text types below are ever shown inline, everything
else is an attachment, and every file answer carries ``nosniff`` and a sandboxing CSP.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from fastapi import Request
from fastapi.responses import Response
from starlette.background import BackgroundTask
from starlette.responses import FileResponse

# Types a browser may show inline; everything else (HTML, SVG, ...) is an attachment.
INLINE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                ".webp": "image/webp", ".gif": "image/gif", ".avif": "image/avif",
                ".txt": "text/plain; charset=utf-8"}
# Stored HTML/SVG must never run in our origin (filebrowser CVE-2021-37794, CVE-2023-39612).
SAFE_HEADERS = {"X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
                "Cross-Origin-Resource-Policy": "same-origin"}


class _BigChunkFileResponse(FileResponse):
    chunk_size = 1024 * 1024  # starlette's 64 KiB costs a thread hop per 64 KiB


def etag_of(st: os.stat_result) -> str:
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


def content_disposition(name: str, inline: bool) -> str:
    kind = "inline" if inline else "attachment"
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name)}"


def file_response(request: Request, real: Path, *, inline: bool,
                  on_sent: BackgroundTask | None = None) -> Response:
    """A file with Range/If-Range (206/416), ETag/If-None-Match (304), Last-Modified."""
    st = os.stat(real)
    etag = etag_of(st)
    ext = real.suffix.lower()
    show_inline = inline and ext in INLINE_TYPES
    headers = {**SAFE_HEADERS, "ETag": etag,
               "Content-Disposition": content_disposition(real.name, show_inline),
               "Cache-Control": "private, no-cache"}
    inm = request.headers.get("if-none-match")
    if inm and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
        return Response(status_code=304, headers=headers)
    media = INLINE_TYPES[ext] if show_inline else "application/octet-stream"
    return _BigChunkFileResponse(real, media_type=media, headers=headers, stat_result=st,
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
