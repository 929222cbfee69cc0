"""What the residency manager knows of each model: its copies, and how it was used.

    Entry "sdxl"  ram: Copy(handle)          gpus: {"cuda:0": Copy(handle, leases=1)}
                  uses, last_used, value     arriving: {"cuda:1"}  (a copy on its way)

A copy is one set of weights on one tier. ``leases`` counts the jobs running on it;
``busy`` marks a copy a transition has claimed (it is leaving its tier). The manager
changes these only under its state lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .backends.base import ModelSpec
from .plan import Tier


@dataclass(eq=False)
class Copy:
    """One copy of a model's weights, on the host or on one GPU."""

    where: str
    handle: Any = None
    leases: int = 0
    busy: bool = False  # claimed by a transition: no new lease, no other plan


@dataclass(eq=False)
class Entry:
    spec: ModelSpec
    ram: Copy | None = None
    gpus: dict[str, Copy] = field(default_factory=dict)
    arriving: set[str] = field(default_factory=set)  # tiers a copy of it is on its way to
    pinned: bool = False
    uses: int = 0
    last_used: int = 0
    value: float = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def nbytes(self) -> int:
        return self.spec.nbytes

    @property
    def tier(self) -> Tier:
        """The highest tier holding a copy."""
        return Tier.GPU if self.gpus else Tier.RAM if self.ram is not None else Tier.DISK

    @property
    def device(self) -> str | None:
        return min(self.gpus) if self.gpus else None

    @property
    def devices(self) -> list[str]:
        return sorted(self.gpus)

    @property
    def in_use(self) -> int:
        return sum(c.leases for c in self.gpus.values())

    @property
    def moving(self) -> bool:
        copies = [*self.gpus.values(), *([self.ram] if self.ram else [])]
        return bool(self.arriving) or any(c.busy for c in copies)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.name, "tier": self.tier.value, "device": self.device,
                "devices": self.devices, "in_ram": self.ram is not None,
                "bytes": self.nbytes, "disk_bytes": self.spec.disk_bytes,
                "components": dict(self.spec.footprint.components),
                "pinned": self.pinned, "in_use": self.in_use, "uses": self.uses}
