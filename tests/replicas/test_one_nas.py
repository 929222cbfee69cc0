"""Two ``atelier serve`` processes on one NAS and one PostgreSQL behave as one service:
sessions, tus uploads, the image index and model fetch jobs (kill -9 included) move
freely between them, because none of that state lives in a process."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import blake3
import requests
import sqlalchemy as sa
from tusclient import client as tus_client

from ..conftest import ADMIN_PASSWORD, Server
from ..filebrowser.images.conftest import wait_until, write_png
from ..filebrowser.transfers.conftest import TUS, head, metadata, open_patch, patch
from ..modelzoo.api.conftest import add_lora, wait_job
from ..modelzoo.standins.civitai import CivitaiStandIn

MB = 1024 * 1024
Replicas = Callable[..., list[Server]]


def _zoo_env(civ: CivitaiStandIn, **more: str) -> dict[str, str]:
    return {"ATELIER_CIVITAI_URL": civ.url, "ATELIER_MODELS_POLL_SECONDS": "0.1",
            "ATELIER_FETCH_RESERVE_BYTES": "0", "ATELIER_FETCH_SYNC_INTERVAL": "0.2",
            "ATELIER_FETCH_PIECE_SIZE": "65536", **more}


# -- sessions ---------------------------------------------------------------------------


def test_a_browser_session_and_a_token_made_on_one_replica_work_on_the_other(
        replicas: Replicas) -> None:
    a, b = replicas()
    browser = requests.Session()
    r = browser.post(f"{a.url}/api/login", json={"username": "admin",
                                                 "password": ADMIN_PASSWORD})
    assert r.status_code == 200
    csrf = r.json()["csrf_token"]
    # the same cookie jar on B (a load balancer without sticky sessions)
    assert browser.get(f"{b.url}/api/me").json()["name"] == "admin"
    r = browser.post(f"{b.url}/api/fs/mkdir", json={"path": "users/admin/from-b"})
    assert r.status_code == 403  # a write on B still needs the CSRF token of A's session
    r = browser.post(f"{b.url}/api/fs/mkdir", json={"path": "users/admin/from-b"},
                     headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    assert (a.root / "users/admin/from-b").is_dir()

    token = a.session()
    assert token.get(f"{b.url}/api/me").json()["name"] == "admin"
    # logout on B ends the session on A
    cookie = {"atelier_session": browser.cookies["atelier_session"]}
    assert browser.post(f"{b.url}/api/logout", headers={"X-CSRF-Token": csrf}).ok
    assert requests.get(f"{a.url}/api/me", cookies=cookie).status_code == 401


# -- tus ------------------------------------------------------------------------------


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def test_a_tus_upload_started_on_one_replica_finishes_on_the_other(
        replicas: Replicas, tmp_path: Path) -> None:
    a, b = replicas()
    s = a.session()
    data = os.urandom(3 * MB + 17)
    r = s.post(f"{a.url}/api/tus/", headers={
        **TUS, "Upload-Length": str(len(data)),
        "Upload-Metadata": metadata(filename="big.safetensors", folder="models/Lora",
                                    checksum="blake3")})
    assert r.status_code == 201, r.text
    path = r.headers["Location"]
    assert patch(s, a.url + path, 0, data[:MB], checksum="sha1").status_code == 204

    # B knows the upload and its offset; a PATCH of A still in flight locks it on B
    r = head(s, b.url + path)
    assert r.status_code == 200 and r.headers["Upload-Offset"] == str(MB)
    sock = open_patch(a.url + path, s.headers["Authorization"], MB, MB)
    sock.sendall(data[MB:MB + MB // 2])
    time.sleep(0.3)
    r = patch(s, b.url + path, MB, data[MB:2 * MB])
    assert r.status_code in (409, 423), r.text  # never two writers of one partial file
    sock.close()  # A's PATCH dies half way: what reached the disk counts

    def offset() -> int:
        return int(head(s, b.url + path).headers["Upload-Offset"])

    got = wait_until(lambda: offset() >= MB + 1 and offset(), what="A's cut PATCH settled")
    # B finishes it with the whole-file checksum: it re-reads the partial A wrote
    r = patch(s, b.url + path, got, data[got:],
              **{"X-Atelier-File-Checksum": f"blake3 {_b64(blake3.blake3(data).digest())}"})
    assert r.status_code == 204, r.text
    placed = a.root / "models/Lora/big.safetensors"
    assert hashlib.sha256(placed.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert [n for n in os.listdir(placed.parent) if n.startswith(".atelier-tmp")] == []
    # A answers for the finished upload too
    r = head(s, a.url + path)
    assert r.status_code == 200 and r.headers["Upload-Offset"] == str(len(data))


def test_tuspy_resumes_on_the_other_replica(replicas: Replicas, tmp_path: Path) -> None:
    a, b = replicas()
    s = a.session()
    data = os.urandom(3 * MB + 5)
    src = tmp_path / "m.safetensors"
    src.write_bytes(data)
    auth = {"Authorization": s.headers["Authorization"]}
    meta = {"filename": "m.safetensors", "folder": "models/Lora"}
    first = tus_client.TusClient(f"{a.url}/api/tus/", headers=auth).uploader(
        str(src), chunk_size=MB, metadata=meta, upload_checksum=True)
    first.upload(stop_at=2 * MB)
    assert first.url is not None
    moved = b.url + urlsplit(first.url).path
    second = tus_client.TusClient(f"{b.url}/api/tus/", headers=auth).uploader(
        str(src), url=moved, chunk_size=MB, upload_checksum=True)
    assert second.offset == 2 * MB   # asked B, which read A's state from the shared DB
    second.upload()
    assert (a.root / "models/Lora/m.safetensors").read_bytes() == data


# -- the image index --------------------------------------------------------------------


def test_images_on_the_nas_are_indexed_once_and_a_delete_shows_on_both(
        replicas: Replicas, postgres_db: str) -> None:
    # as on NFS across hosts: A sees none of B's writes as events, only by its rescans
    # (rare here), B follows its own writes with inotify
    a, b = replicas(env={"ATELIER_INDEX_RESCAN_SECONDS": "60"},
                    each=[{"ATELIER_INDEX_WATCH": "false"}, {}])
    out = a.root / "users/admin/outputs"
    for i in range(30):  # the WebUI writes straight to the NAS
        write_png(out / f"img-{i:02d}.png", f"tower {i}\nSteps: 20, Sampler: Euler a, "
                  f"CFG scale: 7, Seed: {i}, Model: m")
    s = a.session()

    def hits(srv: Server, q: str = "tower") -> list[str]:
        r = s.get(f"{srv.url}/api/search", params={"q": q, "limit": 100})
        assert r.status_code == 200, r.text
        return sorted(h["path"] for h in r.json()["results"])

    wait_until(lambda: len(hits(a)) == 30 and len(hits(b)) == 30, what="both see 30")
    engine = sa.create_engine(postgres_db)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT path, count(*) FROM image_index WHERE path LIKE '%img-%' "
                "GROUP BY path")).all()
    finally:
        engine.dispose()
    assert len(rows) == 30 and {n for _, n in rows} == {1}
    victim = "users/admin/outputs/img-07.png"
    r = s.post(f"{b.url}/api/fs/delete", json={"path": victim})
    assert r.status_code == 200, r.text
    # gone from A's search without A noticing anything: B dropped the shared row
    wait_until(lambda: victim not in hits(a), timeout=10, what="the delete seen on A")
    assert len(hits(a)) == 29
    # and A's next rescan (asked for) neither brings it back nor adds a second row
    def last_deep() -> float:
        return s.get(f"{a.url}/api/search/status").json()["last_deep_scan"] or 0.0

    before = last_deep()
    assert s.post(f"{a.url}/api/search/reindex", json={}).status_code == 202
    wait_until(lambda: last_deep() > before, what="A's rescan")
    assert victim not in hits(a) and len(hits(b)) == 29


# -- model fetch jobs -------------------------------------------------------------------


def test_the_same_model_queued_on_both_at_once_is_one_job_and_one_download(
        replicas: Replicas, civitai: CivitaiStandIn, tmp_path: Path) -> None:
    data = add_lora(civitai, size=2 * MB)
    civitai.rate = 4 * MB
    a, b = replicas(env=_zoo_env(civitai))
    sessions = {a.url: a.session(), b.url: b.session()}
    start = threading.Barrier(2)
    answers: dict[str, requests.Response] = {}

    def queue(srv: Server) -> None:
        start.wait()
        answers[srv.url] = sessions[srv.url].post(f"{srv.url}/api/models/jobs",
                                                  json={"ref": "civitai:4201"})

    threads = [threading.Thread(target=queue, args=(srv,)) for srv in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # one job: one replica made it (201), the other answered with it (200)
    assert sorted(r.status_code for r in answers.values()) == [200, 201], \
        [r.text for r in answers.values()]
    (job_id,) = {r.json()["id"] for r in answers.values()}
    for url, s in sessions.items():
        assert [j["id"] for j in s.get(f"{url}/api/models/jobs").json()["jobs"]] == [job_id]
    done = wait_job(sessions[a.url], a.url, job_id)
    assert done["state"] == "done" and not done["reused"], done
    assert (tmp_path / "nas/models/Lora/detail_tweaker.safetensors").read_bytes() == data
    assert not (tmp_path / "nas/models/Lora/detail_tweaker_1.safetensors").exists()
    # one download: each submit sniffs the first 64 KiB (what is it?), then one engine
    # starts from byte 0 and the other never asks for the file
    starts = [r["headers"]["range"] for r in civitai.traffic.requests("/signed/")
              if r["headers"].get("range", "").startswith("bytes=0-")]
    assert starts.count("bytes=0-65535") == 2 and len(starts) == 3, starts
    assert civitai.traffic.sent < 1.3 * len(data)
    # queued again once it is done: a new job, which finds the file there
    r = sessions[b.url].post(f"{b.url}/api/models/jobs", json={"ref": "civitai:4201"})
    assert r.status_code == 200 and r.json()["id"] != job_id and r.json()["reused"]


def _owner(db_url: str, job_id: str) -> str | None:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT owner FROM modelzoo_jobs WHERE id = :i"),
                                {"i": job_id}).scalar()
    finally:
        engine.dispose()


def test_kill9_of_the_replica_running_a_fetch_and_the_other_finishes_it(
        replicas: Replicas, civitai: CivitaiStandIn, postgres_db: str,
        tmp_path: Path) -> None:
    data = add_lora(civitai, size=3 * MB)
    civitai.rate = 96 * 1024   # per connection: long enough to kill it half way
    # the takeover is bounded by the lease (and, across hosts, the NAS lock's staleness)
    servers = replicas(env=_zoo_env(civitai, ATELIER_MODELS_LEASE_SECONDS="2",
                                    ATELIER_FETCH_LOCK_STALE_AFTER="3",
                                    ATELIER_FETCH_LOCK_HEARTBEAT="0.5"))
    s = servers[0].session()
    job = s.post(f"{servers[0].url}/api/models/jobs", json={"ref": "civitai:4201"}).json()
    wait_until(lambda: s.get(f"{servers[0].url}/api/models/jobs/{job['id']}").json()["done"]
               >= MB // 2, timeout=60, what="half a MB downloaded")
    owner = _owner(postgres_db, job["id"])
    assert owner in ("replica-0", "replica-1")
    running, other = (servers[0], servers[1]) if owner == "replica-0" else (
        servers[1], servers[0])
    running.kill9()
    civitai.rate = 0
    s2 = other.session()
    done = wait_job(s2, other.url, job["id"], timeout=30)
    assert done["state"] == "done", done
    assert done["resumed"] > 0, done       # the partial the dead replica left was kept
    assert _owner(postgres_db, job["id"]) is None
    assert (tmp_path / "nas/models/Lora/detail_tweaker.safetensors").read_bytes() == data
    assert not list((tmp_path / "nas/models/Lora").glob(".*.part"))
