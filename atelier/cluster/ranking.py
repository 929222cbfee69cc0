"""Which replica should run a request for a model: a plain function of reported state.

Each replica reports (``record_routing_stats``) the models on its GPU, the models in its
RAM, the bytes its GPU may still take without evicting (``room``) and its queue. The
order, best first::

    the model is on its GPU  >  the model is in its RAM  >  most room  >  shortest queue

A replica whose queue is ``spread_queue`` jobs longer than the shortest loses its tier
(a hot model then gets a second copy elsewhere instead of a queue on one GPU).

Reports are periodic, so they lag: the router overlays the requests it sent since a
replica's last report (:func:`overlay`), which is what keeps a burst of requests for one
model on one replica before that replica has reported loading it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

GPU, RAM, DISK = 0, 1, 2


@dataclass(frozen=True)
class ReplicaState:
    id: str
    gpu: frozenset[str] = frozenset()
    ram: frozenset[str] = frozenset()
    room: int = 0  # bytes its GPU may still take without evicting
    queue: int = 0
    at: float = 0.0  # when the replica measured this (time.time())
    sizes: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_stats(cls, rid: str, stats: Mapping[str, Any] | None,
                   queue: int | None = None) -> ReplicaState:
        """From what a replica's ``record_routing_stats`` returned (empty before its
        first report: it ranks like an empty replica). ``queue``, when known, is the
        router's own live count (Ray's queue-length cache: requests sent minus answered,
        and probes); it wins over the report, which is up to a period old."""
        s = stats or {}
        q = int(s.get("queue", 0)) if queue is None else queue
        return cls(rid, frozenset(s.get("gpu", ())), frozenset(s.get("ram", ())),
                   int(s.get("room", 0)), q, float(s.get("at", 0.0)),
                   dict(s.get("sizes", {})))

    def tier(self, model: str) -> int:
        if model in self.gpu:
            return GPU
        return RAM if model in self.ram else DISK


def overlay(state: ReplicaState, sent: Iterable[tuple[str, float]]) -> ReplicaState:
    """The state with the models routed to it after its report counted as on its GPU
    (the request loads them there), their bytes taken from its room."""
    fresh = [m for m, t in sent if t > state.at and m not in state.gpu]
    if not fresh:
        return state
    room = state.room - sum(state.sizes.get(m, 0) for m in set(fresh))
    return replace(state, gpu=state.gpu | frozenset(fresh), room=room)


def rank(replicas: list[ReplicaState], model: str | None, *,
         spread_queue: int = 3) -> list[ReplicaState]:
    """Replicas best first for a request for ``model`` (None: any model, by room and
    queue)."""
    if not replicas:
        return []
    shortest = min(r.queue for r in replicas)

    def key(r: ReplicaState) -> tuple[int, int, int]:
        tier = r.tier(model) if model else DISK
        if spread_queue and r.queue - shortest >= spread_queue:
            tier = DISK
        return (tier, -r.room, r.queue)

    return sorted(replicas, key=key)
