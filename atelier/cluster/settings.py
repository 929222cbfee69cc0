"""Settings of the Ray Serve edition, declared once (env prefix ``ATELIER_CLUSTER_``).

The residency settings (``ATELIER_GPU_*``) and FileBrowser's (``ATELIER_ROOT``,
``ATELIER_DATABASE_URL``, ...) apply in every replica as in the single service; these say
how many replicas run, on which devices, and how requests are routed between them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClusterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_CLUSTER_", extra="ignore")

    devices: str = Field(
        "auto", description="One GPU replica per entry: 'auto' (one per CUDA GPU Ray sees, "
                            "each with num_gpus=1; one CPU replica when there is none), or "
                            "simulated devices 'sim:8GiB,sim:8GiB,sim:8GiB' (CPU machines, "
                            "tests).")
    router: Literal["memory", "ray", "round-robin"] = Field(
        "memory", description="'memory': our router (model on the GPU > in RAM > most free "
                              "GPU memory > shortest queue); 'ray': Ray Serve's default "
                              "multiplexed power-of-two router; 'round-robin'.")
    models_per_replica: int = Field(
        4, ge=1, description="Models a replica reports to Ray Serve's multiplexing (its "
                             "@serve.multiplexed LRU); only the 'ray' router reads them. "
                             "What stays in memory is the residency manager's decision.")
    stats_period: float = Field(
        0.5, gt=0, description="Seconds between the residency reports each replica sends "
                               "the router (record_routing_stats).")
    spread_queue: int = Field(
        3, ge=0, description="A replica holding the model loses its preference once its "
                             "queue is this many jobs longer than the shortest (0 = never).")
    max_ongoing: int = Field(
        16, ge=1, description="Requests one replica takes at once (Ray Serve's "
                              "max_ongoing_requests); more wait in the router.")
    host: str = Field("127.0.0.1", description="Address Ray Serve's HTTP proxy listens on.")
    port: int = Field(7863, ge=1, le=65535, description="Port of Ray Serve's HTTP proxy.")
