"""Which architecture a checkpoint is, read from its safetensors header (names and shapes).

A NAS holds SD 1.5, SD 2, SDXL, inpainting models, Flux and SD3 side by side, as single
files. Loading one with the wrong config gives a wrong pipeline (or a shape error deep in
diffusers), so the family is decided first, from the header alone (milliseconds), by the
markers A1111 (``modules/sd_models_config.py: guess_model_config_from_state_dict``) and
diffusers (``loaders/single_file_utils.py: infer_diffusers_model_type``) use::

    Flux        *double_blocks.0.img_attn.norm.key_norm.scale   (with or without the
                model.diffusion_model. prefix); guidance_in.* present = dev, absent = schnell
    SD3         *joint_blocks.0.context_block.adaLN_modulation.1.bias; x_block.attn2 = 3.5
                medium, 38+ joint blocks = 3.5 large
    SDXL base   conditioner.embedders.1.model.ln_final.weight (the OpenCLIP bigG encoder)
    SDXL refiner conditioner.embedders.0.model.ln_final.weight (OpenCLIP only, no CLIP-L)
    SD 2.x      cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight (OpenCLIP
                ViT-H; A1111 also checks that its width is 1024)
    SD 1.x      cond_stage_model.transformer.text_model.* (CLIP ViT-L in transformers form)
    inpainting  model.diffusion_model.input_blocks.0.0.weight has 9 input channels
                (4 latent + 4 masked-image latent + 1 mask); 8 is instruct-pix2pix

The text encoder's *form* (which keys exist), not its width, tells SD 1 from SD 2 and SDXL
apart, so the rules hold for the tiny test models as for the real ones.

v-prediction. SD 2.x 768 models predict v, SD 2.x 512 "base" models predict noise, and the
header alone cannot tell them apart (same keys, same shapes). In order:

1. a ``v_pred`` key (the marker ComfyUI and NoobAI-style SDXL v-pred models carry), or
   ``__metadata__`` ``modelspec.prediction_type`` = v / ``ss_v_parameterization`` = true
   -> v; ``modelspec.prediction_type`` = epsilon -> epsilon;
2. otherwise for SD 2.x: A1111's own test (``is_using_v_parameterization_for_sd2``), run on
   the loaded UNet: feed a constant latent (0.5) at timestep 999 with a constant text
   context (0.5); if ``mean(out - x) < -1`` it is a v model (``backends/diffusers.py``);
3. otherwise epsilon.

A ``ztsnr`` key (zero terminal SNR training) sets ``rescale_betas_zero_snr``.

Anything else (a LoRA, a VAE, a ControlNet, SD 2 depth/unCLIP, AltDiffusion, pix2pix,
Flux Fill/Depth, a bare UNet) is :class:`~modelzoo.errors.UnsupportedModel` (422) naming
what was found, never a guess. Stdlib only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnsupportedModel

Shape = tuple[int, ...]
UNET = "model.diffusion_model."
CONV_IN = UNET + "input_blocks.0.0.weight"


@dataclass(frozen=True)
class Family:
    """An architecture and how diffusers runs it.

    ``style`` picks the prompt encoding and pipelines (``sd``: one CLIP encoder, A1111
    weighting and chunking; ``sdxl``: two encoders + pooled; ``sd3``/``flux``: the
    pipeline's own text handling). ``config`` is the sub-folder of
    ``ATELIER_GPU_DIFFUSERS_CONFIG`` that holds its diffusers configs.
    """

    id: str
    label: str
    style: str
    inpaint: bool = False
    txt2img: bool = True
    # "epsilon" | "v_prediction" | "probe" (SD 2.x without a hint: A1111's test after
    # loading) | None (a diffusers folder: keep its scheduler config)
    prediction: str | None = None
    zero_snr: bool = False

    @property
    def config(self) -> str:
        return self.id

    @property
    def pipeline(self) -> str:
        """The diffusers class ``from_single_file`` builds for this family."""
        if self.inpaint:
            return INPAINT[self.style]
        if not self.txt2img:
            return IMG2IMG[self.style]
        return TXT2IMG[self.style]

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "label": self.label, "style": self.style,
                "inpaint": self.inpaint, "txt2img": self.txt2img,
                "prediction": self.prediction}


TXT2IMG = {"sd": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline",
           "sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}
IMG2IMG = {"sd": "StableDiffusionImg2ImgPipeline", "sdxl": "StableDiffusionXLImg2ImgPipeline",
           "sd3": "StableDiffusion3Img2ImgPipeline", "flux": "FluxImg2ImgPipeline"}
INPAINT = {"sd": "StableDiffusionInpaintPipeline", "sdxl": "StableDiffusionXLInpaintPipeline",
           "sd3": "StableDiffusion3InpaintPipeline", "flux": "FluxInpaintPipeline"}

FAMILIES = {f.id: f for f in (
    Family("sd1", "SD 1.x", "sd"),
    Family("sd1-inpaint", "SD 1.x inpainting", "sd", inpaint=True),
    Family("sd2", "SD 2.x", "sd"),
    Family("sd2-inpaint", "SD 2.x inpainting", "sd", inpaint=True),
    Family("sdxl", "SDXL", "sdxl"),
    Family("sdxl-inpaint", "SDXL inpainting", "sdxl", inpaint=True),
    Family("sdxl-refiner", "SDXL refiner", "sdxl", txt2img=False),
    Family("sd3", "SD 3 medium", "sd3"),
    Family("sd35-medium", "SD 3.5 medium", "sd3"),
    Family("sd35-large", "SD 3.5 large", "sd3"),
    Family("flux-dev", "Flux.1 dev", "flux"),
    Family("flux-schnell", "Flux.1 schnell", "flux"),
)}

# diffusers folders: model_index.json's _class_name -> (style, inpaint, txt2img)
FOLDER_CLASSES = {
    "StableDiffusionPipeline": ("sd", False, True),
    "StableDiffusionImg2ImgPipeline": ("sd", False, True),
    "StableDiffusionInpaintPipeline": ("sd", True, True),
    "StableDiffusionXLPipeline": ("sdxl", False, True),
    "StableDiffusionXLImg2ImgPipeline": ("sdxl", False, False),
    "StableDiffusionXLInpaintPipeline": ("sdxl", True, True),
    "StableDiffusion3Pipeline": ("sd3", False, True),
    "FluxPipeline": ("flux", False, True),
}


def _with(f: Family, prediction: str | None, zero_snr: bool) -> Family:
    return Family(f.id, f.label, f.style, f.inpaint, f.txt2img, prediction, zero_snr)


def _find(keys: Mapping[str, Shape], suffix: str) -> str | None:
    for k in (suffix, UNET + suffix):
        if k in keys:
            return k
    return None


def _prediction_hint(keys: Mapping[str, Shape], metadata: Mapping[str, str]) -> str | None:
    if "v_pred" in keys:
        return "v_prediction"
    spec = metadata.get("modelspec.prediction_type", "").strip().lower()
    if spec in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if spec in ("epsilon", "eps"):
        return "epsilon"
    if metadata.get("ss_v_parameterization", "").strip().lower() == "true":
        return "v_prediction"
    return None


def _found(keys: Mapping[str, Shape]) -> str:
    """A short description of what a file holds, for the refusal message."""
    prefixes: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        head = ".".join(parts[:2]) if parts[0] in ("model", "conditioner", "cond_stage_model",
                                                   "first_stage_model") else parts[0]
        prefixes[head] = prefixes.get(head, 0) + 1
    top = sorted(prefixes.items(), key=lambda kv: -kv[1])[:4]
    return ", ".join(f"{p}.* ({n})" for p, n in top)


def _refuse(what: str, keys: Mapping[str, Shape], hint: str = "") -> UnsupportedModel:
    msg = f"this is {what}, which this server cannot run as a checkpoint"
    if hint:
        msg += f"; {hint}"
    return UnsupportedModel(msg, found=what, keys=_found(keys))


def detect(keys: Mapping[str, Shape], metadata: Mapping[str, str] | None = None) -> Family:
    """The family of a single-file checkpoint from its tensor names and shapes."""
    metadata = metadata or {}
    hint = _prediction_hint(keys, metadata)
    zsnr = "ztsnr" in keys
    conv_in = keys.get(CONV_IN)
    channels = conv_in[1] if conv_in is not None and len(conv_in) > 1 else None

    if _find(keys, "double_blocks.0.img_attn.norm.key_norm.scale"):
        img_in = keys.get(_find(keys, "img_in.weight") or "", ())
        if len(img_in) > 1 and img_in[1] in (384, 128):
            kind = "Flux Fill" if img_in[1] == 384 else "Flux Depth"
            raise _refuse(f"a {kind} model", keys, "only Flux.1 dev and schnell are supported")
        dev = _find(keys, "guidance_in.in_layer.bias") is not None
        return FAMILIES["flux-dev" if dev else "flux-schnell"]
    if _find(keys, "joint_blocks.0.context_block.adaLN_modulation.1.bias"):
        if _find(keys, "joint_blocks.0.x_block.attn2.qkv.weight"):
            return FAMILIES["sd35-medium"]
        if _find(keys, "joint_blocks.37.x_block.mlp.fc1.weight"):
            return FAMILIES["sd35-large"]
        return FAMILIES["sd3"]
    if "conditioner.embedders.1.model.ln_final.weight" in keys:
        if channels == 9:
            return _with(FAMILIES["sdxl-inpaint"], hint or "epsilon", zsnr)
        if channels not in (None, 4):
            raise _refuse(f"an SDXL model with {channels} input channels", keys)
        return _with(FAMILIES["sdxl"], hint or "epsilon", zsnr)
    if "conditioner.embedders.0.model.ln_final.weight" in keys:
        return _with(FAMILIES["sdxl-refiner"], hint or "epsilon", zsnr)
    if "depth_model.model.pretrained.act_postprocess3.0.project.0.bias" in keys:
        raise _refuse("an SD 2 depth model", keys)
    if "embedder.model.ln_final.weight" in keys:
        raise _refuse("an SD 2 unCLIP (image variations) model", keys)
    if "cond_stage_model.roberta.embeddings.word_embeddings.weight" in keys:
        raise _refuse("an AltDiffusion model", keys)
    if any(k.startswith("control_model.") for k in keys) or (
            "controlnet_cond_embedding.conv_in.weight" in keys):
        raise _refuse("a ControlNet", keys, "put it in models/ControlNet")
    if any(k.startswith(("lora_unet_", "lora_te", "lora_transformer_")) or ".lora_down." in k
           or ".lora_A." in k or ".hada_w1_a" in k for k in keys):
        raise _refuse("a LoRA", keys, "put it in models/Lora and use <lora:name:1> in a prompt")
    sd2 = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    sd1 = any(k.startswith("cond_stage_model.transformer.") for k in keys)
    if (sd1 or sd2) and conv_in is not None:
        base = "sd2" if sd2 else "sd1"
        if channels == 9:
            return _with(FAMILIES[f"{base}-inpaint"], hint or "epsilon", zsnr)
        if channels == 8:
            raise _refuse("an instruct-pix2pix model", keys)
        if channels != 4:
            raise _refuse(f"an SD model with {channels} input channels", keys)
        return _with(FAMILIES[base], hint or ("probe" if sd2 else "epsilon"), zsnr)
    if conv_in is not None:
        raise _refuse("a UNet without its text encoder", keys,
                      "A1111 checkpoints hold UNet, VAE and text encoder in one file")
    if any(k.startswith(("encoder.down.", "decoder.up.", "encoder.down_blocks.")) for k in keys):
        raise _refuse("a VAE", keys, "put it in models/VAE and choose it with sd_vae")
    if any("string_to_param" in k or k in ("emb_params", "clip_l", "clip_g") for k in keys):
        raise _refuse("a textual inversion embedding", keys, "put it in embeddings/")
    raise _refuse("an unknown kind of model", keys)


def detect_folder(path: Path) -> Family:
    """The family of a diffusers folder, from ``model_index.json`` and the UNet config."""
    try:
        index = json.loads((path / "model_index.json").read_text())
        cls = str(index.get("_class_name", ""))
    except (OSError, ValueError, AttributeError):
        raise UnsupportedModel(f"{path.name}: model_index.json is unreadable",
                               found="a broken diffusers folder") from None
    if cls not in FOLDER_CLASSES:
        raise UnsupportedModel(f"{path.name} is a {cls or 'unnamed'} pipeline; supported: "
                               f"{', '.join(sorted(FOLDER_CLASSES))}", found=cls or "unknown")
    style, inpaint, txt2img = FOLDER_CLASSES[cls]
    try:
        unet = json.loads((path / "unet" / "config.json").read_text())
        inpaint = inpaint or unet.get("in_channels") == 9
    except (OSError, ValueError):
        pass
    return Family(f"{style}-folder", f"diffusers {cls}", style, inpaint, txt2img)
