"""The piece scheduler: who downloads which bytes, with work stealing.

Pure logic, no I/O. The file is a grid of pieces of ``piece_size`` bytes (the last one
may be short); a piece is the unit of recorded progress. A *segment* is the byte range one
connection is working through::

    |---- done ----|== seg A: start..committed..claimed........end ==|.. seg B ..|
                                                  ^ a thief splits here (piece-aligned)

Invariants: segments never overlap; every byte before a segment's ``start`` inside its
first piece is already done (segments start on a piece boundary, or where a previous owner
stopped); ``start <= committed <= claimed <= end``.

A connection *claims* bytes before writing them and *commits* them after, so a thief,
which splits at ``claimed`` rounded up to a piece, never takes bytes already in flight.
Nor bytes already on this machine: ``arrived(segment)`` (set by the engine) says how many
of a segment's next bytes wait unread in its connection's socket. A server that sends a
whole short range at once (nginx's ``limit_rate`` lets a second's worth out at a
request's start) would otherwise see a thief ask again for bytes the owner already has.
When a connection runs out of work it takes a free segment, else it steals the upper half
of the largest remaining segment, so every connection stays busy until the end.

Free segments go out in file order. ``take(worker, chunk)`` carves at most ``chunk`` bytes
off the first free segment, so the done prefix (what the hasher can read) advances with
the download instead of jumping at its end (N connections on a share each keep the prefix
at the first one's progress).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(eq=False)
class Segment:
    start: int
    end: int
    committed: int = field(init=False)
    claimed: int = field(init=False)
    owner: int | None = None

    def __post_init__(self) -> None:
        self.committed = self.claimed = self.start

    @property
    def remaining(self) -> int:
        """Bytes not yet claimed: what a thief could take."""
        return self.end - self.claimed

    @property
    def finished(self) -> bool:
        return self.committed >= self.end


class Scheduler:
    """Hands out segments to ``connections`` workers; thread-safe."""

    def __init__(self, size: int, piece_size: int, connections: int,
                 done: Sequence[bool] | None = None) -> None:
        if size < 0 or piece_size <= 0 or connections <= 0:
            raise ValueError("size >= 0, piece_size > 0 and connections > 0 required")
        self.size = size
        self.piece_size = piece_size
        self.pieces = -(-size // piece_size)
        self.done = list(done) if done is not None else [False] * self.pieces
        if len(self.done) != self.pieces:
            raise ValueError(f"bitmap has {len(self.done)} pieces, expected {self.pieces}")
        self._lock = threading.Lock()
        self.arrived: Callable[[Segment], int] | None = None
        self._free: list[Segment] = []
        self._active: list[Segment] = []
        self._prefix = 0  # index of the first piece not done
        self._advance_prefix()
        self.done_bytes = sum(self.piece_len(i) for i, d in enumerate(self.done) if d)
        self._split_initial(connections)

    # ---- geometry --------------------------------------------------------------------

    def piece_len(self, index: int) -> int:
        return min(self.piece_size, self.size - index * self.piece_size)

    def _align_up(self, offset: int) -> int:
        p = self.piece_size
        return min(self.size, -(-offset // p) * p)

    def missing_runs(self) -> list[tuple[int, int]]:
        """Byte ranges of pieces not done, merged."""
        runs: list[tuple[int, int]] = []
        for i, d in enumerate(self.done):
            if d:
                continue
            lo, hi = i * self.piece_size, i * self.piece_size + self.piece_len(i)
            if runs and runs[-1][1] == lo:
                runs[-1] = (runs[-1][0], hi)
            else:
                runs.append((lo, hi))
        return runs

    def _split_initial(self, connections: int) -> None:
        runs = self.missing_runs()
        missing = sum(hi - lo for lo, hi in runs)
        if not missing:
            return
        target = max(self.piece_size, -(-missing // connections))
        for lo, hi in runs:
            while lo < hi:
                cut = min(hi, self._align_up(lo + target))
                if hi - cut < self.piece_size:  # don't leave a sliver behind
                    cut = hi
                self._free.append(Segment(lo, cut))
                lo = cut

    # ---- scheduling ------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self._prefix >= self.pieces

    @property
    def prefix_bytes(self) -> int:
        """Length of the contiguous done prefix (what can be hashed already)."""
        return min(self.size, self._prefix * self.piece_size)

    def take(self, worker: int, chunk: int | None = None) -> Segment | None:
        """The first free segment (at most ``chunk`` bytes of it, piece-aligned), else half
        of the largest remaining one, else None (all taken)."""
        with self._lock:
            if self._free:
                first = self._free[0]
                cut = self._align_up(first.start + chunk) if chunk else first.end
                if cut < first.end and first.end - cut >= self.piece_size:
                    seg = Segment(first.start, cut)
                    first.start = first.committed = first.claimed = cut
                else:
                    seg = self._free.pop(0)
                seg.owner = worker
                self._active.append(seg)
                return seg
            victim = max(self._active, key=self._stealable, default=None)
            rest = self._stealable(victim) if victim is not None else 0
            if victim is None or rest < 2 * self.piece_size:
                return None
            mid = self._align_up(victim.end - rest + rest // 2)
            if mid >= victim.end or mid <= victim.claimed:
                return None
            seg = Segment(mid, victim.end, owner=worker)
            victim.end = mid
            self._active.append(seg)
            return seg

    def has_work(self) -> bool:
        """Whether another worker would get a segment from ``take`` now."""
        with self._lock:
            return bool(self._free) or any(self._stealable(s) >= 2 * self.piece_size
                                           for s in self._active)

    def _stealable(self, seg: Segment) -> int:
        """Bytes of ``seg`` neither claimed nor already arrived for its owner."""
        ahead = self.arrived(seg) if self.arrived is not None and seg.owner is not None else 0
        return max(0, seg.remaining - ahead)

    def claim(self, seg: Segment, n: int) -> int:
        """Reserve up to ``n`` bytes at ``seg.claimed``; returns how many are still ours."""
        with self._lock:
            n = max(0, min(n, seg.end - seg.claimed))
            seg.claimed += n
            return n

    def commit(self, seg: Segment, n: int) -> list[int]:
        """Record ``n`` claimed bytes as written; returns the pieces that became done."""
        with self._lock:
            old = seg.committed
            seg.committed = new = old + n
            if seg.committed > seg.claimed:
                raise RuntimeError("commit beyond claim")
            self.done_bytes += n
            first = old // self.piece_size
            newly: list[int] = []
            for i in range(first, self.pieces):
                piece_end = i * self.piece_size + self.piece_len(i)
                if piece_end > new:
                    break
                if piece_end > old and not self.done[i]:
                    self.done[i] = True
                    newly.append(i)
            if newly:
                self._advance_prefix()
            if seg.finished and seg in self._active:
                self._active.remove(seg)
            return newly

    def release(self, seg: Segment) -> None:
        """Give back what a failing worker did not write; another worker will take it."""
        with self._lock:
            if seg in self._active:
                self._active.remove(seg)
            seg.claimed = seg.committed
            if seg.committed < seg.end:
                rest = Segment(seg.committed, seg.end)
                self._free.append(rest)
            seg.end = seg.committed

    def _advance_prefix(self) -> None:
        while self._prefix < self.pieces and self.done[self._prefix]:
            self._prefix += 1

    def in_flight(self) -> int:
        with self._lock:
            return sum(1 for s in self._active if s.owner is not None)

    def snapshot(self) -> list[bool]:
        with self._lock:
            return list(self.done)


def bitmap_from_ranges(size: int, piece_size: int,
                       ranges: Iterable[tuple[int, int]]) -> list[bool]:
    """Pieces fully covered by ``ranges`` (used by tests and the benchmark)."""
    pieces = -(-size // piece_size)
    done = [False] * pieces
    for lo, hi in ranges:
        first = -(-lo // piece_size)
        for i in range(first, pieces):
            if min(size, (i + 1) * piece_size) > hi:
                break
            done[i] = True
    return done
