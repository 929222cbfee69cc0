"""The /api/models routes of the real service (issue 12's contract with the web UI),
against the loopback Civitai: resolve, jobs, errors, permissions, settings, quotas,
previews and Server-Sent Events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from ...conftest import Server
from ..standins import files
from ..standins.civitai import CivitaiStandIn
from ..standins.huggingface import HFile, HfStandIn, HRepo
from .conftest import add_lora, wait_job

CONTRACT_RESOLVE = {"ref", "source", "name", "version", "model_id", "version_id", "type",
                    "base_model", "files", "size", "sha256", "preview", "trigger_words",
                    "description", "destination", "existing", "update_available"}
CONTRACT_JOB = {"id", "ref", "user", "state", "name", "type", "base_model", "destination",
                "size", "done", "speed", "eta", "error", "reused", "created", "started",
                "finished", "preview"}


def test_resolve_shows_what_a_reference_is(models_server: Server,
                                           zoo_env: CivitaiStandIn) -> None:
    data = add_lora(zoo_env)
    s = models_server.session()
    r = s.post(f"{models_server.url}/api/models/resolve",
               json={"ref": f"{zoo_env.url}/models/4201?modelVersionId=130072"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert CONTRACT_RESOLVE <= set(doc)
    assert (doc["ref"], doc["source"], doc["type"], doc["base_model"]) == (
        "civitai:4201@130072", "civitai", "LORA", "SDXL 1.0")
    assert doc["files"] == [{"name": "detail_tweaker.safetensors", "size": len(data),
                             "sha256": files.sha(data), "primary": True}]
    assert doc["destination"] == "models/Lora/detail_tweaker.safetensors"
    assert doc["existing"] is None and doc["trigger_words"] == ["detailed"]
    assert doc["preview"].startswith("api/models/preview/")
    assert zoo_env.url not in json.dumps({k: v for k, v in doc.items() if k != "page"})
    img = s.get(f"{models_server.url}/{doc['preview']}")
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert img.headers["x-content-type-options"] == "nosniff"
    assert img.content.startswith(b"\x89PNG")
    assert not (models_server.root / "models/Lora/detail_tweaker.safetensors").exists()
    assert s.get(f"{models_server.url}/api/models/preview/r{'0' * 40}").status_code == 404
    assert s.get(f"{models_server.url}/api/models/preview/..%2F..%2Fetc").status_code == 404
    assert requests.post(f"{models_server.url}/api/models/resolve",
                         json={"ref": "civitai:4201"}).status_code == 401
    sub = s.post(f"{models_server.url}/api/models/resolve",
                 json={"ref": "civitai:4201", "base_subfolder": True}).json()
    assert sub["destination"] == "models/Lora/SDXL 1.0/detail_tweaker.safetensors"


@pytest.mark.parametrize(("setup", "ref", "status", "code", "words"), [
    (None, "ftp://x/y", 400, "bad_reference", "Accepted"),
    (None, "", 400, "bad_reference", "Accepted"),
    ("auth", "civitai:4201", 401, "remote_auth_required", "ATELIER_CIVITAI_TOKEN"),
    ("early", "civitai:4201", 403, "early_access", "early access"),
    (None, "civitai:999", 404, "remote_not_found", "999"),
    ("archived", "civitai:4201", 410, "archived", "archived"),
    ("429", "civitai:4201", 429, "rate_limited", "rate limit"),
])
def test_resolve_errors(models_server: Server, zoo_env: CivitaiStandIn, setup: str | None,
                        ref: str, status: int, code: str, words: str) -> None:
    add_lora(zoo_env, require_auth=setup == "auth", early_access=setup == "early",
             archived=setup == "archived")
    if setup == "429":
        zoo_env.api_429 = [0.01] * 20
    r = models_server.session().post(f"{models_server.url}/api/models/resolve",
                                     json={"ref": ref})
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and words.lower() in r.json()["message"].lower()


def test_a_job_from_post_to_done_then_reused(models_server: Server,
                                            zoo_env: CivitaiStandIn) -> None:
    data = add_lora(zoo_env)
    s = models_server.session()
    r = s.post(f"{models_server.url}/api/models/jobs", json={"ref": "civitai:4201"})
    assert r.status_code == 201, r.text
    assert CONTRACT_JOB <= set(r.json()) and r.json()["state"] in ("queued", "running")
    job = wait_job(s, models_server.url, r.json()["id"])
    assert job["state"] == "done" and job["done"] == job["size"] == len(data)
    assert (models_server.root / job["destination"]).read_bytes() == data
    again = s.post(f"{models_server.url}/api/models/jobs", json={"ref": "civitai:4201"})
    assert again.status_code == 200 and again.json()["reused"] is True
    assert again.json()["state"] == "done"
    listed = s.get(f"{models_server.url}/api/models/jobs").json()["jobs"]
    assert {j["id"] for j in listed} == {job["id"], again.json()["id"]}
    assert s.get(f"{models_server.url}/api/models/jobs", params={"state": "queued"}
                 ).json()["jobs"] == []
    r = s.delete(f"{models_server.url}/api/models/jobs/{job['id']}")
    assert r.status_code == 200
    assert s.get(f"{models_server.url}/api/models/jobs/{job['id']}").status_code == 404
    r = s.post(f"{models_server.url}/api/models/jobs/{again.json()['id']}/pause")
    assert r.status_code == 409 and r.json()["error"] == "job_conflict"


def test_who_writes_where(models_server: Server, zoo_env: CivitaiStandIn) -> None:
    add_lora(zoo_env, 1, 11)
    add_lora(zoo_env, 2, 21)
    url = models_server.url
    admin = models_server.session()
    ann = models_server.add_user("ann")
    bob = models_server.add_user("bob")
    viewer = models_server.add_user("vic", role="viewer")
    # a user without shared-write fetches into their home
    r = ann.post(f"{url}/api/models/jobs", json={"ref": "civitai:1"})
    assert r.status_code == 201, r.text
    job = wait_job(ann, url, r.json()["id"])
    assert job["destination"] == "users/ann/models/Lora/detail_tweaker.safetensors"
    assert (models_server.root / job["destination"]).is_file()
    for to in ("models/Lora", "users/bob/models", "../x", "users/ann/../bob"):
        r = ann.post(f"{url}/api/models/resolve", json={"ref": "civitai:2", "to": to})
        assert r.status_code == 403, (to, r.text)
    # others' jobs are invisible; admins see all
    assert bob.get(f"{url}/api/models/jobs/{job['id']}").status_code == 404
    assert bob.post(f"{url}/api/models/jobs/{job['id']}/retry").status_code == 404
    assert bob.get(f"{url}/api/models/jobs").json()["jobs"] == []
    assert [j["id"] for j in admin.get(f"{url}/api/models/jobs").json()["jobs"]] == [job["id"]]
    # viewers may look, not fetch
    assert viewer.post(f"{url}/api/models/resolve", json={"ref": "civitai:2"}).status_code == 200
    r = viewer.post(f"{url}/api/models/jobs", json={"ref": "civitai:2"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    # an admin lets ann write the shared models/
    assert ann.get(f"{url}/api/models/settings").status_code == 403
    r = admin.put(f"{url}/api/models/settings", json={"allow_shared_write": ["ann"]})
    assert r.status_code == 200 and r.json()["allow_shared_write"] == ["ann"]
    r = ann.post(f"{url}/api/models/jobs", json={"ref": "civitai:2"})
    job2 = wait_job(ann, url, r.json()["id"])
    assert job2["destination"] == "models/Lora/detail_tweaker.safetensors"
    r = ann.post(f"{url}/api/models/resolve", json={"ref": "civitai:2", "to": "models/VAE"})
    assert r.status_code == 200 and r.json()["reused"] is True   # the same bytes are there
    assert r.json()["destination"] == "models/Lora/detail_tweaker.safetensors"
    add_lora(zoo_env, 3, 31)
    r = ann.post(f"{url}/api/models/resolve", json={"ref": "civitai:3", "to": "models/VAE"})
    assert r.status_code == 200 and r.json()["destination"] == \
        "models/VAE/detail_tweaker.safetensors"
    # an admin may put it anywhere below the root
    r = admin.post(f"{url}/api/models/resolve", json={"ref": "civitai:3", "to": "outputs/x"})
    assert r.status_code == 200 and r.json()["destination"] == \
        "outputs/x/detail_tweaker.safetensors"


def test_settings_tokens_are_write_only_and_used(models_server: Server,
                                                zoo_env: CivitaiStandIn) -> None:
    add_lora(zoo_env, require_auth=True)
    s = models_server.session()
    doc = s.get(f"{models_server.url}/api/models/settings").json()
    assert doc["civitai_url"] == zoo_env.url and doc["civitai_token_set"] is False
    assert doc["hf_mirrors"] == [] and doc["allow_shared_write"] == []
    r = s.post(f"{models_server.url}/api/models/jobs", json={"ref": "civitai:4201"})
    assert r.status_code == 401
    r = s.put(f"{models_server.url}/api/models/settings",
              json={"civitai_token": zoo_env.token, "hf_mirrors": ["https://hf-mirror.com/"]})
    assert r.status_code == 200 and r.json()["civitai_token_set"] is True
    assert zoo_env.token not in r.text and r.json()["hf_mirrors"] == ["https://hf-mirror.com"]
    bad = s.put(f"{models_server.url}/api/models/settings", json={"hf_mirrors": ["ftp://x"]})
    assert bad.status_code == 400
    r = s.post(f"{models_server.url}/api/models/jobs", json={"ref": "civitai:4201"})
    assert r.status_code == 201, r.text
    assert wait_job(s, models_server.url, r.json()["id"])["state"] == "done"
    r = s.put(f"{models_server.url}/api/models/settings", json={"civitai_token": ""})
    assert r.json()["civitai_token_set"] is False


def test_a_quota_is_checked_before_the_download(models_server: Server,
                                                zoo_env: CivitaiStandIn) -> None:
    add_lora(zoo_env, size=300_000)
    ann = models_server.add_user("ann", quota=100_000)
    r = ann.post(f"{models_server.url}/api/models/jobs", json={"ref": "civitai:4201"})
    assert r.status_code == 507 and r.json()["error"] == "quota_exceeded", r.text
    assert not list((models_server.root / "users/ann/models").rglob("*.safetensors"))


def read_events(resp: requests.Response, until: Callable[[list[dict[str, Any]]], bool],
                timeout: float = 60) -> tuple[list[dict[str, Any]], list[str]]:
    events: list[dict[str, Any]] = []
    comments: list[str] = []
    deadline = time.monotonic() + timeout
    name = None
    for raw in resp.iter_lines(decode_unicode=True):
        line = raw or ""
        if line.startswith(":"):
            comments.append(line)
        elif line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and name == "job":
            events.append(json.loads(line.split(":", 1)[1]))
        if until(events) or time.monotonic() > deadline:
            break
    return events, comments


def test_progress_as_server_sent_events(make_server: Callable[..., Server],
                                        zoo_env: CivitaiStandIn,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_MODELS_EVENTS_PING_SECONDS", "0.3")
    srv = make_server()
    data = add_lora(zoo_env, size=1_500_000)
    zoo_env.rate = 1_000_000
    s = srv.session()
    ann = srv.add_user("ann")
    with s.get(f"{srv.url}/api/models/events", stream=True, timeout=60) as stream, \
            ann.get(f"{srv.url}/api/models/events", stream=True, timeout=60) as theirs:
        assert stream.headers["content-type"].startswith("text/event-stream")
        job = s.post(f"{srv.url}/api/models/jobs", json={"ref": "civitai:4201"}).json()
        events, comments = read_events(stream, lambda ev: any(
            e["id"] == job["id"] and e["state"] == "done" for e in ev))
        mine = [e for e in events if e["id"] == job["id"]]
        assert mine[-1]["state"] == "done" and mine[-1]["done"] == len(data)
        running = [e for e in mine if e["state"] == "running"]
        assert len(running) >= 2 and running[-1]["done"] > running[0]["done"]
        assert any(e["speed"] > 0 for e in running)
        assert ": ping" in comments
        # ann's stream carries nothing of the admin's job
        ann_job = ann.post(f"{srv.url}/api/models/jobs", json={"ref": "civitai:4201"}).json()
        theirs_events, _ = read_events(theirs, lambda ev: any(
            e["id"] == ann_job["id"] and e["state"] in ("done", "failed") for e in ev))
        assert {e["user"] for e in theirs_events} == {"ann"}
    assert requests.get(f"{srv.url}/api/models/events", timeout=10).status_code == 401


def test_hugging_face_through_the_service(make_server: Callable[..., Server], hf: HfStandIn,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hf.url)
    monkeypatch.setenv("ATELIER_MODELS_POLL_SECONDS", "0.2")
    monkeypatch.setenv("ATELIER_FETCH_RESERVE_BYTES", "0")
    unet = files.safetensors({"conv_in.weight": ("F16", [320, 4, 3, 3])}, pad=100_000)
    hf.add(HRepo("acme/tiny-sdxl", [
        HFile("model_index.json", b'{"_class_name": "StableDiffusionXLPipeline"}', lfs=False),
        HFile("unet/diffusion_pytorch_model.safetensors", unet)], gated=True,
        tags=["diffusers:StableDiffusionXLPipeline"]))
    srv = make_server()
    s = srv.session()
    r = s.post(f"{srv.url}/api/models/jobs", json={"ref": "hf:acme/tiny-sdxl"})
    assert r.status_code == 401 and "HF_TOKEN" in r.json()["message"], r.text
    r = s.put(f"{srv.url}/api/models/settings", json={"hf_token": hf.token})
    assert r.json()["hf_token_set"] is True
    doc = s.post(f"{srv.url}/api/models/resolve", json={"ref": "hf:acme/tiny-sdxl"}).json()
    assert (doc["type"], doc["base_model"], doc["destination"]) == (
        "Diffusers", "SDXL 1.0", "models/diffusers/acme/tiny-sdxl")
    assert {f["name"] for f in doc["files"]} == {"model_index.json",
                                                 "unet/diffusion_pytorch_model.safetensors"}
    job = s.post(f"{srv.url}/api/models/jobs", json={"ref": "hf:acme/tiny-sdxl"}).json()
    done = wait_job(s, srv.url, job["id"])
    assert done["state"] == "done" and done["destination"] == "models/diffusers/acme/tiny-sdxl"
    folder = srv.root / "models/diffusers/acme/tiny-sdxl"
    assert (folder / "unet/diffusion_pytorch_model.safetensors").read_bytes() == unet
    assert (folder / "model_index.json").is_file()


def test_a_pasted_metadata_url_is_refused(models_server: Server) -> None:
    """The instance-metadata service hands out the machine's credentials to any local
    GET: a user must not be able to make the service fetch it."""
    srv = models_server
    ann = srv.add_user("ann")
    for path in ("/api/models/resolve", "/api/models/jobs"):
        r = ann.post(f"{srv.url}{path}", json={
            "ref": "http://169.254.169.254/latest/meta-data/iam/creds.safetensors"},
            timeout=30)
        assert r.status_code == 403 and r.json()["error"] == "blocked_address", r.text
