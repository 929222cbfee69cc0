"""``create_app(settings)``: the FileBrowser ASGI app, every feature's router composed.

The features sit in their own subpackages (access, files, usage, transfers, images,
shares); this module is the only one that knows them all. Background work (the image
index writer, the thumbnail pool) starts and stops with the app's lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from .access import routes as access_routes
from .core import FileBrowser
from .errors import install_handlers
from .files import routes as files_routes
from .files import zip_routes
from .images import routes as images_routes
from .images.service import Images
from .settings import Settings
from .shares import routes as shares_routes
from .transfers import dav, tus_routes
from .usage import routes as usage_routes


def chain_lifespan(app: FastAPI,
                   step: Callable[[FastAPI], AbstractAsyncContextManager[None]]) -> None:
    """Run ``step`` inside whatever lifespan the app already has (they compose)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def combined(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state, step(a):
            yield state

    app.router.lifespan_context = combined


def create_app(settings: Settings, fb: FileBrowser | None = None) -> FastAPI:
    fb = fb or FileBrowser(settings)
    fb.ensure_admin()
    app = FastAPI(title="Atelier", summary="Files, models and GPUs for SD WebUI",
                  version="0.1.0")
    app.state.fb = fb
    app.state.auth = fb.auth
    install_handlers(app)
    for router in (access_routes.router, files_routes.router, usage_routes.router,
                   tus_routes.router, zip_routes.router, images_routes.router,
                   shares_routes.router, shares_routes.public):
        app.include_router(router)
    app.mount(dav.MOUNT, dav.build(fb))
    images = Images(fb)
    app.state.images = images

    @asynccontextmanager
    async def run_images(_: FastAPI) -> AsyncIterator[None]:
        images.start()
        try:
            yield
        finally:
            images.stop()

    chain_lifespan(app, run_images)
    return app
