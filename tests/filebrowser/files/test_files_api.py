"""The file API over real HTTP: listing, stat, mkdir, move, copy, trash, download, upload."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ...conftest import Server


@pytest.fixture
def admin(server: Server) -> requests.Session:
    return server.session()


def api(srv: Server, route: str) -> str:
    return f"{srv.url}/api/fs/{route}"


def make_files(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"f{i:03d}.png").write_bytes(b"x" * (n - i))
        os.utime(folder / f"f{i:03d}.png", (1_700_000_000 + i, 1_700_000_000 + i))


def walk_pages(s: requests.Session, srv: Server, **params: object) -> Iterator[dict]:
    cursor = None
    while True:
        q = dict(params)
        if cursor:
            q["cursor"] = cursor
        r = s.get(api(srv, "list"), params=q)
        assert r.status_code == 200, r.text
        page = r.json()
        yield from page["entries"]
        cursor = page["next"]
        if not cursor:
            return


def test_list_paginates_folders_first_in_every_order(server: Server, admin: requests.Session
                                                     ) -> None:
    make_files(server.root / "outputs/many", 25)
    for d in ("zdir", "adir"):
        (server.root / "outputs/many" / d).mkdir()
    names = [e["name"] for e in walk_pages(admin, server, path="outputs/many", limit=7)]
    assert names == ["adir", "zdir"] + [f"f{i:03d}.png" for i in range(25)]
    by_size = [e["name"] for e in walk_pages(admin, server, path="outputs/many", sort="size",
                                             limit=4)]
    assert by_size[:2] == ["adir", "zdir"] and by_size[2:] == [f"f{i:03d}.png"
                                                               for i in reversed(range(25))]
    by_mtime_desc = [e["name"] for e in walk_pages(admin, server, path="outputs/many",
                                                   sort="mtime", order="desc", limit=5)]
    assert by_mtime_desc[2:] == [f"f{i:03d}.png" for i in reversed(range(25))]
    assert set(by_mtime_desc[:2]) == {"adir", "zdir"}


def test_list_filters_by_kind_and_reports_total(server: Server, admin: requests.Session) -> None:
    d = server.root / "outputs/mixed"
    d.mkdir()
    for name in ("a.png", "b.safetensors", "c.txt", "d.JPG"):
        (d / name).write_bytes(b"1")
    (d / "sub").mkdir()
    r = admin.get(api(server, "list"), params={"path": "outputs/mixed", "kind": ["image"]})
    assert [e["name"] for e in r.json()["entries"]] == ["a.png", "d.JPG"]
    r = admin.get(api(server, "list"), params={"path": "outputs/mixed",
                                               "kind": ["model", "dir"]})
    assert [e["name"] for e in r.json()["entries"]] == ["sub", "b.safetensors"]
    assert r.json()["total"] == 2


def test_bad_cursor_is_400(server: Server, admin: requests.Session) -> None:
    r = admin.get(api(server, "list"), params={"path": "", "cursor": "not-a-cursor"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_input"


def test_user_sees_home_and_models_only(server: Server) -> None:
    ann = server.add_user("ann")
    server.add_user("bob")
    top = [e["name"] for e in ann.get(api(server, "list"), params={"path": ""}).json()["entries"]]
    assert top == ["models", "users"]
    users = ann.get(api(server, "list"), params={"path": "users"}).json()["entries"]
    assert [e["name"] for e in users] == ["ann"]
    r = ann.get(api(server, "list"), params={"path": "outputs"})
    assert r.status_code == 404


def test_stat_mkdir_p(server: Server, admin: requests.Session) -> None:
    r = admin.post(api(server, "mkdir"), json={"path": "outputs/a/b/c"})
    assert r.status_code == 201 and r.json()["type"] == "dir"
    assert (server.root / "outputs/a/b/c").is_dir()
    assert admin.post(api(server, "mkdir"), json={"path": "outputs/a/b/c"}).status_code == 201
    (server.root / "outputs/file").write_text("x")
    r = admin.post(api(server, "mkdir"), json={"path": "outputs/file"})
    assert r.status_code == 409
    st = admin.get(api(server, "stat"), params={"path": "outputs/file"}).json()
    assert st["size"] == 1 and st["type"] == "file" and st["path"] == "outputs/file"


def test_move_rename_and_conflicts(server: Server, admin: requests.Session) -> None:
    (server.root / "outputs/a.txt").write_text("A")
    (server.root / "outputs/b.txt").write_text("B")
    r = admin.post(api(server, "move"), json={"src": "outputs/a.txt", "dst": "outputs/b.txt"})
    assert r.status_code == 409 and (server.root / "outputs/a.txt").read_text() == "A"
    r = admin.post(api(server, "move"), json={"src": "outputs/a.txt", "dst": "outputs/b.txt",
                                              "conflict": "rename"})
    assert r.json()["path"] == "outputs/b (1).txt"
    assert (server.root / "outputs/b (1).txt").read_text() == "A"
    r = admin.post(api(server, "move"), json={"src": "outputs/b (1).txt",
                                              "dst": "outputs/b.txt", "conflict": "overwrite"})
    assert r.status_code == 200 and (server.root / "outputs/b.txt").read_text() == "A"
    (server.root / "outputs/d").mkdir()
    r = admin.post(api(server, "move"), json={"src": "outputs/d", "dst": "outputs/d/e"})
    assert r.status_code == 400


def test_copy_is_streamed_and_counted(server: Server) -> None:
    ann = server.add_user("ann")
    data = os.urandom(3 * 1024 * 1024)
    (server.root / "models/Lora/style.safetensors").write_bytes(data)
    r = ann.post(api(server, "copy"), json={"src": "models/Lora/style.safetensors",
                                            "dst": "users/ann/models/style.safetensors"})
    assert r.status_code == 201
    assert (server.root / "users/ann/models/style.safetensors").read_bytes() == data
    usage = ann.get(f"{server.url}/api/usage").json()[0]
    assert usage["stored_bytes"] == len(data)


def test_shared_models_are_read_only_for_users_and_viewers(server: Server) -> None:
    ann = server.add_user("ann")
    vic = server.add_user("vic", role="viewer")
    (server.root / "models/Lora/a.safetensors").write_bytes(b"1")
    r = ann.post(api(server, "mkdir"), json={"path": "models/Lora/new"})
    assert r.status_code == 403 and r.json()["error"] == "read_only"
    r = ann.post(api(server, "delete"), json={"path": "models/Lora/a.safetensors"})
    assert r.status_code == 403
    r = vic.post(api(server, "mkdir"), json={"path": "users/vic/outputs/x"})
    assert r.status_code == 403
    assert vic.get(api(server, "download"), params={"path": "models/Lora/a.safetensors"}
                   ).status_code == 200
    admin = server.session()
    assert admin.post(api(server, "mkdir"), json={"path": "models/Lora/new"}).status_code == 201
    # nobody removes a scope root
    r = ann.post(api(server, "delete"), json={"path": "users/ann"})
    assert r.status_code == 403 and (server.root / "users/ann").is_dir()


def test_trash_restore_purge(server: Server) -> None:
    ann = server.add_user("ann")
    f = server.root / "users/ann/outputs/img.png"
    f.write_bytes(b"png" * 100)
    item = ann.post(api(server, "delete"), json={"path": "users/ann/outputs/img.png"}).json()
    assert not f.exists()
    assert [t["id"] for t in ann.get(api(server, "trash")).json()] == [item["id"]]
    bob = server.add_user("bob")
    assert bob.get(api(server, "trash")).json() == []
    r = bob.post(api(server, f"trash/{item['id']}/restore"), json={})
    assert r.status_code == 404
    f.write_bytes(b"new")  # something else took the name meanwhile
    r = ann.post(api(server, f"trash/{item['id']}/restore"), json={})
    assert r.status_code == 409
    r = ann.post(api(server, f"trash/{item['id']}/restore"), json={"conflict": "rename"})
    assert r.json()["path"] == "users/ann/outputs/img (1).png"
    assert (server.root / "users/ann/outputs/img (1).png").read_bytes() == b"png" * 100
    item = ann.post(api(server, "delete"), json={"path": "users/ann/outputs/img.png"}).json()
    assert ann.delete(api(server, f"trash/{item['id']}")).status_code == 200
    assert ann.get(api(server, "trash")).json() == []
    assert not any((server.root / ".atelier/trash/ann").iterdir())


def test_download_range_etag_and_safe_headers(server: Server, admin: requests.Session) -> None:
    data = os.urandom(100_000)
    (server.root / "outputs/blob.bin").write_bytes(data)
    url = api(server, "download")
    r = admin.get(url, params={"path": "outputs/blob.bin"})
    assert r.content == data and r.headers["accept-ranges"] == "bytes"
    etag = r.headers["etag"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in r.headers["content-security-policy"]
    assert r.headers["content-disposition"].startswith("attachment;")
    assert "last-modified" in r.headers
    r = admin.get(url, params={"path": "outputs/blob.bin"}, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["content-range"] == "bytes 10-19/100000"
    r = admin.get(url, params={"path": "outputs/blob.bin"}, headers={"Range": "bytes=-5"})
    assert r.content == data[-5:]
    r = admin.get(url, params={"path": "outputs/blob.bin"}, headers={"Range": "bytes=200000-"})
    assert r.status_code == 416
    r = admin.get(url, params={"path": "outputs/blob.bin"}, headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""
    r = admin.get(url, params={"path": "outputs/blob.bin"},
                  headers={"Range": "bytes=0-9", "If-Range": etag})
    assert r.status_code == 206
    r = admin.get(url, params={"path": "outputs/blob.bin"},
                  headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == data


def test_stored_html_and_svg_never_render(server: Server, admin: requests.Session) -> None:
    (server.root / "outputs/x.html").write_text("<script>alert(1)</script>")
    (server.root / "outputs/x.svg").write_text("<svg onload='alert(1)'/>")
    for name in ("x.html", "x.svg"):
        r = admin.get(api(server, "download"), params={"path": f"outputs/{name}", "inline": True})
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-disposition"].startswith("attachment;")
        assert r.headers["x-content-type-options"] == "nosniff"
    (server.root / "outputs/ok.png").write_bytes(b"\x89PNG")
    r = admin.get(api(server, "download"), params={"path": "outputs/ok.png", "inline": True})
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"].startswith("inline;")


def test_upload_atomic_with_conflict_policies(server: Server) -> None:
    ann = server.add_user("ann")
    url = api(server, "upload")
    target = "users/ann/outputs"
    r = ann.post(url, params={"path": target}, files=[("files", ("a.png", b"one")),
                                                      ("files", ("b.png", b"two"))])
    assert r.status_code == 201, r.text
    assert [f["path"] for f in r.json()["files"]] == [f"{target}/a.png", f"{target}/b.png"]
    r = ann.post(url, params={"path": target}, files=[("files", ("a.png", b"again"))])
    assert r.status_code == 409 and (server.root / target / "a.png").read_bytes() == b"one"
    r = ann.post(url, params={"path": target, "conflict": "rename"},
                 files=[("files", ("a.png", b"again"))])
    assert r.json()["files"][0]["path"] == f"{target}/a (1).png"
    r = ann.post(url, params={"path": target, "conflict": "overwrite"},
                 files=[("files", ("a.png", b"three"))])
    assert (server.root / target / "a.png").read_bytes() == b"three"
    r = ann.post(url, params={"path": target}, files=[("files", ("../../evil.png", b"x"))])
    assert r.status_code == 201 and (server.root / target / "evil.png").exists()
    r = ann.post(url, params={"path": "models/Lora"}, files=[("files", ("m.bin", b"x"))])
    assert r.status_code == 403
    leftovers = [p for p in (server.root / target).iterdir() if p.name.startswith(".atelier")]
    assert leftovers == []
    usage = ann.get(f"{server.url}/api/usage").json()[0]
    assert usage["uploaded_bytes"] == len(b"one" + b"two" + b"again" + b"three" + b"x")


def test_upload_over_quota_is_507_and_leaves_nothing(server: Server) -> None:
    ann = server.add_user("ann", quota=1000)
    r = ann.post(api(server, "upload"), params={"path": "users/ann/outputs"},
                 files=[("files", ("big.bin", b"x" * 2000))])
    assert r.status_code == 507 and r.json()["error"] == "quota_exceeded"
    assert list((server.root / "users/ann/outputs").iterdir()) == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (tests run as root in CI): {r.stderr.decode()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_507_and_leaves_nothing(make_server, tiny_disk: Path) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(root=tiny_disk / "nas")
    s = srv.session()
    data = os.urandom(3 * 1024 * 1024)  # more than the 2 MiB disk, below the size check
    r = s.post(api(srv, "upload"), params={"path": "outputs"},
               files=[("files", ("big.bin", data))])
    assert r.status_code == 507, r.text
    assert r.json()["error"] == "insufficient_storage"
    assert os.listdir(srv.root / "outputs") == []


def test_usage_report_for_admin_and_user(server: Server) -> None:
    ann = server.add_user("ann")
    ann.post(api(server, "upload"), params={"path": "users/ann/outputs"},
             files=[("files", ("a.bin", b"x" * 500))])
    ann.get(api(server, "download"), params={"path": "users/ann/outputs/a.bin"},
            headers={"Range": "bytes=0-99"})
    # a download is recorded once its body is sent (a background task): the answer can
    # reach the client a moment before the record does
    deadline = time.monotonic() + 10
    while (mine := ann.get(f"{server.url}/api/usage").json())[0]["downloaded_bytes"] < 100 \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(mine) == 1 and mine[0]["user"] == "ann"
    assert mine[0]["uploaded_bytes"] == 500 and mine[0]["downloaded_bytes"] == 100
    assert mine[0]["stored_bytes"] == 500 and mine[0]["by_day"][0]["operations"] == 2
    assert ann.get(f"{server.url}/api/usage", params={"user": "admin"}).status_code == 404
    everyone = server.session().get(f"{server.url}/api/usage").json()
    assert {u["user"] for u in everyone} == {"admin", "ann"}


def test_download_content_matches_sha256(server: Server, admin: requests.Session) -> None:
    data = os.urandom(5 * 1024 * 1024 + 7)
    (server.root / "outputs/big.bin").write_bytes(data)
    r = admin.get(api(server, "download"), params={"path": "outputs/big.bin"})
    assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(data).hexdigest()
