"""What a download reports: progress while it runs, the result, each mirror's part."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FetchProgress:
    name: str
    total: int | None
    done: int
    speed: float        # bytes per second over the last few seconds
    connections: int    # connections moving bytes right now

    @property
    def eta(self) -> float | None:
        if self.total is None or self.speed <= 0:
            return None
        return (self.total - self.done) / self.speed


@dataclass(frozen=True)
class MirrorReport:
    """What one candidate URL did for the download."""

    origin: str
    received: int        # bytes it served in this call
    used: bool           # it served bytes and was not demoted
    note: str | None     # why it was left out, demoted or unusual, if it was


@dataclass(frozen=True)
class FetchResult:
    path: Path
    size: int
    sha256: str | None       # computed (and checked, when one was expected)
    fetched: int             # bytes this call received from the network
    resumed: int             # bytes already on disk from an earlier run
    reused: bool = False     # the file was already there (another replica fetched it)
    endpoints: tuple[str, ...] = ()
    connections: int = 0     # most connections open at once
    mirrors: tuple[MirrorReport, ...] = ()


ProgressCallback = Callable[[FetchProgress], None]
