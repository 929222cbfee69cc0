"""Issue 10, item 4: viewers create no shares; users share what lies in their own home
(the path and where it really is); admins anything but the root. Every access checks
it again, so a user demoted to viewer ends their links."""

from __future__ import annotations

import os

import requests

from .conftest import SECRET, World, is_json_error


def share(world: World, s: requests.Session, path: str) -> requests.Response:
    return s.post(f"{world.url}/api/shares", json={"path": path})


def test_viewers_create_no_shares(world: World) -> None:
    for path in ("models", "models/Lora/style.safetensors", "users/vic/mine.txt"):
        r = share(world, world.vic, path)
        assert is_json_error(r, 403), (path, r.text)
    assert world.vic.get(f"{world.url}/api/shares").json() == []


def test_users_share_only_what_lies_in_their_home(world: World) -> None:
    r = share(world, world.ann, "models/Lora")
    assert is_json_error(r, 403), r.text
    r = share(world, world.ann, "users/bob/secret.txt")
    assert is_json_error(r, 404), r.text  # not even visible
    # a link in the home that leads to models/ is models/, not the home
    os.symlink("../../../models/Lora", world.root / "users/ann/docs/lora")
    r = share(world, world.ann, "users/ann/docs/lora")
    assert is_json_error(r, 403), r.text
    r = share(world, world.ann, "users/ann/docs")
    assert r.status_code == 201, r.text
    got = requests.get(f"{world.url}/s/{r.json()['token']}/file", params={"path": "a.txt"})
    assert got.content == b"ann's a"


def test_admins_share_anything_but_the_root(world: World) -> None:
    assert share(world, world.admin, "models").status_code == 201
    r = share(world, world.admin, "users/bob/secret.txt")
    assert r.status_code == 201
    assert requests.get(f"{world.url}/s/{r.json()['token']}/file").content == SECRET
    assert is_json_error(share(world, world.admin, ""), 400)


def test_a_share_dies_when_its_owner_may_no_longer_share_it(world: World) -> None:
    token = share(world, world.ann, "users/ann/docs").json()["token"]
    assert requests.get(f"{world.url}/s/{token}").status_code == 200
    r = world.admin.patch(f"{world.url}/api/users/ann", json={"role": "viewer"})
    assert r.status_code == 200, r.text
    assert requests.get(f"{world.url}/s/{token}").status_code == 404
    assert requests.get(f"{world.url}/s/{token}/file", params={"path": "a.txt"}).status_code \
        == 404
