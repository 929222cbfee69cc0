"""Hugging Face through huggingface_hub against a loopback Hub: the file's sha256 from
X-Linked-Etag, the commit pinned on every endpoint and mirror, the type read from the
file's own header, gated repos, whole repos with include/exclude."""

from __future__ import annotations

import json

import pytest

from modelzoo.errors import BadReference, RemoteAuthRequired, RemoteNotFound
from modelzoo.settings import ZooSettings
from modelzoo.sources.huggingface import HuggingFace, base_model_of
from modelzoo.sources.refs import HfRef
from modelzoo.sources.resolve import Sources

from ..standins import files
from ..standins.huggingface import HFile, HfStandIn, HRepo


def diffusers_repo() -> HRepo:
    return HRepo("acme/tiny-sdxl", [
        HFile("model_index.json", json.dumps({"_class_name": "StableDiffusionXLPipeline"})
              .encode(), lfs=False),
        HFile("unet/config.json", b'{"sample_size": 8}', lfs=False),
        HFile("unet/diffusion_pytorch_model.safetensors", files.safetensors(
            {"conv_in.weight": ("F16", [4, 4, 3, 3])})),
        HFile("unet/diffusion_pytorch_model.fp16.safetensors", files.safetensors(
            {"conv_in.weight": ("F16", [4, 4, 3, 3])}, seed=1)),
        HFile("vae/diffusion_pytorch_model.safetensors", files.vae()),
        HFile(".gitattributes", b"*.safetensors filter=lfs\n", lfs=False),
    ], tags=["diffusers", "diffusers:StableDiffusionXLPipeline"])


def test_a_file_resolves_with_its_sha256_commit_and_kind(hf: HfStandIn,
                                                         hf_mirror: HfStandIn) -> None:
    data = files.lora_peft_sdxl(pad=5000)
    repo = hf.add(HRepo("acme/lora", [HFile("pytorch_lora_weights.safetensors", data)],
                        card={"base_model": "stabilityai/stable-diffusion-xl-base-1.0",
                              "instance_prompt": "sks dog"}, tags=["lora"]))
    res = HuggingFace(hf.url, mirrors=[hf_mirror.url]).resolve(
        HfRef("acme/lora", "pytorch_lora_weights.safetensors", None))
    f = res.primary
    assert f.sha256 == files.sha(data) and f.size == len(data)
    assert f.urls == [f"{u}/acme/lora/resolve/{repo.commit}/pytorch_lora_weights.safetensors"
                      for u in (hf.url, hf_mirror.url)]
    assert (res.type, res.base_model, res.trigger_words) == ("LORA", "SDXL 1.0", ["sks dog"])
    assert res.version_id == repo.commit and res.sniffed == "LoRA down/up keys"
    heads = [r for r in hf.traffic.requests("/acme/lora/resolve/") if r["method"] == "HEAD"]
    assert heads, "huggingface_hub's HEAD for the metadata"
    assert not hf_mirror.traffic.log  # mirrors are for the bytes, not the metadata


def test_gated_repo_needs_the_token_and_says_where_it_goes(hf: HfStandIn) -> None:
    hf.add(HRepo("acme/gated", [HFile("m.safetensors", files.sd15_checkpoint())], gated=True))
    ref = HfRef("acme/gated", "m.safetensors", None)
    with pytest.raises(RemoteAuthRequired, match="HF_TOKEN") as e:
        HuggingFace(hf.url).resolve(ref)
    assert e.value.status == 401 and "gated" in str(e.value)
    with pytest.raises(RemoteAuthRequired, match="has no access"):
        HuggingFace(hf.url, token="hf_wrong").resolve(ref)
    res = HuggingFace(hf.url, token=hf.token).resolve(ref)
    assert (res.type, res.base_model) == ("Checkpoint", "SD 1.5")
    cdn = hf.traffic.requests("/cdn/")
    assert cdn and all("authorization" not in r["headers"] for r in cdn)


def test_missing_repo_revision_and_file(hf: HfStandIn) -> None:
    hf.add(HRepo("acme/x", [HFile("a.safetensors", files.vae())]))
    h = HuggingFace(hf.url)
    with pytest.raises(RemoteNotFound, match="no such repo"):
        h.resolve(HfRef("acme/none", "a.safetensors", None))
    with pytest.raises(RemoteNotFound, match="no revision"):
        h.resolve(HfRef("acme/x", "a.safetensors", "nope"))
    with pytest.raises(RemoteNotFound, match="no such file"):
        h.resolve(HfRef("acme/x", "b.safetensors", None))


def test_whole_repo_with_include_and_exclude(hf: HfStandIn) -> None:
    repo = hf.add(diffusers_repo())
    h = HuggingFace(hf.url)
    res = h.resolve(HfRef(repo.id, None, None), exclude=["*.fp16.*"])
    assert res.type == "Diffusers" and res.base_model == "SDXL 1.0" and res.folder == repo.id
    assert sorted(f.path for f in res.files) == [
        "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors"]     # .gitattributes skipped
    by = {f.path: f for f in res.files}
    assert by["model_index.json"].primary and not by["model_index.json"].model
    assert by["model_index.json"].sha256 is None and by["model_index.json"].size is not None
    assert by["vae/diffusion_pytorch_model.safetensors"].sha256 == files.sha(files.vae())
    only = h.resolve(HfRef(repo.id, None, None), include=["vae/*", "model_index.json"])
    assert sorted(f.path for f in only.files) == ["model_index.json",
                                                   "vae/diffusion_pytorch_model.safetensors"]
    with pytest.raises(BadReference, match="no file left"):
        h.resolve(HfRef(repo.id, None, None), include=["nothing/*"])


def test_sources_honour_hf_endpoint_and_mirrors_from_the_environment(
        hf: HfStandIn, hf_mirror: HfStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    hf.add(HRepo("acme/vae", [HFile("vae.safetensors", files.vae())]))
    monkeypatch.setenv("HF_ENDPOINT", hf.url)
    monkeypatch.setenv("ATELIER_HF_MIRRORS", json.dumps([hf_mirror.url + "/"]))
    sources = Sources.from_settings(ZooSettings())
    res = sources.resolve(f"{hf_mirror.url}/acme/vae/blob/main/vae.safetensors")
    assert res.type == "VAE" and len(res.primary.urls) == 2
    assert res.primary.urls[1].startswith(hf_mirror.url + "/acme/vae/resolve/")


def test_base_model_names() -> None:
    class Card:
        base_model = "black-forest-labs/FLUX.1-schnell"

    assert base_model_of(Card(), None) == "Flux.1 S"
    assert base_model_of(None, ["base_model:runwayml/stable-diffusion-v1-5"]) == "SD 1.5"
    assert base_model_of(None, ["text-to-image"]) is None
