"""Two ``atelier serve`` processes on one NAS root and one PostgreSQL database.

``replicas(n, env=...)`` starts them (each with its own state folder, as two containers
would have) and returns their :class:`~tests.conftest.Server` handles; the stand-in
Civitai of the ModelZoo tests is shared from there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ..conftest import Server
from ..modelzoo.conftest import civitai  # noqa: F401  (the stand-in, as a fixture here)


@pytest.fixture
def replicas(spawn_server: Callable[..., Server], postgres_db: str,
             tmp_path: Path) -> Callable[..., list[Server]]:
    def start(n: int = 2, env: dict[str, str] | None = None,
              each: list[dict[str, str]] | None = None) -> list[Server]:
        """``env`` for all of them, ``each[i]`` for replica i only."""
        full = {"ATELIER_DB_URL": postgres_db, **(env or {})}
        return [spawn_server(root=tmp_path / "nas", state=tmp_path / f"state-{i}",
                             env={**full, "ATELIER_MODELS_REPLICA_ID": f"replica-{i}",
                                  **(each[i] if each else {})})
                for i in range(n)]

    return start
