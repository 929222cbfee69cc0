"""WebDAV at /dav/ with real clients: webdav4 (Python) and rclone (the Debian package)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from webdav4.client import Client, HTTPError

from ...conftest import ADMIN_PASSWORD, Server
from .conftest import both_io, sha256

PASS = "user-pass-123"


def dav(server: Server, user: str, password: str = PASS) -> Client:
    return Client(f"{server.url}/dav/", auth=(user, password))


def test_every_method_needs_credentials(server: Server) -> None:
    for method in ("OPTIONS", "PROPFIND", "GET", "HEAD", "PUT", "DELETE", "MKCOL", "LOCK",
                   "MOVE", "COPY", "PROPPATCH", "UNLOCK"):
        r = requests.request(method, f"{server.url}/dav/models", timeout=10)
        assert r.status_code == 401, method
        assert r.headers["WWW-Authenticate"].startswith("Basic")
    r = requests.request("PROPFIND", f"{server.url}/dav/", auth=("admin", "wrong"))
    assert r.status_code == 401
    r = requests.request("PROPFIND", f"{server.url}/dav/", auth=("admin", "atl_bogus"))
    assert r.status_code == 401


def test_class_1_and_2_with_webdav4(server: Server, tmp_path: Path) -> None:
    server.add_user("ann")
    r = requests.options(f"{server.url}/dav/", auth=("ann", PASS))
    assert {"1", "2"} <= {c.strip() for c in r.headers["DAV"].split(",")}
    c = dav(server, "ann")
    src = tmp_path / "x.safetensors"
    src.write_bytes(os.urandom(300_000))
    c.upload_file(str(src), "users/ann/x.safetensors")
    c.mkdir("users/ann/sub")
    c.move("users/ann/x.safetensors", "users/ann/sub/y.safetensors")
    c.copy("users/ann/sub/y.safetensors", "users/ann/sub/z.safetensors")
    assert sorted(c.ls("users/ann/sub", detail=False)) == [  # type: ignore[type-var]
        "users/ann/sub/y.safetensors", "users/ann/sub/z.safetensors"]
    out = tmp_path / "back"
    c.download_file("users/ann/sub/z.safetensors", str(out))
    assert out.read_bytes() == src.read_bytes()
    c.remove("users/ann/sub/y.safetensors")
    assert not (server.root / "users/ann/sub/y.safetensors").exists()
    # a delete from a mounted drive lands in the trash, as one through the API does
    ann = server.session("ann", PASS)
    trashed = ann.get(f"{server.url}/api/fs/trash").json()
    assert [t["orig_path"] for t in trashed] == ["users/ann/sub/y.safetensors"]
    r = ann.post(f"{server.url}/api/fs/trash/{trashed[0]['id']}/restore", json={})
    assert r.status_code == 200
    assert (server.root / "users/ann/sub/y.safetensors").read_bytes() == src.read_bytes()
    usage = server.session("ann", PASS).get(f"{server.url}/api/usage").json()[0]
    assert usage["uploaded_bytes"] >= 300_000 and usage["downloaded_bytes"] >= 300_000


def test_token_as_password(server: Server) -> None:
    s = server.add_user("ann")
    token = s.headers["Authorization"].removeprefix("Bearer ")
    c = dav(server, "ann", token)
    assert "users/ann" in c.ls("users", detail=False)
    with pytest.raises(HTTPError):
        dav(server, "bob", token).ls("users")  # a token names its own user


def test_scope_and_read_only_models(server: Server, tmp_path: Path) -> None:
    server.add_user("ann")
    server.add_user("bob")
    (server.root / "users/bob/secret.txt").write_text("bob's")
    (server.root / "models/Lora/shared.safetensors").write_bytes(b"shared")
    c = dav(server, "ann")
    assert sorted(c.ls("", detail=False)) == ["models", "users"]  # type: ignore[type-var]
    assert c.ls("users", detail=False) == ["users/ann"]
    auth = ("ann", PASS)
    base = f"{server.url}/dav"
    assert requests.request("PROPFIND", f"{base}/users/bob", auth=auth).status_code == 404
    assert requests.get(f"{base}/users/bob/secret.txt", auth=auth).status_code == 404
    assert requests.get(f"{base}/models/Lora/shared.safetensors", auth=auth).content == \
        b"shared"
    assert requests.put(f"{base}/models/Lora/new.bin", data=b"x", auth=auth).status_code == 403
    assert requests.delete(f"{base}/models/Lora/shared.safetensors",
                           auth=auth).status_code == 403
    assert requests.request("MKCOL", f"{base}/models/x", auth=auth).status_code == 403
    r = requests.request("MOVE", f"{base}/users/ann/outputs", auth=auth, headers={
        "Destination": f"{base}/users/bob/stolen"})
    assert r.status_code == 404
    r = requests.request("COPY", f"{base}/models/Lora/shared.safetensors", auth=auth,
                         headers={"Destination": f"{base}/users/ann/mine.safetensors"})
    assert r.status_code == 201
    assert requests.delete(f"{base}/users/ann", auth=auth).status_code == 403
    assert requests.put(f"{base}/users/ann/.atelier-x", data=b"x", auth=auth).status_code == 400
    assert requests.put(f"{base}/users/ann/../bob/x", data=b"x", auth=auth).status_code in \
        (400, 404)
    assert not (server.root / "users/bob/x").exists()
    assert requests.put(f"{base}/users/ann/nodir/x", data=b"x", auth=auth).status_code == 409


@both_io
def test_put_is_atomic_and_a_cut_put_leaves_nothing(server: Server) -> None:
    s = server.add_user("ann")
    token = s.headers["Authorization"]
    home = server.root / "users/ann"
    data = os.urandom(2_000_000)
    sock = socket.create_connection(("127.0.0.1", server.port))
    head = (f"PUT /dav/users/ann/m.safetensors HTTP/1.1\r\nHost: x\r\nAuthorization: {token}"
            f"\r\nContent-Length: {len(data)}\r\n\r\n").encode()
    sock.sendall(head + data[:1_000_000])
    time.sleep(0.3)
    assert not (home / "m.safetensors").exists()  # half a model is never visible
    sock.sendall(data[1_000_000:])
    assert b" 201 " in sock.recv(4096)
    sock.close()
    assert (home / "m.safetensors").read_bytes() == data

    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(head.replace(b"m.safetensors", b"cut.bin") + data[:500_000])
    time.sleep(0.3)
    sock.close()
    deadline = time.monotonic() + 10
    while [n for n in os.listdir(home) if n.startswith(".atelier-tmp")] and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(os.listdir(home)) == ["m.safetensors", "models", "outputs"]


def test_locks_guard_put(server: Server) -> None:
    server.add_user("ann")
    auth = ("ann", PASS)
    url = f"{server.url}/dav/users/ann/locked.txt"
    assert requests.put(url, data=b"v1", auth=auth).status_code == 201
    body = ('<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
            "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
            "<D:owner>ann</D:owner></D:lockinfo>")
    r = requests.request("LOCK", url, data=body, auth=auth, headers={"Timeout": "Second-60"})
    assert r.status_code == 200
    token = r.headers["Lock-Token"]
    assert requests.put(url, data=b"v2", auth=auth).status_code == 423
    assert requests.delete(url, auth=auth).status_code == 423
    r = requests.put(url, data=b"v2", auth=auth, headers={"If": f"({token})"})
    assert r.status_code == 204
    r = requests.request("UNLOCK", url, auth=auth, headers={"Lock-Token": token})
    assert r.status_code == 204
    assert requests.put(url, data=b"v3", auth=auth).status_code == 204
    assert (server.root / "users/ann/locked.txt").read_bytes() == b"v3"


@both_io
def test_quota_on_put(server: Server) -> None:
    server.add_user("ann", quota=100_000)
    auth = ("ann", PASS)
    r = requests.put(f"{server.url}/dav/users/ann/big.bin", data=os.urandom(150_000), auth=auth)
    assert r.status_code == 507 and r.json()["error"] == "quota_exceeded"

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(15):
            yield os.urandom(10_000)

    r = requests.put(f"{server.url}/dav/users/ann/big.bin", data=chunks(), auth=auth)
    assert r.status_code == 507
    assert sorted(os.listdir(server.root / "users/ann")) == ["models", "outputs"]


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed")
def test_rclone_copy_both_ways(server: Server, tmp_path: Path) -> None:
    server.add_user("ann")
    obscured = subprocess.run(["rclone", "obscure", PASS], capture_output=True, text=True,
                              check=True).stdout.strip()
    remote = [f"--webdav-url={server.url}/dav", "--webdav-user=ann",
              f"--webdav-pass={obscured}", "--webdav-vendor=other"]
    env = {**os.environ, "RCLONE_CONFIG": str(tmp_path / "rclone.conf")}
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.png").write_bytes(os.urandom(200_000))
    (src / "sub" / "b.safetensors").write_bytes(os.urandom(1_500_000))
    r = subprocess.run(["rclone", "copy", str(src), ":webdav:users/ann/r", *remote],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    dst = server.root / "users/ann/r"
    assert sha256(dst / "sub/b.safetensors") == sha256(src / "sub/b.safetensors")
    assert sha256(dst / "a.png") == sha256(src / "a.png")
    back = tmp_path / "back"
    r = subprocess.run(["rclone", "copy", ":webdav:users/ann/r", str(back), *remote],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sha256(back / "sub/b.safetensors") == sha256(src / "sub/b.safetensors")
    r = subprocess.run(["rclone", "lsf", ":webdav:models", *remote[:2],
                        f"--webdav-pass={obscured}x"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode != 0  # wrong password


def test_admin_sees_everything(server: Server) -> None:
    c = dav(server, "admin", ADMIN_PASSWORD)
    names = c.ls("", detail=False)
    assert {"models", "outputs", "users"} <= set(names)  # type: ignore[arg-type]
    assert ".atelier" not in names


def test_put_evaluates_conditions(server: Server) -> None:
    """Our native PUT evaluates If-Match/If-None-Match and the WebDAV If header itself."""
    server.add_user("ann")
    auth = ("ann", PASS)
    url = f"{server.url}/dav/users/ann/c.txt"
    assert requests.put(url, data=b"one", auth=auth).status_code == 201
    etag = requests.head(url, auth=auth).headers["ETag"]
    r = requests.request("PROPFIND", url, auth=auth, headers={"Depth": "0"})
    # one ETag everywhere (WsgiDAV writes getetag without the quotes)
    assert re.search(r"getetag>([^<]*)<", r.text)[1].strip('"') == etag.strip('"')
    refused = [
        {"If-Match": '"not-it"'},
        {"If-None-Match": "*"},
        {"If-None-Match": etag},
        {"If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"},
        {"If": "(<DAV:no-lock>)"},
        {"If": "(<opaquelocktoken:bogus>)"},
        {"If": '(["not-it"])'},
        {"If": f"<{url}> ([\"not-it\"])"},  # a tagged list naming this file
        {"If": f"(Not [{etag}])"},
    ]
    for headers in refused:
        r = requests.put(url, data=b"two", auth=auth, headers=headers)
        assert r.status_code == 412, (headers, r.status_code, r.text)
        assert r.json()["error"] == "precondition_failed"
    assert (server.root / "users/ann/c.txt").read_bytes() == b"one"
    accepted: list[Callable[[str], dict[str, str]]] = [
        lambda tag: {"If-Match": tag}, lambda tag: {"If": f"([{tag}])"},
        lambda tag: {"If": "(Not <DAV:no-lock>)"},
        lambda tag: {"If": f"<{server.url}/dav/users/ann/other> ([\"x\"])"}]
    for make in accepted:
        headers = make(etag)
        r = requests.put(url, data=b"two", auth=auth, headers=headers)
        assert r.status_code == 204, (headers, r.text)
        assert r.headers["ETag"] == requests.head(url, auth=auth).headers["ETag"]
        etag = r.headers["ETag"]
    r = requests.put(f"{server.url}/dav/users/ann/new.txt", data=b"x", auth=auth,
                     headers={"If-Match": "*"})
    assert r.status_code == 412 and not (server.root / "users/ann/new.txt").exists()
    r = requests.put(f"{server.url}/dav/users/ann/new.txt", data=b"x", auth=auth,
                     headers={"If-None-Match": "*"})
    assert r.status_code == 201


def test_put_respects_locks_on_names_with_spaces(server: Server) -> None:
    """Locks are keyed by the quoted URL: a name with a space must be found too."""
    server.add_user("ann")
    server.add_user("bob")
    server.fb.users.update("bob", role="admin")
    url = f"{server.url}/dav/users/ann/with space.txt"
    assert requests.put(url, data=b"one", auth=("ann", PASS)).status_code == 201
    body = ('<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            '</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>')
    r = requests.request("LOCK", url, data=body, auth=("ann", PASS),
                         headers={"Content-Type": "application/xml", "Depth": "0"})
    assert r.status_code == 200, r.text
    token = r.headers["Lock-Token"].strip("<>")
    r = requests.put(url, data=b"bob was here", auth=("bob", PASS))
    assert r.status_code == 423 and r.json()["error"] == "locked"
    r = requests.put(url, data=b"two", auth=("ann", PASS), headers={"If": f"(<{token}>)"})
    assert r.status_code == 204
    assert (server.root / "users/ann/with space.txt").read_bytes() == b"two"
