"""The Ray Serve edition on a real local Ray cluster (started once for this module).

Two GPU replicas on simulated devices of different sizes, the tiny diffusers pipeline of
the generation tests copied as four models (a, b, c, e; ``u`` bytes each): replica 0
holds 2.5u, replica 1 holds 2u. Every answer names its replica (X-Atelier-Replica).
Routing reads the replicas' periodic reports, so the routing test waits (up to a minute)
for the router to send a model where the residency says before generating with it.
"""

from __future__ import annotations

import base64
import io
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ..conftest import ADMIN_PASSWORD, free_port

STATS_PERIOD = 0.2
GEN = {"prompt": "lowest newer", "steps": 2, "width": 64, "height": 64, "seed": 7}


@dataclass
class Cluster:
    url: str
    root: Path
    user: dict[str, str]
    admin: dict[str, str]
    viewer: dict[str, str]
    password: str

    def generate(self, model: str, **extra: object) -> requests.Response:
        r = requests.post(f"{self.url}/api/generate?wait=true", json={**GEN, "model": model,
                                                                       **extra},
                          headers=self.user, timeout=120)
        assert r.status_code == 200, r.text
        return r


def replica(r: requests.Response) -> int:
    return int(r.headers["x-atelier-replica"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    import ray
    from ray import serve

    from atelier.cluster.app import build, prepare
    from atelier.cluster.settings import ClusterSettings
    from filebrowser import Settings
    from modelzoo.residency import ResidencySettings
    from modelzoo.residency.catalog import ModelCatalog

    from ..modelzoo.residency.checkpoints import tiny_pipeline

    base = tmp_path_factory.mktemp("cluster")
    root = base / "nas"
    models = root / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    tiny = tiny_pipeline(base / "src" / "tiny", "sd1")
    for name in "abce":
        shutil.copytree(tiny, models / name)
    u = ModelCatalog(models, dtype="fp32").get("a").nbytes
    fb_settings = Settings(root=root, state_dir=base / "state", admin_password=ADMIN_PASSWORD)
    gpu_settings = ResidencySettings(
        models_dir=models, dtype="fp32", ram_budget=5 * u, ram_reserve=0, reserve_base=0,
        reserve_extra=0, reserve_per_megapixel=0, prefetch=False)
    fb = prepare(fb_settings)
    ann = fb.users.create("ann", "ann-password-1")
    user = {"Authorization": f"Bearer {fb.auth.create_token(ann, 't')['token']}"}
    admin = {"Authorization":
             f"Bearer {fb.auth.create_token(fb.users.get('admin'), 't')['token']}"}
    vic = fb.users.create("vic", "vic-password-1", "viewer")
    viewer = {"Authorization": f"Bearer {fb.auth.create_token(vic, 't')['token']}"}
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = ClusterSettings(devices=f"sim:{int(2.5 * u)},sim:{2 * u}",
                                   stats_period=STATS_PERIOD)
        serve.run(build(settings, fb_settings, gpu_settings), name="atelier",
                  route_prefix="/", blocking=False)
        url = f"http://127.0.0.1:{port}"
        # the first reports: until then both replicas look alike; then the most room wins
        wait_routed(url, admin, "a", 0)
        yield Cluster(url, root, user, admin, viewer, "ann-password-1")
    finally:
        serve.shutdown()
        ray.shutdown()


def test_unauthenticated_requests_get_401_from_the_ingress(cluster: Cluster) -> None:
    for path in ("/api/generate", "/sdapi/v1/txt2img"):
        r = requests.post(cluster.url + path, json={**GEN, "model": "a"}, timeout=30)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "unauthorized"
        assert "x-atelier-replica" not in r.headers  # refused before any replica
    wrong = {"Authorization": "Bearer atl_not-a-token"}
    r = requests.post(f"{cluster.url}/api/generate", json=GEN, headers=wrong, timeout=30)
    assert r.status_code == 401
    r = requests.get(f"{cluster.url}/api/gpu", timeout=30)
    assert r.status_code == 401


def test_the_replica_acts_as_the_verified_caller_with_their_role(cluster: Cluster) -> None:
    # a viewer may not generate, a user may not unload: the roles reach the replica
    r = requests.post(f"{cluster.url}/api/generate", json={**GEN, "model": "a"},
                      headers=cluster.viewer, timeout=60)
    assert r.status_code == 403, r.text
    assert "x-atelier-replica" in r.headers  # refused by the replica's own route
    r = requests.post(f"{cluster.url}/api/gpu/unload", json={"model": "a"},
                      headers=cluster.user, timeout=60)
    assert r.status_code == 403, r.text
    # a credential header the ingress did not verify changes nothing downstream
    r = requests.post(f"{cluster.url}/api/gpu/unload", json={"model": "a"},
                      headers={**cluster.user, "X-Forwarded-User": "admin"}, timeout=60)
    assert r.status_code == 403, r.text
    r = requests.get(f"{cluster.url}/api/generate", headers=cluster.viewer, timeout=60)
    assert r.status_code == 200 and r.json()["jobs"] == []


def test_a_generate_through_the_ingress_makes_an_image(cluster: Cluster) -> None:
    from PIL import Image

    r = requests.post(f"{cluster.url}/sdapi/v1/txt2img",
                      json={**GEN, "override_settings": {"sd_model_checkpoint": "a"}},
                      auth=("ann", cluster.password), timeout=120)  # HTTP Basic, as WebUI
    assert r.status_code == 200, r.text
    png = base64.b64decode(r.json()["images"][0])
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == (64, 64)
    saved = list((cluster.root / "users" / "ann" / "outputs").rglob("*.png"))
    assert len(saved) == 1  # the replica saved it under the caller's outputs on the NAS
    r = requests.post(f"{cluster.url}/api/generate", json={**GEN, "model": "nope"},
                      headers=cluster.user, timeout=60)
    assert r.status_code == 404 and r.json()["error"] == "unknown_model"
    r = requests.post(f"{cluster.url}/api/generate", json={**GEN, "steps": "many"},
                      headers=cluster.user, timeout=60)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    r = requests.get(f"{cluster.url}/api/generate/x/y", headers=cluster.user, timeout=60)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    from atelier.cluster.ingress import MAX_BODY

    r = requests.post(f"{cluster.url}/api/generate", data=b" " * (MAX_BODY + 1),
                      headers={**cluster.user, "Content-Type": "application/json"},
                      timeout=120)
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def wait_routed(url: str, admin: dict[str, str], model: str, want: int,
                timeout: float = 60.0) -> None:
    """Wait until the router sends ``model`` to replica ``want``. The probe is a dry-run
    load, routed by its model like a generation and answered without moving anything;
    the wait covers the reports' delay (a busy machine slows them), and a router that
    ranks wrongly never gets there."""
    deadline = time.monotonic() + timeout
    while True:
        r = requests.post(f"{url}/api/gpu/load", json={"model": model, "dry_run": True},
                          headers=admin, timeout=60)
        assert r.status_code == 200, r.text
        if replica(r) == want:
            return
        assert time.monotonic() < deadline, f"{model} still routed to {replica(r)}"
        time.sleep(STATS_PERIOD)


def routes_to(cluster: Cluster, model: str, want: int) -> None:
    """The router sends ``model`` to ``want`` (in time), and a generation runs there."""
    wait_routed(cluster.url, cluster.admin, model, want)
    assert replica(cluster.generate(model)) == want


def test_routing_follows_residency(cluster: Cluster) -> None:
    """GPU tier > RAM tier > most room, across real replicas (u: one model's bytes)."""
    # a was loaded by the test before, on the larger replica (most room: 2.5u vs 2u),
    # which has 1.5u left now: the model on the GPU beats room
    routes_to(cluster, "a", 0)
    # b: replica 0 has 1.5u left, replica 1 2u: the most room wins
    routes_to(cluster, "b", 1)
    # the same model again: the replica holding it on its GPU, although 1 has more room
    routes_to(cluster, "a", 0)
    # a down to RAM on the replica that holds it (routed by the model too)
    r = requests.post(f"{cluster.url}/api/gpu/unload", json={"model": "a", "to": "ram"},
                      headers=cluster.admin, timeout=60)
    assert r.status_code == 200, r.text
    assert replica(r) == 0
    # c: 2.5u free on 0 against 1u on 1
    routes_to(cluster, "c", 0)
    r = requests.post(f"{cluster.url}/api/gpu/unload", json={"model": "b", "to": "disk"},
                      headers=cluster.admin, timeout=60)
    assert r.status_code == 200 and replica(r) == 1, r.text
    # now replica 1 has more room (2u against 1.5u), but replica 0 holds a in RAM
    gpu = requests.get(f"{cluster.url}/api/gpu", headers=cluster.user, timeout=30)
    assert gpu.status_code == 200
    routes_to(cluster, "a", 0)
    # a new model: the most room (2u on 1 against 0.5u on 0)
    routes_to(cluster, "e", 1)
    # a once more: on 0's GPU, though 1 has more room now (1u against 0.5u)
    routes_to(cluster, "a", 0)


def test_a_request_without_a_model_routes_by_the_users_checkpoint(cluster: Cluster) -> None:
    """After the routing test: a on replica 0's GPU with 0.5u left, 1u left on replica 1.
    Routed by room alone, a request naming no model would go to 1."""
    r = requests.post(f"{cluster.url}/sdapi/v1/options", json={"sd_model_checkpoint": "a"},
                      auth=("ann", cluster.password), timeout=120)
    assert r.status_code == 200, r.text
    assert replica(r) == 0  # loaded where a is
    r = requests.post(f"{cluster.url}/sdapi/v1/txt2img", json=GEN,
                      auth=("ann", cluster.password), timeout=120)
    assert r.status_code == 200, r.text
    assert replica(r) == 0
    assert "Model: a" in r.json()["info"]
