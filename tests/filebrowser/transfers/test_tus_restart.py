"""kill -9 of the real service mid-PATCH, restart, resume with tuspy, compare sha256."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tusclient import client as tus_client

from atelier_io.diskwrite import BATCH

from .conftest import head, open_patch, sha256, upload_url

MiB = 1024 * 1024


@pytest.mark.parametrize("io", ["off", "on"], ids=["buffered", "direct"])
def test_kill9_mid_upload_then_resume(spawn_server, tmp_path: Path, io: str) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(20 * MiB)
    src = tmp_path / "big.safetensors"
    src.write_bytes(data)
    env = {"ATELIER_UPLOAD_DIRECT_IO": io}
    srv = spawn_server(env=env)
    s = srv.session()
    token = s.headers["Authorization"]
    url = upload_url(s, srv.url, len(data), filename="big.safetensors",
                     folder="models/Stable-diffusion")
    path = urlsplit(url).path
    folder = srv.root / "models" / "Stable-diffusion"

    # 1 MiB verified, then a checksummed PATCH dies half-way with the server
    digest = base64.b64encode(hashlib.sha256(data[:MiB]).digest()).decode()
    sock = open_patch(url, token, 0, MiB, {"Upload-Checksum": f"sha256 {digest}"})
    sock.sendall(data[:MiB])
    assert b" 204 " in sock.recv(4096)
    sock.close()
    rest = data[MiB:]
    digest = base64.b64encode(hashlib.sha256(rest).digest()).decode()
    sock = open_patch(url, token, MiB, len(rest), {"Upload-Checksum": f"sha256 {digest}"})
    sock.sendall(rest[:10 * MiB])
    time.sleep(0.5)
    srv.kill9()
    sock.close()

    srv = spawn_server(root=srv.root, state=srv.state, env=env)
    url = srv.url + path
    r = head(s, url)
    assert r.status_code == 200
    assert r.headers["Upload-Offset"] == str(MiB)  # the unverified bytes are not counted

    # an unchecksummed PATCH dies half-way: what reached the disk is kept (the server
    # writes in batches, so up to one batch still in its memory dies with it)
    sock = open_patch(url, token, MiB, len(rest))
    sock.sendall(rest[:10 * MiB])
    time.sleep(0.5)
    srv.kill9()
    sock.close()
    assert not (folder / "big.safetensors").exists()

    srv = spawn_server(root=srv.root, state=srv.state, env=env)
    url = srv.url + path
    offset = int(head(s, url).headers["Upload-Offset"])
    assert MiB + BATCH <= offset <= 11 * MiB
    partial = [n for n in os.listdir(folder) if n.startswith(".atelier-tmp-tus-")]
    assert os.path.getsize(folder / partial[0]) == offset
    client = tus_client.TusClient(f"{srv.url}/api/tus/", headers={"Authorization": token})
    up = client.uploader(str(src), url=url, chunk_size=4 * MiB, upload_checksum=True)
    assert up.offset == offset
    up.upload()
    assert sha256(folder / "big.safetensors") == hashlib.sha256(data).hexdigest()
    assert [n for n in os.listdir(folder) if n.startswith(".")] == []
