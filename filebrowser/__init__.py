"""FileBrowser: the NAS as a web API, a WebDAV mount and a desktop client.

Features, one subpackage each::

    access/     users, sessions and tokens, the path jail, login limits
    files/      listing, mkdir/move/copy, trash, downloads, zip streams
    usage/      quotas and usage accounting
    transfers/  resumable uploads (tus 1.0), WebDAV
    images/     thumbnails, generation parameters, the search index
    shares/     share links
    client/     the desktop commands: login, push, pull, usage

``app.create_app`` composes them; ``core.FileBrowser`` holds the stores one service
shares. The names below are the package's public face (the ``atelier`` edge uses only
these); they load on first use, so ``atelier pull`` does not import the web stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atelier_io.lazy import exports

if TYPE_CHECKING:
    from .access.auth import Principal, current_user, current_user_or_basic, require_gateway
    from .app import create_app
    from .cli import add_server_options, register, settings_from
    from .core import FileBrowser
    from .errors import AtelierError, Conflict, NotFound, QuotaExceeded
    from .settings import Settings

_WHERE = {
    "create_app": "app", "FileBrowser": "core", "Settings": "settings", "AtelierError": "errors",
    "QuotaExceeded": "errors", "Conflict": "errors", "NotFound": "errors",
    "Principal": "access.auth", "current_user": "access.auth",
    "current_user_or_basic": "access.auth", "require_gateway": "access.auth",
    "add_server_options": "cli", "register": "cli", "settings_from": "cli",
}

__all__ = [
    "AtelierError",
    "Conflict",
    "FileBrowser",
    "NotFound",
    "Principal",
    "QuotaExceeded",
    "Settings",
    "add_server_options",
    "create_app",
    "current_user",
    "current_user_or_basic",
    "register",
    "require_gateway",
    "settings_from",
]

__getattr__, __dir__ = exports(__name__, _WHERE)
