"""Families from safetensors headers: every kind on one NAS, and what must be refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelzoo.errors import UnsupportedModel
from modelzoo.residency.catalog import ModelCatalog
from modelzoo.residency.families import FAMILIES, detect, detect_folder

from .checkpoints import family_tensors, write_family


@pytest.mark.parametrize("kind, family, prediction", [
    ("sd1", "sd1", "epsilon"),
    ("sd1-inpaint", "sd1-inpaint", "epsilon"),
    ("sd2", "sd2", "probe"),  # SD 2 without a hint: A1111's UNet test after loading
    ("sd2-v", "sd2", "v_prediction"),  # modelspec.prediction_type = v
    ("sd2-inpaint", "sd2-inpaint", "epsilon"),
    ("sdxl", "sdxl", "epsilon"),
    ("sdxl-vpred", "sdxl", "v_prediction"),
    ("sdxl-inpaint", "sdxl-inpaint", "epsilon"),
    ("sdxl-refiner", "sdxl-refiner", "epsilon"),
    ("sd3", "sd3", None),
    ("sd35-large", "sd35-large", None),
    ("flux-dev", "flux-dev", None),
    ("flux-schnell", "flux-schnell", None),
])
def test_each_family_is_told_apart_on_one_nas(models_dir: Path, kind: str, family: str,
                                              prediction: str | None) -> None:
    write_family(models_dir / f"{kind}.safetensors", kind)
    fam = ModelCatalog(models_dir).family(kind)
    assert fam.id == family and fam.prediction == prediction
    assert fam.pipeline == FAMILIES[family].pipeline
    if kind == "sdxl-vpred":
        assert fam.zero_snr  # the ztsnr key


def test_pipeline_classes_follow_the_family() -> None:
    assert FAMILIES["sd1"].pipeline == "StableDiffusionPipeline"
    assert FAMILIES["sd1-inpaint"].pipeline == "StableDiffusionInpaintPipeline"
    assert FAMILIES["sdxl-refiner"].pipeline == "StableDiffusionXLImg2ImgPipeline"
    assert not FAMILIES["sdxl-refiner"].txt2img
    assert FAMILIES["flux-dev"].pipeline == "FluxPipeline"
    assert FAMILIES["sd3"].pipeline == "StableDiffusion3Pipeline"


@pytest.mark.parametrize("kind, found", [
    ("pix2pix", "instruct-pix2pix"),
    ("flux-fill", "Flux Fill"),
    ("lora", "a LoRA"),
    ("vae", "a VAE"),
    ("controlnet", "a ControlNet"),
    ("unet-only", "a UNet without its text encoder"),
])
def test_what_cannot_run_is_a_clear_422_naming_what_was_found(models_dir: Path, kind: str,
                                                              found: str) -> None:
    write_family(models_dir / f"{kind}.safetensors", kind)
    with pytest.raises(UnsupportedModel) as exc:
        ModelCatalog(models_dir).family(kind)
    assert exc.value.status == 422 and exc.value.code == "unsupported_model"
    assert found in exc.value.message and found in str(exc.value.extra["found"])
    assert exc.value.extra["keys"]  # which key prefixes were there


def test_an_unknown_header_is_refused_not_guessed() -> None:
    with pytest.raises(UnsupportedModel, match="unknown kind") as exc:
        detect({"foo.bar.weight": (3, 3), "foo.baz.weight": (3,)})
    assert "foo.* (2)" in exc.value.extra["keys"]


def test_the_text_encoder_form_not_its_width_decides() -> None:
    # tiny widths (32) still tell SD 1 (transformers CLIP) from SD 2 (OpenCLIP)
    sd1 = {"model.diffusion_model.input_blocks.0.0.weight": (32, 4, 3, 3),
           "cond_stage_model.transformer.text_model.final_layer_norm.weight": (32,)}
    sd2 = {"model.diffusion_model.input_blocks.0.0.weight": (32, 4, 3, 3),
           "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": (96, 32)}
    assert detect(sd1).id == "sd1" and detect(sd2).id == "sd2"
    assert detect(sd2, {"ss_v_parameterization": "True"}).prediction == "v_prediction"
    assert detect(sd2, {"modelspec.prediction_type": "epsilon"}).prediction == "epsilon"


def test_family_is_cached_by_file_version(models_dir: Path) -> None:
    cat = ModelCatalog(models_dir)
    write_family(models_dir / "m.safetensors", "sd1")
    assert cat.family("m").id == "sd1"
    import os

    write_family(models_dir / "m.safetensors", "sdxl")
    st = (models_dir / "m.safetensors").stat()
    os.utime(models_dir / "m.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cat.family("m").id == "sdxl"


def test_diffusers_folders_by_model_index(tmp_path: Path) -> None:
    d = tmp_path / "xl"
    (d / "unet").mkdir(parents=True)
    (d / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    (d / "unet" / "config.json").write_text(json.dumps({"in_channels": 9}))
    fam = detect_folder(d)
    assert fam.style == "sdxl" and fam.inpaint and fam.prediction is None
    (d / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(UnsupportedModel, match="WanPipeline"):
        detect_folder(d)


def test_markers_match_the_real_models_shapes() -> None:
    # the synthetic headers carry the real widths where a detector could read them
    assert family_tensors("sd2")[
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"][1] == [3072, 1024]
    assert family_tensors("sd1-inpaint")["model.diffusion_model.input_blocks.0.0.weight"][1][1] \
        == 9
