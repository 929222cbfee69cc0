"""File names for downloaded models: where they come from, and what is allowed.

Order (issue 12): the server's Content-Disposition, then the catalogue's file name
(Civitai ``files[].name``, the repo path), then the last segment of the URL the *user*
gave. Never the URL a redirect landed on: signed storage URLs end in a content hash or
an opaque key, which is how a Civitai download ends up named ``1002`` or ``a9f3...``.

Sanitising keeps one path segment: no separators, no ``..``, no control characters, no
leading dot (hidden, and our partial files' prefix), none of Windows' reserved device
names (the NAS is often shared over SMB too), at most 255 bytes of UTF-8.
"""

from __future__ import annotations

import re
import unicodedata
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

_BAD_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
             *(f"lpt{i}" for i in range(1, 10))}
MAX_BYTES = 255


def content_disposition_name(value: str | None) -> str | None:
    """The file name a Content-Disposition header gives (``filename*`` wins, RFC 6266)."""
    if not value:
        return None
    msg = EmailMessage()
    try:
        msg["content-disposition"] = value
        name = msg.get_filename()
    except (ValueError, TypeError, IndexError):
        name = None
    if not name:
        m = re.search(r'filename\s*=\s*"?([^";]+)"?', value, re.I)
        name = m.group(1) if m else None
    return sanitize(name) if name else None


def sanitize(name: str | None) -> str | None:
    """A safe single file name, or None when nothing usable is left."""
    if not name:
        return None
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _BAD_CHARS.sub("_", name)
    name = name.strip().strip(".").strip()
    if not name or name in (".", ".."):
        return None
    stem = name.split(".", 1)[0].lower().rstrip()
    if stem in _RESERVED:
        name = "_" + name
    while len(name.encode("utf-8")) > MAX_BYTES:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16 and stem:
            name = stem[:-1] + "." + ext
        else:
            name = name[:-1]
    return name or None


def name_from_url(url: str) -> str | None:
    return sanitize(unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]))


def choose(disposition: str | None, api_name: str | None, user_url: str | None) -> str | None:
    """The first usable of: Content-Disposition, the catalogue's name, the user's URL."""
    return (content_disposition_name(disposition) or sanitize(api_name)
            or (name_from_url(user_url) if user_url else None))


def with_suffix(name: str, suffix: str) -> str:
    """``name`` ending in ``suffix`` (``download`` + ``.safetensors``), unless it does."""
    return name if name.lower().endswith(suffix) else sanitize(name + suffix) or name


def alternative(name: str, n: int) -> str:
    """``x.safetensors`` -> ``x-2.safetensors``: another name when one is taken."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return f"{name}-{n}"
    return f"{stem}-{n}.{ext}"
