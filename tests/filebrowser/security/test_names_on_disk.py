"""Issue 10, items 5 and 6: names written on the NAS by other programs.

- NFD names (macOS, rsync) are reachable exactly as listed, and by their NFC spelling,
  through the API and WebDAV: open, move, delete, copy, zip. A write whose name
  differs from an existing entry only by normalisation means that entry: 409, or it
  replaces it, never a look-alike twin beside it.
- Names no client can send back (control characters, backslashes, undecodable bytes,
  U+FFFE) are left out of every listing and walk, consistently in the API, WebDAV,
  zips and search; the folder holding them lists with 200 and everything else in it
  stays reachable.
"""

from __future__ import annotations

import io
import os
import re
import unicodedata
import zipfile
from urllib.parse import quote, unquote

import requests

from ..images.conftest import wait_until, write_png
from .conftest import PW, World, zip_names

NFD = unicodedata.normalize("NFD", "café.png")
NFC = unicodedata.normalize("NFC", "café.png")
NFD_DIR = unicodedata.normalize("NFD", "Ünïcödé")


def listing(world: World, s: requests.Session, path: str) -> list[str]:
    r = s.get(f"{world.url}/api/fs/list", params={"path": path})
    assert r.status_code == 200, r.text
    return [e["name"] for e in r.json()["entries"]]


def dav_names(world: World, path: str, depth: str = "1") -> list[str]:
    r = requests.request("PROPFIND", f"{world.url}/dav/{quote(path)}/", auth=("ann", PW),
                         headers={"Depth": depth})
    assert r.status_code == 207, r.text
    return [unquote(h) for h in re.findall(r"<(?:\w+:)?href>([^<]+)</", r.text)]


def test_nfd_names_are_reachable_as_listed(world: World) -> None:
    docs = world.root / "users/ann/docs"
    write_png(docs / NFD, "an NFD prompt")
    (docs / NFD_DIR).mkdir()
    (docs / NFD_DIR / "inner.txt").write_bytes(b"inner")
    names = listing(world, world.ann, "users/ann/docs")
    assert NFD in names and NFD_DIR in names and NFC not in names
    for spelling in (NFD, NFC):
        path = f"users/ann/docs/{spelling}"
        for route in ("stat", "download", "info", "thumb"):
            r = world.ann.get(f"{world.url}/api/fs/{route}", params={"path": path})
            assert r.status_code == 200, (spelling, route, r.text)
    assert listing(world, world.ann, f"users/ann/docs/{NFD_DIR}") == ["inner.txt"]
    assert f"docs/{NFD_DIR}/inner.txt" in zip_names(world.ann.get(
        f"{world.url}/api/fs/zip", params={"path": "users/ann/docs"}))
    r = world.ann.post(f"{world.url}/api/fs/copy", json={
        "src": f"users/ann/docs/{NFD_DIR}", "dst": "users/ann/copied"})
    assert r.status_code == 201, r.text
    r = world.ann.post(f"{world.url}/api/fs/move", json={
        "src": f"users/ann/docs/{NFD}", "dst": "users/ann/docs/renamed.png"})
    assert r.status_code == 200, r.text
    r = world.ann.post(f"{world.url}/api/fs/delete", json={"path": f"users/ann/docs/{NFD_DIR}"})
    assert r.status_code == 200, r.text
    assert sorted(os.listdir(docs)) == ["a.txt", "b.txt", "renamed.png"]


def test_nfd_names_through_webdav(world: World) -> None:
    docs = world.root / "users/ann/docs"
    (docs / NFD).write_bytes(b"nfd bytes")
    assert f"/dav/users/ann/docs/{NFD}" in dav_names(world, "users/ann/docs")
    for spelling in (NFD, NFC):
        r = requests.get(f"{world.url}/dav/users/ann/docs/{quote(spelling)}", auth=("ann", PW))
        assert r.content == b"nfd bytes", spelling
    # a PUT under the NFC spelling replaces the NFD file: no twin
    r = requests.put(f"{world.url}/dav/users/ann/docs/{quote(NFC)}", data=b"new",
                     auth=("ann", PW))
    assert r.status_code == 204, r.text
    assert [n for n in os.listdir(docs) if unicodedata.normalize("NFC", n) == NFC] == [NFD]
    assert (docs / NFD).read_bytes() == b"new"
    r = requests.delete(f"{world.url}/dav/users/ann/docs/{quote(NFD)}", auth=("ann", PW))
    assert r.status_code == 204
    assert sorted(os.listdir(docs)) == ["a.txt", "b.txt"]


def test_a_look_alike_name_never_becomes_a_twin(world: World) -> None:
    docs = world.root / "users/ann/docs"
    (docs / NFD).write_bytes(b"old")
    (docs / NFD_DIR).mkdir()

    def upload(conflict: str, data: bytes) -> requests.Response:
        return world.ann.post(f"{world.url}/api/fs/upload",
                              params={"path": "users/ann/docs", "conflict": conflict},
                              files=[("files", (NFC, data))])

    assert upload("fail", b"new").status_code == 409
    r = upload("overwrite", b"new")
    assert r.status_code == 201, r.text
    assert r.json()["files"][0]["path"] == f"users/ann/docs/{NFD}"
    assert (docs / NFD).read_bytes() == b"new"
    r = upload("rename", b"third")
    assert r.status_code == 201 and r.json()["files"][0]["name"] != NFD
    nfc_dir = unicodedata.normalize("NFC", NFD_DIR)
    r = world.ann.post(f"{world.url}/api/fs/mkdir", json={"path": f"users/ann/docs/{nfc_dir}"})
    assert r.status_code == 201 and r.json()["path"] == f"users/ann/docs/{NFD_DIR}"
    r = world.ann.post(f"{world.url}/api/fs/copy", json={
        "src": "users/ann/docs/a.txt", "dst": f"users/ann/docs/{NFC}"})
    assert r.status_code == 409
    twins = [n for n in os.listdir(docs) if unicodedata.normalize("NFC", n) in (NFC, nfc_dir)]
    assert sorted(twins) == sorted([NFD, NFD_DIR])
    # a new name is stored NFC
    r = world.ann.post(f"{world.url}/api/fs/mkdir", json={
        "path": "users/ann/" + unicodedata.normalize("NFD", "neu-ö")})
    assert r.status_code == 201
    assert unicodedata.normalize("NFC", "neu-ö") in os.listdir(world.root / "users/ann")


ODD = ["line\nbreak.txt", "back\\slash.txt", "bell\x07.txt", "nonchar\ufffe.txt",
       "tab\there.png"]


def _odd_folder(world: World) -> None:
    odd = world.root / "users/ann/odd"
    odd.mkdir()
    for name in ODD:
        (odd / name).write_bytes(b"odd")
    with open(os.fsencode(odd) + b"/bad\xffbytes.txt", "wb") as f:  # not UTF-8 at all
        f.write(b"odd")
    (odd / "fine.txt").write_bytes(b"fine")
    write_png(odd / "fine.png", "a findable fox")
    write_png(odd / "odd\x01fox.png", "a findable fox")


def test_unaddressable_names_are_left_out_consistently(world: World) -> None:
    _odd_folder(world)
    assert sorted(listing(world, world.ann, "users/ann/odd")) == ["fine.png", "fine.txt"]
    assert sorted(zip_names(world.ann.get(f"{world.url}/api/fs/zip",
                                          params={"path": "users/ann/odd"}))) == \
        ["odd/", "odd/fine.png", "odd/fine.txt"]
    r = world.ann.post(f"{world.url}/api/fs/copy", json={"src": "users/ann/odd",
                                                         "dst": "users/ann/odd2"})
    assert r.status_code == 201
    assert sorted(os.listdir(world.root / "users/ann/odd2")) == ["fine.png", "fine.txt"]
    wait_until(lambda: world.admin.get(f"{world.url}/api/search", params={
        "q": "findable"}).json()["total"] >= 2, what="the index")
    found = world.admin.get(f"{world.url}/api/search", params={"q": "findable"}).json()
    assert sorted(x["path"] for x in found["results"]) == ["users/ann/odd/fine.png",
                                                           "users/ann/odd2/fine.png"]


def test_webdav_lists_a_folder_with_unaddressable_names(world: World) -> None:
    _odd_folder(world)
    names = dav_names(world, "users/ann/odd")
    assert sorted(names) == ["/dav/users/ann/odd/", "/dav/users/ann/odd/fine.png",
                             "/dav/users/ann/odd/fine.txt"]
    assert "/dav/users/ann/odd/fine.txt" in dav_names(world, "users/ann", depth="infinity")
    page = requests.get(f"{world.url}/dav/users/ann/odd/", auth=("ann", PW))
    assert page.status_code == 200 and "fine.txt" in page.text
    r = requests.get(f"{world.url}/dav/users/ann/odd/fine.txt", auth=("ann", PW))
    assert r.content == b"fine"
    r = requests.request("COPY", f"{world.url}/dav/users/ann/odd", auth=("ann", PW),
                         headers={"Destination": f"{world.url}/dav/users/ann/odd3"})
    assert r.status_code == 201, r.text
    assert sorted(os.listdir(world.root / "users/ann/odd3")) == ["fine.png", "fine.txt"]
    zf = zipfile.ZipFile(io.BytesIO(world.ann.get(f"{world.url}/api/fs/zip", params={
        "path": "users/ann/odd3"}).content))
    assert sorted(zf.namelist()) == ["odd3/", "odd3/fine.png", "odd3/fine.txt"]
