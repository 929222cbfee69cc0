"""Preview images: fetched from the catalogue once, served by us, never by URL.

The browser gets ``api/models/preview/<key>``; the key maps (in the database) to the
remote image a resolution named, or to a sidecar ``x.preview.png`` in the library.
Remote images are read with a size cap, decoded by Pillow with its decompression-bomb
guard, scaled to ``max_side`` and re-encoded as PNG into a cache on local disk: what
reaches the browser is always a PNG we made, never the remote's bytes or address.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import requests

from .errors import RemoteError, RemoteNotFound
from .sources import remote

if TYPE_CHECKING:  # the preview cache's table; the image functions need no SQLAlchemy,
    import sqlalchemy as sa  # so `atelier fetch URL --to DIR` starts without it



def to_png(data: bytes, max_side: int) -> bytes:
    """Any image Pillow reads (first frame) as a PNG that fits in max_side x max_side."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        im.load()
        frame = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
    frame.thumbnail((max_side, max_side))
    out = io.BytesIO()
    frame.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _private(host: str) -> bool:
    """Whether ``host`` resolves to a loopback, private, link-local or reserved address."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return True  # unresolvable: nothing to fetch anyway
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved
                or addr.is_multicast or addr.is_unspecified):
            return True
    return False


def fetch_image(sess: requests.Session, url: str, max_bytes: int,
                trusted: Iterable[str] = ()) -> bytes:
    """The image at ``url``, at most ``max_bytes``, no token sent.

    The URL comes from a catalogue's answer, not from us: it may only lead to a public
    address, or to one of the ``trusted`` origins (the configured catalogues themselves,
    which may be a proxy on the local network). Each redirect hop is checked the same way.
    """
    allowed = {remote.origin(t) for t in trusted}
    current = url
    for _ in range(6):
        parts = urlsplit(current)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteNotFound(f"not an http(s) image URL: {current[:100]}")
        if remote.origin(current) not in allowed and _private(parts.hostname):
            raise RemoteNotFound(f"preview image on a private address refused: "
                                 f"{parts.hostname}")
        try:
            resp = sess.get(current, headers={"User-Agent": remote.USER_AGENT}, stream=True,
                            timeout=remote.TIMEOUT, allow_redirects=False)
        except requests.RequestException as e:
            raise RemoteError(f"preview image: cannot reach it ({e})", url=url) from None
        if resp.status_code in remote.REDIRECTS and "location" in resp.headers:
            current = urljoin(current, resp.headers["location"])
            resp.close()
            continue
        with resp:
            if resp.status_code >= 400:
                raise RemoteNotFound(f"preview image: HTTP {resp.status_code}", url=url)
            ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype and not ctype.startswith("image/") and ctype != "application/octet-stream":
                raise RemoteError(f"preview image: the server sent {ctype}", url=url)
            out = bytearray()
            for chunk in resp.iter_content(64 * 1024):
                out += chunk
                if len(out) > max_bytes:
                    raise RemoteError(f"preview image larger than {max_bytes} bytes", url=url)
        return bytes(out)
    raise RemoteError("preview image: too many redirects", url=url)


class Previews:
    def __init__(self, engine: sa.Engine, cache_dir: Path, max_side: int = 768,
                 max_bytes: int = 20 * 1024 * 1024, trusted: Iterable[str] = ()) -> None:
        self.engine = engine
        self.cache_dir = cache_dir
        self.max_side = max_side
        self.max_bytes = max_bytes
        self.trusted = list(trusted)

    @staticmethod
    def _key(kind: str, value: str) -> str:
        return kind + hashlib.sha256(value.encode()).hexdigest()[:40]

    def _register(self, key: str, url: str | None, path: str | None) -> str:
        import sqlalchemy as sa

        from . import db

        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(db.previews.c.key)
                                  .where(db.previews.c.key == key)).first()
            if exists is None:
                try:
                    conn.execute(db.previews.insert().values(key=key, url=url, path=path,
                                                             created=time.time()))
                except sa.exc.IntegrityError:
                    pass  # another request registered it first
        return key

    def for_url(self, url: str | None) -> str | None:
        return self._register(self._key("r", url), url, None) if url else None

    def for_path(self, vpath: str | None) -> str | None:
        return self._register(self._key("l", vpath), None, vpath) if vpath else None

    @staticmethod
    def link(key: str | None) -> str | None:
        return f"api/models/preview/{key}" if key else None

    def lookup(self, key: str) -> tuple[str | None, str | None]:
        import sqlalchemy as sa

        from . import db

        with self.engine.connect() as conn:
            row = conn.execute(sa.select(db.previews.c.url, db.previews.c.path)
                               .where(db.previews.c.key == key)).first()
        if row is None:
            raise RemoteNotFound("no such preview")
        return row.url, row.path

    def remote_png(self, key: str, url: str, sess: requests.Session) -> Path:
        """The cached PNG of a remote preview, fetched and converted on first use."""
        cached = self.cache_dir / f"{key}.png"
        if cached.is_file():
            return cached
        data = fetch_image(sess, url, self.max_bytes, self.trusted)
        try:
            png = to_png(data, self.max_side)
        except Exception as e:  # not an image, a decompression bomb, a broken file
            raise RemoteError(f"preview image: not a readable image ({type(e).__name__})",
                              url=url) from None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(png)
            os.replace(tmp, cached)
        finally:
            tmp.unlink(missing_ok=True)
        return cached

    def png_for(self, url: str, sess: requests.Session) -> bytes | None:
        """The preview as PNG bytes for a sidecar (None when it cannot be had)."""
        key = self.for_url(url)
        assert key is not None
        try:
            return self.remote_png(key, url, sess).read_bytes()
        except (RemoteError, OSError, ValueError):
            return None
