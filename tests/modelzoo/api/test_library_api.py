"""The local library through the API: a scan hashes what is on the NAS, identifies it on
Civitai in batches, completes the sidecars, reports newer versions; listing filters and
scopes (the shared models/ and your own home)."""

from __future__ import annotations

import time

import requests

from ...conftest import Server
from ..standins import files
from ..standins.civitai import CFile, CImage, CivitaiStandIn, CModel, CVersion


def wait_idle(s: requests.Session, url: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        st = s.get(f"{url}/api/models/library/status").json()
        if st["state"] == "idle":
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.05)


def test_scan_identifies_completes_and_lists(models_server: Server,
                                             zoo_env: CivitaiStandIn) -> None:
    old = files.lora_kohya_sdxl(pad=10_000, seed=1)
    new = files.lora_kohya_sdxl(pad=10_000, seed=2)
    zoo_env.add(CModel(4201, "Detail Tweaker", "LORA", [
        CVersion(2, "v2", "SDXL 1.0", [CFile(20, "dt_v2.safetensors", new)],
                 trained_words=["detailed"]),
        CVersion(1, "v1", "SDXL 1.0", [CFile(10, "dt_v1.safetensors", old)],
                 trained_words=["detailed", "sharp"], images=[CImage("v1.png", files.png())]),
    ]))
    root = models_server.root
    lora = root / "models/Lora"
    (lora / "sub").mkdir(parents=True, exist_ok=True)
    (lora / "sub/my_old_copy.safetensors").write_bytes(old)       # on Civitai, outdated
    (root / "models/Stable-diffusion/mystery.safetensors").write_bytes(files.sdxl_checkpoint())
    (root / "models/VAE/.hidden.safetensors").write_bytes(files.vae())
    (root / "models/VAE/notes.txt").write_text("not a model")
    ann = models_server.add_user("ann")
    bob = models_server.add_user("bob")
    (root / "users/ann/models/Lora").mkdir(parents=True)
    (root / "users/ann/models/Lora/mine.safetensors").write_bytes(files.lora_flux())
    admin = models_server.session()
    url = models_server.url

    assert ann.post(f"{url}/api/models/library/scan").status_code == 403
    r = admin.post(f"{url}/api/models/library/scan")
    assert r.status_code == 200 and r.json() == {"started": True}
    st = wait_idle(admin, url)
    assert (st["files"], st["hashed"], st["identified"]) == (3, 3, 1), st
    posts = [x for x in zoo_env.traffic.requests("/api/v1/model-versions/by-hash")
             if x["method"] == "POST"]
    assert len(posts) == 1          # three hashes, one batch

    everything = admin.get(f"{url}/api/models/library").json()
    by_path = {m["path"]: m for m in everything["models"]}
    assert set(by_path) == {"models/Lora/sub/my_old_copy.safetensors",
                            "models/Stable-diffusion/mystery.safetensors",
                            "users/ann/models/Lora/mine.safetensors"}
    known = by_path["models/Lora/sub/my_old_copy.safetensors"]
    assert known["civitai"] == {"model_id": "4201", "version_id": "1"}
    assert known["update_available"] == {"version_id": "2", "name": "v2"}
    assert (known["type"], known["base_model"]) == ("LORA", "SDXL 1.0")
    assert known["trigger_words"] == ["detailed", "sharp"] and known["sha256"] == files.sha(old)
    assert known["size"] == len(old)
    img = admin.get(f"{url}/{known['preview']}")
    assert img.status_code == 200 and img.content.startswith(b"\x89PNG")
    for sidecar in ("my_old_copy.preview.png", "my_old_copy.civitai.info", "my_old_copy.json"):
        assert (lora / "sub" / sidecar).is_file(), sidecar
    mystery = by_path["models/Stable-diffusion/mystery.safetensors"]
    assert (mystery["type"], mystery["base_model"], mystery["civitai"]) == (
        "Checkpoint", "SDXL 1.0", None)

    # filters
    def paths(sess: requests.Session, **q: str) -> set[str]:
        return {m["path"] for m in sess.get(f"{url}/api/models/library", params=q
                                            ).json()["models"]}

    assert paths(admin, type="Checkpoint") == {"models/Stable-diffusion/mystery.safetensors"}
    assert paths(admin, base_model="Flux.1 D") == {"users/ann/models/Lora/mine.safetensors"}
    assert paths(admin, q="OLD_copy") == {"models/Lora/sub/my_old_copy.safetensors"}
    assert paths(admin, updates="true") == {"models/Lora/sub/my_old_copy.safetensors"}
    # scopes: the shared models and your own home
    assert paths(ann) == {"models/Lora/sub/my_old_copy.safetensors",
                          "models/Stable-diffusion/mystery.safetensors",
                          "users/ann/models/Lora/mine.safetensors"}
    assert paths(bob) == {"models/Lora/sub/my_old_copy.safetensors",
                          "models/Stable-diffusion/mystery.safetensors"}
    # pages
    first = admin.get(f"{url}/api/models/library", params={"limit": 2}).json()
    assert len(first["models"]) == 2 and first["next"]
    rest = admin.get(f"{url}/api/models/library", params={"limit": 2, "cursor": first["next"]}
                     ).json()
    assert len(rest["models"]) == 1
    # a second scan hashes nothing again and asks Civitai about nothing new
    admin.post(f"{url}/api/models/library/scan")
    st = wait_idle(admin, url)
    assert (st["files"], st["hashed"]) == (3, 0)
    # a file that disappears leaves the library
    (root / "users/ann/models/Lora/mine.safetensors").unlink()
    assert "users/ann/models/Lora/mine.safetensors" not in paths(admin)


def test_a_downloaded_model_is_in_the_library_at_once(models_server: Server,
                                                      zoo_env: CivitaiStandIn) -> None:
    from .conftest import add_lora, wait_job

    data = add_lora(zoo_env)
    s = models_server.session()
    job = s.post(f"{models_server.url}/api/models/jobs", json={"ref": "civitai:4201"}).json()
    wait_job(s, models_server.url, job["id"])
    items = s.get(f"{models_server.url}/api/models/library").json()["models"]
    assert [(m["path"], m["sha256"], m["civitai"]) for m in items] == [
        ("models/Lora/detail_tweaker.safetensors", files.sha(data),
         {"model_id": "4201", "version_id": "130072"})]
    assert items[0]["preview"] and items[0]["trigger_words"] == ["detailed"]
