"""tus 1.0.0 at /api/tus/: the real tuspy client, raw protocol checks, and bad input."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

from ...conftest import Server
from .conftest import (
    TUS,
    both_io,
    create,
    head,
    metadata,
    open_patch,
    patch,
    upload_url,
    wait_offset,
)


def partials(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".atelier-tmp-")]


def tuspy(server: Server, s: requests.Session) -> tus_client.TusClient:
    return tus_client.TusClient(f"{server.url}/api/tus/",
                                headers={"Authorization": s.headers["Authorization"]})


@both_io
def test_tuspy_uploads_resumes_and_verifies(server: Server, tmp_path: Path) -> None:
    s = server.session()
    data = os.urandom(3 * 1024 * 1024 + 123)
    src = tmp_path / "model.safetensors"
    src.write_bytes(data)
    folder = server.root / "models" / "Lora"
    client = tuspy(server, s)
    meta = {"filename": "model.safetensors", "folder": "models/Lora"}
    first = client.uploader(str(src), chunk_size=1024 * 1024, metadata=meta,
                            upload_checksum=True)
    first.upload(stop_at=2 * 1024 * 1024)  # interrupted after two chunks
    assert not (folder / "model.safetensors").exists()
    assert len(partials(folder)) == 1  # hidden, and not named *.safetensors
    assert not partials(folder)[0].endswith(".safetensors")
    listing = s.get(f"{server.url}/api/fs/list", params={"path": "models/Lora"}).json()
    assert listing["entries"] == []

    # A new client process would only know the URL: it asks the offset and goes on.
    second = client.uploader(str(src), url=first.url, chunk_size=1024 * 1024,
                             upload_checksum=True)
    assert second.offset == 2 * 1024 * 1024
    second.upload()
    assert (folder / "model.safetensors").read_bytes() == data
    assert partials(folder) == []
    r = head(s, first.url)
    assert r.status_code == 200
    assert r.headers["Upload-Offset"] == r.headers["Upload-Length"] == str(len(data))
    assert r.headers["X-Atelier-Path"] == "models/Lora/model.safetensors"
    usage = s.get(f"{server.url}/api/usage").json()[0]
    assert usage["uploaded_bytes"] == len(data)


def test_options_and_versions(server: Server) -> None:
    s = server.session()
    r = s.options(f"{server.url}/api/tus/")
    assert r.status_code == 204
    assert r.headers["Tus-Resumable"] == r.headers["Tus-Version"] == "1.0.0"
    ext = r.headers["Tus-Extension"].split(",")
    for name in ("creation", "creation-with-upload", "creation-defer-length", "termination",
                 "checksum", "expiration"):
        assert name in ext
    assert "sha1" in r.headers["Tus-Checksum-Algorithm"].split(",")
    assert int(r.headers["Tus-Max-Size"]) > 0
    r = s.post(f"{server.url}/api/tus/", headers={"Tus-Resumable": "0.2.2",
                                                  "Upload-Length": "1"})
    assert r.status_code == 412
    assert r.headers["Tus-Version"] == "1.0.0" and r.headers["Tus-Resumable"] == "1.0.0"
    url = upload_url(s, server.url, 10, filename="v.bin", folder="users")
    assert s.head(url).status_code == 412
    assert patch(s, url, 0, b"x", **{"Tus-Resumable": "2.0.0"}).status_code == 412


def test_every_tus_method_needs_credentials(server: Server) -> None:
    url = upload_url(server.session(), server.url, 10, filename="a.bin")
    for method, target in (("OPTIONS", "/api/tus/"), ("POST", "/api/tus/"),
                           ("GET", "/api/tus/"), ("HEAD", url), ("PATCH", url),
                           ("DELETE", url), ("POST", url)):
        full = target if target.startswith("http") else server.url + target
        r = requests.request(method, full, headers=TUS, timeout=10)
        assert r.status_code == 401, (method, target)
        assert r.headers["Tus-Resumable"] == "1.0.0"


def test_offset_mismatch_media_type_and_length(server: Server) -> None:
    s = server.session()
    url = upload_url(s, server.url, 10, filename="o.bin")
    assert patch(s, url, 0, b"01234").headers["Upload-Offset"] == "5"
    r = patch(s, url, 3, b"xx")
    assert r.status_code == 409
    assert head(s, url).headers["Upload-Offset"] == "5"
    r = s.patch(url, data=b"56", headers={**TUS, "Upload-Offset": "5",
                                           "Content-Type": "application/octet-stream"})
    assert r.status_code == 415
    r = patch(s, url, 5, b"56789-too-long")
    assert r.status_code == 413
    assert head(s, url).headers["Upload-Offset"] == "5"
    assert patch(s, url, 5, b"56789").status_code == 204
    assert (server.root / "o.bin").read_bytes() == b"0123456789"
    # the last PATCH repeated (its answer was lost): the upload is still complete
    r = patch(s, url, 10, b"")
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "10"
    assert s.patch(f"{server.url}/api/tus/nope", headers={
        **TUS, "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream"}).status_code == 404


@both_io
@pytest.mark.parametrize("algo", ["sha1", "sha256"])
def test_wrong_checksum_is_460_and_discarded(server: Server, algo: str) -> None:
    s = server.session()
    url = upload_url(s, server.url, 8, filename=f"c-{algo}.bin")
    assert patch(s, url, 0, b"abcd", checksum=algo).status_code == 204
    bad = base64.b64encode(hashlib.new(algo, b"nope").digest()).decode()
    r = patch(s, url, 4, b"efgh", **{"Upload-Checksum": f"{algo} {bad}"})
    assert r.status_code == 460
    assert r.headers["Tus-Resumable"] == "1.0.0"
    assert head(s, url).headers["Upload-Offset"] == "4"
    assert os.path.getsize(server.root / partials(server.root)[0]) == 4
    r = patch(s, url, 4, b"efgh", **{"Upload-Checksum": "crc32 AAAA"})
    assert r.status_code == 400
    assert patch(s, url, 4, b"efgh", checksum=algo).status_code == 204
    assert (server.root / f"c-{algo}.bin").read_bytes() == b"abcdefgh"


@both_io
def test_creation_with_upload_and_deferred_length(server: Server) -> None:
    s = server.session()
    r = s.post(f"{server.url}/api/tus/", data=b"hello", headers={
        **TUS, "Upload-Length": "11", "Upload-Metadata": metadata(filename="h.txt", folder=""),
        "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 201 and r.headers["Upload-Offset"] == "5"
    url = server.url + r.headers["Location"]
    assert patch(s, url, 5, b" world").status_code == 204
    assert (server.root / "h.txt").read_bytes() == b"hello world"

    url = upload_url(s, server.url, None, filename="d.bin")
    r = head(s, url)
    assert r.headers["Upload-Defer-Length"] == "1" and "Upload-Length" not in r.headers
    assert patch(s, url, 0, b"abc").status_code == 204
    assert not (server.root / "d.bin").exists()
    r = patch(s, url, 3, b"def", **{"Upload-Length": "6"})
    assert r.status_code == 204
    assert (server.root / "d.bin").read_bytes() == b"abcdef"

    r = s.post(f"{server.url}/api/tus/", headers={**TUS, "Upload-Length": "0",
                                                  "Upload-Metadata": metadata(filename="e")})
    assert r.status_code == 201 and (server.root / "users/admin/e").read_bytes() == b""
    r = s.post(f"{server.url}/api/tus/", headers={**TUS,
                                                  "Upload-Metadata": metadata(filename="f")})
    assert r.status_code == 400


def test_no_folder_means_the_callers_home(server: Server, tmp_path: Path) -> None:
    """Upload-Metadata without ``folder``: the caller's home, not the (read-only) root."""
    src = tmp_path / "x.bin"
    src.write_bytes(b"hello home")
    for name, session in (("ann", server.add_user("ann")), ("admin", server.session())):
        up = tuspy(server, session).uploader(str(src), chunk_size=4,
                                             metadata={"filename": "x.bin"})
        up.upload()
        assert (server.root / "users" / name / "x.bin").read_bytes() == b"hello home"
        assert head(session, up.url).headers["X-Atelier-Path"] == f"users/{name}/x.bin"
    assert not (server.root / "x.bin").exists()
    viewer = server.add_user("vic", role="viewer")
    r = viewer.post(f"{server.url}/api/tus/", headers={
        **TUS, "Upload-Length": "1", "Upload-Metadata": metadata(filename="v.bin")})
    assert r.status_code == 403 and r.json()["error"] == "read_only"


def test_termination_and_method_override(server: Server) -> None:
    s = server.session()
    url = upload_url(s, server.url, 10, filename="t.bin")
    r = s.post(url, data=b"01234", headers={
        **TUS, "X-HTTP-Method-Override": "PATCH", "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "5"
    assert len(partials(server.root)) == 1
    assert s.delete(url, headers=TUS).status_code == 204
    assert partials(server.root) == []
    assert head(s, url).status_code == 404
    assert s.delete(url, headers=TUS).status_code == 404


@pytest.mark.parametrize("meta, status", [
    ({"filename": "../escape.bin"}, 400),
    ({"filename": "a/b.bin"}, 400),
    ({"filename": "x.bin", "folder": "../../etc"}, 400),
    ({"filename": "x.bin", "folder": "users/ann/../../.."}, 400),
    ({"filename": "x.bin", "folder": "/etc"}, 400),
    ({"filename": ".atelier-tmp-x"}, 400),
    ({"filename": "x\u0000.bin"}, 400),
    ({"filename": "x.bin", "folder": "users/bob"}, 404),
    ({"filename": "x.bin", "folder": "models/Lora"}, 403),
    ({"filename": "x.bin", "conflict": "clobber"}, 400),
    ({"folder": "users/ann"}, 400),
])
def test_metadata_is_checked_by_the_jail(server: Server, meta: dict[str, str],
                                         status: int) -> None:
    ann = server.add_user("ann")
    server.add_user("bob")
    meta.setdefault("folder", "users/ann")
    r = create(ann, server.url, 5, **meta)
    assert r.status_code == status, r.text
    assert r.headers["Tus-Resumable"] == "1.0.0"
    r = ann.post(f"{server.url}/api/tus/", headers={**TUS, "Upload-Length": "1",
                                                    "Upload-Metadata": "filename %%%"})
    assert r.status_code == 400


@both_io
def test_quota_at_creation_and_while_running(server: Server) -> None:
    ann = server.add_user("ann", quota=100_000)
    r = create(ann, server.url, 150_000, filename="big.bin", folder="users/ann")
    assert r.status_code == 507 and r.json()["error"] == "quota_exceeded"
    url = upload_url(ann, server.url, 60_000, filename="a.bin", folder="users/ann")
    # the first upload's reservation counts for the second
    r = create(ann, server.url, 60_000, filename="b.bin", folder="users/ann")
    assert r.status_code == 507
    assert patch(ann, url, 0, os.urandom(60_000)).status_code == 204
    # deferred length: stopped by the quota while running, nothing visible, offset kept
    url = upload_url(ann, server.url, None, filename="c.bin", folder="users/ann")
    r = patch(ann, url, 0, os.urandom(50_000))
    assert r.status_code == 507 and r.json()["error"] == "quota_exceeded"
    assert head(ann, url).headers["Upload-Offset"] == "0"
    home = server.root / "users" / "ann"
    assert sorted(n for n in os.listdir(home) if not n.startswith(".")) == \
        ["a.bin", "models", "outputs"]


def test_quota_reuses_a_walk_but_counts_every_upload_and_service_write(make_server) -> None:  # type: ignore[no-untyped-def]
    """With a long recheck interval the home is not walked per PATCH, yet partial bytes
    (by offset) and files written through the service count at once."""
    server = make_server(quota_recheck_seconds=3600)
    ann = server.add_user("ann", quota=1_000_000)
    home = server.root / "users" / "ann"
    url = upload_url(ann, server.url, 600_000, filename="b.bin", folder="users/ann")
    assert patch(ann, url, 0, os.urandom(100_000)).status_code == 204  # the walk is cached
    # A file another program writes is not seen until the walk is redone: the price of
    # not walking the home per PATCH (a fresh walk would refuse this PATCH: 600,000 used).
    (home / "outside.bin").write_bytes(b"x" * 500_000)
    assert patch(ann, url, 100_000, os.urandom(100_000)).status_code == 204
    # a file written through the service drops the cached walk: both files count now
    r = ann.post(f"{server.url}/api/fs/upload", params={"path": "users/ann"},
                 files=[("files", ("api.bin", b"y" * 50_000))])
    assert r.status_code == 201, r.text
    # 200,000 (partial) + 500,000 + 50,000 = 750,000 used; 400,000 more does not fit
    r = patch(ann, url, 200_000, os.urandom(100_000))
    assert r.status_code == 507 and r.json()["error"] == "quota_exceeded"
    assert head(ann, url).headers["Upload-Offset"] == "200000"
    usage = ann.get(f"{server.url}/api/usage").json()[0]
    assert usage["stored_bytes"] == 750_000  # the partial counts by its offset


def test_quota_recheck_zero_sees_other_programs_files_at_once(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(quota_recheck_seconds=0)
    ann = server.add_user("ann", quota=1_000_000)
    url = upload_url(ann, server.url, 600_000, filename="b.bin", folder="users/ann")
    assert patch(ann, url, 0, os.urandom(100_000)).status_code == 204
    (server.root / "users" / "ann" / "outside.bin").write_bytes(b"x" * 500_000)
    r = patch(ann, url, 100_000, os.urandom(100_000))
    assert r.status_code == 507 and r.json()["error"] == "quota_exceeded"


def test_two_uploads_racing_for_one_name(server: Server) -> None:
    s = server.session()
    one = upload_url(s, server.url, 4, filename="race.bin")
    two = upload_url(s, server.url, 4, filename="race.bin")
    three = upload_url(s, server.url, 4, filename="race.bin", conflict="rename")
    assert patch(s, one, 0, b"1111").status_code == 204
    r = patch(s, two, 0, b"2222")
    assert r.status_code == 409
    assert (server.root / "race.bin").read_bytes() == b"1111"
    assert head(s, two).status_code == 404  # the loser is gone, bytes and all
    r = patch(s, three, 0, b"3333")
    assert r.status_code == 204 and r.headers["X-Atelier-Path"] == "race%20%281%29.bin"
    assert (server.root / "race (1).bin").read_bytes() == b"3333"
    assert partials(server.root) == []
    r = create(s, server.url, 4, filename="race.bin")
    assert r.status_code == 409  # 'fail' is checked at creation too


@both_io
def test_full_disk_is_507_and_leaves_nothing(server: Server, tmpfs) -> None:  # type: ignore[no-untyped-def]
    small = tmpfs(server.root / "small", "8m")
    s = server.session()
    r = create(s, server.url, 20 * 1024 * 1024, filename="big.bin", folder="small")
    assert r.status_code == 507 and r.json()["error"] == "insufficient_storage"
    url = upload_url(s, server.url, None, filename="big.bin", folder="small")
    r = patch(s, url, 0, os.urandom(12 * 1024 * 1024))
    assert r.status_code == 507  # refused up front: Content-Length is more than is free
    assert head(s, url).headers["Upload-Offset"] == "0"

    def body() -> object:  # chunked, so the server learns of the full disk from write(2)
        for _ in range(12):
            yield os.urandom(1024 * 1024)

    r = s.patch(url, data=body(), headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 507
    assert "full" in r.json()["message"]
    assert os.listdir(small) == []  # the partial is removed, the space given back
    assert head(s, url).status_code == 404
    url = upload_url(s, server.url, 1000, filename="ok.bin", folder="small")
    assert patch(s, url, 0, b"x" * 1000).status_code == 204
    assert os.listdir(small) == ["ok.bin"]


@both_io
@pytest.mark.parametrize("with_checksum", [False, True])
def test_dropped_connection_mid_chunk(server: Server, with_checksum: bool) -> None:
    s = server.session()
    data = os.urandom(3 * 1024 * 1024)
    url = upload_url(s, server.url, len(data), filename="drop.bin")
    extra = {}
    if with_checksum:
        digest = base64.b64encode(hashlib.sha1(data).digest()).decode()
        extra["Upload-Checksum"] = f"sha1 {digest}"
    sock = open_patch(url, s.headers["Authorization"], 0, len(data), extra)
    sent = 1_500_000
    sock.sendall(data[:sent])
    time.sleep(0.3)
    sock.close()
    expected = 0 if with_checksum else sent
    assert wait_offset(s, url, expected) == expected
    # Until the server has seen the drop, the upload is still busy: 423, which clients
    # (tus-js-client among them) retry. Retry the same way, bounded.
    deadline = time.monotonic() + 20
    while (r := patch(s, url, expected, data[expected:], checksum="sha256")).status_code == 423:
        assert time.monotonic() < deadline, "the dropped PATCH never released the upload"
        time.sleep(0.1)
    assert r.status_code == 204, r.text
    assert (server.root / "drop.bin").read_bytes() == data


def test_expired_upload_is_gone_and_swept(make_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ATELIER_TUS_EXPIRE_HOURS", str(1.5 / 3600))
    monkeypatch.setenv("ATELIER_TUS_CLEANUP_SECONDS", "0.5")
    server = make_server()
    s = server.session()
    url = upload_url(s, server.url, 100, filename="old.bin")
    r = patch(s, url, 0, b"x" * 10)
    expires = parsedate_to_datetime(r.headers["Upload-Expires"]).timestamp()
    assert 0 < expires - time.time() < 5
    assert len(partials(server.root)) == 1
    deadline = time.monotonic() + 20
    while partials(server.root) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert partials(server.root) == []  # swept by the service, no request needed
    assert head(s, url).status_code == 404
    assert s.get(f"{server.url}/api/tus/").json() == []


def test_expired_upload_answers_410_before_the_sweep(
        make_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ATELIER_TUS_EXPIRE_HOURS", str(1 / 3600))
    monkeypatch.setenv("ATELIER_TUS_CLEANUP_SECONDS", "3600")
    server = make_server()
    s = server.session()
    url = upload_url(s, server.url, 100, filename="old.bin")
    time.sleep(1.5)
    assert patch(s, url, 0, b"x").status_code == 410
    assert partials(server.root) == []
    assert head(s, url).status_code == 404


def test_uploads_are_private(server: Server) -> None:
    ann = server.add_user("ann")
    bob = server.add_user("bob")
    url = upload_url(ann, server.url, 10, filename="a.bin", folder="users/ann")
    assert head(bob, url).status_code == 404
    assert patch(bob, url, 0, b"x").status_code == 404
    assert bob.delete(url, headers=TUS).status_code == 404
    assert [u["name"] for u in ann.get(f"{server.url}/api/tus/").json()] == ["a.bin"]
    assert bob.get(f"{server.url}/api/tus/").json() == []


def test_tuspy_against_a_missing_upload(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "x.bin"
    src.write_bytes(b"abc")
    with pytest.raises(TusCommunicationError):
        tuspy(server, server.session()).uploader(
            str(src), url=f"{server.url}/api/tus/0123456789abcdef0123456789abcdef")
