"""The API edition against a real uvicorn server on a loopback port."""

from __future__ import annotations

import base64
import datetime as dt
import io
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI, Header, HTTPException
from PIL import Image

from modelzoo.residency.api import build_router
from modelzoo.residency.catalog import ModelCatalog
from modelzoo.residency.settings import ResidencySettings

from .checkpoints import write_family
from .conftest import outputs_opener
from .test_catalog_metrics import samples


def current_user(x_user: str | None = Header(None)) -> SimpleNamespace:
    if not x_user:
        raise HTTPException(401, "sign in")
    name, _, role = x_user.partition(":")
    return SimpleNamespace(name=name, role=role or "user")


class Server:
    def __init__(self, app: FastAPI) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def api(tmp_path: Path, models_dir: Path, tiny_pipeline_dir: Path, write_ckpt) -> Iterator[Any]:
    shutil.copytree(tiny_pipeline_dir, models_dir / "tiny")
    shutil.copytree(tiny_pipeline_dir, models_dir / "tiny2")
    (models_dir / "broken.safetensors").write_bytes(b"<!DOCTYPE html><html>login</html>")
    write_family(models_dir / "huge.safetensors", "sd1", pad_bytes=64 << 20)
    size = ModelCatalog(models_dir, dtype="fp32").get("tiny").nbytes
    settings = ResidencySettings(
        models_dir=models_dir, devices=f"sim:{size * 3 // 2}", dtype="fp32",
        ram_budget=size * 4, ram_reserve=0, reserve_base=0, reserve_extra=0,
        reserve_per_megapixel=0, max_steps=10, max_size=256, default_sampler="DDIM")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'atelier.db'}")
    outputs = tmp_path / "outputs"
    app = FastAPI()
    router = build_router(settings, engine=engine, current_user=current_user,
                          open_outputs=outputs_opener(outputs))
    app.include_router(router)
    server = Server(app)
    client = httpx.Client(base_url=server.url, timeout=120)
    ns = SimpleNamespace(client=client, outputs=outputs, engine=engine, service=router.service,
                         size=size)
    yield ns
    client.close()
    server.stop()
    engine.dispose()


def _as(user: str) -> dict[str, str]:
    return {"X-User": user}


GEN = {"model": "tiny", "prompt": "lowest newer", "negative_prompt": "wider", "steps": 2,
       "width": 64, "height": 64, "seed": 42}


def test_generate_returns_image_saves_it_with_infotext_and_records_usage(api) -> None:
    r = api.client.post("/api/generate?wait=true", json=GEN, headers=_as("ann:user"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["switched_from"] == "disk" and body["device"] == "sim:0"
    assert body["infotext"].startswith("lowest newer\nNegative prompt: wider\nSteps: 2, "
                                       "Sampler: DDIM, Schedule type: Automatic, CFG scale: 7, "
                                       "Seed: 42, Size: 64x64")
    img = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert img.size == (64, 64)
    saved = api.outputs / "ann" / body["path"]
    assert saved.is_file() and body["path"].startswith("txt2img-images/")
    assert Image.open(saved).text["parameters"] == body["infotext"]
    again = api.client.post("/api/generate?wait=true", json=GEN, headers=_as("ann:user")).json()
    assert again["switched_from"] == "gpu" and again["path"] != body["path"]
    assert again["image"] == body["image"]  # same seed, same image
    api.client.post("/api/generate?wait=true", json={**GEN, "model": "tiny2"},
                    headers=_as("bob:admin"))
    mine = api.client.get("/api/gpu/usage", headers=_as("ann:user")).json()["users"]
    assert [u["user"] for u in mine] == ["ann"] and mine[0]["generations"] == 2
    assert mine[0]["gpu_seconds"] > 0 and mine[0]["image_bytes"] == (
        saved.stat().st_size + (api.outputs / "ann" / again["path"]).stat().st_size)
    everyone = api.client.get("/api/gpu/usage", headers=_as("bob:admin")).json()["users"]
    assert [u["user"] for u in everyone] == ["ann", "bob"]
    days = mine[0]["by_day"]  # per UTC day, for bill splitting (two days across midnight)
    today = dt.datetime.now(dt.UTC).date()
    assert {d["day"] for d in days} <= {today.isoformat(),
                                        (today - dt.timedelta(days=1)).isoformat()}
    assert sum(d["generations"] for d in days) == 2
    assert sum(d["gpu_seconds"] for d in days) == pytest.approx(mine[0]["gpu_seconds"])
    forbidden = api.client.get("/api/gpu/usage?name=bob", headers=_as("ann:user"))
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"


@pytest.mark.parametrize("patch, status, code", [
    ({"model": "nope"}, 404, "unknown_model"),
    ({"model": "../tiny"}, 404, "unknown_model"),
    ({"width": 4096}, 400, "invalid_request"),
    ({"width": 60}, 400, "invalid_request"),
    ({"size": "64x9999"}, 400, "invalid_request"),
    ({"steps": 500}, 400, "invalid_request"),
    ({"steps": 0}, 400, "invalid_request"),
    ({"sampler": "Bogus"}, 400, "invalid_request"),
    ({"steps": "many"}, 422, "invalid_request"),
    ({"model": "broken"}, 422, "invalid_checkpoint"),
    ({"model": "huge"}, 507, "model_too_large"),
])
def test_bad_requests_are_clear_4xx(api, patch: dict[str, Any], status: int, code: str) -> None:
    r = api.client.post("/api/generate?wait=true", json={**GEN, **patch}, headers=_as("ann:user"))
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and body["message"]
    if code == "model_too_large":
        assert body["needed_bytes"] > body["total_bytes"]
    if code == "invalid_checkpoint":
        assert "HTML" in body["message"]


def test_roles(api) -> None:
    assert api.client.post("/api/generate?wait=true", json=GEN).status_code == 401
    r = api.client.post("/api/generate?wait=true", json=GEN, headers=_as("vic:viewer"))
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert api.client.post("/api/gpu/load", json={"model": "tiny"},
                           headers=_as("vic:viewer")).status_code == 403
    for path, body in (("/api/gpu/unload", {"model": "tiny"}),
                       ("/api/gpu/pin", {"model": "tiny"})):
        assert api.client.post(path, json=body, headers=_as("ann:user")).status_code == 403
    assert api.client.get("/api/gpu", headers=_as("vic:viewer")).status_code == 200
    assert api.client.get("/api/gpu").status_code == 401


def test_load_unload_pin_and_gpu_view(api) -> None:
    admin = _as("root:admin")
    dry = api.client.post("/api/gpu/load", json={"model": "tiny", "dry_run": True},
                          headers=admin).json()["plan"]
    assert [m["to"] for m in dry["moves"]] == ["ram", "gpu"] and not dry["executed"]
    view = api.client.get("/api/gpu", headers=admin).json()
    assert view["models"] == [] and sorted(view["available"]) == ["broken", "huge", "tiny",
                                                                   "tiny2"]
    r = api.client.post("/api/gpu/load", json={"model": "tiny"}, headers=_as("ann:user"))
    assert r.status_code == 200 and r.json()["switched_from"] == "disk"
    assert api.client.post("/api/gpu/pin", json={"model": "tiny"},
                           headers=admin).json()["pinned"] is True
    # the GPU holds one pipeline; tiny is pinned there, so tiny2 cannot fit
    r = api.client.post("/api/gpu/load", json={"model": "tiny2"}, headers=admin)
    assert r.status_code == 507 and r.json()["blocked_bytes"] == api.size
    r = api.client.post("/api/gpu/unload", json={"model": "tiny"}, headers=admin)
    assert r.status_code == 409 and r.json()["error"] == "model_busy"
    api.client.post("/api/gpu/pin", json={"model": "tiny", "pinned": False}, headers=admin)
    r = api.client.post("/api/gpu/load", json={"model": "tiny2"}, headers=admin).json()
    assert [(m["model"], m["to"]) for m in r["plan"]["moves"]] == [
        ("tiny", "ram"), ("tiny2", "ram"), ("tiny2", "gpu")]
    view = api.client.get("/api/gpu", headers=admin).json()
    assert view["devices"][0]["models"] == ["tiny2"] and view["ram"]["models"] == ["tiny"]
    assert view["devices"][0]["queue"] == 0
    r = api.client.post("/api/gpu/unload", json={"model": "tiny", "to": "disk"}, headers=admin)
    assert r.json()["plan"]["moves"][0]["to"] == "disk"
    assert api.client.post("/api/gpu/load", json={"model": "tiny", "tier": "ram"},
                           headers=admin).status_code == 200
    assert api.client.post("/api/gpu/load", json={"model": "tiny", "device": "sim:7"},
                           headers=admin).json()["error"] == "unknown_device"


def test_metrics_in_prometheus_text(api) -> None:
    api.client.post("/api/generate?wait=true", json=GEN, headers=_as("ann:user"))
    api.client.post("/api/generate?wait=true", json=GEN, headers=_as("ann:user"))
    got = samples(api.service.manager.metrics.render())  # what /metrics serves of it
    assert got[("atelier_gpu_switches_total", (("device", "sim:0"), ("source", "disk")))] == 1
    assert got[("atelier_gpu_switches_total", (("device", "sim:0"), ("source", "gpu")))] == 1
    assert got[("atelier_gpu_hit_ratio", (("device", "sim:0"),))] == 0.5
    assert got[("atelier_gpu_switch_seconds_count", (("source", "disk"),))] == 1
    assert got[("atelier_gpu_resident_bytes", (("device", "sim:0"),))] == api.size
    assert got[("atelier_gpu_queue_length", (("device", "sim:0"),))] == 0


def test_concurrent_generations_from_threads(api) -> None:
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def one(model: str, seed: int) -> None:
        with httpx.Client(base_url=str(api.client.base_url), timeout=120) as c:
            r = c.post("/api/generate?wait=true", json={**GEN, "model": model, "seed": seed},
                       headers=_as(f"u{seed}:user"))
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one, args=(m, i))
               for i, m in enumerate(["tiny", "tiny2", "tiny", "tiny2"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * 4
    paths = {r.json()["path"] for r in results}
    assert len(paths) == 4
