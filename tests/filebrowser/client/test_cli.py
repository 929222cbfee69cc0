"""The real ``atelier login/push/pull/usage`` commands as processes against real servers."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ...conftest import ADMIN_PASSWORD, Server
from ..transfers.conftest import sha256

MiB = 1024 * 1024


def atelier(*args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "atelier", *args], input=stdin.encode(),
                          capture_output=True, timeout=timeout, env=os.environ.copy())


def start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "atelier", *args], env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def login(server: Server, user: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    r = atelier("login", server.url, "--user", user, "--password-stdin", stdin=password + "\n")
    assert r.returncode == 0, r.stderr.decode()


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file()}


def wait_for(cond, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def partial_size(folder: Path) -> int:
    names = [n for n in os.listdir(folder) if n.startswith(".atelier-tmp-tus-")] \
        if folder.is_dir() else []
    return os.path.getsize(folder / names[0]) if names else 0


def test_login_stores_token_0600_and_usage(server: Server) -> None:
    r = atelier("login", server.url, "--user", "admin", "--password-stdin", stdin="wrong\n")
    assert r.returncode == 3
    login(server)
    creds = Path(os.environ["HOME"]) / ".config" / "atelier" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    data = json.loads(creds.read_text())
    assert data["url"] == server.url and data["token"].startswith("atl_")
    r = atelier("usage", "--json")
    assert r.returncode == 0, r.stderr.decode()
    assert "admin" in [u["user"] for u in json.loads(r.stdout)]
    r = atelier("usage", "--days")
    assert r.returncode == 0 and b"stored" in r.stdout
    creds.write_text(json.dumps({**data, "token": "atl_revoked"}))
    assert atelier("usage").returncode == 3


def test_login_with_an_existing_token(server: Server) -> None:
    token = server.session().headers["Authorization"].removeprefix("Bearer ")
    assert atelier("login", server.url, "--token", "atl_wrong").returncode == 3
    r = atelier("login", server.url, "--token", token)
    assert r.returncode == 0 and b"as admin" in r.stdout
    assert atelier("usage").returncode == 0


def test_not_logged_in_is_exit_2(server: Server, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    r = atelier("push", str(tmp_path / "f"), "users")
    assert r.returncode == 2 and b"atelier login" in r.stderr


def test_push_tree_then_pull_it_back(server: Server, tmp_path: Path) -> None:
    server.add_user("ann")
    login(server, "ann", "user-pass-123")
    src = tmp_path / "batch"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.png").write_bytes(os.urandom(300_000))
    (src / "sub" / "b.safetensors").write_bytes(os.urandom(2 * MiB + 7))
    (src / "sub" / "deeper" / "c.txt").write_text("prompt: a cat")
    (src / "empty.bin").write_bytes(b"")
    single = tmp_path / "one.bin"
    single.write_bytes(os.urandom(1000))
    r = atelier("push", str(src), str(single), "users/ann/in", "--chunk-mib", "1", "-j", "2")
    assert r.returncode == 0, r.stderr.decode()
    assert b"pushed 5/5 files" in r.stderr
    home = server.root / "users" / "ann" / "in"
    assert tree(home / "batch") == tree(src)
    assert sha256(home / "one.bin") == sha256(single)

    # the same push again: names exist, 'fail' says so per file with exit code 1
    r = atelier("push", str(single), "users/ann/in")
    assert r.returncode == 1 and b"already exists" in r.stderr
    r = atelier("push", str(single), "users/ann/in", "--conflict", "rename")
    assert r.returncode == 0 and (home / "one (1).bin").exists()
    # a read-only target is a clear failure, not a crash; the name prints as it is
    bracketed = tmp_path / "model [pruned].bin"
    bracketed.write_bytes(b"x")
    r = atelier("push", str(bracketed), "models/Lora")
    assert r.returncode == 1 and b"read-only" in r.stderr
    assert b"FAILED " + str(bracketed).encode() in r.stderr

    out = tmp_path / "back"
    r = atelier("pull", "users/ann/in/batch", str(out) + "/", "-j", "3")
    assert r.returncode == 0, r.stderr.decode()
    assert tree(out / "batch") == tree(src)
    r = atelier("pull", "users/ann/in/one.bin", str(tmp_path / "renamed.bin"))
    assert r.returncode == 0 and sha256(tmp_path / "renamed.bin") == sha256(single)
    r = atelier("pull", "users/ann/in/batch", str(out) + "/")
    assert r.returncode == 0 and b"already up to date" in r.stderr
    r = atelier("pull", "users/bob/nothing", str(out))
    assert r.returncode == 1

    usage = json.loads(atelier("usage", "--json").stdout)[0]
    assert usage["uploaded_bytes"] >= 2 * MiB + 300_000
    assert usage["downloaded_bytes"] >= 2 * MiB + 300_000


# one streaming PATCH per file (the default), or 1 MiB requests
PATCH_SIZES = pytest.mark.parametrize("cap", [[], ["--chunk-mib", "1"]],
                                      ids=["streamed", "1MiB-requests"])


@PATCH_SIZES
def test_push_resumes_after_the_cli_is_killed(server: Server, tmp_path: Path,
                                              cap: list[str]) -> None:
    login(server)
    src = tmp_path / "big.safetensors"
    src.write_bytes(os.urandom(16 * MiB))
    folder = server.root / "models" / "Stable-diffusion"
    proc = start("push", str(src), "models/Stable-diffusion", *cap, "--limit-rate", "2M")
    wait_for(lambda: partial_size(folder) >= 3 * MiB)
    proc.kill()
    proc.wait()
    assert not (folder / "big.safetensors").exists()
    r = atelier("push", str(src), "models/Stable-diffusion", "--chunk-mib", "4")
    assert r.returncode == 0, r.stderr.decode()
    assert b"1 resumed" in r.stderr
    assert sha256(folder / "big.safetensors") == sha256(src)
    assert partial_size(folder) == 0


@PATCH_SIZES
def test_push_survives_a_server_restart(spawn_server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                        cap: list[str]) -> None:
    srv = spawn_server()
    login(srv)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(16 * MiB))
    proc = start("push", str(src), "users", *cap, "--limit-rate", "2M")
    wait_for(lambda: partial_size(srv.root / "users") >= 3 * MiB)
    srv.kill9()
    srv = spawn_server(root=srv.root, state=srv.state, port=srv.port)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert sha256(srv.root / "users" / "big.bin") == hashlib.sha256(src.read_bytes()).hexdigest()


def test_pull_resumes_with_range(server: Server, tmp_path: Path) -> None:
    login(server)
    data = os.urandom(12 * MiB)
    (server.root / "outputs" / "grid.png").write_bytes(data)
    dest = tmp_path / "dl"
    dest.mkdir()
    proc = start("pull", "outputs/grid.png", str(dest), "--limit-rate", "2M")
    part = dest / "grid.png.atelier-part"
    wait_for(lambda: part.exists() and part.stat().st_size >= 3 * MiB)
    proc.kill()
    proc.wait()
    have = part.stat().st_size
    r = atelier("pull", "outputs/grid.png", str(dest))
    assert r.returncode == 0, r.stderr.decode()
    assert b"1 resumed" in r.stderr
    assert (dest / "grid.png").read_bytes() == data
    assert not part.exists()
    # the server counted the ranged bytes, not the whole file twice
    usage = server.session().get(f"{server.url}/api/usage").json()[0]
    assert have + (len(data) - have) <= usage["downloaded_bytes"] < 2 * len(data)


def test_pull_rides_out_a_server_restart(spawn_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The connection dies mid-body (kill -9): the same run resumes with Range once the
    server is back, and the file is whole."""
    srv = spawn_server()
    login(srv)
    (srv.root / "outputs").mkdir(parents=True, exist_ok=True)
    data = os.urandom(12 * MiB)
    (srv.root / "outputs" / "big.bin").write_bytes(data)
    dest = tmp_path / "dl"
    dest.mkdir()
    proc = start("pull", "outputs/big.bin", str(dest), "--limit-rate", "2M")
    part = dest / "big.bin.atelier-part"
    wait_for(lambda: part.exists() and part.stat().st_size >= 3 * MiB)
    srv.kill9()
    srv = spawn_server(root=srv.root, state=srv.state, port=srv.port)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert (dest / "big.bin").read_bytes() == data
    assert not part.exists()
    # it resumed rather than starting again: the new server sent less than the file
    usage = srv.session().get(f"{srv.url}/api/usage").json()[0]
    assert usage["downloaded_bytes"] < len(data)


def test_pull_restarts_when_the_file_changed(server: Server, tmp_path: Path) -> None:
    login(server)
    target = server.root / "outputs" / "x.bin"
    target.write_bytes(os.urandom(8 * MiB))
    dest = tmp_path / "dl"
    dest.mkdir()
    proc = start("pull", "outputs/x.bin", str(dest), "--limit-rate", "2M")
    part = dest / "x.bin.atelier-part"
    wait_for(lambda: part.exists() and part.stat().st_size >= MiB)
    proc.kill()
    proc.wait()
    new = os.urandom(8 * MiB)
    target.write_bytes(new)  # If-Range no longer matches: the server sends it all again
    r = atelier("pull", "outputs/x.bin", str(dest))
    assert r.returncode == 0, r.stderr.decode()
    assert (dest / "x.bin").read_bytes() == new


def test_push_fails_loudly_when_the_file_does_not_verify(spawn_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The partial file changes on the server's disk while the server is down: the
    rebuilt hash no longer matches the client's, nothing is placed, the upload is gone,
    and the next run uploads the file afresh."""
    srv = spawn_server()
    login(srv)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(16 * MiB))
    proc = start("push", str(src), "users", "--limit-rate", "2M")
    folder = srv.root / "users"
    wait_for(lambda: partial_size(folder) >= 3 * MiB)
    srv.kill9()
    partial = next(p for p in folder.iterdir() if p.name.startswith(".atelier-tmp-tus-"))
    with open(partial, "r+b") as f:
        f.write(b"\0" * 10)
    srv = spawn_server(root=srv.root, state=srv.state, port=srv.port)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err.decode()
    assert b"checksum does not match" in err and b"afresh" in err
    assert not (folder / "big.bin").exists() and partial_size(folder) == 0
    r = atelier("push", str(src), "users")
    assert r.returncode == 0, r.stderr.decode()
    assert b"resumed" not in r.stderr
    assert sha256(folder / "big.bin") == sha256(src)


def test_push_beyond_the_quota_says_so(server: Server, tmp_path: Path) -> None:
    """The server refuses before reading the streamed body: the client reports why."""
    server.add_user("cap", quota=4 * MiB)
    login(server, "cap", "user-pass-123")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(64 * MiB))
    r = atelier("push", str(src), "users/cap", "--retries", "1")
    assert r.returncode == 1
    assert b"would exceed your quota" in r.stderr, r.stderr.decode()


def test_pull_a_folder_named_as_the_only_remote(server: Server, tmp_path: Path) -> None:
    """One remote path is fetched without a stat; a folder answers 400 and is listed."""
    login(server)
    top = server.root / "outputs" / "day"
    (top / "sub").mkdir(parents=True)
    (top / "a.png").write_bytes(os.urandom(1000))
    (top / "sub" / "b.png").write_bytes(os.urandom(2000))
    r = atelier("pull", "outputs/day", str(tmp_path / "got"))
    assert r.returncode == 0, r.stderr.decode()
    assert b"pulled 2/2 files" in r.stderr
    assert tree(tmp_path / "got" / "day") == tree(top)
    r = atelier("pull", "outputs/nothing-here", str(tmp_path / "x"))
    assert r.returncode == 1 and b"FAILED outputs/nothing-here" in r.stderr
    # a single file keeps the server's modification time (from Last-Modified)
    r = atelier("pull", "outputs/day/a.png", str(tmp_path / "a.png"))
    assert r.returncode == 0
    assert abs((tmp_path / "a.png").stat().st_mtime - (top / "a.png").stat().st_mtime) < 1
    r = atelier("pull", "outputs/day/a.png", str(tmp_path / "a.png"))
    assert r.returncode == 0 and b"already up to date" in r.stderr
