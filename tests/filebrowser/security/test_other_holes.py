"""The same classes of hole elsewhere: links placed on the NAS by someone with a shell,
restores into a folder that became a link, and '..' smuggled in WebDAV Destinations."""

from __future__ import annotations

import os

import pytest
import requests

from .conftest import PW, SECRET, World, leftovers, zip_names


def test_a_link_to_etc_passwd_in_a_home_leads_nowhere(world: World) -> None:
    docs = world.root / "users/ann/docs"
    os.symlink("/etc/passwd", docs / "passwd")
    os.symlink("/etc", docs / "etc")
    names = [e["name"] for e in world.ann.get(f"{world.url}/api/fs/list", params={
        "path": "users/ann/docs"}).json()["entries"]]
    assert "passwd" not in names and "etc" not in names
    for route in ("stat", "download", "info", "thumb"):
        for path in ("users/ann/docs/passwd", "users/ann/docs/etc/passwd"):
            for s in (world.ann, world.admin):
                r = s.get(f"{world.url}/api/fs/{route}", params={"path": path})
                assert r.status_code == 404 and b"root:" not in r.content, (route, path)
    r = world.ann.get(f"{world.url}/api/fs/zip", params={"path": "users/ann/docs"})
    assert b"root:" not in r.content and "docs/passwd" not in zip_names(r)
    r = requests.get(f"{world.url}/dav/users/ann/docs/passwd", auth=("ann", PW))
    assert r.status_code == 404 and b"root:" not in r.content
    r = world.ann.post(f"{world.url}/api/shares", json={"path": "users/ann/docs/passwd"})
    assert r.status_code == 404
    # the link itself can be removed by its owner (the entry, not its target)
    r = world.ann.post(f"{world.url}/api/fs/delete", json={"path": "users/ann/docs/passwd"})
    assert r.status_code == 200 and os.path.exists("/etc/passwd")


def test_a_link_to_another_home_is_moved_as_a_link_never_as_its_target(world: World) -> None:
    os.symlink("../../bob/secret.txt", world.root / "users/ann/docs/bob.txt")
    r = world.ann.post(f"{world.url}/api/fs/move", json={
        "src": "users/ann/docs/bob.txt", "dst": "users/ann/mine.txt"})
    assert r.status_code == 200, r.text
    moved = world.root / "users/ann/mine.txt"
    assert moved.is_symlink()  # never a hard link to bob's file
    assert world.ann.get(f"{world.url}/api/fs/download", params={
        "path": "users/ann/mine.txt"}).status_code == 404
    assert (world.root / "users/bob/secret.txt").read_bytes() == SECRET


def test_a_restore_into_a_folder_swapped_for_a_link_is_refused(world: World) -> None:
    folder = world.root / "users/ann/docs"
    item = world.ann.post(f"{world.url}/api/fs/delete", json={
        "path": "users/ann/docs/a.txt"}).json()
    os.rename(folder, world.root / "users/ann/docs-real")
    os.symlink("../bob", folder)  # the folder it came from now leads to bob's home
    r = world.ann.post(f"{world.url}/api/fs/trash/{item['id']}/restore", json={})
    assert r.status_code == 404 and "message" in r.json()
    assert not (world.root / "users/bob/a.txt").exists()
    os.unlink(folder)
    os.rename(world.root / "users/ann/docs-real", folder)
    r = world.ann.post(f"{world.url}/api/fs/trash/{item['id']}/restore", json={})
    assert r.status_code == 200 and (folder / "a.txt").read_bytes() == b"ann's a"


@pytest.mark.parametrize("dest", [
    "/dav/users/ann/../bob/x.txt", "/dav/users/ann/%2e%2e/bob/x.txt",
    "/dav/users/ann/..%2fbob/x.txt", "/dav/users/ann/..%5cbob%5cx.txt",
    "/dav/../users/bob/x.txt", "/dav/users/bob/x.txt", "/etc/x.txt", "/dav2/users/bob/x.txt",
    "http://elsewhere.example/dav/users/bob/x.txt", "/dav/users/ann/%00/x.txt",
])
@pytest.mark.parametrize("method", ["COPY", "MOVE"])
def test_webdav_destinations_cannot_leave_the_callers_home(world: World, method: str,
                                                           dest: str) -> None:
    bob = sorted(os.listdir(world.root / "users/bob"))
    r = requests.request(method, f"{world.url}/dav/users/ann/docs/a.txt", auth=("ann", PW),
                         headers={"Destination": dest})
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert sorted(os.listdir(world.root / "users/bob")) == bob
    assert (world.root / "users/ann/docs/a.txt").read_bytes() == b"ann's a"
    assert leftovers(world.root) == []
