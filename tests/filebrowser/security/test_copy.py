"""Issue 10, item 2: a server-side copy reads only what a download could, never copies a
folder into itself, checks the quota and the free space for the whole tree before it
writes a byte, and leaves nothing behind when it fails.

The disks that fill up are small tmpfs mounts inside ann's home (``size`` and
``nr_inodes`` limit them), so no test can fill the machine's disk even if the
refusal it checks were missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import requests

from .conftest import SECRET, World, is_json_error, leftovers


def copy(world: World, s: requests.Session, src: str, dst: str) -> requests.Response:
    return s.post(f"{world.url}/api/fs/copy", json={"src": src, "dst": dst})


def fill(folder: Path, files: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / f"f{i:04d}.bin").write_bytes(os.urandom(size))


def test_a_folder_is_never_copied_into_itself(world: World,
                                              tmpfs: Callable[..., Path]) -> None:
    small = tmpfs(world.root / "users/ann/small", "8m")
    fill(small / "album" / "sub", 3, 100_000)
    for dst in ("users/ann/small/album/copy", "users/ann/small/album/sub/copy"):
        r = copy(world, world.ann, "users/ann/small/album", dst)
        assert is_json_error(r, 400, "invalid_input"), r.text
    r = copy(world, world.admin, "users/ann/small/album", "users/ann/small/album/sub/x")
    assert is_json_error(r, 400, "invalid_input"), r.text
    assert sorted(os.listdir(small / "album")) == ["sub"]
    assert sorted(os.listdir(small / "album/sub")) == ["f0000.bin", "f0001.bin", "f0002.bin"]
    assert leftovers(world.root) == []


def test_copy_reads_only_what_a_download_may(world: World) -> None:
    r = copy(world, world.ann, "users/bob/private", "users/ann/loot")
    assert is_json_error(r, 404), r.text
    os.symlink("../../bob/secret.txt", world.root / "users/ann/docs/evil.txt")
    os.symlink("../../bob", world.root / "users/ann/docs/bob-home")
    r = copy(world, world.ann, "users/ann/docs", "users/ann/docs2")
    assert r.status_code == 201, r.text
    copied = world.root / "users/ann/docs2"
    assert sorted(os.listdir(copied)) == ["a.txt", "b.txt"]  # links left out, like the zip
    assert all(SECRET not in p.read_bytes() for p in copied.rglob("*") if p.is_file())
    r = copy(world, world.vic, "users/vic/mine.txt", "users/vic/again.txt")
    assert is_json_error(r, 403), r.text


def test_the_quota_is_checked_for_the_whole_tree_first(world: World) -> None:
    qa = world.srv.add_user("qa", quota=2000)
    fill(world.root / "users/qa/set", 3, 500)
    before = qa.get(f"{world.url}/api/usage").json()[0]["stored_bytes"]
    r = copy(world, qa, "users/qa/set", "users/qa/set2")
    assert is_json_error(r, 507, "quota_exceeded"), r.text
    assert not (world.root / "users/qa/set2").exists() and leftovers(world.root) == []
    assert qa.get(f"{world.url}/api/usage").json()[0]["stored_bytes"] == before


def test_the_free_space_is_checked_for_the_whole_tree_first(
        world: World, tmpfs: Callable[..., Path]) -> None:
    small = tmpfs(world.root / "users/ann/small", "4m")
    fill(small / "big", 6, 400_000)  # 2.4 MB of 4: a second copy cannot fit
    used = shutil.disk_usage(small).used
    r = copy(world, world.ann, "users/ann/small/big", "users/ann/small/big2")
    assert is_json_error(r, 507, "insufficient_storage"), r.text
    assert r.json()["needed"] == 6 * 400_000
    assert shutil.disk_usage(small).used == used  # refused before writing anything
    assert sorted(os.listdir(small)) == ["big"]


def test_a_copy_failing_midway_leaves_nothing_behind(world: World,
                                                     tmpfs: Callable[..., Path]) -> None:
    """Room for the bytes but not for the files: the filesystem runs out of inodes
    part-way (ENOSPC), after the checks passed."""
    small = tmpfs(world.root / "users/ann/small", "16m,nr_inodes=80")
    fill(small / "many", 50, 10)
    r = copy(world, world.ann, "users/ann/small/many", "users/ann/small/many2")
    assert is_json_error(r, 507, "insufficient_storage"), r.text
    assert sorted(os.listdir(small)) == ["many"]  # no copy, no hidden temporary folder
    assert leftovers(world.root) == []
    assert len(os.listdir(small / "many")) == 50
    # and once there is room again, the same copy works
    for name in os.listdir(small / "many")[:40]:
        os.unlink(small / "many" / name)
    r = copy(world, world.ann, "users/ann/small/many", "users/ann/small/many2")
    assert r.status_code == 201, r.text
    assert sorted(os.listdir(small / "many2")) == sorted(os.listdir(small / "many"))
