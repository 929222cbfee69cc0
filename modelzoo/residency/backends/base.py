"""What the residency manager asks of a backend: four moves between the tiers.

    disk --load--> RAM --to_device--> GPU
     ^              |  <--to_host---   |
     +----drop------+-------drop-------+

Byte accounting on the devices (``Device.allocate``/``release``: the ledger of a
simulated device; nothing on CUDA, whose allocator counts) is done by the backend,
tensor by tensor, when it sets ``charges_devices = True``; otherwise the manager charges
a model's whole size around each move. A backend that charges makes a leak visible: a
byte left on a simulated device that no copy accounts for.

Contract of ``to_device``: if it raises (a CUDA out-of-memory half way through), the
parts already on the device are freed and ``handle`` is whole on the host again. A
backend that moves in place (``pipe.to``) and cannot promise this gets it from the
manager, which calls ``handle.to(host)`` back (the ``rollback`` method, when defined,
is used instead). ``to_device`` and ``to_host`` may return ``handle`` itself, moved.
On a simulated device ``to_device`` must still copy (a ``clone``), so that "from RAM"
costs what a host-to-device copy costs, not zero.
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

    @property
    def disk_bytes(self) -> int:
        """What a load reads: the files' size, whatever dtype the model runs in."""
        return self.footprint.file_bytes or self.nbytes


class Backend(Protocol):
    def load(self, spec: ModelSpec, host: Device) -> Any: ...

    def to_device(self, handle: Any, device: Device) -> Any: ...

    def to_host(self, handle: Any, device: Device, host: Device) -> Any: ...

    def drop(self, handle: Any) -> None: ...
