"""An eviction plan: what moves where, the bytes freed, the expected cost, then ``execute()``.

Planning is pure bookkeeping over a snapshot; nothing moves until :meth:`Plan.execute`,
so the UI can show a plan first (huggingface_hub's ``DeleteCacheStrategy`` pattern). Moves
run in list order, which the planner chooses so that no tier ever goes over its budget
on the way::

    1. drop RAM victims             (RAM shrinks)
    2. demote GPU victims to RAM    (GPU shrinks, RAM grows into the room made in 1)
       or drop them to disk
    3. stage the target in RAM      (from disk, or down from another GPU)
    4. move the target to the GPU   (its RAM copy is released afterwards)

A plan made earlier may be stale when executed (other requests ran, a job leased one of
its models, another process took GPU memory): ``execute`` plans again under the
manager's lock, against the leases and measures of that moment, and runs that plan.
There are no GPU-to-GPU moves: a model wanted on a second GPU gets a second copy (from
its RAM copy, or read again from disk), so a copy in use is never moved away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Tier(StrEnum):
    GPU = "gpu"
    RAM = "ram"
    DISK = "disk"


@dataclass(frozen=True)
class Move:
    model: str
    src: Tier
    dst: Tier
    nbytes: int
    seconds: float  # expected time of this move
    src_device: str | None = None
    dst_device: str | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "from": self.src.value, "from_device": self.src_device,
                "to": self.dst.value, "to_device": self.dst_device, "bytes": self.nbytes,
                "seconds": round(self.seconds, 4), "reason": self.reason}


@dataclass(frozen=True)
class Budget:
    """One tier's numbers at decision time; ``limit`` is what our models may hold.

    ``ours`` is what our settled copies hold; ``pending`` the bytes of moves under way
    onto this tier (other loads running in parallel), which the measured ``free`` may
    not show yet, so they are counted as taken.
    """

    device: str
    free: int
    total: int
    ours: int
    reserve: int
    cap: int | None = None
    pending: int = 0

    @property
    def limit(self) -> int:
        room = self.free + self.ours - self.reserve
        return max(0, room if self.cap is None else min(room, self.cap))

    @property
    def used(self) -> int:
        return self.ours + self.pending

    @property
    def room(self) -> int:
        """Bytes that fit now without evicting anything."""
        return max(0, self.limit - self.used)

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "free": self.free, "total": self.total,
                "ours": self.ours, "pending": self.pending, "reserve": self.reserve,
                "cap": self.cap, "limit": self.limit}


@dataclass
class Plan:
    target: str
    tier: Tier
    device: str | None
    moves: list[Move]
    budgets: dict[str, Budget]
    generation: int
    reserve: int = 0  # inference memory kept free on the device for this request
    action: str = "load"  # "load", "unload", or "evict" (the out-of-memory answer)
    executor: Callable[[Plan], Plan] | None = field(default=None, repr=False, compare=False)
    executed: bool = False

    @property
    def evictions(self) -> list[Move]:
        return [m for m in self.moves if m.model != self.target]

    @property
    def bytes_freed(self) -> dict[str, int]:
        """Bytes each device/RAM gives up to evictions (the target's own moves excluded)."""
        freed: dict[str, int] = {}
        for m in self.evictions:
            key = m.src_device if m.src is Tier.GPU else "ram"
            freed[key or "ram"] = freed.get(key or "ram", 0) + m.nbytes
        return freed

    @property
    def seconds(self) -> float:
        return sum(m.seconds for m in self.moves)

    @property
    def noop(self) -> bool:
        return not self.moves

    def execute(self) -> Plan:
        if self.executor is None:
            raise RuntimeError("this plan is not bound to a manager")
        return self.executor(self)

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "target": self.target, "tier": self.tier.value,
                "device": self.device,
                "moves": [m.to_json() for m in self.moves], "bytes_freed": self.bytes_freed,
                "expected_seconds": round(self.seconds, 4), "reserve": self.reserve,
                "budgets": {k: b.to_json() for k, b in self.budgets.items()},
                "executed": self.executed}
