"""Eviction policies: which copy goes first, and what each tier keeps.

``cost`` (the default), memory-aware:

- Order, on both tiers: GreedyDual-Size-Frequency (Cherkasova 1998). At each use a model's
  priority becomes ``L + uses * miss_seconds / GiB held``: what bringing it back costs (its
  bytes on disk at the measured read speed, plus the copy to the GPU), per GiB it
  occupies, times how often it was used. ``L`` rises to the priority of each model
  evicted, so a model used often long ago ages out. A large model used once goes before
  small ones used often; a model stored as fp32 (twice the read) is worth more.
- Inclusive RAM tier: a model moved up to a GPU keeps its RAM copy (the staged read, or
  the copy it came from) when the backend copied rather than moved it; evicting it from
  the GPU later costs nothing, and it comes back at RAM speed.
- Copy down or drop: a GPU victim with no RAM copy is copied down only when that costs
  less than half the read it may save, at the measured speeds. Beside a NAS (10+ GiB/s
  down, ~1 GiB/s reads) it is copied; where the file is in the page cache and reads as
  fast as a copy, it is dropped.

``lru``, the baseline: the classic exclusive two-tier LRU (A1111's ``keep_in_cpu`` with a
count instead of bytes): least recently used first on both tiers, every GPU victim copied
down while RAM has room, a copy moved up leaves RAM.

Speeds start as assumptions (a 1 GiB/s disk, 10 GiB/s PCIe) and follow what the moves
measure (an exponential average); a copy down is assumed as fast as a copy up until one
is measured.
"""

from __future__ import annotations

from typing import Protocol

from .backends.base import ModelSpec
from .devices import GIB

DEFAULT_BPS = {"disk": 1.0 * GIB, "h2d": 10.0 * GIB, "d2h": 10.0 * GIB}
POLICIES = ("cost", "lru")
DEMOTE_BELOW = 0.5  # copy a GPU victim to RAM if that costs < this share of a re-read


class Ranked(Protocol):
    """What a policy reads of a model (the manager's ``Entry``)."""

    spec: ModelSpec
    uses: int
    last_used: int
    value: float

    @property
    def nbytes(self) -> int: ...


class Speeds:
    """Bytes per second of the three paths: disk -> RAM, RAM -> GPU, GPU -> RAM."""

    def __init__(self) -> None:
        self.bps = dict(DEFAULT_BPS)
        self.measured: set[str] = set()

    def observe(self, path: str, nbytes: int, seconds: float) -> None:
        if nbytes >= (1 << 20) and seconds > 0:
            rate = nbytes / seconds
            first = path not in self.measured
            self.bps[path] = rate if first else 0.7 * self.bps[path] + 0.3 * rate
            self.measured.add(path)

    def seconds(self, path: str, nbytes: int) -> float:
        if path == "d2h" and path not in self.measured:
            path = "h2d"  # until a copy down is measured, as fast as a copy up
        return nbytes / self.bps[path]

    def reload_seconds(self, spec: ModelSpec) -> float:
        """Time to read a model from disk: its bytes on disk, whatever it runs in."""
        return spec.disk_bytes / self.bps["disk"]


class Policy:
    """One of :data:`POLICIES`, with the use clock and GreedyDual's inflation ``L``."""

    def __init__(self, name: str, speeds: Speeds) -> None:
        if name not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}")
        self.name = name
        self.speeds = speeds
        self.clock = 0
        self.inflation = 0.0

    def miss_seconds(self, e: Ranked) -> float:
        """What it costs to bring ``e`` back to a GPU from disk."""
        return self.speeds.reload_seconds(e.spec) + self.speeds.seconds("h2d", e.nbytes)

    def priority(self, e: Ranked, uses: int) -> float:
        return self.inflation + uses * self.miss_seconds(e) * GIB / max(1, e.nbytes)

    def rank(self, e: Ranked) -> tuple[float, int]:
        """Sort key, ascending: evicted first."""
        if self.name == "lru":
            return (float(e.last_used), 0)
        return (e.value, e.last_used)

    def rank_if_used(self, e: Ranked) -> tuple[float, int]:
        """The rank ``e`` would have after one more use (is a prefetch worth a victim?)."""
        if self.name == "lru":
            return (float(self.clock + 1), 0)
        return (self.priority(e, e.uses + 1), self.clock + 1)

    def touch(self, e: Ranked) -> None:
        self.clock += 1
        e.last_used = self.clock
        e.uses += 1
        e.value = self.priority(e, e.uses)

    def evicted(self, e: Ranked) -> None:
        self.inflation = max(self.inflation, e.value)

    def worth_copying_down(self, e: Ranked) -> bool:
        if self.name == "lru":
            return True
        down = self.speeds.seconds("d2h", e.nbytes)
        return down < DEMOTE_BELOW * self.speeds.reload_seconds(e.spec)

    def keeps_ram_copies(self) -> bool:
        return self.name != "lru"
