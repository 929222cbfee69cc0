"""The standalone service: FileBrowser's app with ModelZoo's routers composed in.

This is the one place that knows both packages. ModelZoo gets FileBrowser's
``current_user`` dependency and a function giving a caller's outputs folder; it never
imports filebrowser itself.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from filebrowser import Settings, current_user
from filebrowser import create_app as create_filebrowser

from .ui import install as install_pages

log = logging.getLogger("atelier")


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
                                    outputs_dir=fb.outputs_dir))
    return app
