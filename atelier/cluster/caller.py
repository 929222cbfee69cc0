"""Who the ingress verified, for the request a GPU replica is running.

A module of its own: the replica class is shipped to Ray's workers by value, and a
``ContextVar`` cannot be pickled, so the class reaches this one by import.
"""

from __future__ import annotations

from contextvars import ContextVar

# (user name, how they authenticated) of the request being run
CALLER: ContextVar[tuple[str, str] | None] = ContextVar("atelier_cluster_caller", default=None)
