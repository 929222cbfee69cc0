"""Nothing left behind: temporary files of killed writers are swept, never counted, and a
live writer's file is never touched (filebrowser/files/tmpsweep.py)."""

from __future__ import annotations

import base64
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import requests

from ...conftest import Server

PASS = "user-pass-123"
MiB = 1024 * 1024
HOURS = 3600


def temps(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(".atelier-tmp-"))


def open_put(url: str, user: str, length: int) -> socket.socket:
    """A WebDAV PUT whose headers are sent; the caller sends (or never sends) the body."""
    u = urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    auth = base64.b64encode(f"{user}:{PASS}".encode()).decode()
    head = (f"PUT {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Basic {auth}\r\n"
            f"Content-Length: {length}\r\n\r\n")
    sock.sendall(head.encode())
    return sock


def wait_for(pred: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


def test_kill9_mid_put_temp_is_not_counted_then_swept(spawn_server: Callable[..., Server],
                                                      tmp_path: Path) -> None:
    srv = spawn_server()
    ann = srv.add_user("ann", quota=12 * MiB)
    home = srv.root / "users" / "ann"
    sock = open_put(f"{srv.url}/dav/users/ann/big.bin", "ann", 11 * MiB)
    sock.sendall(os.urandom(9 * MiB))
    wait_for(lambda: temps(home) and temps(home)[0].stat().st_size >= 8 * MiB)
    srv.kill9()
    sock.close()
    [left] = temps(home)
    size = left.stat().st_size
    assert size >= 8 * MiB  # what a killed writer leaves: hidden, and not ours to delete

    # Restarted: the file is young (it could be a live write of another replica): kept,
    # but it counts nowhere: not in usage, not against the quota
    srv = spawn_server(root=srv.root, state=srv.state)
    ann = srv.session("ann", PASS)
    assert ann.get(f"{srv.url}/api/usage").json()[0]["stored_bytes"] == 0
    r = requests.put(f"{srv.url}/dav/users/ann/fits.bin", data=os.urandom(10 * MiB),
                     auth=("ann", PASS), timeout=60)
    assert r.status_code == 201, r.text  # 8 MiB of leftovers + 10 MiB > 12 MiB quota
    assert ann.get(f"{srv.url}/api/usage").json()[0]["stored_bytes"] == 10 * MiB
    assert temps(home) == [left]
    listing = ann.get(f"{srv.url}/api/fs/list", params={"path": "users/ann"}).json()
    names = [e["name"] for e in listing["entries"]]
    assert "fits.bin" in names and not any(n.startswith(".atelier") for n in names)

    # Once it is older than tmp_stale_seconds (6 h by default), the sweep at start takes it
    srv.stop()
    age(left, 7 * HOURS)
    spawn_server(root=srv.root, state=srv.state)
    wait_for(lambda: not temps(home))
    assert (home / "fits.bin").stat().st_size == 10 * MiB


def test_the_sweep_spares_live_writers_and_owned_partials(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(tmp_stale_seconds=HOURS, tmp_sweep_seconds=0)
    srv.add_user("ann")
    home = srv.root / "users" / "ann"
    sweeper = srv.app.state.tmp_sweeper

    # a PUT in progress whose file looks old: only its lock says it is alive
    sock = open_put(f"{srv.url}/dav/users/ann/live.bin", "ann", 2 * MiB)
    sock.sendall(b"a" * MiB)
    wait_for(lambda: temps(home))
    [live] = temps(home)
    age(live, 2 * HOURS)

    # what killed writers left: a file, a copied folder, an orphaned tus partial
    stale_file = home / ".atelier-tmp-0a1b2c-old.bin"
    stale_file.write_bytes(b"x" * 1000)
    stale_dir = srv.root / "models" / "Lora" / ".atelier-tmp-3d4e5f-copy"
    (stale_dir / "sub").mkdir(parents=True)
    (stale_dir / "sub" / "f.safetensors").write_bytes(b"y" * 500)
    orphan = home / ".atelier-tmp-tus-00000000000000000000000000000000.part"
    orphan.write_bytes(b"z" * 10)
    for p in (stale_file, stale_dir / "sub" / "f.safetensors", stale_dir / "sub", stale_dir,
              orphan):
        age(p, 2 * HOURS)
    # ...and what must stay: a young copy (one fresh file inside an old folder), a
    # resumable upload's partial (its row owns it, however old)
    young_dir = home / ".atelier-tmp-6a7b8c-copying"
    young_dir.mkdir()
    (young_dir / "new.bin").write_bytes(b"n")
    age(young_dir, 2 * HOURS)
    s = srv.session("ann", PASS)
    r = s.post(f"{srv.url}/api/tus/", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": "100",
        "Upload-Metadata": "filename " + base64.b64encode(b"t.bin").decode()})
    assert r.status_code == 201
    [owned] = [p for p in temps(home) if p.name.startswith(".atelier-tmp-tus-")
               and p != orphan]
    age(owned, 100 * HOURS)

    report = sweeper.sweep()
    assert (report.removed, report.busy, report.young) == (3, 1, 1), report
    assert report.bytes == 1000 + 500 + 10
    assert not stale_file.exists() and not stale_dir.exists() and not orphan.exists()
    assert live.exists() and young_dir.exists() and owned.exists()

    sock.sendall(b"b" * MiB)  # the live PUT finishes as if nothing happened
    assert sock.recv(100).startswith(b"HTTP/1.1 201")
    sock.close()
    assert (home / "live.bin").read_bytes() == b"a" * MiB + b"b" * MiB
