"""The generation API on a real uvicorn server, over tiny real pipelines on the CPU.

``gen_api(**settings)`` starts the residency router (jobs, /api/generate, /sdapi/v1) with a
header-based stand-in for the service's ``current_user`` (``X-User: ann:user``) and a
quota/usage stand-in the test controls (``api.room["ann"] = 1000``; ``api.records``).
Models: ``tiny`` and ``tiny2`` (diffusers folders), ``sd15`` / ``inpaint`` / ``sd2v`` /
``xl`` (A1111 single files built from tiny pipelines, with their family config folders).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI, Header, HTTPException

from modelzoo.residency.api import build_router
from modelzoo.residency.catalog import ModelCatalog
from modelzoo.residency.settings import ResidencySettings

from ..checkpoints import config_folder, tiny_pipeline, to_single_file
from ..conftest import outputs_opener


def current_user(x_user: str | None = Header(None)) -> SimpleNamespace:
    if not x_user:
        raise HTTPException(401, "sign in")
    name, _, role = x_user.partition(":")
    return SimpleNamespace(name=name, role=role or "user")


def as_user(user: str) -> dict[str, str]:
    return {"X-User": user}


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


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine
    torch's default (one thread per core, spinning) runs them 10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Built once: diffusers folders and single files of four families + their configs."""
    root = tmp_path_factory.mktemp("families")
    configs = root / "configs"
    files = {}
    for fam, name, meta in (("sd1", "sd15", None), ("sd1-inpaint", "inpaint", None),
                            ("sd2", "sd2v", {"modelspec.prediction_type": "v"}),
                            ("sdxl", "xl", None)):
        pipe = tiny_pipeline(root / f"pipe-{fam}", fam)
        config_folder(pipe, configs / fam)
        files[name] = to_single_file(pipe, fam, root / "files" / f"{name}.safetensors", meta)
    folder = tiny_pipeline(root / "pipe-folder", "sd1", seed=0)
    return SimpleNamespace(root=root, configs=configs, files=files, folder=folder,
                           pipes={f: root / f"pipe-{f}" for f in
                                  ("sd1", "sd1-inpaint", "sd2", "sdxl")})


@pytest.fixture
def gen_api(tmp_path: Path, tiny_models: SimpleNamespace) -> Iterator[Callable[..., Any]]:
    started: list[tuple[Server, httpx.Client, sa.Engine]] = []

    def start(models: tuple[str, ...] = ("tiny",), gpu_pipelines: float = 1.5,
              **overrides: Any) -> SimpleNamespace:
        nas = tmp_path / f"nas{len(started)}"
        models_dir = nas / "models" / "Stable-diffusion"
        models_dir.mkdir(parents=True)
        for name in models:
            if name in tiny_models.files:
                shutil.copy(tiny_models.files[name], models_dir / f"{name}.safetensors")
            else:
                shutil.copytree(tiny_models.folder, models_dir / name)
        size = max(ModelCatalog(models_dir, dtype="fp32").get(m).nbytes for m in models)
        values: dict[str, Any] = {
            "models_dir": models_dir, "devices": f"sim:{int(size * gpu_pipelines)}",
            "dtype": "fp32", "ram_budget": size * 8, "ram_reserve": 0, "reserve_base": 0,
            "reserve_extra": 0, "reserve_per_megapixel": 0, "max_steps": 60,
            "max_size": 512, "default_sampler": "DDIM",
            "diffusers_config": tiny_models.configs, "prefetch": False}
        values.update(overrides)
        settings = ResidencySettings(**values)
        engine = sa.create_engine(f"sqlite:///{tmp_path / f'atelier{len(started)}.db'}")
        outputs = nas / "users"
        room: dict[str, int | None] = {}
        records: list[tuple[str, str, int]] = []
        lock = threading.Lock()

        def record(user: Any, rel: str, nbytes: int) -> None:
            with lock:
                records.append((user.name, rel, nbytes))

        app = FastAPI()
        router = build_router(settings, engine=engine, current_user=current_user,
                              open_outputs=outputs_opener(outputs, "outputs"),
                              quota_room=lambda user: room.get(user.name),
                              record_image=record)
        app.include_router(router)
        server = Server(app)
        client = httpx.Client(base_url=server.url, timeout=120)
        started.append((server, client, engine))
        return SimpleNamespace(client=client, url=server.url, nas=nas, models=models_dir,
                               outputs=outputs, engine=engine, router=router,
                               gen=router.generate, service=router.service, size=size,
                               room=room, records=records, server=server)

    yield start
    for server, client, engine in started:
        client.close()
        server.stop()
        engine.dispose()


def wait_state(api: Any, jid: str, states: tuple[str, ...], user: str = "ann:user",
               timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.client.get(f"/api/generate/{jid}", headers=as_user(user)).json()
        if body["state"] in states:
            return body
        time.sleep(0.02)
    raise AssertionError(f"job {jid} never reached {states}: {body}")
