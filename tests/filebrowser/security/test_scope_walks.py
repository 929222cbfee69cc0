"""Issue 10, item 1: anything that walks a folder yields only what the caller may see.

An ancestor of a home (``users/``, the root) may be listed, showing only the way to
what the caller may read; a walk of it (zip, copy, search, WebDAV Depth: infinity,
usage) is the caller's part of it, never another home. Moving or deleting an
ancestor is refused to non-admins (they may not write it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import requests

from filebrowser.access.jail import Jail, Scope
from filebrowser.files import fs

from ..images.conftest import wait_until, write_png
from .conftest import PW, SECRET, World, is_json_error, leftovers, zip_names


def test_zip_of_an_ancestor_is_only_the_callers_home(world: World) -> None:
    names = zip_names(world.ann.get(f"{world.url}/api/fs/zip", params={"path": "users"}))
    assert "users/ann/docs/a.txt" in names
    assert all(n == "users/" or n.startswith("users/ann/") for n in names), names


def test_a_viewers_zip_of_the_root_is_their_home_and_models(world: World) -> None:
    r = world.vic.post(f"{world.url}/api/fs/zip", json={"paths": [""]})
    assert SECRET not in r.content
    names = zip_names(r)
    assert {"root/users/vic/mine.txt", "root/models/Lora/style.safetensors"} <= set(names)
    allowed = ("root/users/vic/", "root/models/")
    assert all(n in ("root/", "root/users/") or n.startswith(allowed) for n in names), names


def test_an_admin_still_zips_everything(world: World) -> None:
    r = world.admin.get(f"{world.url}/api/fs/zip", params={"path": "users"})
    assert "users/bob/secret.txt" in zip_names(r)


def test_copy_of_an_ancestor_into_the_home_is_refused_cleanly(world: World) -> None:
    r = world.ann.post(f"{world.url}/api/fs/copy", json={"src": "users", "dst": "users/ann/x"})
    assert is_json_error(r, 400, "invalid_input"), r.text
    assert not (world.root / "users/ann/x").exists()
    assert leftovers(world.root) == []


def test_the_copy_walk_applies_the_scope_to_every_entry(tmp_path: Path) -> None:
    """Even where 'into itself' does not apply: a caller reading only ann's home and
    writing outputs/ copies users/ as users/ann alone."""
    root = tmp_path / "nas"
    for d in ("users/ann/sub", "users/bob", "outputs"):
        (root / d).mkdir(parents=True)
    (root / "users/ann/sub/a.txt").write_text("a")
    (root / "users/bob/secret.txt").write_bytes(SECRET)
    os.symlink("../bob/secret.txt", root / "users/ann/link.txt")
    scope = Scope(read=("users/ann", "outputs"), write=("outputs",))
    jail = Jail(root)
    with jail.open(scope, "users") as src, jail.open(scope, "outputs", write=True) as dst:
        assert fs.copy(src, scope, dst.path, "copy", "fail") == "copy"
    copied = sorted(str(p.relative_to(root / "outputs/copy")) for p in
                    (root / "outputs/copy").rglob("*"))
    assert copied == ["ann", "ann/sub", "ann/sub/a.txt"]  # no bob, no symlink


def test_moving_or_deleting_an_ancestor_is_refused(world: World) -> None:
    for s in (world.ann, world.vic):
        for path in ("users", ""):
            r = s.post(f"{world.url}/api/fs/delete", json={"path": path})
            assert r.status_code in (403, 404) and "message" in r.json(), (path, r.text)
            r = s.post(f"{world.url}/api/fs/move", json={"src": path, "dst": "users/ann/u"})
            assert r.status_code in (403, 404), (path, r.text)
    assert (world.root / "users/bob/secret.txt").read_bytes() == SECRET


def test_search_below_an_ancestor_is_only_what_the_caller_may_read(world: World) -> None:
    write_png(world.root / "users/ann/docs/mine.png", "a red fox")
    write_png(world.root / "users/bob/private/his.png", "a red fox")
    write_png(world.root / "models/Lora/preview.png", "a red fox")

    def found(s: requests.Session, **params: str) -> set[str]:
        r = s.get(f"{world.url}/api/search", params={"q": "fox", **params})
        assert r.status_code == 200, r.text
        return {x["path"] for x in r.json()["results"]}

    wait_until(lambda: len(found(world.admin)) == 3, what="the index")
    assert found(world.ann, folder="users") == {"users/ann/docs/mine.png"}
    assert found(world.ann) == {"users/ann/docs/mine.png", "models/Lora/preview.png"}
    assert found(world.vic) == {"models/Lora/preview.png"}


def test_folders_have_no_thumbnail_and_ancestors_no_share(world: World) -> None:
    r = world.ann.get(f"{world.url}/api/fs/thumb", params={"path": "users"})
    assert is_json_error(r, 400)
    r = world.ann.post(f"{world.url}/api/shares", json={"path": "users"})
    assert r.status_code in (400, 403) and "message" in r.json()


def _hrefs(r: requests.Response) -> list[str]:
    assert r.status_code == 207, r.text
    return re.findall(r"<(?:\w+:)?href>([^<]+)</(?:\w+:)?href>", r.text)


def test_webdav_depth_infinity_walks_only_what_the_caller_may_see(world: World) -> None:
    auth = ("ann", PW)
    base = f"{world.url}/dav"
    hrefs = _hrefs(requests.request("PROPFIND", f"{base}/", auth=auth,
                                    headers={"Depth": "infinity"}))
    assert "/dav/users/ann/docs/a.txt" in hrefs and "/dav/models/Lora/style.safetensors" in hrefs
    assert not [h for h in hrefs if "bob" in h or "vic" in h or h.startswith("/dav/outputs")]
    hrefs = _hrefs(requests.request("PROPFIND", f"{base}/users/", auth=auth,
                                    headers={"Depth": "infinity"}))
    assert not [h for h in hrefs if "bob" in h], hrefs
    for method in ("COPY", "MOVE"):
        r = requests.request(method, f"{base}/users", auth=auth, headers={
            "Destination": f"{base}/users/ann/stolen", "Depth": "infinity"})
        assert r.status_code in (403, 409), (method, r.status_code)
    assert requests.delete(f"{base}/users", auth=auth).status_code == 403
    assert not (world.root / "users/ann/stolen").exists()
    assert (world.root / "users/bob/secret.txt").read_bytes() == SECRET


def test_usage_reports_only_the_callers_bytes(world: World) -> None:
    assert world.ann.get(f"{world.url}/api/usage", params={"user": "bob"}).status_code == 404
    report = world.ann.get(f"{world.url}/api/usage").json()
    assert [u["user"] for u in report] == ["ann"]
    assert report[0]["stored_bytes"] == len(b"ann's a") + len(b"ann's b")
