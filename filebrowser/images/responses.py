"""Images as HTTP answers, shared by the image routes and the public share routes:
thumbnail responses with version-keyed caching, and a file's info document."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from ..access.jail import Handle, addressable
from ..errors import InvalidInput
from ..files import fs
from .meta import FOLDER_LOG, read_meta
from .thumbs import Thumbnailer, version_of

LONG_CACHE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"


def thumb_url(path: str, version: str, size: int = 256, base: str = "/api/fs/thumb") -> str:
    return f"{base}?path={urllib.parse.quote(path, safe='')}&size={size}&v={version}"


def image_info(src: Handle, entry: dict[str, Any], *, stealth: bool = False
               ) -> dict[str, Any]:
    """The info document of an opened file: stat fields, plus metadata for images
    (read from the checked descriptor; the sidecar ``.txt`` and Fooocus' ``log.html``
    from the same real folder, never through a symlink; ``stealth``: also the pixels'
    low bits, as the index reads them when that is enabled)."""
    out = dict(entry)
    out["meta"] = None
    if entry["kind"] == "image":
        sidecar = os.path.splitext(src.name)[0] + ".txt"
        side: Path | bool = src.folder / sidecar if addressable(sidecar) else False
        out["meta"] = read_meta(src.path, sidecar=side, log=src.folder / FOLDER_LOG,
                                name=src.name, stealth=stealth).to_json()
    return out


def thumb_response(request: Request, thumbs: Thumbnailer, src: Handle, size: int,
                   v: str | None, root: Path) -> Response:
    """The thumbnail of an opened image (``root``: the NAS root, for the cache key)."""
    if not src.is_file or fs.kind_of(src.name, False) != "image":
        raise InvalidInput("not an image")
    assert src.stat is not None
    current = version_of(src.stat)
    t = thumbs.get(src.path, size, key=str(root / src.real))
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
