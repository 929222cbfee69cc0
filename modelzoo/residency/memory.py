"""One memory measurement, shared by the device probes and the cgroup reader."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryReading:
    free: int
    total: int
