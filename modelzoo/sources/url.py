"""Any other http(s) URL: what it is comes from the server and the file's own header.

One ranged GET of the first 64 KiB (``firstbytes.probe``, without requests) gives the name
(Content-Disposition, else the URL as given), the size, and for a safetensors file the
header that tells its type and base model (``sniff.py``). An HTML or JSON page fails
here, before anything is written. When the header cannot be read first (larger than
the probe allows), the job sniffs the finished file and moves it to its folder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from .. import naming
from ..errors import NotAModel
from ..placement import is_model_name
from ..sniff import OTHER, sniff_bytes
from . import firstbytes, remote
from .model import RemoteFile, Resolution
from .refs import UrlRef

if TYPE_CHECKING:
    from ..fetch.sessions import Session
    from ..fetch.settings import FetchSettings


def _page_kind(found: remote.Probe) -> str | None:
    start = found.head[:512].lstrip().lower()
    if found.content_type in ("text/html", "application/xhtml+xml") or start.startswith(
            (b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page"
    if found.content_type == "application/json" or (start[:1] in (b"{", b"[")
                                                     and b'"' in start[:64]
                                                     and sniff_bytes(found.head) is None):
        return "a JSON document"
    return None


def resolve(ref: UrlRef, *, settings: FetchSettings | None = None,
            headers: Mapping[str, str] | None = None, mirrors: Sequence[str] = (),
            sha256: str | None = None, probe: bool = True,
            keep: Callable[[Session], None] | None = None) -> Resolution:
    """``headers`` go to the URL's own origin (and the mirrors'), never to redirects;
    ``settings``: the fetch settings the probe goes by (proxy, blocked networks); ``keep``
    receives the probe's session, its connection open (``firstbytes.probe``)."""
    url = ref.url
    origin_headers = ({remote.origin(u): dict(headers) for u in [url, *mirrors]}
                      if headers else None)
    name = naming.name_from_url(url)
    size = None
    mtype, base, why, sniff_after = OTHER, None, None, False
    if probe:
        found = firstbytes.probe(url, what=url, origin_headers=origin_headers,
                                 settings=settings, keep=keep)
        kind = _page_kind(found)
        if kind is not None:
            raise NotAModel(f"{url} is {kind}, not a model file (a login or download page? "
                            f"use the file's direct link)", url=url)
        name = naming.choose(found.disposition, None, url)
        size = found.total
        sniffed = sniff_bytes(found.head)
        if sniffed is not None:
            mtype, base, why = sniffed.type, sniffed.base_model, sniffed.why
            if name and not is_model_name(name):
                name = naming.with_suffix(name, ".safetensors")
        elif name and name.lower().endswith((".safetensors", ".sft")) and found.head:
            sniff_after = True
    if not name:
        name = "download"
    return Resolution(ref=url, source="url", name=name, type=mtype, base_model=base,
                      files=[RemoteFile(name=name, path=name, urls=[url, *mirrors], size=size,
                                        sha256=sha256.lower() if sha256 else None,
                                        model=is_model_name(name) or mtype != OTHER)],
                      page=url, sniffed=why, sniff_after=sniff_after)
