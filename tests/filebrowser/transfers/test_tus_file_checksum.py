"""The whole-file checksum extension: ``Upload-Metadata: checksum xxh128`` (or blake3, sha256) and
``X-Atelier-File-Checksum`` on the completing PATCH; blake3 as a per-PATCH checksum."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

import blake3
import pytest
import xxhash
from tusclient import client as tus_client

from ...conftest import Server
from .conftest import TUS, both_io, create, head, open_patch, patch, sha256, upload_url, wait_offset

MiB = 1024 * 1024
FILE_CHECKSUM = "X-Atelier-File-Checksum"


def digest(data: bytes, algo: str = "blake3") -> str:
    h = blake3.blake3(data) if algo == "blake3" else xxhash.xxh3_128(data) \
        if algo == "xxh128" else hashlib.new(algo, data)
    return f"{algo} {base64.b64encode(h.digest()).decode()}"


def leftovers(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".")] if folder.is_dir() else []


@both_io
@pytest.mark.parametrize("algo", ["xxh128", "blake3", "sha256"])
def test_streamed_upload_is_checked_whole_before_it_is_placed(server: Server, algo: str) -> None:
    s = server.session()
    data = os.urandom(3 * MiB + 17)
    url = upload_url(s, server.url, len(data), filename="a.bin", folder="in", checksum=algo)
    first, rest = data[:2 * MiB + 5], data[2 * MiB + 5:]
    assert patch(s, url, 0, first).status_code == 204  # no per-PATCH checksum
    r = patch(s, url, len(first), rest, **{FILE_CHECKSUM: digest(data, algo)})
    assert r.status_code == 204, r.text
    assert r.headers[FILE_CHECKSUM] == digest(data, algo)  # the server's own hash
    assert sha256(server.root / "in" / "a.bin") == hashlib.sha256(data).hexdigest()
    assert head(s, url).headers[FILE_CHECKSUM] == digest(data, algo)


@both_io
def test_a_wrong_file_checksum_discards_the_upload(server: Server) -> None:
    s = server.session()
    data = os.urandom(2 * MiB)
    url = upload_url(s, server.url, len(data), filename="a.bin", folder="in",
                     checksum="blake3")
    assert patch(s, url, 0, data[:MiB]).status_code == 204
    wrong = digest(data[:-1] + bytes([data[-1] ^ 1]))
    r = patch(s, url, MiB, data[MiB:], **{FILE_CHECKSUM: wrong})
    assert r.status_code == 460
    assert r.json()["error"] == "checksum_mismatch" and "discarded" in r.json()["message"]
    assert not (server.root / "in" / "a.bin").exists()
    assert leftovers(server.root / "in") == []
    assert head(s, url).status_code == 404


def test_without_metadata_the_digest_is_computed_from_disk(server: Server) -> None:
    """A client that did not announce the checksum at creation can still send it last."""
    s = server.session()
    data = os.urandom(MiB + 3)
    url = upload_url(s, server.url, len(data), filename="b.bin", folder="in")
    assert patch(s, url, 0, data[:1000]).status_code == 204
    r = patch(s, url, 1000, data[1000:], **{FILE_CHECKSUM: digest(data)})
    assert r.status_code == 204 and r.headers[FILE_CHECKSUM] == digest(data)
    url2 = upload_url(s, server.url, 10, filename="c.bin", folder="in")
    r = patch(s, url2, 0, b"0123456789", **{FILE_CHECKSUM: digest(b"0123456789x")})
    assert r.status_code == 460 and not (server.root / "in" / "c.bin").exists()


def test_file_checksum_input_errors(server: Server) -> None:
    s = server.session()
    r = create(s, server.url, 10, filename="x.bin", checksum="md5")
    assert r.status_code == 400 and "md5" in r.json()["message"]
    url = upload_url(s, server.url, 10, filename="x.bin", checksum="blake3")
    r = patch(s, url, 0, b"0123456789", **{FILE_CHECKSUM: digest(b"0123456789", "sha256")})
    assert r.status_code == 400 and "blake3" in r.json()["message"]
    r = patch(s, url, 0, b"0123456789", **{FILE_CHECKSUM: "blake3 not-base64!"})
    assert r.status_code == 400
    assert head(s, url).headers["Upload-Offset"] == "0"


def test_blake3_is_a_per_patch_checksum_too(server: Server) -> None:
    s = server.session()
    options = s.options(f"{server.url}/api/tus/", headers=TUS)
    assert "blake3" in options.headers["Tus-Checksum-Algorithm"].split(",")
    data = os.urandom(5000)
    url = upload_url(s, server.url, len(data), filename="d.bin", folder="in")
    good = base64.b64encode(blake3.blake3(data[:4000]).digest()).decode()
    bad = base64.b64encode(blake3.blake3(b"other").digest()).decode()
    r = patch(s, url, 0, data[:4000], **{"Upload-Checksum": f"blake3 {bad}"})
    assert r.status_code == 460
    r = patch(s, url, 0, data[:4000], **{"Upload-Checksum": f"blake3 {good}"})
    assert r.status_code == 204
    assert patch(s, url, 4000, data[4000:]).status_code == 204
    assert (server.root / "in" / "d.bin").read_bytes() == data


def test_tuspy_ignores_the_extension(server: Server, tmp_path: Path) -> None:
    """A standard client that asks nothing gets the file placed as before."""
    s = server.session()
    src = tmp_path / "t.bin"
    src.write_bytes(os.urandom(2 * MiB + 1))
    c = tus_client.TusClient(f"{server.url}/api/tus/",
                             headers={"Authorization": s.headers["Authorization"]})
    c.uploader(str(src), chunk_size=MiB, metadata={"filename": "t.bin", "folder": "in",
                                                   "checksum": "blake3"}).upload()
    assert sha256(server.root / "in" / "t.bin") == sha256(src)


def test_the_hash_survives_a_restart_and_catches_a_changed_partial(  # type: ignore[no-untyped-def]
        spawn_server) -> None:
    """After kill -9 the server rebuilds the running hash from the partial file: an
    intact partial completes, one changed on disk meanwhile fails the whole-file check."""
    srv = spawn_server()
    s = srv.session()
    for tamper in (False, True):
        data = os.urandom(3 * MiB)
        name = f"r{int(tamper)}.bin"
        url = upload_url(s, srv.url, len(data), filename=name, folder="in", checksum="blake3")
        path = urlsplit(url).path
        assert patch(s, url, 0, data[:2 * MiB]).status_code == 204
        srv.kill9()
        folder = srv.root / "in"
        if tamper:
            partial = folder / leftovers(folder)[0]
            with open(partial, "r+b") as f:
                f.seek(MiB)
                byte = f.read(1)
                f.seek(MiB)
                f.write(bytes([byte[0] ^ 0xFF]))
        srv = spawn_server(root=srv.root, state=srv.state)
        s = srv.session()
        url = srv.url + path
        r = patch(s, url, 2 * MiB, data[2 * MiB:], **{FILE_CHECKSUM: digest(data)})
        if tamper:
            assert r.status_code == 460
            assert not (folder / name).exists() and leftovers(folder) == []
        else:
            assert r.status_code == 204 and r.headers[FILE_CHECKSUM] == digest(data)
            assert (folder / name).read_bytes() == data


def test_a_client_cut_mid_patch_keeps_the_hash_in_step(server: Server) -> None:
    """What arrived before the cut is kept and hashed; the rest comes in a new PATCH."""
    s = server.session()
    data = os.urandom(12 * MiB)
    url = upload_url(s, server.url, len(data), filename="cut.bin", folder="in",
                     checksum="blake3")
    sock = open_patch(url, s.headers["Authorization"], 0, len(data))
    sock.sendall(data[:9 * MiB])
    sock.close()
    offset = wait_offset(s, url, 9 * MiB)
    assert offset == 9 * MiB
    r = patch(s, url, offset, data[offset:], **{FILE_CHECKSUM: digest(data)})
    assert r.status_code == 204, r.text
    assert (server.root / "in" / "cut.bin").read_bytes() == data
