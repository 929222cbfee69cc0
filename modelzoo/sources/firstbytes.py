"""A plain URL's first bytes over the fetch engine's own HTTP, without requests.

``remote.probe`` for a URL that is no catalogue's: the same ranged GET of the first
``remote.FIRST_BYTES`` (a second one for a longer safetensors header, up to
``remote.MAX_SNIFF``), the same :class:`remote.Probe` and the same error texts, through
the engine's sessions (``fetch/sessions.py``: ``http.client``, the engine's proxy,
timeouts and CA store). requests costs 30 ms to import, and a plain URL is what
``atelier fetch URL`` is timed on. Headers are bound to origins as in ``remote.py``:
redirects are followed by hand, each hop gets only the headers of its own origin, and
every hop is checked against the blocked networks (``fetch/netguard.py``). With ``keep``
the session, its connection open, goes on to the download (``atelier fetch``): the engine's
own probe then needs no new connection (on https, no second TCP and TLS handshake).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from ..errors import RemoteError
from ..fetch import netguard
from ..sniff import header_length
from . import remote
from .remote import OriginHeaders, Probe, headers_for

if TYPE_CHECKING:
    from ..fetch.sessions import Reply, Session
    from ..fetch.settings import FetchSettings


def probe(url: str, *, what: str, origin_headers: OriginHeaders | None = None,
          settings: FetchSettings | None = None, first: int | None = None,
          keep: Callable[[Session], None] | None = None) -> Probe:
    """The first bytes of ``url``; ``settings``: the fetch settings whose proxy, timeouts,
    redirect limit and blocked networks apply (default: the environment's). ``keep``
    receives the session of a probe that succeeded, instead of it being closed."""
    from ..fetch.sessions import make_session_factory
    from ..fetch.settings import FetchSettings

    settings = settings or FetchSettings()
    first = first or remote.FIRST_BYTES
    session = make_session_factory(settings)()
    kept = False
    try:
        current = url
        for _ in range(settings.max_redirects + 1):
            h = headers_for(current, origin_headers)
            h["Range"] = f"bytes=0-{first - 1}"
            reply = _get(session, current, h, what, url, settings)
            location = reply.headers.get("location")
            if reply.status in remote.REDIRECTS and location:
                reply.release(False)
                current = urljoin(current, location)
                continue
            try:
                found = _read_probe(session, url, current, reply, what, origin_headers,
                                    settings, first)
            finally:
                reply.release(False)  # the connection stays open if the body was read whole
            if keep is not None:
                keep(session)
                kept = True
            return found
        raise RemoteError(f"{what}: more than {settings.max_redirects} redirects", url=url)
    finally:
        if not kept:
            session.close()


def _get(session: Session, current: str, headers: dict[str, str], what: str, url: str,
         settings: FetchSettings) -> Reply:
    from ..fetch.sessions import NETWORK_ERRORS

    where = urlsplit(current).netloc
    if urlsplit(current).scheme.lower() not in ("http", "https"):
        raise RemoteError(f"{what}: cannot reach {where} (not an http(s) URL: "
                          f"{current!r})", url=url)
    netguard.check(current, settings.blocked_networks)
    refused: tuple[type[Exception], ...] = (*NETWORK_ERRORS, ValueError)  # ValueError: a bad port
    try:
        return session.get(current, headers)
    except refused as e:
        raise RemoteError(f"{what}: cannot reach {where} ({e})", url=url) from None


def _read_probe(session: Session, url: str, current: str, reply: Reply, what: str,
                origin_headers: OriginHeaders | None, settings: FetchSettings,
                first: int) -> Probe:
    disposition = reply.headers.get("content-disposition")
    etag = reply.headers.get("etag")
    if reply.status == 416:  # an empty file: nothing to range over
        return Probe(url, current, 416, "", disposition, _total(reply), True, etag, b"")
    if reply.status >= 400:
        remote.refuse(reply.status, _message(reply), what, current)
    ranged = reply.status == 206
    head = _read(reply, first)
    total = _total(reply)
    n = header_length(head)
    if n is not None and 8 + n > len(head) and 8 + n <= remote.MAX_SNIFF and (
            total is None or 8 + n <= total):
        if ranged:
            more = _get(session, current, {**headers_for(current, origin_headers),
                                           "Range": f"bytes={len(head)}-{8 + n - 1}"},
                        what, url, settings)
            try:
                if more.status == 206:
                    head += _read(more, 8 + n - len(head))
            finally:
                more.release(False)
        else:  # no Range: the rest of the header comes down the same stream
            head += _read(reply, 8 + n - len(head))
    return Probe(url, current, reply.status,
                 (reply.headers.get("content-type") or "").split(";")[0].strip().lower(),
                 disposition, total, ranged, etag, head)


def _read(reply: Reply, n: int) -> bytes:
    """Up to ``n`` body bytes; fewer when the body ends or the connection breaks."""
    from ..fetch.sessions import NETWORK_ERRORS

    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    try:
        while got < n:
            k = reply.readinto(view[got:])
            if k <= 0:
                break
            got += k
    except NETWORK_ERRORS:
        pass
    finally:
        view.release()
    return bytes(buf[:got])


def _message(reply: Reply) -> str:
    ctype = reply.headers.get("content-type") or ""
    m = re.search(r"charset=([\w.:-]+)", ctype, re.I)
    try:
        text = reply.read(16 * 1024).decode(m.group(1) if m else "utf-8", "replace")
    except LookupError:  # a charset Python does not know
        return ""
    return remote.page_message(text[:4096])


def _total(reply: Reply) -> int | None:
    cr = reply.headers.get("content-range") or ""
    if "/" in cr:
        tail = cr.rsplit("/", 1)[1]
        return int(tail) if tail.isdigit() else None
    if reply.status == 200:
        cl = reply.headers.get("content-length") or ""
        return int(cl) if cl.isdigit() else None
    return None
