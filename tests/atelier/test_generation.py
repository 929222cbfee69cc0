"""Generation in the composed service: FileBrowser's users, quotas and usage, a restart."""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from ..conftest import ADMIN_PASSWORD, Server

GEN = {"model": "tiny", "prompt": "lowest newer", "steps": 2, "width": 64, "height": 64,
       "seed": 7}


def _env(size: int) -> dict[str, str]:
    return {"ATELIER_GPU_DEVICES": f"sim:{size * 2}", "ATELIER_GPU_DTYPE": "fp32",
            "ATELIER_GPU_RAM_BUDGET": str(size * 4), "ATELIER_GPU_RAM_RESERVE": "0",
            "ATELIER_GPU_RESERVE_BASE": "0", "ATELIER_GPU_RESERVE_EXTRA": "0",
            "ATELIER_GPU_RESERVE_PER_MEGAPIXEL": "0", "ATELIER_GPU_MAX_STEPS": "2000",
            "ATELIER_GPU_PREFETCH": "false", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def nas(tmp_path: Path, tiny_pipeline: Path) -> tuple[Path, dict[str, str]]:
    from modelzoo.residency.catalog import ModelCatalog

    root = tmp_path / "nas"
    models = root / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    shutil.copytree(tiny_pipeline, models / "tiny")
    return root, _env(ModelCatalog(models, dtype="fp32").get("tiny").nbytes)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ..modelzoo.residency.checkpoints import tiny_pipeline as build

    return build(tmp_path_factory.mktemp("gen") / "tiny", "sd1")


def test_images_count_against_the_quota_and_show_in_usage(
        make_server: Callable[..., Server], nas: tuple[Path, dict[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    root, env = nas
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    srv = make_server(root=root)
    ann = srv.add_user("ann", quota=50_000)
    r = ann.post(f"{srv.url}/api/generate?wait=true", json=GEN, timeout=120)
    assert r.status_code == 200, r.text
    saved = root / "users" / "ann" / "outputs" / r.json()["path"]
    assert saved.is_file()
    usage = ann.get(f"{srv.url}/api/usage", params={"user": "ann"}, timeout=10).json()
    (mine,) = usage if isinstance(usage, list) else usage["users"]
    assert mine["uploaded_bytes"] == saved.stat().st_size  # booked like an upload
    assert mine["stored_bytes"] >= saved.stat().st_size
    # fill the quota: the next request is refused before it is queued
    admin = srv.session()
    used = mine["stored_bytes"]
    r = admin.patch(f"{srv.url}/api/users/ann", json={"quota_bytes": used + 100}, timeout=10)
    assert r.status_code == 200, r.text
    r = ann.post(f"{srv.url}/api/generate", json=GEN, timeout=60)
    assert r.status_code == 507 and r.json()["error"] == "quota_exceeded"
    assert ann.get(f"{srv.url}/api/generate", timeout=10).json()["jobs"][0]["state"] == "done"


def test_sdapi_takes_the_service_credentials_including_basic(
        make_server: Callable[..., Server], nas: tuple[Path, dict[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    root, env = nas
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    srv = make_server(root=root)
    srv.add_user("ann", password="ann-pass-123")
    body = {"prompt": "lowest", "steps": 2, "width": 64, "height": 64,
            "override_settings": {"sd_model_checkpoint": "tiny"}}
    r = requests.post(f"{srv.url}/sdapi/v1/txt2img", json=body, auth=("ann", "ann-pass-123"),
                      timeout=120)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["paths"][0].startswith("txt2img-images/")
    assert (root / "users" / "ann" / "outputs" / info["paths"][0]).is_file()
    assert base64.b64decode(r.json()["images"][0])[:4] == b"\x89PNG"
    assert requests.post(f"{srv.url}/sdapi/v1/txt2img", json=body, auth=("ann", "wrong"),
                         timeout=30).status_code == 401
    assert requests.get(f"{srv.url}/sdapi/v1/sd-models", timeout=10).status_code == 401
    # the rest of the API keeps to sessions and tokens
    assert requests.get(f"{srv.url}/api/generate", auth=("ann", "ann-pass-123"),
                        timeout=10).status_code == 401


def test_jobs_left_by_a_killed_service_come_back_interrupted(
        spawn_server: Callable[..., Server], nas: tuple[Path, dict[str, str]],
        tmp_path: Path) -> None:
    root, env = nas
    state = tmp_path / "state"
    srv = spawn_server(root=root, state=state, env=env)
    s = srv.session()
    running = s.post(f"{srv.url}/api/generate", json={**GEN, "steps": 2000}, timeout=60).json()
    deadline = time.monotonic() + 120
    while s.get(f"{srv.url}/api/generate/{running['id']}",
                timeout=10).json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    queued = s.post(f"{srv.url}/api/generate", json=GEN, timeout=60).json()
    assert queued["state"] == "queued"
    srv.kill9()
    again = spawn_server(root=root, state=state, env=env)
    s2 = again.session("admin", ADMIN_PASSWORD)
    for jid in (running["id"], queued["id"]):
        job: dict[str, Any] = s2.get(f"{again.url}/api/generate/{jid}", timeout=10).json()
        assert job["state"] == "interrupted", job
        assert "restarted" in job["error"]["message"]
    # and the service works on
    r = s2.post(f"{again.url}/api/generate?wait=true", json=GEN, timeout=120)
    assert r.status_code == 200 and r.json()["state"] == "done"


@pytest.mark.parametrize("link", ["outputs", "outputs/txt2img-images"])
def test_a_symlink_in_the_outputs_never_writes_into_another_home(
        make_server: Callable[..., Server], nas: tuple[Path, dict[str, str]],
        monkeypatch: pytest.MonkeyPatch, link: str) -> None:
    """Another program swaps ann's outputs (or a folder in it) for a link to bob's: the
    image is refused, nothing lands in bob's home, and the answer says why."""
    root, env = nas
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    srv = make_server(root=root)
    ann = srv.add_user("ann")
    srv.add_user("bob")
    victim = root / "users" / "bob" / "outputs"
    victim.mkdir(parents=True, exist_ok=True)
    place = root / "users" / "ann" / link
    place.parent.mkdir(parents=True, exist_ok=True)
    if place.is_dir():
        shutil.rmtree(place)
    place.symlink_to(victim)
    r = ann.post(f"{srv.url}/api/generate?wait=true", json=GEN, timeout=120)
    body = r.json()
    # the images made are still handed back (200, state failed) when only saving failed
    error = body["error"] if r.status_code == 200 else body
    assert body["state"] == "failed" and error["error"] == "write_failed", r.text
    assert list(victim.rglob("*")) == []
    # the link itself is left as it was, and the owner's usage books nothing
    assert place.is_symlink()
    usage = ann.get(f"{srv.url}/api/usage", params={"user": "ann"}, timeout=10).json()
    (mine,) = usage
    assert mine["user"] == "ann" and mine["uploaded_bytes"] == 0
