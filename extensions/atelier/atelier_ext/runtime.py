"""Everything the extension runs inside one WebUI process, made once per process.

The WebUI re-executes ``scripts/atelier_tabs.py`` on every "Reload UI" (a new module, a
new gradio app), but imports this package once: the running service, its pipe, the
adapter and the report threads live here and carry over; the new app gets the proxy.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from . import state, webui_settings
from .config import ServiceConfig
from .link import ServiceLink
from .residency import Adapter
from .supervisor import ServiceError, Supervisor, login_works

_RUNTIMES: dict[str, Runtime] = {}
_LOCK = threading.Lock()


def runtime(config: ServiceConfig, opts_data: Callable[[], Mapping[str, object]],
            log: Callable[[str], Any] = print, **kwargs: Any) -> Runtime:
    """The process's runtime for this configuration (made on first use)."""
    key = str(config.state_dir.resolve()) + f":{config.port}"
    with _LOCK:
        found = _RUNTIMES.get(key)
        if found is None or found.config != config:
            found = _RUNTIMES[key] = Runtime(config, opts_data, log, **kwargs)
        return found


def forget_all() -> None:
    """Stop and drop every runtime (tests; a WebUI process ends without this)."""
    with _LOCK:
        items = list(_RUNTIMES.values())
        _RUNTIMES.clear()
    for rt in items:
        rt.close()


class Runtime:
    def __init__(self, config: ServiceConfig, opts_data: Callable[[], Mapping[str, object]],
                 log: Callable[[str], Any] = print, *, modules: Any = None,
                 start_timeout: float = 60.0) -> None:
        self.config = config
        self.opts_data = opts_data
        self.log = log
        self.notice = state.prepare_notice(config.notice_file, config.state_dir / "atelier.db")
        opts = opts_data()
        self.supervisor = Supervisor(
            config, env=webui_settings.service_env(opts), nas_root=webui_settings.nas_root(opts),
            grace=webui_settings.grace(opts), start_timeout=start_timeout, log=log,
            admin_password=self.notice.password if self.notice and self.notice.shown else None)
        self.adapter = Adapter(modules=modules, settings=opts_data, pins_file=config.pins_file,
                               log=log)
        self.link = ServiceLink(config.base_url, self.adapter, self.gateway_secret, log=log)
        self.error: str | None = None
        self._apps: weakref.WeakSet[Any] = weakref.WeakSet()
        self._proxies: list[Any] = []
        self._reviving = threading.Lock()
        self._last_revive = 0.0
        self._settings_timer: threading.Timer | None = None

    def gateway_secret(self) -> str | None:
        """The secret, for a service that proved it holds it; else None."""
        sup = self.supervisor
        return sup.secret if sup.verified else None

    # -- the service ----------------------------------------------------------------

    def start(self) -> str | None:
        """Start or adopt the service, check the admin notice, size the checkpoint cache,
        and begin reporting. Runs in a background thread: the WebUI need not wait."""
        try:
            outcome = self.supervisor.ensure_running()
            self.error = None
        except ServiceError as exc:
            self.error = str(exc)
            self.log(f"Atelier: {exc}")
            return None
        self.log(f"Atelier: service {outcome} on {self.config.base_url} "
                 f"(tabs at ./atelier/, log {self.config.log_file})")
        self._check_notice()
        try:
            self.adapter.apply()
        except Exception as exc:  # no WebUI modules (tests), or a WebUI we do not know
            self.log(f"Atelier: checkpoint sizing unavailable: {exc!r}")
        self.link.start()
        return outcome

    def _check_notice(self) -> None:
        notice = self.notice
        if notice is None or not notice.shown or not self.supervisor.verified:
            return
        works = login_works(self.config.base_url, "admin", notice.password or "")
        if works is False:
            notice.set(state.GONE)
            return
        if works and notice.status == state.PENDING:
            notice.set(state.CONFIRMED)
        self.log(f"Atelier: the FileBrowser administrator is 'admin' with the password "
                 f"{notice.password} (shown until you change it or dismiss the notice in the "
                 "FileBrowser tab)")

    def dismiss_notice(self) -> None:
        if self.notice is not None:
            self.notice.set(state.DISMISSED)

    def revive(self) -> None:
        """The proxy found the service silent: start it again, at most every 10 s."""
        if time.monotonic() - self._last_revive < 10 or not self._reviving.acquire(False):
            return
        self._last_revive = time.monotonic()

        def run() -> None:
            try:
                self.start()
            finally:
                self._reviving.release()

        threading.Thread(target=run, name="atelier-revive", daemon=True).start()

    def settings_changed(self, delay: float = 1.0) -> None:
        """A setting in the Atelier section changed: restart the service with it (once,
        after the page's "Apply settings" has set them all) and size the cache again."""
        if self._settings_timer is not None:
            self._settings_timer.cancel()
        self._settings_timer = threading.Timer(delay, self._apply_settings)
        self._settings_timer.daemon = True
        self._settings_timer.start()

    def _apply_settings(self) -> None:
        opts = self.opts_data()
        self.supervisor.grace = webui_settings.grace(opts)
        if self.supervisor.configure(webui_settings.service_env(opts),
                                     webui_settings.nas_root(opts)):
            self.log("Atelier: settings changed; restarting the service")
            try:
                self.supervisor.restart()
            except ServiceError as exc:
                self.error = str(exc)
                self.log(f"Atelier: {exc}")
        try:
            self.adapter.apply()
        except Exception as exc:  # noqa: BLE001
            self.log(f"Atelier: checkpoint sizing unavailable: {exc!r}")

    # -- the WebUI app --------------------------------------------------------------

    def mount(self, app: Any, api_auth: str | None = None,
              cors_origins: str | None = None) -> Any:
        """Give a WebUI app (a new one after each UI reload) the ``/atelier`` route."""
        from .proxy import AtelierProxy, mount  # starlette/httpx: the WebUI's own
        from .webui_auth import WebUIAuth

        if app in self._apps:
            return None
        proxy = AtelierProxy(
            self.config.base_url, WebUIAuth(app, api_auth), secret=self.gateway_secret,
            unavailable=self.revive, log_file=str(self.config.log_file),
            allowed_origins=[o.strip() for o in (cors_origins or "").split(",") if o.strip()],
            local={"/_webui/notice/dismiss": self._dismiss_route,
                   "/_webui/status": self._status_route})
        mount(app, proxy)
        self._apps.add(app)
        self._proxies.append(proxy)
        return proxy

    async def _dismiss_route(self, request: Any, who: Any) -> Any:
        from starlette.responses import JSONResponse

        if request.method != "POST":
            return JSONResponse({"error": "method_not_allowed", "message": "POST"}, 405)
        self.dismiss_notice()
        return JSONResponse({"ok": True})

    async def _status_route(self, request: Any, who: Any) -> Any:
        from starlette.responses import JSONResponse

        sup = self.supervisor
        return JSONResponse({"service": sup.outcome, "verified": sup.verified,
                             "error": self.error, "user": who.user, "via": who.via,
                             "notice": bool(self.notice and self.notice.shown),
                             "limits": self.adapter.last.as_dict() if self.adapter.last else None})

    def close(self) -> None:
        self.link.stop()
        if self._settings_timer is not None:
            self._settings_timer.cancel()
        self.supervisor.stop()
