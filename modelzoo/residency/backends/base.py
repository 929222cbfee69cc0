"""What the residency manager asks of a backend: four moves between the tiers.

    disk --load--> RAM --to_device--> GPU
     ^              |  <--to_host---   |
     +----drop------+-------drop-------+

The manager does the byte accounting (``Device.allocate``/``release``) around these calls,
so a backend only moves weights. On a simulated device ``to_device`` must still copy (a
``clone``), so that "from RAM" costs what a host-to-device copy costs, not zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..devices import Device
from ..footprint import Footprint


@dataclass(frozen=True)
class ModelSpec:
    """A model the manager can place: its name, where it lives, and its size at run dtype."""

    name: str
    path: Path
    footprint: Footprint

    @property
    def nbytes(self) -> int:
        return self.footprint.weights


class Backend(Protocol):
    def load(self, spec: ModelSpec, host: Device) -> Any: ...

    def to_device(self, handle: Any, device: Device) -> Any: ...

    def to_host(self, handle: Any, device: Device, host: Device) -> Any: ...

    def drop(self, handle: Any) -> None: ...
