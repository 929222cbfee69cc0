"""The small shared layer under ``filebrowser`` and ``modelzoo`` (they never import each
other; both import this):

- ``http``: the standard library's ``http.client`` with keep-alive per thread, bodies
  asked for as ``identity`` (byte ranges address stored bytes), cut bodies detected;
- ``diskwrite``: request bodies to disk in batches off the event loop, big files with
  ``O_DIRECT`` past the page cache;
- ``progress``: rich bars on a terminal, plain lines elsewhere, byte-size parsing;
- ``db``: SQLAlchemy engines made one way (SQLite pragmas, PostgreSQL pre-ping);
- ``lazy``: package names that load on first use;
- ``quickexit``: a finished command's process ends without the interpreter's teardown.

Names load on first use (``lazy``) so that a desktop command importing one piece does
not pay for the others (starlette, SQLAlchemy, rich).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import exports

if TYPE_CHECKING:
    from .db import make_engine, now
    from .diskwrite import Appender, DiskFull, filesystem_type, receive_into, use_direct
    from .http import (
        BodyCutShort,
        CertificateRejected,
        Client,
        ConnectionFailed,
        Connections,
        Response,
    )
    from .progress import Bars, Plain, human, parse_size, screen
    from .quickexit import quick_exit

_WHERE = {
    "make_engine": "db", "now": "db",
    "Appender": "diskwrite", "DiskFull": "diskwrite", "filesystem_type": "diskwrite",
    "receive_into": "diskwrite", "use_direct": "diskwrite",
    "BodyCutShort": "http", "CertificateRejected": "http", "Client": "http",
    "ConnectionFailed": "http", "Connections": "http", "Response": "http",
    "Bars": "progress", "Plain": "progress", "human": "progress", "parse_size": "progress",
    "screen": "progress",
    "quick_exit": "quickexit",
}

__all__ = [
    "Appender",
    "Bars",
    "BodyCutShort",
    "CertificateRejected",
    "Client",
    "ConnectionFailed",
    "Connections",
    "DiskFull",
    "Plain",
    "Response",
    "filesystem_type",
    "human",
    "make_engine",
    "now",
    "parse_size",
    "quick_exit",
    "receive_into",
    "screen",
    "use_direct",
]

__getattr__, __dir__ = exports(__name__, _WHERE)
