"""The application graph, and ``atelier serve-cluster``.

    Ingress (HTTP, FileBrowser auth) --handle, multiplexed model id--> GpuReplica x N

N is the number of devices (``ATELIER_CLUSTER_DEVICES``); each GPU replica asks Ray for
one GPU when there are GPUs (``num_gpus=1``: Ray pins it with CUDA_VISIBLE_DEVICES).
Autoscaling is off: a replica is a GPU.

A ``serve run`` target works too: ``serve run atelier.cluster.app:app`` builds the graph
from the environment (the settings below) when Ray imports it.
"""

from __future__ import annotations

import sys
from typing import Any

from .router import router_config
from .settings import ClusterSettings


def device_specs(cluster: ClusterSettings) -> tuple[list[str], bool]:
    """(one spec per replica, whether each replica takes a GPU)."""
    parts = [p.strip() for p in cluster.devices.split(",") if p.strip()]
    if parts == ["auto"]:
        import ray

        gpus = int(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0
        if gpus:
            return ["auto"] * gpus, True
        return ["cpu"], False
    for p in parts:
        if not (p.startswith("sim:") or p == "cpu"):
            raise ValueError(f"ATELIER_CLUSTER_DEVICES: {p!r} is not 'auto', 'cpu' or "
                             "'sim:SIZE' (each replica sees its GPU as cuda:0: use 'auto')")
    return parts, False


def prepare(fb_settings: Any) -> Any:
    """Open the NAS once in the driver: the first admin, the schema (the replicas then
    start on an existing database instead of racing to create it)."""
    from filebrowser import FileBrowser
    from modelzoo.residency import create_tables

    fb = FileBrowser(fb_settings)
    fb.ensure_admin()
    create_tables(fb.engine)
    return fb


def build(cluster: ClusterSettings, fb_settings: Any, gpu_settings: Any | None = None) -> Any:
    """The bound application (``serve.run`` it)."""
    from ray import serve

    from modelzoo.residency import ResidencySettings

    from .ingress import Ingress
    from .replica import gpu_replica_class

    models_dir = fb_settings.root / "models" / "Stable-diffusion"
    if gpu_settings is None:
        gpu_settings = ResidencySettings(models_dir=models_dir)
    specs, gpus = device_specs(cluster)
    deploy: Any = serve.deployment  # typed for decorator use; called plainly here
    gpu = deploy(gpu_replica_class(cluster.models_per_replica)).options(
        name="GpuReplica",
        num_replicas=len(specs), max_ongoing_requests=cluster.max_ongoing,
        ray_actor_options={"num_gpus": 1 if gpus else 0, "num_cpus": 0},
        request_router_config=router_config(cluster.router, stats_period=cluster.stats_period,
                                            spread_queue=cluster.spread_queue),
    ).bind(fb_settings, gpu_settings, specs)
    ingress = deploy(Ingress).options(name="Ingress", num_replicas=1,
                                                ray_actor_options={"num_cpus": 0})
    return ingress.bind(gpu, fb_settings, models_dir)


def run(cluster: ClusterSettings, fb_settings: Any, *, blocking: bool = True) -> Any:
    """Start Ray Serve's HTTP proxy on ``cluster.host:cluster.port`` and deploy; with
    ``blocking``, serve until interrupted (the caller shuts Ray Serve down)."""
    from ray import serve

    prepare(fb_settings)
    serve.start(http_options={"host": cluster.host, "port": cluster.port})
    handle = serve.run(build(cluster, fb_settings), name="atelier", route_prefix="/",
                       blocking=False)
    print(f"atelier: Ray Serve edition on http://{cluster.host}:{cluster.port} "
          f"({cluster.router} router)", file=sys.stderr, flush=True)
    if blocking:
        import threading

        threading.Event().wait()
    return handle


def _from_env() -> Any:
    from filebrowser import Settings

    fb_settings = Settings()
    prepare(fb_settings)
    return build(ClusterSettings(), fb_settings)


def __getattr__(name: str) -> Any:
    # `serve run atelier.cluster.app:app`: built when Ray asks for it, not on import
    if name == "app":
        return _from_env()
    raise AttributeError(name)
