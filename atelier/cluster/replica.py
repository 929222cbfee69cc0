"""The GPU deployment: one replica per GPU, each the single service's generation stack.

A replica runs what ``atelier serve`` runs for generation (``generation_router``: the
residency manager, the diffusers backend, the per-GPU worker, the job queue, the
``/api/generate`` and ``/sdapi/v1`` routes) over its own device, and answers the
requests the ingress forwards by calling those routes in-process (ASGI, no socket). So
both editions share every check, error and response shape.

It tells Ray Serve two things:

- the model of each request (``@serve.multiplexed``): Ray records the ids a replica has
  seen, which its default router prefers; the bytes stay the residency manager's call;
- its residency (``record_routing_stats``, every ``ATELIER_CLUSTER_STATS_PERIOD``
  seconds): models on its GPU and in its RAM, the GPU bytes still free for weights, its
  queue. Our router (:mod:`.router`) ranks replicas from this, with no call per request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray import serve

# response headers that the ingress must not copy (it frames the body itself)
_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}


def residency_stats(service: Any, sizes: dict[str, int]) -> dict[str, Any]:
    """What a replica reports to the router (blocking: call from a thread).

    ``gpu`` also lists the models of the jobs running or queued on its GPU workers: they
    are on their way there, and a report taken mid-load must not send the next request
    for the same model elsewhere."""
    manager = service.manager
    snap = manager.snapshot()
    gpu: list[str] = []
    room = 0
    for dev in snap["devices"]:
        gpu.extend(dev["models"])
        room = max(room, manager.budget(dev["device"]).room)
    workers = service.placement.workers.values()
    gpu.extend(m for w in workers for m in w.models() if m not in gpu)
    queue = sum(w.queue_length for w in workers)
    for name in service.catalog.names():
        if name not in sizes:
            try:
                sizes[name] = manager.spec(name).nbytes
            except Exception:  # unreadable or unsupported: never routed to by size
                sizes[name] = 0
    return {"device": ",".join(d["device"] for d in snap["devices"]), "gpu": gpu,
            "ram": list(snap["ram"]["models"]), "room": room, "queue": queue,
            "at": time.time(), "sizes": dict(sizes)}


def device_for(devices: list[str], rank: int) -> str:
    """The device spec of replica ``rank``: 'auto' gives every replica its one visible
    GPU (Ray sets CUDA_VISIBLE_DEVICES per replica), else the rank-th simulated device."""
    if devices == ["auto"]:
        return "auto"
    return devices[rank % len(devices)]


def gpu_replica_class(models_per_replica: int) -> type:
    """The deployment class (its multiplexing LRU size is fixed when the class is made)."""

    class GpuReplica:
        def __init__(self, fb_settings: Any, gpu_settings: Any, devices: list[str]) -> None:
            import httpx
            from fastapi import FastAPI

            from filebrowser import FileBrowser, Principal, current_user, current_user_or_basic

            from ..service import generation_router
            from .caller import CALLER
            from .errors import install

            rank = serve.get_replica_context().rank.rank
            self.rank = rank
            self.settings = gpu_settings.model_copy(
                update={"devices": device_for(devices, rank)})
            fb = FileBrowser(fb_settings)
            app = FastAPI()
            app.state.fb = fb
            app.state.auth = fb.auth

            install(app)

            def caller() -> Principal:
                # The ingress verified the credentials; a replica is reached only through
                # Ray (no port of its own), so it takes the name the ingress sends and
                # reads the user's role from the database now. It never reads credential
                # headers itself: behind the ingress every request would come from the
                # loopback, which a trusted-proxy setting may believe.
                who = CALLER.get()
                if who is None:
                    raise RuntimeError("a replica request without the ingress's caller")
                return fb.auth.principal(fb.users.get(who[0]), who[1])

            app.dependency_overrides[current_user] = caller
            app.dependency_overrides[current_user_or_basic] = caller
            router = generation_router(fb, self.settings)
            app.include_router(router)
            self.router = router
            self.service = router.service
            self._sizes: dict[str, int] = {}
            self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                            base_url="http://replica", timeout=None)

        @serve.multiplexed(max_num_models_per_replica=models_per_replica)
        async def model(self, model_id: str) -> str:
            # The residency manager loads the weights when the job runs (on the GPU
            # worker, with the memory plan); here Ray only learns the id.
            return model_id

        async def record_routing_stats(self) -> dict[str, Any]:
            return await asyncio.to_thread(residency_stats, self.service, self._sizes)

        async def forward(self, caller: tuple[str, str], method: str, path: str,
                          query: str, headers: list[tuple[str, str]], body: bytes
                          ) -> tuple[int, list[tuple[str, str]], bytes]:
            """Run one HTTP request, as ``caller`` (user name, how they authenticated),
            through this replica's routes."""
            from .caller import CALLER

            model = serve.get_multiplexed_model_id()
            if model:
                await self.model(model)
            token = CALLER.set(caller)
            try:
                r = await self.client.request(method, path, params=query or None,
                                              headers=headers, content=body)
            finally:
                CALLER.reset(token)
            out = [(k, v) for k, v in r.headers.multi_items() if k.lower() not in _HOP]
            out.append(("x-atelier-replica", str(self.rank)))
            return r.status_code, out, r.content

        def __del__(self) -> None:
            gen = getattr(getattr(self, "router", None), "generate", None)
            if gen is not None:
                gen.close()
                self.service.close()

    return GpuReplica
