"""GPU-aware model switching: residency tiers (GPU, RAM, disk) sized by measured memory.

Only hands names on, lazily: importing this package loads neither torch, diffusers nor the
web stack, so ``backends.a1111`` can run inside the WebUI and file features without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Device": "devices", "CudaDevice": "devices", "HostMemory": "devices",
    "SimulatedDevice": "devices", "MemoryReading": "memory", "probe_devices": "devices",
    "is_oom": "devices", "PinnedLedger": "devices", "cgroup_memory": "cgroup",
    "Footprint": "footprint", "footprint": "footprint", "read_header": "footprint",
    "ReserveRule": "footprint",
    "Plan": "plan", "Move": "plan", "Budget": "plan", "Tier": "plan",
    "ResidencyManager": "manager", "Lease": "manager", "Switch": "manager",
    "Entry": "entries", "Copy": "entries", "Policy": "policy", "Speeds": "policy",
    "Placement": "placement", "GpuWorker": "placement", "Prefetcher": "placement",
    "ResidencyMetrics": "metrics",
    "ModelCatalog": "catalog", "ModelSpec": "backends.base",
    "ResidencySettings": "settings", "ResidencyService": "service",
    "Family": "families", "detect": "families", "HashStore": "hashes",
    "GenerateService": "generate.service", "GenerationRequest": "generate.request",
    "build_router": "api", "create_tables": "db", "chosen_checkpoint": "db",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return getattr(import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return __all__
