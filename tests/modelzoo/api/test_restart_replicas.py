"""The service as processes: a restart (graceful or kill -9) in the middle of a download
resumes it from its partial file; two replicas on one database and one NAS run a job
once and both report it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ...conftest import Server
from ..standins.civitai import CivitaiStandIn
from .conftest import add_lora, wait_job

MB = 1024 * 1024


def _env(civ: CivitaiStandIn) -> dict[str, str]:
    return {"ATELIER_CIVITAI_URL": civ.url, "ATELIER_MODELS_POLL_SECONDS": "0.2",
            "ATELIER_FETCH_RESERVE_BYTES": "0", "ATELIER_FETCH_SYNC_INTERVAL": "0.2",
            "ATELIER_FETCH_PIECE_SIZE": "65536"}


def settled(civ: CivitaiStandIn) -> int:
    """Wait until the dead process's connections stopped streaming (a killed client's
    sockets are noticed by the server only after some more writes)."""
    last = -1
    while civ.traffic.sent != last:
        last = civ.traffic.sent
        time.sleep(0.5)
    return last


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_a_restart_mid_download_resumes_from_the_partial(
        spawn_server: Callable[..., Server], civitai: CivitaiStandIn, tmp_path: Path,
        how: str) -> None:
    data = add_lora(civitai, size=4 * MB)
    civitai.rate = 64 * 1024          # per connection: ~0.5 MB/s with the default 8
    srv = spawn_server(env=_env(civitai))
    s = srv.session()
    job = s.post(f"{srv.url}/api/models/jobs", json={"ref": "civitai:4201"}).json()
    deadline = time.monotonic() + 60
    while s.get(f"{srv.url}/api/models/jobs/{job['id']}").json()["done"] < MB:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    srv.kill9() if how == "kill9" else srv.stop()
    part = tmp_path / "nas/models/Lora/.detail_tweaker.safetensors.part"
    assert part.exists()
    civitai.rate = 0
    settled(civitai)
    restarted = time.monotonic()
    again = spawn_server(env=_env(civitai))
    s2 = again.session()
    done = wait_job(s2, again.url, job["id"])
    assert done["state"] == "done", done
    assert done["resumed"] >= MB // 2, done
    assert (tmp_path / "nas/models/Lora/detail_tweaker.safetensors").read_bytes() == data
    # after the restart only a short probe reads from byte 0; the resumed pieces are kept
    after = [r for r in civitai.traffic.requests("/signed/") if r["t"] > restarted]
    firsts = [int(r["headers"]["range"].split("-")[1]) for r in after
              if r["headers"].get("range", "").startswith("bytes=0-")]
    assert after and all(end < 512 * 1024 for end in firsts), firsts
    assert not part.exists()


def test_two_replicas_run_a_job_once_and_both_see_it(
        make_server: Callable[..., Server], zoo_env: CivitaiStandIn, postgres_db: str,
        tmp_path: Path) -> None:
    data = add_lora(zoo_env, size=2 * MB)
    zoo_env.rate = 2 * MB
    a = make_server(root=tmp_path / "nas", db_url=postgres_db)
    b = make_server(root=tmp_path / "nas", db_url=postgres_db)
    sa_, sb = a.session(), b.session()
    jobs = [sa_.post(f"{a.url}/api/models/jobs", json={"ref": "civitai:4201"}).json(),
            sb.post(f"{b.url}/api/models/jobs", json={"ref": "civitai:4201",
                                                      "conflict": "overwrite"}).json()]
    done = [wait_job(sb, b.url, j["id"]) for j in jobs]
    assert [d["state"] for d in done] == ["done", "done"], done
    assert (tmp_path / "nas/models/Lora/detail_tweaker.safetensors").read_bytes() == data
    # one download for the file: the other job waited on the NAS lock and reused it
    assert sorted(d["reused"] for d in done) == [False, True]
    assert zoo_env.traffic.sent < 1.5 * len(data)
    assert {j["id"] for j in sa_.get(f"{a.url}/api/models/jobs").json()["jobs"]} == \
        {j["id"] for j in jobs}


def test_a_stop_is_not_held_up_by_open_event_streams(spawn_server: Callable[..., Server],
                                                     civitai: CivitaiStandIn) -> None:
    srv = spawn_server(env=_env(civitai))
    s = srv.session()
    with s.get(f"{srv.url}/api/models/events", stream=True, timeout=30) as stream:
        assert stream.status_code == 200
        srv.stop()       # SIGTERM, then SIGKILL if it has not exited within 10 s
        # uvicorn re-raises the SIGTERM it handled (-15); -9 would be our SIGKILL
        assert srv.proc is not None and srv.proc.returncode in (0, -15)
        rest = b"".join(stream.iter_content(None))   # the stream ended, not cut
        assert rest == b"" or rest.startswith((b"retry", b":", b"event"))
