"""The real service on loopback with ModelZoo pointed at the stand-ins."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from ...conftest import Server
from ..standins import files
from ..standins.civitai import CFile, CImage, CivitaiStandIn, CModel, CVersion


@pytest.fixture
def zoo_env(monkeypatch: pytest.MonkeyPatch, civitai: CivitaiStandIn) -> CivitaiStandIn:
    monkeypatch.setenv("ATELIER_CIVITAI_URL", civitai.url)
    monkeypatch.setenv("ATELIER_MODELS_POLL_SECONDS", "0.2")
    monkeypatch.setenv("ATELIER_FETCH_RESERVE_BYTES", "0")
    monkeypatch.setenv("ATELIER_FETCH_BACKOFF_INITIAL", "0.05")
    return civitai


def add_lora(civ: CivitaiStandIn, model_id: int = 4201, version_id: int = 130072,
             size: int = 200_000, **kw: Any) -> bytes:
    data = files.lora_kohya_sdxl(pad=size, seed=model_id)
    civ.add(CModel(model_id, "Detail Tweaker", "LORA", [
        CVersion(version_id, "v2", "SDXL 1.0",
                 [CFile(version_id * 10, "detail_tweaker.safetensors", data)],
                 trained_words=["detailed"], images=[CImage(f"p{model_id}.png", files.png())],
                 **kw)]))
    return data


def wait_job(s: requests.Session, url: str, job_id: str, states: tuple[str, ...] = (
        "done", "failed", "cancelled"), timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = s.get(f"{url}/api/models/jobs/{job_id}", timeout=10).json()
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job stuck: {job}")
        time.sleep(0.05)



@pytest.fixture
def models_server(make_server: Callable[..., Server], zoo_env: CivitaiStandIn) -> Server:
    return make_server()
