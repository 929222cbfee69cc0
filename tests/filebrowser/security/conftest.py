"""A NAS with three callers and something of each to steal.

    users/ann/   a user: her files, the attacker in most tests
    users/bob/   another user: the victim, every file holds ``BOB-SECRET``
    users/vic/   a viewer
    models/      shared, read-only for users and viewers
    outputs/     the WebUI's output folder: admins only
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ...conftest import Server

PW = "user-pass-123"
SECRET = b"BOB-SECRET"


@dataclass
class World:
    srv: Server
    ann: requests.Session
    bob: requests.Session
    vic: requests.Session
    admin: requests.Session

    @property
    def url(self) -> str:
        return self.srv.url

    @property
    def root(self) -> Path:
        return self.srv.root


@pytest.fixture
def world(server: Server) -> World:
    ann = server.add_user("ann")
    bob = server.add_user("bob")
    vic = server.add_user("vic", role="viewer")
    root = server.root
    (root / "users/ann/docs").mkdir(parents=True)
    (root / "users/ann/docs/a.txt").write_bytes(b"ann's a")
    (root / "users/ann/docs/b.txt").write_bytes(b"ann's b")
    (root / "users/bob/private").mkdir(parents=True)
    (root / "users/bob/private/diary.txt").write_bytes(SECRET + b" diary")
    (root / "users/bob/secret.txt").write_bytes(SECRET)
    (root / "users/vic/mine.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "users/vic/mine.txt").write_bytes(b"vic's")
    (root / "models/Lora/style.safetensors").write_bytes(b"shared lora")
    (root / "outputs/grid.txt").write_bytes(b"admin-only output")
    return World(server, ann, bob, vic, server.session())


def zip_names(r: requests.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return sorted(zipfile.ZipFile(io.BytesIO(r.content)).namelist())


def leftovers(root: Path) -> list[str]:
    """Hidden temporary names anywhere under the root (outside our own state folder)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".atelier-tmp-*"))


def is_json_error(r: requests.Response, status: int, code: str | None = None) -> bool:
    body = r.json()
    return r.status_code == status and "message" in body and (code is None
                                                              or body["error"] == code)
