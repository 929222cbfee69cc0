"""The WebUI API subset: what an existing A1111 client sends, and what it gets back."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from typing import Any

import httpx
from PIL import Image

from ..checkpoints import make_lora, make_vae
from .conftest import as_user

# what the `webuiapi` client (and most scripts copied from the WebUI wiki) post
CLIENT_TXT2IMG: dict[str, Any] = {
    "enable_hr": False, "denoising_strength": 0.7, "firstphase_width": 0,
    "firstphase_height": 0, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 0,
    "hr_resize_x": 0, "hr_resize_y": 0, "prompt": "lowest newer", "styles": [], "seed": 1234,
    "subseed": -1, "subseed_strength": 0.0, "seed_resize_from_h": 0, "seed_resize_from_w": 0,
    "sampler_name": None, "batch_size": 2, "n_iter": 1, "steps": 3, "cfg_scale": 7.0,
    "width": 64, "height": 64, "restore_faces": False, "tiling": False,
    "do_not_save_samples": False, "do_not_save_grid": False, "negative_prompt": "wider",
    "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1, "override_settings": {},
    "override_settings_restore_afterwards": True, "script_args": [], "script_name": None,
    "send_images": True, "save_images": False, "alwayson_scripts": {},
    "sampler_index": "Euler a"}
ANN = as_user("ann:user")


def _png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_txt2img_as_an_a1111_client_sends_it(gen_api) -> None:
    api = gen_api(models=("tiny",))
    r = api.client.post("/sdapi/v1/txt2img", json=CLIENT_TXT2IMG, headers=ANN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"images", "parameters", "info"}
    assert body["parameters"]["prompt"] == "lowest newer" and body["parameters"]["steps"] == 3
    info = json.loads(body["info"])
    assert info["all_seeds"] == [1234, 1235] and info["seed"] == 1234
    assert info["sampler_name"] == "Euler a" and info["batch_size"] == 2
    assert len(info["infotexts"]) == 2 and info["sd_model_name"] == "tiny"
    assert info["all_prompts"] == ["lowest newer"] * 2
    assert 0 <= info["subseed"] < 2**32 and info["subseed_strength"] == 0
    assert len(body["images"]) == 2
    for b64, text in zip(body["images"], info["infotexts"], strict=True):
        img = _png(b64)
        assert img.size == (64, 64) and img.text["parameters"] == text
    assert info["infotexts"][0].startswith("lowest newer\nNegative prompt: wider\nSteps: 3, "
                                           "Sampler: Euler a, Schedule type: Automatic")
    # saved under the caller's outputs too (ATELIER_GPU_SDAPI_SAVE_IMAGES=always)
    assert [p.split("/")[0] for p in info["paths"]] == ["txt2img-images"] * 2
    assert len(api.records) == 2
    # send_images false: no images in the answer; "request": the WebUI's save_images rule
    quiet = api.client.post("/sdapi/v1/txt2img", json={**CLIENT_TXT2IMG, "send_images": False},
                            headers=ANN).json()
    assert quiet["images"] == []
    api2 = gen_api(models=("tiny",), sdapi_save_images="request")
    r = api2.client.post("/sdapi/v1/txt2img", json=CLIENT_TXT2IMG, headers=ANN)
    assert json.loads(r.json()["info"])["paths"] == [None, None] and not api2.records


def test_img2img_with_init_images(gen_api) -> None:
    api = gen_api(models=("tiny",))
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (250, 10, 10)).save(buf, format="PNG")
    body = {**CLIENT_TXT2IMG, "batch_size": 1, "init_images": [
        base64.b64encode(buf.getvalue()).decode()], "denoising_strength": 0.5,
        "resize_mode": 1}
    r = api.client.post("/sdapi/v1/img2img", json=body, headers=ANN)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert "Denoising strength: 0.5" in info["infotexts"][0]
    assert r.json()["parameters"]["init_images"] is None
    assert info["paths"][0].startswith("img2img-images/")
    r = api.client.post("/sdapi/v1/img2img", json={**body, "init_images": []}, headers=ANN)
    assert r.status_code == 400


def test_models_and_options_switch_the_checkpoint_per_user(gen_api) -> None:
    api = gen_api(models=("tiny", "sd15"))
    models = api.client.get("/sdapi/v1/sd-models", headers=ANN).json()
    assert [m["model_name"] for m in models] == ["sd15", "tiny"]
    assert set(models[0]) >= {"title", "model_name", "hash", "sha256", "filename", "config"}
    (api.models / "0-broken.safetensors").write_bytes(b"<!DOCTYPE html><html></html>")
    opts = api.client.get("/sdapi/v1/options", headers=ANN).json()
    # the first checkpoint that can run, as the WebUI's default
    assert opts["sd_model_checkpoint"].startswith("sd15")
    r = api.client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny"}, headers=ANN)
    assert r.status_code == 200 and r.json() is None
    gpu = api.client.get("/api/gpu", headers=ANN).json()
    assert gpu["devices"][0]["models"] == ["tiny"]  # loaded through the residency manager
    assert api.client.get("/sdapi/v1/options", headers=ANN).json()["sd_model_checkpoint"] \
        == "tiny"
    info = json.loads(api.client.post("/sdapi/v1/txt2img", json=CLIENT_TXT2IMG,
                                      headers=ANN).json()["info"])
    assert info["sd_model_name"] == "tiny"
    # bob's default did not move; an override picks a model for one request
    bob = as_user("bob:user")
    assert api.client.get("/sdapi/v1/options", headers=bob).json()[
        "sd_model_checkpoint"].startswith("sd15")
    override = {**CLIENT_TXT2IMG, "override_settings": {"sd_model_checkpoint": "sd15"}}
    info = json.loads(api.client.post("/sdapi/v1/txt2img", json=override, headers=ANN)
                      .json()["info"])
    assert info["sd_model_name"] == "sd15" and info["sd_model_hash"]
    # the title with its hash, as clients copy it from sd-models, resolves too
    listed = api.client.get("/sdapi/v1/sd-models", headers=ANN).json()
    assert [m["family"] for m in listed] == [None, "sd1", "sd-folder"]  # broken: listed
    titled = listed[1]["title"]
    assert titled.startswith("sd15.safetensors [")
    r = api.client.post("/sdapi/v1/options", json={"sd_model_checkpoint": titled}, headers=ANN)
    assert r.status_code == 200
    r = api.client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope"}, headers=ANN)
    assert r.status_code == 404
    r = api.client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny"},
                        headers=as_user("vic:viewer"))
    assert r.status_code == 403


def test_options_vae_and_clip_skip(gen_api, tiny_models) -> None:
    api = gen_api(models=("tiny",))
    make_vae(api.nas / "models" / "VAE" / "alt", api.nas / "models" / "VAE" / "alt2.safetensors")
    assert sorted(v["model_name"] for v in api.client.get("/sdapi/v1/sd-vae",
                                                           headers=ANN).json()) == ["alt", "alt2"]
    r = api.client.post("/sdapi/v1/options", json={"sd_vae": "alt2.safetensors",
                                                   "CLIP_stop_at_last_layers": 2}, headers=ANN)
    assert r.status_code == 200
    text = json.loads(api.client.post("/sdapi/v1/txt2img", json=CLIENT_TXT2IMG,
                                      headers=ANN).json()["info"])["infotexts"][0]
    assert "Clip skip: 2" in text and "VAE: alt2.safetensors" in text
    assert api.client.post("/sdapi/v1/options", json={"sd_vae": "nope"},
                           headers=ANN).status_code == 404
    make_lora(tiny_models.pipes["sd1"], api.nas / "models" / "Lora" / "ink.safetensors")
    assert [x["name"] for x in api.client.get("/sdapi/v1/loras", headers=ANN).json()] == ["ink"]


def test_progress_and_interrupt_keep_what_was_made(gen_api) -> None:
    api = gen_api(models=("tiny",))
    result: dict[str, Any] = {}

    def long_job() -> None:
        with httpx.Client(base_url=api.url, timeout=120) as c:
            result["r"] = c.post("/sdapi/v1/txt2img", headers=ANN, json={
                **CLIENT_TXT2IMG, "batch_size": 1, "n_iter": 3, "steps": 40,
                "preview_every": 1})

    t = threading.Thread(target=long_job)
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        p = api.client.get("/sdapi/v1/progress", headers=ANN).json()
        if p["state"]["sampling_step"] >= 2:
            break
        time.sleep(0.02)
    assert 0 < p["progress"] < 1 and p["state"]["job_count"] == 3
    assert p["state"]["sampling_steps"] == 40 and p["current_image"]
    assert api.client.get("/sdapi/v1/progress", headers=as_user("bob:user")).json()[
        "progress"] == 0  # progress is per user
    assert api.client.post("/sdapi/v1/interrupt", headers=ANN).json() == {}
    t.join(120)
    r = result["r"]
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    # the pass running when interrupted is stopped and decoded; the other two never run
    assert info["interrupted"] and len(r.json()["images"]) == 1
    idle = api.client.get("/sdapi/v1/progress", headers=ANN).json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0


def test_lists_and_refusals(gen_api) -> None:
    api = gen_api(models=("tiny",))
    samplers = api.client.get("/sdapi/v1/samplers", headers=ANN).json()
    names = [s["name"] for s in samplers]
    assert {"Euler", "Euler a", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DDIM", "UniPC",
            "Heun", "LMS", "DPM2", "DPM2 a"} <= set(names)
    assert next(s for s in samplers if s["name"] == "DPM++ 2M")["options"] == {
        "scheduler": "karras"}
    assert "Karras" in [s["label"] for s in api.client.get("/sdapi/v1/schedulers",
                                                           headers=ANN).json()]
    assert "Latent" in [m["name"] for m in api.client.get("/sdapi/v1/latent-upscale-modes",
                                                          headers=ANN).json()]
    assert "Lanczos" in [u["name"] for u in api.client.get("/sdapi/v1/upscalers",
                                                           headers=ANN).json()]
    assert api.client.get("/sdapi/v1/embeddings", headers=ANN).json() == {"loaded": {},
                                                                         "skipped": {}}
    assert api.client.post("/sdapi/v1/refresh-checkpoints", headers=ANN).status_code == 200
    for patch in ({"restore_faces": True}, {"script_name": "x/y/z plot"},
                  {"alwayson_scripts": {"controlnet": {"args": []}}}, {"tiling": True}):
        r = api.client.post("/sdapi/v1/txt2img", json={**CLIENT_TXT2IMG, **patch}, headers=ANN)
        assert r.status_code == 400 and "not supported" in r.json()["message"], patch
    assert api.client.post("/sdapi/v1/txt2img", json=CLIENT_TXT2IMG).status_code == 401
    assert api.client.post("/sdapi/v1/txt2img", json=CLIENT_TXT2IMG,
                           headers=as_user("vic:viewer")).status_code == 403
    assert api.client.get("/sdapi/v1/sd-models").status_code == 401
