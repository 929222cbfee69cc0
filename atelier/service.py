"""The standalone service: FileBrowser's app with ModelZoo's routers composed in.

This is the one place that knows both packages. ModelZoo gets FileBrowser's
``current_user`` dependency (and, for the WebUI-compatible ``/sdapi/v1`` routes, the
variant that also accepts HTTP Basic, which WebUI API clients send), a function giving a
caller's outputs folder, and the quota and usage hooks that make generated images count
like uploads; it never imports filebrowser itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI

from filebrowser import FileBrowser, Principal, Settings, current_user, current_user_or_basic
from filebrowser import create_app as create_filebrowser

from .ui import install as install_pages

log = logging.getLogger("atelier")


def _quota_room(fb: FileBrowser) -> Callable[[Principal], int | None]:
    def room(p: Principal) -> int | None:
        quota = p.user.quota_bytes
        if quota is None:
            return None
        return quota - fb.usage.stored_bytes(p.name, max_age=fb.settings.quota_recheck_seconds)

    return room


def _record_image(fb: FileBrowser) -> Callable[[Principal, Path, int], None]:
    def record(p: Principal, path: Path, nbytes: int) -> None:
        vpath = path.resolve().relative_to(fb.root).as_posix()
        fb.usage.record(p.name, "generate", vpath, nbytes)

    return record


def create_app(settings: Settings) -> FastAPI:
    app = create_filebrowser(settings)
    fb = app.state.fb
    install_pages(app)  # the web pages under /ui/
    try:
        from modelzoo.residency import ResidencySettings, build_router
    except ImportError as exc:  # the residency API is optional (no torch, or not built yet)
        log.info("model switching API not available: %s", exc)
        return app
    res_settings = ResidencySettings(models_dir=fb.root / "models" / "Stable-diffusion")
    app.include_router(build_router(res_settings, engine=fb.engine, current_user=current_user,
                                    outputs_dir=fb.outputs_dir, quota_room=_quota_room(fb),
                                    record_image=_record_image(fb),
                                    sdapi_user=current_user_or_basic))
    return app
