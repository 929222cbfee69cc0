"""Uploads past the page cache, end to end: the default (auto) on a real ext4 disk."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import requests

from atelier_io.diskwrite import BLOCK

from .conftest import patch, upload_url

MiB = 1024 * 1024


def resident(path: Path) -> int:
    """Bytes of ``path`` in the page cache, as util-linux's fincore counts them."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


def test_a_tus_upload_onto_ext4_bypasses_the_cache(make_server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                   ext4: Callable[..., Path]) -> None:
    """The default (auto) end to end: a 24 MiB PATCH lands on disk, not in the cache."""
    root = tmp_path / "nas"
    ext4(root, "64M")
    srv = make_server(root=root)
    s: requests.Session = srv.session()
    data = os.urandom(24 * MiB)
    url = upload_url(s, srv.url, len(data), filename="m.safetensors")
    assert patch(s, url, 0, data).status_code == 204
    assert resident(root / "m.safetensors") <= BLOCK  # a buffered write leaves 24 MiB
    assert (root / "m.safetensors").read_bytes() == data
