"""Folders and selections streamed as zip: contents, storage mode, hostile names, ZIP64."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from filebrowser.access.jail import Jail, Scope
from filebrowser.files import zipstream
from filebrowser.files.walk import walk

from ...conftest import Server


def fetch_zip(s: requests.Session, url: str, **params: object) -> zipfile.ZipFile:
    r = s.get(f"{url}/api/fs/zip", params=params, stream=True, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/zip"
    assert "Content-Length" not in r.headers  # streamed, never staged
    return zipfile.ZipFile(io.BytesIO(r.content))


def test_folder_zip_contents_and_modes(server: Server, tmp_path: Path) -> None:
    ann = server.add_user("ann")
    out = server.root / "users/ann/outputs"
    (out / "day1").mkdir()
    png = os.urandom(200_000)
    (out / "day1" / "00001.png").write_bytes(png)
    (out / "day1" / "00001.txt").write_text("a cat, masterpiece\n" * 500)
    (out / "lora.safetensors").write_bytes(os.urandom(50_000))
    (out / ".atelier-tmp-x").write_bytes(b"internal")
    outside = tmp_path / "secret"
    outside.write_text("not yours")
    os.symlink(outside, out / "link.txt")
    zf = fetch_zip(ann, server.url, path="users/ann/outputs")
    assert zf.testzip() is None  # every CRC checks
    names = sorted(zf.namelist())
    assert names == ["outputs/", "outputs/day1/", "outputs/day1/00001.png",
                     "outputs/day1/00001.txt", "outputs/lora.safetensors"]
    assert zf.read("outputs/day1/00001.png") == png
    assert zf.getinfo("outputs/day1/00001.png").compress_type == zipfile.ZIP_STORED
    assert zf.getinfo("outputs/lora.safetensors").compress_type == zipfile.ZIP_STORED
    txt = zf.getinfo("outputs/day1/00001.txt")
    assert txt.compress_type == zipfile.ZIP_DEFLATED and txt.compress_size < txt.file_size
    dest = tmp_path / "x"
    zf.extractall(dest)
    assert (dest / "outputs/day1/00001.png").read_bytes() == png
    usage = ann.get(f"{server.url}/api/usage").json()[0]
    assert usage["downloaded_bytes"] > 250_000


def test_selection_and_access(server: Server) -> None:
    ann = server.add_user("ann")
    server.add_user("bob")
    (server.root / "users/ann/a.png").write_bytes(b"a")
    (server.root / "models/Lora/a.png").write_bytes(b"b")
    (server.root / "users/bob/secret.png").write_bytes(b"s")
    zf = fetch_zip(ann, server.url, path=["users/ann/a.png", "models/Lora/a.png"])
    assert sorted(zf.namelist()) == ["a (1).png", "a.png"]
    r = ann.get(f"{server.url}/api/fs/zip", params={"path": "users/bob"})
    assert r.status_code == 404
    r = ann.get(f"{server.url}/api/fs/zip", params={"path": "../../etc"})
    assert r.status_code == 400
    r = ann.post(f"{server.url}/api/fs/zip", json={"paths": ["users/ann/a.png"],
                                                   "name": "mine.zip"})
    assert r.status_code == 200 and "mine.zip" in r.headers["Content-Disposition"]
    assert requests.get(f"{server.url}/api/fs/zip", params={"path": "models"}).status_code == 401


def test_a_path_selected_many_times_is_zipped_once(server: Server) -> None:
    """10,000 copies of one selection (found by schemathesis) took minutes: a quadratic
    search for "x (n)" names. Now one entry, at once; same-named others still numbered."""
    ann = server.add_user("ann")
    (server.root / "users/ann/a.png").write_bytes(b"a")
    (server.root / "users/ann/d").mkdir()
    (server.root / "users/ann/d/a.png").write_bytes(b"b")
    r = ann.post(f"{server.url}/api/fs/zip", timeout=60,
                 json={"paths": ["users/ann/a.png"] * 9_999 + ["users/ann/d/a.png"]})
    assert r.status_code == 200, r.text
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(zf.namelist()) == ["a (1).png", "a.png"]
    assert zf.read("a.png") == b"a" and zf.read("a (1).png") == b"b"
    paths = [f"users/ann/{i}.png" for i in range(3000)]
    for p in paths:
        (server.root / p).write_bytes(b"n")
    r = ann.post(f"{server.url}/api/fs/zip", json={"paths": paths}, timeout=120)
    assert len(zipfile.ZipFile(io.BytesIO(r.content)).namelist()) == 3000


def test_names_cannot_escape_on_extraction(server: Server, tmp_path: Path) -> None:
    s = server.session()
    evil = server.root / "outputs" / "evil"
    evil.mkdir()
    for name in ("..\\..\\x.txt", "C:\\Windows\\y.txt", "c:z.txt", "tab\there.txt", "..."):
        (evil / name).write_bytes(b"x")
    zf = fetch_zip(s, server.url, path="outputs/evil")
    for info in zf.infolist():
        parts = info.filename.rstrip("/").split("/")
        assert not info.filename.startswith("/")
        assert ".." not in parts and "." not in parts
        assert "\\" not in info.filename and ":" not in info.filename
        assert all(ord(c) >= 32 for c in info.filename)
    box = tmp_path / "box"
    dest = box / "extract"
    zf.extractall(dest)
    for path in box.rglob("*"):
        assert path == dest or dest in path.parents
    # names no client could address (backslashes, control characters) are left out of
    # the zip exactly as they are left out of the listing
    listed = {e["name"] for e in s.get(f"{server.url}/api/fs/list",
                                        params={"path": "outputs/evil"}).json()["entries"]}
    assert listed == {"c:z.txt", "..."}
    assert sorted(zf.namelist()) == ["evil/", "evil/...", "evil/c_z.txt"]


def _members(root: Path, arc: str) -> Iterator[zipstream.Member]:
    """A whole folder as zip members, walked as an admin would."""
    admin = Scope.for_user("root", "admin")
    with Jail(root).open(admin, "") as top:
        yield from zipstream.members(walk(top, admin), arc)


def test_zip64_records_for_large_members(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Members at or past the ZIP64 limit get ZIP64 headers; the archive still reads back.

    The limit is lowered so the test needs kilobytes, not 4 GiB (the benchmark streams
    a real multi-GB folder).
    """
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 4096)
    big = tmp_path / "big.safetensors"
    big.write_bytes(os.urandom(10_000))
    small = tmp_path / "small.png"
    small.write_bytes(b"png")
    data = b"".join(zipstream.stream_zip(_members(tmp_path, "t"), block=1024))
    monkeypatch.undo()
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert zf.read("t/big.safetensors") == big.read_bytes()
    assert zf.read("t/small.png") == b"png"
    assert b"PK\x06\x06" in data  # a ZIP64 end-of-central-directory record
    extra = zf.getinfo("t/big.safetensors").extra
    assert extra[:2] == b"\x01\x00"  # ZIP64 extended information field


def test_stream_is_chunked_not_buffered(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(os.urandom(300_000))
    chunks = list(zipstream.stream_zip(_members(tmp_path, "t"), block=64 * 1024))
    assert len(chunks) > 20
    assert max(len(c) for c in chunks) < 2 * 64 * 1024 + 4096
