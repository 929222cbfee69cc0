"""Per-user fairness for waiting jobs: start-time fair queueing (pure, not thread-safe).

Each job gets a start tag ``S = max(V, F_user)`` and its user's finish tag becomes
``F_user = S + 1``; ``V`` is the start tag of the job dispatched last. The job with the
smallest start tag goes next (ties: the earlier submit). So users alternate however many
jobs each has queued::

    ann submits a1 a2 a3, then bob b1 b2  ->  a1 b1 a2 b2 a3

(even when a1 left the queue at once for an idle GPU: ann's finish tag remembers it)

and a user back after an hour starts at ``V``, level with the others, rather than
claiming the slots they did not use meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(order=True)
class _Entry:
    start: float
    seq: int
    user: str
    job: str


class FairQueue:
    def __init__(self) -> None:
        self._entries: list[_Entry] = []
        self._finish: dict[str, float] = {}
        self._virtual = 0.0
        self._seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, user: str, job: str) -> None:
        start = max(self._virtual, self._finish.get(user, 0.0))
        self._finish[user] = start + 1
        self._seq += 1
        self._entries.append(_Entry(start, self._seq, user, job))
        self._entries.sort()

    def pop(self) -> tuple[str, str] | None:
        if not self._entries:
            return None
        e = self._entries.pop(0)
        self._virtual = e.start
        return e.user, e.job

    def remove(self, job: str) -> bool:
        for i, e in enumerate(self._entries):
            if e.job == job:
                del self._entries[i]
                return True
        return False

    def order(self) -> list[str]:
        """Job ids in the order they will be dispatched."""
        return [e.job for e in self._entries]

    def count(self, user: str) -> int:
        return sum(e.user == user for e in self._entries)
