"""The standalone service: FileBrowser's app with ModelZoo's routers and the pages.

This is the one place that knows both packages, and it reaches them only through their
public names. ModelZoo gets FileBrowser's ``current_user`` dependency (and, for the
WebUI-compatible ``/sdapi/v1`` routes, the variant that also accepts HTTP Basic, which
WebUI API clients send), the caller's home and outputs folders, and the quota and usage
hooks that make fetched models and generated images count like uploads; it never
imports filebrowser itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import APIRouter, FastAPI

import modelzoo
from filebrowser import (
    FileBrowser,
    Principal,
    QuotaExceeded,
    Settings,
    current_user,
    current_user_or_basic,
    require_gateway,
)
from filebrowser import create_app as create_filebrowser

from . import idle, lifeline
from .ui import install as install_pages

log = logging.getLogger("atelier")


def _quota_room(fb: FileBrowser) -> Callable[[Principal], int | None]:
    def room(p: Principal) -> int | None:
        quota = p.user.quota_bytes
        if quota is None:
            return None
        return quota - fb.usage.stored_bytes(p.name, max_age=fb.settings.quota_recheck_seconds)

    return room


def _record_image(fb: FileBrowser) -> Callable[[Principal, str, int], None]:
    def record(p: Principal, rel: str, nbytes: int) -> None:
        fb.usage.record(p.name, "generate", f"users/{p.name}/outputs/{rel}", nbytes)

    return record


def _add_models(app: FastAPI, fb: FileBrowser) -> Any:
    """One-click model fetch: sources, jobs, library."""
    def home_of(p: Principal) -> str:
        return fb.users.home(p.name).relative_to(fb.root).as_posix()

    def check_quota(p: Principal, adding: int) -> None:
        try:
            fb.check_quota(p, adding)
        except QuotaExceeded as e:
            raise modelzoo.QuotaExceeded(e.message) from None

    router = modelzoo.build_router(
        modelzoo.ZooSettings(root=fb.root, state_dir=fb.settings.state_dir),
        engine=fb.engine, root=fb.root, current_user=current_user, home_of=home_of,
        check_quota=check_quota, fetch_settings=modelzoo.FetchSettings())
    app.include_router(router)
    app.state.metrics.include(router.zoo.metrics)  # type: ignore[attr-defined]
    # `atelier serve` calls these when a stop begins: the job event streams end then
    app.state.on_exit = [*getattr(app.state, "on_exit", []), router.zoo.closing.set]  # type: ignore[attr-defined]
    return router.zoo  # type: ignore[attr-defined]


def generation_router(fb: FileBrowser, settings: Any = None) -> Any:
    """ModelZoo's generation routes over FileBrowser's users, outputs and quotas (also
    what each GPU replica of the Ray Serve edition runs: ``atelier.cluster``)."""
    from modelzoo.residency import ResidencySettings, build_router

    if settings is None:
        settings = ResidencySettings(models_dir=fb.root / "models" / "Stable-diffusion")
    return build_router(settings, engine=fb.engine, current_user=current_user,
                        open_outputs=fb.open_outputs, quota_room=_quota_room(fb),
                        record_image=_record_image(fb), sdapi_user=current_user_or_basic)


def _add_generation(app: FastAPI, fb: FileBrowser) -> Any:
    """GPU-aware model switching and generation: optional (torch and diffusers)."""
    try:
        router = generation_router(fb)
    except ImportError as exc:
        log.info("model switching API not available: %s", exc)
        return None
    app.include_router(router)
    app.state.metrics.include(router.service.manager.metrics.registry)
    return router


def _add_idle(app: FastAPI, zoo: Any, gen: Any) -> None:
    """Idle time for /api/health, and the scale-down when ATELIER_IDLE_MINUTES is set."""
    activity = idle.Activity()
    activity.busy.append(lambda: len(zoo.runner.active))
    release = None
    if gen is not None:
        jobs = gen.generate.jobs
        activity.busy.append(lambda: jobs.in_flight + len(jobs.queue))
        release = gen.service.manager.release_all
    watch = idle.IdleWatch(activity, idle.IdleSettings(), release)
    app.add_middleware(idle.IdleMiddleware, activity=activity)
    app.state.health = [*getattr(app.state, "health", []), watch.health]
    app.state.idle = watch

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(watch.run())
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    app.include_router(APIRouter(lifespan=lifespan))


def create_app(settings: Settings) -> FastAPI:
    app = create_filebrowser(settings)
    fb: FileBrowser = app.state.fb
    install_pages(app)  # the web pages under /ui/
    # The WebUI extension's side: its lifeline and identity proof, and what the WebUI
    # process reports of its own checkpoints (no torch needed for either).
    app.include_router(lifeline.build_router())
    webui = modelzoo.build_webui_router(current_user=current_user,
                                        require_gateway=require_gateway)
    app.include_router(webui)
    # a stop answers the extension's long poll at once (it would hold the stop 25 s)
    app.state.on_exit = [*getattr(app.state, "on_exit", []), webui.link.close]  # type: ignore[attr-defined]
    zoo = _add_models(app, fb)
    gen = _add_generation(app, fb)
    _add_idle(app, zoo, gen)
    return app
