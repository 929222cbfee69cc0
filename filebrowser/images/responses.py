"""Images as HTTP answers, shared by the image routes and the public share routes:
thumbnail responses with version-keyed caching, and a file's info document."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from ..errors import InvalidInput
from ..files import fs
from .meta import read_meta
from .thumbs import Thumbnailer, version_of

LONG_CACHE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"


def thumb_url(path: str, version: str, size: int = 256, base: str = "/api/fs/thumb") -> str:
    return f"{base}?path={urllib.parse.quote(path, safe='')}&size={size}&v={version}"


def image_info(real: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """The info document of a file: stat fields, plus metadata for images."""
    out = dict(entry)
    out["meta"] = None
    if entry["kind"] == "image":
        out["meta"] = read_meta(real, sidecar=True).to_json()
    return out


def thumb_response(request: Request, thumbs: Thumbnailer, real: Path, size: int,
                   v: str | None) -> Response:
    if not real.is_file() or fs.kind_of(real.name, False) != "image":
        raise InvalidInput("not an image")
    current = version_of(os.stat(real))
    t = thumbs.get(real, size)
    # A long-lived cache only for a URL naming the current version: after a change the
    # client's URL changes (new v) or it revalidates by ETag; never a stale thumbnail.
    cache = LONG_CACHE if v == current and not t.placeholder else REVALIDATE
    headers = {"ETag": t.etag, "Cache-Control": cache, "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "default-src 'none'; sandbox"}
    if t.placeholder:
        headers["X-Thumbnail"] = "placeholder"
    inm = request.headers.get("if-none-match")
    if inm and t.etag in [x.strip() for x in inm.split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(t.data, media_type="image/webp", headers=headers)
