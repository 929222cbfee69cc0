"""The standalone service: FileBrowser's app with ModelZoo's routers composed in.

This is the one place that knows both packages. ModelZoo gets FileBrowser's
``current_user`` dependency and a function giving a caller's outputs folder; it never
imports filebrowser itself.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from filebrowser.app import create_app as create_filebrowser
from filebrowser.auth import current_user, require_gateway
from filebrowser.settings import Settings
from modelzoo.residency.webui import build_router as build_webui_router

from . import lifeline

log = logging.getLogger("atelier")


def create_app(settings: Settings) -> FastAPI:
    app = create_filebrowser(settings)
    fb = app.state.fb
    # The WebUI extension's side: its lifeline and identity proof, and what the WebUI
    # process reports of its own checkpoints (no torch needed for either).
    app.include_router(lifeline.build_router())
    app.include_router(build_webui_router(current_user=current_user,
                                          require_gateway=require_gateway))
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
