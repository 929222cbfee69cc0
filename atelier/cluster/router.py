"""Ray Serve request routers for the GPU deployment (Ray Serve 2.60's custom router API).

A router lives in each process that holds a handle to the deployment (here: the HTTP
ingress replicas, or a driver). It reads each replica's last residency report from
``RunningReplica.routing_stats`` (what the replica's ``record_routing_stats`` returned;
Ray's controller polls it every ``request_routing_stats_period_s`` and pushes it to the
routers), so routing costs no round trip per request. ``choose_replicas`` returns one
replica per rank, best first; Ray then sends to the first whose queue is not full (it
checks its queue-length cache, probing only when it has no entry).

``RoundRobinRouter`` is the baseline the benchmark compares with; Ray's default
(``PowerOfTwoChoicesRequestRouter`` with multiplexing) is the other.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import Any

from ray.serve.request_router import (
    FIFOMixin,
    MultiplexMixin,
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

from .ranking import ReplicaState, overlay, rank

# requests remembered per replica until its next report covers them
_SENT_KEEP = 64


class MemoryAwareRouter(FIFOMixin, MultiplexMixin, RequestRouter):
    """Model on its GPU > in its RAM > most free GPU memory > shortest queue."""

    def initialize_state(self, spread_queue: int = 3, **kwargs: Any) -> None:
        self.spread_queue = int(spread_queue)
        self._sent: dict[ReplicaID, deque[tuple[str, float]]] = defaultdict(
            lambda: deque(maxlen=_SENT_KEEP))

    def state_of(self, replica: RunningReplica) -> ReplicaState:
        cached = self.replica_queue_len_cache.get(replica.replica_id)
        state = ReplicaState.from_stats(replica.replica_id.unique_id, replica.routing_stats,
                                        cached)
        return overlay(state, self._sent.get(replica.replica_id, ()))

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None
                              ) -> list[list[RunningReplica]]:
        model = pending_request.metadata.multiplexed_model_id if pending_request else ""
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        states = [self.state_of(r) for r in candidate_replicas]
        if pending_request is not None:
            pending_request.routing_context.should_backoff = True
        return [[by_id[s.id]] for s in rank(states, model or None,
                                             spread_queue=self.spread_queue)]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID,
                          result: Any) -> None:
        model = pending_request.metadata.multiplexed_model_id
        if model:
            self._sent[replica_id].append((model, time.time()))


class RoundRobinRouter(RequestRouter):
    """Each request to the next replica in turn, whatever it holds (the baseline)."""

    def initialize_state(self, **kwargs: Any) -> None:
        self._turn = 0

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None
                              ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        ordered = sorted(candidate_replicas, key=lambda r: r.replica_id.unique_id)
        start = self._turn % len(ordered)
        self._turn += 1
        return [[r] for r in ordered[start:] + ordered[:start]]


ROUTERS = {"memory": "atelier.cluster.router.MemoryAwareRouter",
           "round-robin": "atelier.cluster.router.RoundRobinRouter",
           "ray": None}  # None: Ray Serve's default (PowerOfTwoChoicesRequestRouter)


def router_config(name: str, *, stats_period: float, spread_queue: int = 3) -> Any:
    """The deployment's ``RequestRouterConfig`` for a router name."""
    from ray.serve.config import RequestRouterConfig

    kwargs: dict[str, Any] = {"request_routing_stats_period_s": stats_period,
                              "request_routing_stats_timeout_s": max(5.0, 10 * stats_period)}
    path = ROUTERS[name]
    if path is not None:
        kwargs["request_router_class"] = path
    if name == "memory":
        kwargs["request_router_kwargs"] = {"spread_queue": spread_queue}
    return RequestRouterConfig(**kwargs)
