"""What /sdapi/v1/txt2img users rely on, each exercised on a real tiny pipeline."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from modelzoo.residency.generate.samplers import SAMPLERS

from ..checkpoints import make_embedding, make_lora, make_vae
from .conftest import as_user

GEN = {"model": "tiny", "prompt": "lowest newer", "negative_prompt": "wider", "steps": 3,
       "width": 64, "height": 64, "seed": 11}


def _run(api: Any, **kw: Any) -> dict[str, Any]:
    r = api.client.post("/api/generate?wait=true", json={**GEN, **kw},
                        headers=as_user("ann:user"))
    assert r.status_code == 200, r.text
    return r.json()


def _pixels(body: dict[str, Any], i: int = 0) -> bytes:
    return Image.open(io.BytesIO(base64.b64decode(body["images"][i]))).convert("RGB").tobytes()


def _close(a: bytes, b: bytes, tol: int = 2) -> bool:
    """Equal up to rounding: a batch of 2 sums in another order than a batch of 1."""
    return len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b, strict=True)) <= tol


def _pipe(api: Any, name: str = "tiny") -> Any:
    entry = next(e for e in api.service.manager.entries() if e.name == name)
    copy = next(iter(entry.gpus.values()), None) or entry.ram  # the copy generation used
    assert copy is not None
    return copy.handle


@pytest.fixture
def api(gen_api) -> Any:
    return gen_api()


def test_seeds_batches_and_variation_seeds(api) -> None:
    batch = _run(api, seed=10, batch_size=2, n_iter=2)
    assert batch["seeds"] == [10, 11, 12, 13] and len(batch["images"]) == 4
    assert [f"Seed: {s}," in t for s, t in zip(batch["seeds"], batch["infotexts"],
                                                strict=True)] == [True] * 4
    # a seed gives the same image wherever it sits in a batch
    single = _run(api, seed=13)
    assert _close(_pixels(single), _pixels(batch, 3))
    assert not _close(_pixels(single), _pixels(batch, 2), tol=16)
    # -1 draws a seed; the answer names it and it reproduces the image
    rnd = _run(api, seed=-1)
    assert 0 <= rnd["seed"] < 2**32 and _pixels(_run(api, seed=rnd["seed"])) == _pixels(rnd)
    # variation seeds
    base = _run(api, seed=5, subseed=99, subseed_strength=0)
    varied = _run(api, seed=5, subseed=99, subseed_strength=0.5)
    assert _pixels(base) == _pixels(_run(api, seed=5)) and _pixels(varied) != _pixels(base)
    assert "Variation seed: 99, Variation seed strength: 0.5" in varied["infotext"]
    assert varied["subseeds"] == [99]


@pytest.mark.parametrize("kohya", [False, True], ids=["diffusers", "kohya"])
def test_lora_tags_load_weigh_and_unload(api, tiny_models: SimpleNamespace,
                                         kohya: bool) -> None:
    make_lora(tiny_models.pipes["sd1"], api.nas / "models" / "Lora" / "ink.safetensors",
              kohya=kohya)
    plain = _run(api)
    full = _run(api, prompt="lowest newer <lora:ink:1>")
    half = _run(api, prompt="lowest newer <lora:ink:0.5>")
    zero = _run(api, prompt="lowest newer <lora:ink:0>")
    assert len({_pixels(plain), _pixels(full), _pixels(half)}) == 3
    assert _pixels(zero) == _pixels(plain)  # weight 0 is no LoRA at all
    assert _pixels(_run(api)) == _pixels(plain)  # unloaded after the job
    assert not any("lora" in n for n, _ in _pipe(api).unet.named_parameters())
    assert "<lora:ink:1>" in full["infotext"] and 'Lora hashes: "ink: ' in full["infotext"]
    r = api.client.post("/api/generate", json={**GEN, "prompt": "x <lora:nope:1>"},
                        headers=as_user("ann:user"))
    assert r.status_code == 404 and r.json()["error"] == "unknown_network"
    assert r.json()["kind"] == "LoRA" and r.json()["name"] == "nope"
    escape = "x <lora:../../Stable-diffusion/tiny:1>"
    r = api.client.post("/api/generate", json={**GEN, "prompt": escape},
                        headers=as_user("ann:user"))
    assert r.status_code == 404


def test_kohya_and_diffusers_forms_of_one_lora_give_one_image(api, tiny_models) -> None:
    lora = api.nas / "models" / "Lora"
    make_lora(tiny_models.pipes["sd1"], lora / "a.safetensors", seed=3)
    make_lora(tiny_models.pipes["sd1"], lora / "sub" / "b.safetensors", kohya=True, seed=3)
    a = _run(api, prompt="lowest <lora:a:0.8>")
    b = _run(api, prompt="lowest <lora:sub/b:0.8>")
    assert _pixels(a) == _pixels(b)


def test_embeddings_by_file_name_and_gone_after_the_job(api) -> None:
    without = _run(api, prompt="lowest lowstyle")
    make_embedding(api.nas / "models" / "embeddings" / "lowstyle.safetensors")
    with_emb = _run(api, prompt="lowest lowstyle")
    assert _pixels(with_emb) != _pixels(without) and "TI: lowstyle" in with_emb["infotext"]
    assert "lowstyle" not in _pipe(api).tokenizer.get_added_vocab()
    assert _pixels(_run(api, prompt="lowest newer")) == _pixels(_run(api, prompt="lowest newer"))
    # an embedding for another architecture is skipped, as the WebUI skips it
    make_embedding(api.nas / "models" / "embeddings" / "wide.safetensors", width=768)
    skipped = _run(api, prompt="lowest wide")
    assert "TI:" not in skipped["infotext"]


def test_prompt_weighting_long_prompts_and_clip_skip(api) -> None:
    plain = _run(api, prompt="lowest newer")
    assert _pixels(_run(api, prompt="(lowest:1.0) newer")) == _pixels(plain)
    weighted = _run(api, prompt="(lowest:1.6) newer")
    square = _run(api, prompt="[lowest] newer")
    assert len({_pixels(plain), _pixels(weighted), _pixels(square)}) == 3
    long = ", ".join(["lowest newer wider"] * 40)  # ~120 tokens: two chunks
    first_chunk = ", ".join(["lowest newer wider"] * 18)
    assert _pixels(_run(api, prompt=long)) != _pixels(_run(api, prompt=first_chunk))
    skipped = _run(api, clip_skip=2)
    assert _pixels(skipped) != _pixels(plain) and "Clip skip: 2" in skipped["infotext"]


def test_vae_choice_from_the_vae_folder(api) -> None:
    vaes = api.nas / "models" / "VAE"
    make_vae(vaes / "alt", vaes / "alt-file.safetensors")
    plain = _run(api)
    folder = _run(api, vae="alt")
    single = _run(api, vae="alt-file.safetensors")
    assert _pixels(folder) != _pixels(plain)
    assert _pixels(folder) == _pixels(single)  # the LDM single file converts exactly
    assert "VAE: alt-file.safetensors" in single["infotext"]
    assert _pixels(_run(api)) == _pixels(plain)  # the model's own VAE is back
    r = api.client.post("/api/generate", json={**GEN, "vae": "missing"},
                        headers=as_user("ann:user"))
    assert r.status_code == 404 and r.json()["kind"] == "VAE"


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (nearest-exact)", "Lanczos"])
def test_hires_fix(api, upscaler: str) -> None:
    out = _run(api, enable_hr=True, hr_scale=2, hr_upscaler=upscaler, denoising_strength=0.6,
               hr_second_pass_steps=2)
    img = Image.open(io.BytesIO(base64.b64decode(out["image"])))
    assert img.size == (128, 128)
    assert (f"Denoising strength: 0.6, Hires upscale: 2, Hires steps: 2, "
            f"Hires upscaler: {upscaler}") in out["infotext"]
    r = api.client.post("/api/generate", json={**GEN, "enable_hr": True,
                                               "hr_upscaler": "R-ESRGAN 4x+"},
                        headers=as_user("ann:user"))
    assert r.status_code == 400 and "Latent" in r.json()["message"]


def test_img2img_with_denoising_strength(api) -> None:
    init = Image.new("RGB", (96, 80), (10, 200, 90))
    buf = io.BytesIO()
    init.save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    low = _run(api, init_images=[f"data:image/png;base64,{b64}"], denoising_strength=0.3,
               steps=10)
    high = _run(api, init_images=[b64], denoising_strength=0.9, steps=10)
    assert Image.open(io.BytesIO(base64.b64decode(low["image"]))).size == (64, 64)
    assert _pixels(low) != _pixels(high) and "Denoising strength: 0.3" in low["infotext"]
    assert low["paths"][0].startswith("img2img-images/")
    r = api.client.post("/api/generate", json={**GEN, "init_images": ["bm90IGFuIGltYWdl"]},
                        headers=as_user("ann:user"))
    assert r.status_code == 400 and r.json()["field"] == "init_images"


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_name_builds_and_runs(api, sampler: str) -> None:
    out = _run(api, sampler_name=sampler, steps=2)
    assert f"Sampler: {sampler}," in out["infotext"]


def test_sampler_and_schedule_names_as_the_webui_splits_them(api) -> None:
    old = _run(api, sampler_name="DPM++ 2M Karras")
    new = _run(api, sampler_name="DPM++ 2M", scheduler="Karras")
    auto = _run(api, sampler_name="DPM++ 2M")
    assert _pixels(old) == _pixels(new) == _pixels(auto)  # Karras is DPM++ 2M's default
    assert "Sampler: DPM++ 2M, Schedule type: Automatic," in old["infotext"]
    uniform = _run(api, sampler_name="DPM++ 2M", scheduler="Uniform")
    assert _pixels(uniform) != _pixels(old)
    assert "Schedule type: Uniform" in uniform["infotext"]
    for bad, field in (("DPM fast", "sampler_name"), ("Nope", "sampler_name")):
        r = api.client.post("/api/generate", json={**GEN, "sampler_name": bad},
                            headers=as_user("ann:user"))
        assert r.status_code == 400 and r.json()["field"] == field
    r = api.client.post("/api/generate", json={**GEN, "sampler_name": "DDIM",
                                               "scheduler": "Karras"},
                        headers=as_user("ann:user"))
    assert r.status_code == 400 and "no Karras schedule" in r.json()["message"]
