"""``create_app(settings)``: the FileBrowser ASGI app, every feature's router composed.

The features sit in their own subpackages (access, files, usage, transfers, images,
shares); this module is the only one that knows them all. Background work (the image
index writer, the thumbnail pool, the sweep of stale temporary files) starts and stops
with the app's lifespan.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI

from .access import routes as access_routes
from .core import FileBrowser
from .errors import ERROR_RESPONSES, install_handlers
from .files import routes as files_routes
from .files import zip_routes
from .files.tmpsweep import TempSweeper, sweep_forever
from .guards import FiniteJson, JsonErrors
from .images import routes as images_routes
from .images.service import Images
from .metrics import install as install_metrics
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
                  version="0.1.0", responses=ERROR_RESPONSES)
    app.state.fb = fb
    app.state.auth = fb.auth
    install_handlers(app)
    app.add_middleware(FiniteJson)
    app.add_middleware(JsonErrors)  # added last: the outermost, so it sees every error
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

    sweeper = TempSweeper(fb.root, settings.tmp_stale_seconds,
                          lambda uid: tus_routes.store_of(app).exists(uid))
    app.state.tmp_sweeper = sweeper

    @asynccontextmanager
    async def sweep_temps(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(sweep_forever(sweeper, settings.tmp_sweep_seconds))
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    chain_lifespan(app, sweep_temps)
    install_metrics(app, fb, images)
    return app
