"""Real tiny A1111 single files of four families: loaded with their local configs, run."""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
import torch
from PIL import Image

from modelzoo.residency import db
from modelzoo.residency.backends.diffusers import DiffusersBackend, is_v_prediction
from modelzoo.residency.catalog import ModelCatalog
from modelzoo.residency.devices import SimulatedDevice

from ..checkpoints import write_family
from .conftest import as_user

GEN = {"prompt": "lowest newer", "negative_prompt": "wider", "steps": 2, "width": 64,
       "height": 64, "seed": 3}


@pytest.mark.parametrize("name, family", [("sd15", "sd1"), ("inpaint", "sd1-inpaint"),
                                          ("sd2v", "sd2"), ("xl", "sdxl")])
def test_single_file_loads_with_its_family_config_and_the_same_weights(
        tmp_path: Path, tiny_models: SimpleNamespace, name: str, family: str) -> None:
    import diffusers

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_models.files[name], models / f"{name}.safetensors")
    catalog = ModelCatalog(models, dtype="fp32")
    backend = DiffusersBackend("fp32", tiny_models.configs, family_of=catalog.family)
    pipe = backend.load(catalog.get(name), SimulatedDevice("ram", 1 << 30, kind="ram"))
    assert pipe.atelier_family.id == family
    assert type(pipe).__name__ == catalog.family(name).pipeline
    original = diffusers.DiffusionPipeline.from_pretrained(tiny_models.pipes[family],
                                                           local_files_only=True)
    for comp in ("unet", "vae", "text_encoder", "text_encoder_2"):
        want = getattr(original, comp, None)
        if want is None:
            continue
        got = getattr(pipe, comp).state_dict()
        for k, v in want.state_dict().items():
            assert torch.equal(got[k], v), f"{comp}.{k}"
    expected = "v_prediction" if name == "sd2v" else "epsilon"
    assert pipe.scheduler.config.prediction_type == expected
    assert pipe.atelier_scheduler_config["prediction_type"] == expected


def test_a1111_v_prediction_test_on_a_unet(tiny_models: SimpleNamespace) -> None:
    """A v model's output at t=999 lies well below its input; an eps model's does not."""
    import diffusers

    unet = diffusers.UNet2DConditionModel.from_pretrained(tiny_models.pipes["sd2"],
                                                          subfolder="unet")
    with torch.no_grad():
        for p in unet.parameters():
            p.zero_()
        unet.conv_out.bias.fill_(-2.0)  # out = -2, x = 0.5: mean(out - x) = -2.5
    assert is_v_prediction(unet)
    with torch.no_grad():
        unet.conv_out.bias.fill_(0.5)  # out == x: an eps model's answer
    assert not is_v_prediction(unet)


@pytest.mark.parametrize("name", ["sd15", "xl", "sd2v", "inpaint"])
def test_each_family_generates_through_the_api_with_the_stored_hash(gen_api,
                                                                    name: str) -> None:
    api = gen_api(models=(name,))
    r = api.client.post("/api/generate?wait=true", json={**GEN, "model": name},
                        headers=as_user("ann:user"))
    assert r.status_code == 200, r.text
    body = r.json()
    img = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert img.size == (64, 64)
    short = hashlib.sha256((api.models / f"{name}.safetensors").read_bytes()).hexdigest()[:10]
    assert f"Model hash: {short}, Model: {name}," in body["infotext"]
    with api.engine.connect() as conn:
        rows = conn.execute(sa.select(db.file_hashes.c.path, db.file_hashes.c.sha256)).all()
    assert [r.sha256[:10] for r in rows] == [short]
    models = api.client.get("/sdapi/v1/sd-models", headers=as_user("ann:user")).json()
    assert models[0]["title"] == f"{name}.safetensors [{short}]"
    assert models[0]["hash"] == short and models[0]["family"]


def test_inpainting_model_takes_a_mask_in_img2img(gen_api) -> None:
    api = gen_api(models=("inpaint",))
    init = Image.new("RGB", (64, 64), (200, 30, 30))

    def b64(im: Image.Image) -> str:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()

    def run(box: tuple[int, int, int, int] | None) -> bytes:
        body = {**GEN, "model": "inpaint", "init_images": [b64(init)],
                "denoising_strength": 1.0}
        if box is not None:
            mask = Image.new("L", (64, 64), 0)
            mask.paste(255, box)
            body["mask"] = b64(mask)
        r = api.client.post("/api/generate?wait=true", json=body, headers=as_user("ann:user"))
        assert r.status_code == 200, r.text
        out = Image.open(io.BytesIO(base64.b64decode(r.json()["image"])))
        assert out.size == (64, 64)
        return out.tobytes()

    # the 9-channel UNet sees the mask and the masked image: each mask gives its own image
    left, right, whole = run((0, 0, 32, 64)), run((32, 0, 64, 64)), run(None)
    assert len({left, right, whole}) == 3
    assert run((0, 0, 32, 64)) == left


def test_config_and_family_refusals_at_submit(gen_api, tmp_path: Path) -> None:
    empty = tmp_path / "no-configs"
    empty.mkdir()
    api = gen_api(models=("sd15",), diffusers_config=empty)
    write_family(api.models / "style.safetensors", "lora")
    write_family(api.models / "refiner.safetensors", "sdxl-refiner")
    r = api.client.post("/api/generate", json={**GEN, "model": "sd15"},
                        headers=as_user("ann:user"))
    assert r.status_code == 422 and r.json()["error"] == "missing_config"
    assert str(empty / "sd1") in r.json()["message"] and r.json()["family"] == "sd1"
    r = api.client.post("/api/generate", json={**GEN, "model": "style"},
                        headers=as_user("ann:user"))
    assert r.status_code == 422 and r.json()["error"] == "unsupported_model"
    assert "LoRA" in r.json()["message"] and "models/Lora" in r.json()["message"]
    r = api.client.post("/api/generate", json={**GEN, "model": "refiner"},
                        headers=as_user("ann:user"))
    assert r.status_code == 400 and "refine" in r.json()["message"]
    assert api.client.get("/api/generate", headers=as_user("ann:user")).json()["jobs"] == []


def test_inpainting_model_txt2img_with_hires(gen_api) -> None:
    api = gen_api(models=("inpaint",))
    r = api.client.post("/api/generate?wait=true", json={
        **GEN, "model": "inpaint", "enable_hr": True, "hr_upscaler": "Latent",
        "hr_second_pass_steps": 2}, headers=as_user("ann:user"))
    assert r.status_code == 200, r.text
    img = Image.open(io.BytesIO(base64.b64decode(r.json()["image"])))
    assert img.size == (128, 128)  # its pipeline takes images: upscaled as an image
