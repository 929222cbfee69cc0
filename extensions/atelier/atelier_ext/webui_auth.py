"""Who is calling, by the WebUI's own credentials: the proxy route is guarded by them.

- ``--gradio-auth`` / ``--gradio-auth-path``: gradio keeps ``app.auth`` (a dict of
  user -> password, or a callable) and ``app.tokens`` (login token -> user). Its login
  sets the token in a cookie: ``access-token`` or ``access-token-unsecure`` (gradio 3.41,
  A1111), suffixed ``-{app.cookie_id}`` (gradio 4, Forge). gradio 4 may also have an
  ``app.auth_dependency(request) -> user``.
- ``--api-auth user:pass,...``: A1111 checks HTTP Basic against it for ``/sdapi``
  (``modules/api/api.py: Api.auth``); so do we, and Basic with a ``--gradio-auth`` pair
  too (desktop clients have no gradio cookie).

With neither configured the WebUI is open, the proxy names no user and the service's own
login applies. Standard library only; ``request`` is Starlette's (headers, cookies).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class Unauthenticated(Exception):
    """The WebUI requires credentials and the request has none that it accepts."""


@dataclass(frozen=True)
class Identity:
    user: str | None  # None: the WebUI has no auth; the service's own login applies
    via: str  # "open" | "cookie" | "basic" | "dependency"

    @property
    def used_authorization(self) -> bool:
        """The Authorization header carried WebUI credentials: not for the service."""
        return self.via == "basic"


def parse_pairs(text: str | None) -> dict[str, str]:
    """``user:pass,user2:pass2`` (the form of --api-auth and --gradio-auth)."""
    pairs: dict[str, str] = {}
    for item in (text or "").split(","):
        user, sep, password = item.strip().partition(":")
        if sep and user:
            pairs[user] = password
    return pairs


def _basic(header: str) -> tuple[str, str] | None:
    if not header.lower().startswith("basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (user, password) if sep else None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class WebUIAuth:
    """The WebUI's credentials, read from its live objects at each request (gradio sets
    ``app.auth`` at launch, and a reloaded UI brings a new app)."""

    def __init__(self, app: Any, api_auth: str | None = None) -> None:
        self.app = app
        self.api = parse_pairs(api_auth)

    def _gradio_auth(self) -> Mapping[str, str] | Callable[[str, str], bool] | None:
        auth = getattr(self.app, "auth", None)
        return auth if isinstance(auth, Mapping) or callable(auth) else None

    @property
    def enabled(self) -> bool:
        return bool(self.api) or self._gradio_auth() is not None or \
            getattr(self.app, "auth_dependency", None) is not None

    def _cookie_names(self) -> tuple[str, ...]:
        cid = getattr(self.app, "cookie_id", None)
        if cid:
            return f"access-token-{cid}", f"access-token-unsecure-{cid}"
        return "access-token", "access-token-unsecure"

    def webui_cookies(self) -> tuple[str, ...]:
        """Cookie names that carry the WebUI's login: never passed to the service."""
        return self._cookie_names()

    def _from_cookie(self, cookies: Mapping[str, str]) -> str | None:
        tokens = getattr(self.app, "tokens", None)
        if not isinstance(tokens, Mapping):
            return None
        for name in self._cookie_names():
            token = cookies.get(name)
            if token and token in tokens:
                return str(tokens[token])
        return None

    def _from_basic(self, header: str) -> str | None:
        pair = _basic(header)
        if pair is None:
            return None
        user, password = pair
        if user in self.api and _same(password, self.api[user]):
            return user
        gradio = self._gradio_auth()
        if isinstance(gradio, Mapping):
            known = gradio.get(user)
            if isinstance(known, str) and _same(password, known):
                return user
        elif callable(gradio) and gradio(user, password):
            return user
        return None

    def identify(self, request: Any) -> Identity:
        if not self.enabled:
            return Identity(None, "open")
        dependency = getattr(self.app, "auth_dependency", None)
        if dependency is not None:
            user = dependency(request)
            if user:
                return Identity(str(user), "dependency")
        user = self._from_cookie(request.cookies)
        if user:
            return Identity(user, "cookie")
        user = self._from_basic(request.headers.get("authorization", ""))
        if user:
            return Identity(user, "basic")
        raise Unauthenticated()
