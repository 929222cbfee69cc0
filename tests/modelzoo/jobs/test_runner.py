"""The job queue on a real database and real files: claims, leases, pause/resume/cancel,
restarts that resume partial files, two runners sharing one database, a full disk."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from atelier_io.db import make_engine
from modelzoo import db
from modelzoo.access import Caller
from modelzoo.errors import JobConflict
from modelzoo.fetch import FetchSettings
from modelzoo.jobs.events import EventHub
from modelzoo.jobs.store import JobStore
from modelzoo.settings import ZooSettings
from modelzoo.zoo import ModelZoo, Request

from ..standins import files
from ..standins.civitai import CFile, CivitaiStandIn, CModel, CVersion

ADMIN = Caller("admin", "admin", "users/admin", True)
MB = 1024 * 1024


def quick() -> FetchSettings:
    return FetchSettings(connections=4, piece_size=64 * 1024, backoff_initial=0.05,
                         backoff_max=0.5, retries=6, reserve_bytes=0, lock_heartbeat=0.5,
                         sync_interval=0.2)


def add(civ: CivitaiStandIn, model_id: int, size: int) -> bytes:
    data = files.lora_kohya_sd15(pad=size, seed=model_id)
    civ.add(CModel(model_id, f"M{model_id}", "LORA", [CVersion(
        model_id * 10, "v1", "SD 1.5", [CFile(model_id * 100, f"m{model_id}.safetensors",
                                              data)])]))
    return data


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "nas"
    (r / "models").mkdir(parents=True)
    return r


@pytest.fixture
def make_zoo(tmp_path: Path, civitai: CivitaiStandIn, root: Path
             ) -> Iterator[Callable[..., ModelZoo]]:
    made: list[ModelZoo] = []

    def make(owner: str = "a", root_: Path | None = None, **kw: Any) -> ModelZoo:
        engine = make_engine(f"sqlite:///{tmp_path / 'state' / 'atelier.db'}", db.metadata)
        settings = ZooSettings(civitai_url=civitai.url, state_dir=tmp_path / "state",
                               models_poll_seconds=0.1, **kw)
        zoo = ModelZoo(settings, engine, root_ or root, fetch_settings=quick(), owner=owner)
        made.append(zoo)
        return zoo

    yield make
    for z in made:
        z.close()


def wait(zoo: ModelZoo, job_id: str, *states: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = zoo.jobs.get(job_id)
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.03)


def wait_for(cond: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def part_of(root: Path, name: str) -> Path:
    return root / "models/Lora" / f".{name}.part"


def test_a_job_runs_to_done(make_zoo: Callable[..., ModelZoo], civitai: CivitaiStandIn,
                            root: Path) -> None:
    data = add(civitai, 1, 300_000)
    zoo = make_zoo()
    seen: list[dict[str, Any]] = []
    publish = zoo.hub.publish
    zoo.hub.publish = lambda job, force=False: seen.append(job) or publish(job, force)  # type: ignore[method-assign,func-returns-value]
    zoo.start()
    job, created = zoo.submit(ADMIN, Request("civitai:1"))
    assert created and job["state"] == "queued"
    assert job["destination"] == "models/Lora/m1.safetensors"
    done = wait(zoo, job["id"], "done", "failed")
    assert done["state"] == "done", done
    assert done["done"] == done["size"] == len(data) and done["error"] is None
    assert (root / "models/Lora/m1.safetensors").read_bytes() == data
    states = [j["state"] for j in seen if j["id"] == job["id"]]
    assert states[0] == "queued" and "running" in states and states[-1] == "done"
    again, created = zoo.submit(ADMIN, Request("civitai:1"))
    assert not created and again["state"] == "done" and again["reused"]


def test_claims_are_exclusive(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}", db.metadata)
    store = JobStore(engine)
    job = store.create(user="ann", ref="civitai:1", request={}, plan={})
    winners: list[Any] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        other = JobStore(make_engine(f"sqlite:///{tmp_path / 'q.db'}"))
        barrier.wait()
        row = other.claim_next(f"r{i}", 30)
        if row is not None:
            winners.append(row)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and winners[0].id == job["id"]
    row = store.row(job["id"])
    assert row.state == "running" and row.owner == winners[0].owner and row.attempts == 1


def test_two_runners_on_one_database_run_each_job_once(
        make_zoo: Callable[..., ModelZoo], civitai: CivitaiStandIn, root: Path) -> None:
    datas = {i: add(civitai, i, 200_000) for i in range(1, 7)}
    a = make_zoo("replica-a", models_concurrency=2)
    b = make_zoo("replica-b", models_concurrency=2)
    jobs = [a.submit(ADMIN, Request(f"civitai:{i}"))[0] for i in datas]
    ran: list[tuple[str, str]] = []
    for zoo in (a, b):
        def spy(job: dict[str, Any], *rest: Any, zoo: ModelZoo = zoo,
                inner: Any = zoo.runner.execute) -> Any:
            ran.append((zoo.owner, job["id"]))
            return inner(job, *rest)
        zoo.runner.execute = spy
    a.start()
    b.start()
    done = [wait(a, j["id"], "done", "failed") for j in jobs]
    assert all(j["state"] == "done" for j in done), done
    assert sorted(job_id for _, job_id in ran) == sorted(j["id"] for j in jobs)
    with a.engine.connect() as conn:
        attempts = [r.attempts for r in conn.execute(sa.select(db.jobs.c.attempts))]
    assert attempts == [1] * len(jobs)
    for i, data in datas.items():
        assert (root / f"models/Lora/m{i}.safetensors").read_bytes() == data


def test_a_dead_replicas_job_is_taken_over_after_its_lease(
        make_zoo: Callable[..., ModelZoo], civitai: CivitaiStandIn, root: Path) -> None:
    data = add(civitai, 2, 200_000)
    zoo = make_zoo("alive")
    job, _ = zoo.submit(ADMIN, Request("civitai:2"))
    ghost = zoo.jobs.claim_next("ghost", lease=0.5)   # claimed, then its replica died
    assert ghost is not None and ghost.id == job["id"]
    zoo.start()
    assert wait(zoo, job["id"], "done")["state"] == "done"
    assert (root / "models/Lora/m2.safetensors").read_bytes() == data
    assert zoo.jobs.row(job["id"]).attempts == 2


def test_restart_mid_download_resumes_the_partial(
        make_zoo: Callable[..., ModelZoo], civitai: CivitaiStandIn, root: Path) -> None:
    data = add(civitai, 3, 3 * MB)
    civitai.rate = 256 * 1024
    zoo = make_zoo("host-a")
    zoo.start()
    job, _ = zoo.submit(ADMIN, Request("civitai:3"))
    wait_for(lambda: zoo.jobs.get(job["id"])["done"] > MB)
    zoo.close()                                        # a graceful stop of the service
    row = zoo.jobs.get(job["id"])
    assert row["state"] == "queued"
    assert part_of(root, "m3.safetensors").exists()
    # a crash would have left it "running" under this replica's name: same outcome
    zoo.jobs._update(db.jobs.c.id == job["id"], state="running", owner="host-a",
                     lease_until=time.time() + 3600)
    civitai.rate = 0
    sent = civitai.traffic.sent
    again = make_zoo("host-a")
    again.start()
    done = wait(again, job["id"], "done", "failed")
    assert done["state"] == "done" and done["resumed"] > MB // 2, done
    assert (root / "models/Lora/m3.safetensors").read_bytes() == data
    assert civitai.traffic.sent - sent < len(data)      # not the whole file again
    assert not part_of(root, "m3.safetensors").exists()


def test_pause_resume_cancel_retry(make_zoo: Callable[..., ModelZoo], civitai: CivitaiStandIn,
                                   root: Path) -> None:
    data = add(civitai, 4, 2 * MB)
    add(civitai, 5, 2 * MB)
    civitai.rate = 256 * 1024
    zoo = make_zoo()
    zoo.start()
    job, _ = zoo.submit(ADMIN, Request("civitai:4"))
    wait_for(lambda: zoo.jobs.get(job["id"])["done"] > 256 * 1024)
    zoo.act(ADMIN, job["id"], "pause")
    paused = wait(zoo, job["id"], "paused")
    assert paused["done"] > 0 and part_of(root, "m4.safetensors").exists()
    with pytest.raises(JobConflict):
        zoo.act(ADMIN, job["id"], "retry")
    civitai.rate = 0
    zoo.act(ADMIN, job["id"], "resume")
    done = wait(zoo, job["id"], "done", "failed")
    assert done["state"] == "done" and done["resumed"] > 0
    assert (root / "models/Lora/m4.safetensors").read_bytes() == data

    civitai.rate = 256 * 1024
    other, _ = zoo.submit(ADMIN, Request("civitai:5"))
    wait_for(lambda: zoo.jobs.get(other["id"])["done"] > 256 * 1024)
    zoo.act(ADMIN, other["id"], "cancel")
    cancelled = wait(zoo, other["id"], "cancelled")
    assert cancelled["state"] == "cancelled"
    wait_for(lambda: not part_of(root, "m5.safetensors").exists())
    assert not (root / "models/Lora/m5.safetensors").exists()
    assert not list((root / "models/Lora").glob(".m5*"))
    civitai.rate = 0
    zoo.act(ADMIN, other["id"], "retry")
    assert wait(zoo, other["id"], "done", "failed")["state"] == "done"
    zoo.act(ADMIN, other["id"], "delete")
    assert all(j["id"] != other["id"] for j in zoo.jobs.list())


def test_a_full_disk_fails_the_job_and_leaves_nothing(
        make_zoo: Callable[..., ModelZoo], civitai: CivitaiStandIn, tmp_path: Path,
        tmpfs: Callable[..., Path]) -> None:
    small = tmpfs(tmp_path / "small", "4m")
    (small / "models").mkdir()
    add(civitai, 6, 8 * MB)
    zoo = make_zoo(root_=small)
    zoo.start()
    job, _ = zoo.submit(ADMIN, Request("civitai:6"))
    failed = wait(zoo, job["id"], "failed", "done")
    assert failed["state"] == "failed" and failed["error_code"] == "insufficient_space"
    assert "free" in failed["error"] or "space" in failed["error"]
    leftovers = [p for p in (small / "models").rglob("*") if p.is_file()]
    assert leftovers == []


def test_events_are_throttled_per_job_but_never_lose_a_state() -> None:
    hub = EventHub(min_interval=3600)
    job = {"id": "j_1", "state": "running", "done": 1}
    assert hub.publish(job)
    assert not hub.publish({**job, "done": 2})            # progress within the interval
    assert hub.publish({**job, "state": "done"})          # a new state always goes out
    assert hub.publish({**job, "state": "done"}, force=True)


def test_the_same_request_queued_twice_while_active_is_one_job(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}", db.metadata)
    store = JobStore(engine)
    kw = {"user": "ann", "ref": "civitai:1", "request": {}, "plan": {}}
    first, created = store.create_once("k", **kw)
    assert created and first["state"] == "queued"
    # racing: eight replicas queue the same request at once, none makes a second job
    got: list[tuple[str, bool]] = []
    barrier = threading.Barrier(8)

    def queue() -> None:
        other = JobStore(make_engine(f"sqlite:///{tmp_path / 'q.db'}"))
        barrier.wait()
        job, made = other.create_once("k", **kw)
        got.append((job["id"], made))

    threads = [threading.Thread(target=queue) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert got == [(first["id"], False)] * 8
    assert store.pause(first["id"]) == "paused"
    assert store.create_once("k", **kw) == (store.get(first["id"]), False)  # paused: active
    assert store.create_once("other", **kw)[1]                              # another request
    store.cancel(first["id"])
    second, created = store.create_once("k", **kw)    # finished: the key is free again
    assert created and second["id"] != first["id"]
    assert store.cancel(second["id"]) == "cancelled"
    store.delete(second["id"])
    assert store.create_once("k", **kw)[1]             # deleted: free too
