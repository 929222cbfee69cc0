"""The residency service: settings -> devices, catalog, backend, manager, per-GPU workers."""

from __future__ import annotations

from dataclasses import dataclass

from .backends.diffusers import DiffusersBackend
from .catalog import ModelCatalog
from .devices import HostMemory, probe_devices
from .manager import ResidencyManager
from .metrics import Labels
from .placement import Placement
from .settings import ResidencySettings


@dataclass
class ResidencyService:
    settings: ResidencySettings
    catalog: ModelCatalog
    backend: DiffusersBackend
    manager: ResidencyManager
    placement: Placement

    @classmethod
    def from_settings(cls, settings: ResidencySettings) -> ResidencyService:
        devices = probe_devices(settings.devices, cpu_capacity=int(settings.cpu_device_memory))
        catalog = ModelCatalog(settings.models_dir, dtype=settings.dtype)
        backend = DiffusersBackend(settings.dtype, settings.diffusers_config,
                                   family_of=catalog.family)
        pinned = None if settings.pinned_max is None else int(settings.pinned_max)
        manager = ResidencyManager(
            backend, devices, HostMemory(pinned_max=pinned), catalog,
            reserve=settings.reserve_rule(),
            ram_reserve=int(settings.ram_reserve),
            vram_cap=None if settings.vram_budget is None else int(settings.vram_budget),
            ram_cap=None if settings.ram_budget is None else int(settings.ram_budget),
            policy=settings.policy)
        return cls(settings, catalog, backend, manager,
                   Placement(manager, prefetch=settings.prefetch,
                             spread_queue=settings.spread_queue))

    def gauges(self) -> list[tuple[str, str, Labels, float]]:
        out: list[tuple[str, str, Labels, float]] = []
        snap = self.manager.snapshot()
        rows = [*snap["devices"], snap["ram"]]
        for name, text, key in (("free_bytes", "Measured free memory.", "free"),
                                ("total_bytes", "Total memory.", "total"),
                                ("resident_bytes", "Bytes of our models held there.", "ours"),
                                ("budget_bytes", "Bytes our models may hold now.", "limit")):
            for row in rows:
                out.append((name, text, (("device", row["device"]),), float(row[key])))
        for dev, n in self.placement.queue_lengths().items():
            out.append(("queue_length", "Jobs waiting or running per GPU.", (("device", dev),),
                        float(n)))
        return out

    def close(self) -> None:
        self.placement.close()
