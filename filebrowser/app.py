"""``create_app(settings)``: the FileBrowser ASGI app (routers, error handler, state)."""

from __future__ import annotations

from fastapi import FastAPI

from . import dav  # issue 3
from .core import FileBrowser
from .errors import install_handlers
from .images import install as install_images  # issue 4
from .routes import account, files, usage
from .routes import tus as tus_routes  # issue 3
from .routes import zip as zip_routes  # issue 3
from .settings import Settings


def create_app(settings: Settings, fb: FileBrowser | None = None) -> FastAPI:
    fb = fb or FileBrowser(settings)
    fb.ensure_admin()
    app = FastAPI(title="Atelier", summary="Files, models and GPUs for SD WebUI",
                  version="0.1.0")
    app.state.fb = fb
    app.state.auth = fb.auth
    install_handlers(app)
    for module in (account, files, usage):
        app.include_router(module.router)
    app.include_router(tus_routes.router)  # issue 3: resumable uploads
    app.include_router(zip_routes.router)  # issue 3: folders as streamed zips
    app.mount(dav.MOUNT, dav.build(fb))  # issue 3: WebDAV
    install_images(app, fb)  # issue 4: thumbnails, index and search, shares
    return app
