"""The image features composed: thumbnailer, index service and shares, with the app.

``install(app, fb)`` builds them from ``fb.settings``, puts them on ``app.state.images``,
adds the routers, and chains a lifespan step that starts the index writer (initial
scan, watcher, rescans) and stops it with the thumbnail pool on shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from .core import FileBrowser
from .index import Index, IndexService
from .shares import ShareStore
from .thumbs import Thumbnailer


class Images:
    def __init__(self, fb: FileBrowser) -> None:
        s = fb.settings
        self.fb = fb
        self.thumbs = Thumbnailer(s.state_dir / "thumbs", workers=s.thumb_workers,
                                  max_pixels=s.thumb_max_pixels,
                                  max_bytes=s.thumb_cache_max_bytes)
        self.index: Index | None = None
        self.service: IndexService | None = None
        if s.index_enabled:
            self.index = Index(fb.engine, fb.root)
            self.service = IndexService(self.index, watch=s.index_watch,
                                        rescan_seconds=s.index_rescan_seconds,
                                        deep_seconds=s.index_deep_rescan_seconds)
        self.shares = ShareStore(fb.engine, fb.jail, fb.users, s)

    def start(self) -> None:
        if self.service is not None:
            self.service.start()

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
        self.thumbs.close()


def chain_lifespan(app: FastAPI,
                   step: Callable[[FastAPI], AbstractAsyncContextManager[None]]) -> None:
    """Run ``step`` inside whatever lifespan the app already has (they compose)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def combined(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state, step(a):
            yield state

    app.router.lifespan_context = combined


def install(app: FastAPI, fb: FileBrowser) -> Images:
    from .routes import images as images_routes
    from .routes import shares as shares_routes

    images = Images(fb)
    app.state.images = images
    app.include_router(images_routes.router)
    app.include_router(shares_routes.router)
    app.include_router(shares_routes.public)

    @asynccontextmanager
    async def run(_: FastAPI) -> AsyncIterator[None]:
        images.start()
        try:
            yield
        finally:
            images.stop()

    chain_lifespan(app, run)
    return images
