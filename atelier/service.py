"""The standalone service: FileBrowser's app with ModelZoo's routers composed in.

This is the one place that knows both packages. ModelZoo gets FileBrowser's
``current_user`` dependency, a function giving a caller's home (and outputs) folder and
the quota check; it never imports filebrowser itself.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from filebrowser.app import create_app as create_filebrowser
from filebrowser.auth import current_user
from filebrowser.errors import QuotaExceeded as FileQuotaExceeded
from filebrowser.settings import Settings

log = logging.getLogger("atelier")


def _add_models(app: FastAPI) -> None:
    """One-click model fetch: sources, jobs, library (issue 12)."""
    from modelzoo.api import build_router
    from modelzoo.errors import QuotaExceeded
    from modelzoo.fetch.settings import FetchSettings
    from modelzoo.settings import ZooSettings

    fb = app.state.fb
    zoo_settings = ZooSettings(root=fb.root, state_dir=fb.settings.state_dir)

    def home_of(p: Any) -> str:
        return str(fb.users.home(p.name).relative_to(fb.root).as_posix())

    def check_quota(p: Any, adding: int) -> None:
        try:
            fb.check_quota(p, adding)
        except FileQuotaExceeded as e:
            raise QuotaExceeded(e.message) from None

    router = build_router(zoo_settings, engine=fb.engine, root=fb.root,
                          current_user=current_user, home_of=home_of,
                          check_quota=check_quota, fetch_settings=FetchSettings())
    app.include_router(router)
    # `atelier serve` calls these when a stop begins: the job event streams end then
    zoo = router.zoo  # type: ignore[attr-defined]
    app.state.on_exit = [*getattr(app.state, "on_exit", []), zoo.closing.set]


def create_app(settings: Settings) -> FastAPI:
    app = create_filebrowser(settings)
    fb = app.state.fb
    _add_models(app)
    try:
        from modelzoo.residency.api import build_router
        from modelzoo.residency.settings import ResidencySettings
    except ImportError as exc:  # the residency API is optional (no torch, or not built yet)
        log.info("model switching API not available: %s", exc)
        return app
    res_settings = ResidencySettings(models_dir=fb.root / "models" / "Stable-diffusion")
    app.include_router(build_router(res_settings, engine=fb.engine, current_user=current_user,
                                    outputs_dir=fb.outputs_dir))
    return app
