"""Jobs through /api/generate: 202 at once, SSE progress, cancel, fairness, 507s, quota,
and what a restart leaves behind."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import httpx
import sqlalchemy as sa
from PIL import Image

from modelzoo.residency import db

from ..checkpoints import write_family
from .conftest import as_user, wait_state

GEN = {"model": "tiny", "prompt": "lowest newer", "negative_prompt": "wider", "steps": 2,
       "width": 64, "height": 64, "seed": 42}


def _sse(client: httpx.Client, path: str, user: str, on_event: Any = None,
         ) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    with client.stream("GET", path, headers=as_user(user)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                events.append((kind, json.loads(line[6:])))
                if on_event is not None:
                    on_event(kind, events[-1][1])
                if kind == "end":
                    break
    return events


def test_post_returns_a_job_at_once_and_sse_reports_progress_to_the_end(gen_api) -> None:
    api = gen_api()
    r = api.client.post("/api/generate", json={**GEN, "steps": 6, "preview_every": 2},
                        headers=as_user("ann:user"))
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {"id", "state", "position"} and body["state"] in ("queued", "running")
    events = _sse(api.client, f"/api/generate/{body['id']}/events", "ann:user")
    jobs = [d for k, d in events if k == "job"]
    steps = [d["step"] for d in jobs if d["state"] == "running"]
    assert steps == sorted(steps) and max(steps) == jobs[-1]["total"] == 6
    assert jobs[-1]["state"] == "done" and events[-1][0] == "end"
    previews = [d for k, d in events if k == "preview"]
    assert previews and previews[0]["step"] == 2
    thumb = Image.open(io.BytesIO(base64.b64decode(previews[0]["image"])))
    assert thumb.size == (32, 32)  # latent-sized: the tiny VAE scales by 2, real ones by 8
    done = api.client.get(f"/api/generate/{body['id']}", headers=as_user("ann:user")).json()
    image = done["result"]["images"][0]
    saved = api.outputs / "ann" / "outputs" / image["path"]
    assert Image.open(saved).text["parameters"] == image["infotext"]
    # a finished job's events: the final state at once
    again = _sse(api.client, f"/api/generate/{body['id']}/events", "ann:user")
    assert again[0][1]["state"] == "done" and again[-1][0] == "end"
    # others cannot see it
    assert api.client.get(f"/api/generate/{body['id']}",
                          headers=as_user("bob:user")).status_code == 404
    assert api.client.get(f"/api/generate/{body['id']}",
                          headers=as_user("root:admin")).status_code == 200


def test_cancel_mid_job_stops_between_steps_and_saves_nothing(gen_api) -> None:
    api = gen_api()
    jid = api.client.post("/api/generate", json={**GEN, "steps": 60},
                          headers=as_user("ann:user")).json()["id"]
    cancelled: list[dict[str, Any]] = []

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "job" and data["state"] == "running" and data["step"] >= 2 and not cancelled:
            r = httpx.post(f"{api.url}/api/generate/{jid}/cancel", headers=as_user("ann:user"))
            cancelled.append(r.json())

    events = _sse(api.client, f"/api/generate/{jid}/events", "ann:user", on_event)
    final = events[-2][1]
    assert cancelled and final["state"] == "cancelled"
    assert 2 <= final["step"] < 60 and final["result"] is None
    assert not list(api.outputs.rglob("*.png"))
    r = api.client.post(f"/api/generate/{jid}/cancel", headers=as_user("ann:user"))
    assert r.status_code == 409 and r.json()["error"] == "job_state"
    with api.engine.connect() as conn:
        assert conn.execute(sa.select(db.jobs.c.state)).scalar_one() == "cancelled"
    # the model is free again: the next job runs
    again = api.client.post("/api/generate?wait=true", json=GEN, headers=as_user("ann:user"))
    assert again.status_code == 200 and again.json()["state"] == "done"


def test_queued_jobs_of_two_users_take_turns(gen_api) -> None:
    api = gen_api()
    ids: dict[str, str] = {}
    slow = {**GEN, "steps": 40}
    ids["a1"] = api.client.post("/api/generate", json=slow,
                                headers=as_user("ann:user")).json()["id"]
    wait_state(api, ids["a1"], ("running",))
    for n in ("a2", "a3", "a4"):
        ids[n] = api.client.post("/api/generate", json={**GEN, "steps": 3},
                                 headers=as_user("ann:user")).json()["id"]
    positions = {}
    for n in ("b1", "b2"):
        r = api.client.post("/api/generate", json={**GEN, "steps": 3},
                            headers=as_user("bob:user")).json()
        ids[n], positions[n] = r["id"], r["position"]
    # a2 was handed to the GPU with a1 running; bob's first job comes right after it
    assert positions == {"b1": 1, "b2": 3}
    jobs = {n: wait_state(api, jid, ("done",), "root:admin") for n, jid in ids.items()}
    order = sorted(jobs, key=lambda n: jobs[n]["started"])
    assert order == ["a1", "a2", "b1", "a3", "b2", "a4"]


def test_the_queue_is_bounded_per_user_and_overall(gen_api) -> None:
    api = gen_api(queue_max=3, queue_max_per_user=2)
    first = api.client.post("/api/generate", json={**GEN, "steps": 40},
                            headers=as_user("ann:user")).json()["id"]
    wait_state(api, first, ("running",))
    codes = [api.client.post("/api/generate", json=GEN, headers=as_user("ann:user"))
             for _ in range(3)]
    assert [r.status_code for r in codes] == [202, 202, 429]
    assert codes[2].json()["error"] == "queue_full" and codes[2].headers["retry-after"]
    assert api.client.post("/api/generate", json=GEN,
                           headers=as_user("bob:user")).status_code == 202
    r = api.client.post("/api/generate", json=GEN, headers=as_user("cy:user"))
    assert r.status_code == 429 and r.json()["limit"] == 3


def test_a_model_that_cannot_fit_is_refused_at_submit_with_the_numbers(gen_api) -> None:
    api = gen_api(models=("tiny",))
    write_family(api.models / "huge.safetensors", "sd1", pad_bytes=64 << 20)
    r = api.client.post("/api/generate", json={**GEN, "model": "huge"},
                        headers=as_user("ann:user"))
    assert r.status_code == 507, r.text
    body = r.json()
    assert body["error"] == "model_too_large" and body["device"] == "sim:0"
    assert body["needed_bytes"] == body["weights_bytes"] + body["reserve_bytes"]
    assert body["weights_bytes"] > body["limit_bytes"]
    assert "needs" in body["message"] and str(body["limit_bytes"]) in body["message"]
    # nothing was queued or recorded
    assert api.client.get("/api/generate", headers=as_user("ann:user")).json()["jobs"] == []
    # the reserve counts: a big image of a model that fits alone is refused too
    api2 = gen_api(models=("tiny",), gpu_pipelines=1.2, reserve_per_megapixel=api.size)
    r = api2.client.post("/api/generate", json={**GEN, "width": 512, "height": 512},
                         headers=as_user("ann:user"))
    assert r.status_code == 507 and r.json()["reserve_bytes"] > 0
    assert api2.client.post("/api/generate?wait=true", json=GEN,
                            headers=as_user("ann:user")).status_code == 200


def test_images_count_against_the_quota_and_are_recorded(gen_api) -> None:
    api = gen_api()
    api.room["ann"] = 64 * 64 * 3 * 2 - 1  # not enough for two raw 64x64 images
    r = api.client.post("/api/generate", json={**GEN, "batch_size": 2},
                        headers=as_user("ann:user"))
    assert r.status_code == 507 and r.json()["error"] == "quota_exceeded"
    assert r.json()["room_bytes"] == api.room["ann"]
    assert not api.records and not list(api.outputs.rglob("*.png"))
    ok = api.client.post("/api/generate?wait=true", json=GEN, headers=as_user("ann:user"))
    assert ok.status_code == 200
    (user, rel, nbytes), = api.records
    path = api.outputs / "ann" / "outputs" / rel
    assert user == "ann" and path.is_file() and path.stat().st_size == nbytes
    assert rel == ok.json()["path"]
    # room that is gone between submit and save: the job fails, nothing is written
    api.room["bob"] = 64 * 64 * 3  # enough for the estimate...
    slow = api.client.post("/api/generate", json={**GEN, "steps": 30},
                           headers=as_user("bob:user")).json()["id"]
    api.room["bob"] = 10  # ...but not when the image is saved, 30 steps later
    failed = wait_state(api, slow, ("done", "failed"), "bob:user")
    assert failed["state"] == "failed" and failed["error"]["error"] == "quota_exceeded"
    assert not list(api.outputs.glob("bob/**/*.png"))


def test_wait_answers_with_the_images_and_the_old_shape(gen_api) -> None:
    api = gen_api()
    r = api.client.post("/api/generate?wait=true", json={**GEN, "batch_size": 2, "n_iter": 2},
                        headers=as_user("ann:user"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seeds"] == [42, 43, 44, 45] and len(body["images"]) == 4
    assert body["image"] == body["images"][0] and body["seed"] == 42
    assert len(set(body["paths"])) == 4 and body["switched_from"] == "disk"
    listing = api.client.get("/api/generate", headers=as_user("ann:user")).json()["jobs"]
    assert [j["state"] for j in listing] == ["done"]
    assert listing[0]["request"]["batch_size"] == 2
