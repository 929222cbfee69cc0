"""What a safetensors file is, from its header alone (tensor names, shapes, metadata).

Used to place a plain URL's file by type when no catalogue says what it is, and by the
library for files of unknown origin. The rules come from the loaders that must accept
these files (A1111 ``sd_models_config.py`` and ``Lora/network_*.py``, kohya's metadata,
diffusers/PEFT key names, LyCORIS):

    checkpoint  model.diffusion_model.* (ldm UNet), or Flux/SD3 transformer blocks
                base: conditioner.embedders.1 -> SDXL, cond_stage_model.model -> SD 2,
                cond_stage_model.transformer -> SD 1.5, double_blocks + guidance_in -> Flux.1 D
    LoRA        lora_unet_*/lora_te*_* (kohya), *.lora_A/lora_B, *.lora.down/up (PEFT,
                diffusers); base from ss_base_model_version, te1/te2, cross-attention width
    LyCORIS     hada_w1_a (LoHa), lokr_w1 (LoKr), conv lora_down (LoCon)  -> "LoCon"
    DoRA        dora_scale
    embedding   emb_params / string_to_param / clip_l + clip_g
    VAE         encoder.down*, decoder.conv_in and nothing of a UNet
    ControlNet  control_model.* (ldm) or controlnet_cond_embedding.* (diffusers)
    upscaler    ESRGAN (model.0.weight, RRDB_trunk), Real-ESRGAN (conv_first, body.N.rdb)
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_HEADER = 100_000_000

# Civitai's type and base-model names, so placement and the UI speak one language.
CHECKPOINT, LORA, LOCON, DORA = "Checkpoint", "LORA", "LoCon", "DoRA"
EMBEDDING, VAE, CONTROLNET, UPSCALER = "TextualInversion", "VAE", "Controlnet", "Upscaler"
OTHER = "Other"
SD15, SD2, SDXL, FLUX_D, FLUX_S, SD3 = "SD 1.5", "SD 2.1", "SDXL 1.0", "Flux.1 D", "Flux.1 S", \
    "SD 3"


@dataclass(frozen=True)
class Sniffed:
    type: str                 # one of the names above
    base_model: str | None
    why: str                  # the marker that decided, for logs and --dry-run

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "base_model": self.base_model, "why": self.why}


def header_length(head: bytes) -> int | None:
    """The JSON header's length from the first 8 bytes, or None if it cannot be one."""
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head[:8])
    if n < 2 or n > MAX_HEADER:
        return None
    return n


def parse_header(head: bytes) -> dict[str, Any] | None:
    """The header dict from the file's first bytes (8 + N of them), or None."""
    n = header_length(head)
    if n is None or len(head) < 8 + n:
        return None
    try:
        data = json.loads(head[8:8 + n])
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _shape(header: Mapping[str, Any], key: str) -> list[int]:
    info = header.get(key)
    if isinstance(info, dict) and isinstance(info.get("shape"), list):
        return [int(x) for x in info["shape"] if isinstance(x, int)]
    return []


def _base_from_metadata(meta: Mapping[str, Any]) -> str | None:
    version = str(meta.get("ss_base_model_version") or "").lower()
    arch = str(meta.get("modelspec.architecture") or "").lower()
    for text in (version, arch):
        if text.startswith("sdxl") or "stable-diffusion-xl" in text:
            return SDXL
        if "flux" in text:
            return FLUX_S if "schnell" in text else FLUX_D
        if text.startswith(("sd_v2", "sd_2", "stable-diffusion-v2")):
            return SD2
        if "sd3" in text or "stable-diffusion-v3" in text:
            return SD3
        if text.startswith(("sd_v1", "sd_1", "stable-diffusion-v1")):
            return SD15
    if str(meta.get("ss_v2", "")).lower() == "true":
        return SD2
    return None


def _width_base(width: int | None) -> str | None:
    return {768: SD15, 1024: SD2, 2048: SDXL}.get(width or 0)


def sniff(header: Mapping[str, Any]) -> Sniffed:
    """Classify a parsed safetensors header."""
    meta = header.get("__metadata__")
    meta = meta if isinstance(meta, dict) else {}
    keys = [k for k in header if k != "__metadata__"]
    if not keys:
        return Sniffed(OTHER, None, "no tensors")
    ks = set(keys)

    def has(sub: str) -> bool:
        return any(sub in k for k in keys)

    def starts(*prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in keys)

    meta_base = _base_from_metadata(meta)

    # -- adapters first: their keys embed the names of the model they patch -----------
    if has("dora_scale"):
        return Sniffed(DORA, meta_base or _lora_base(header, keys), "dora_scale")
    if has("hada_w1_a") or has("lokr_w1") or has(".lokr_"):
        return Sniffed(LOCON, meta_base or _lora_base(header, keys), "LoHa/LoKr keys")
    lora_keys = [k for k in keys if ("lora_down" in k or "lora_up" in k or "lora_A" in k
                                     or "lora_B" in k or ".lora.down" in k
                                     or ".lora.up" in k or "lora_linear_layer" in k)]
    if lora_keys:
        module = str(meta.get("ss_network_module") or "")
        conv = any(len(_shape(header, k)) == 4 and _shape(header, k)[2:] != [1, 1]
                   for k in lora_keys if "down" in k or "lora_A" in k)
        kind = LOCON if "lycoris" in module or conv else LORA
        why = "LyCORIS conv layers" if kind == LOCON else "LoRA down/up keys"
        return Sniffed(kind, meta_base or _lora_base(header, keys), why)

    # -- textual inversion: a handful of tensors with embedding names ------------------
    ti_key = "emb_params" if "emb_params" in ks else next(
        (k for k in keys if k.startswith("string_to_param")), None)
    if ti_key is not None and len(keys) <= 4:
        key = ti_key
        shape = _shape(header, key)
        return Sniffed(EMBEDDING, _width_base(shape[-1] if shape else None), key)
    if {"clip_l", "clip_g"} <= ks and len(keys) <= 4:
        return Sniffed(EMBEDDING, SDXL, "clip_l + clip_g")

    # -- ControlNet -------------------------------------------------------------------
    if starts("control_model.") or starts("controlnet_cond_embedding.") or has(
            "input_hint_block"):
        return Sniffed(CONTROLNET, meta_base or _controlnet_base(header, keys), "control keys")

    # -- full checkpoints -------------------------------------------------------------
    flux_marker = "double_blocks.0.img_attn.norm.key_norm.scale"
    flux_key = next((k for k in keys if k.endswith(flux_marker)), None)
    if flux_key is not None:
        prefix = flux_key[: -len(flux_marker)]
        dev = any(k.startswith(prefix + "guidance_in.") for k in keys)
        return Sniffed(CHECKPOINT, FLUX_D if dev else FLUX_S,
                       "Flux double_blocks" + (" + guidance_in" if dev else ""))
    if has("joint_blocks.0.") and has("x_embedder.proj.weight"):
        return Sniffed(CHECKPOINT, SD3, "SD3 joint_blocks")
    if starts("model.diffusion_model."):
        if starts("conditioner.embedders.1."):
            return Sniffed(CHECKPOINT, SDXL, "conditioner.embedders.1")
        if starts("conditioner.embedders.0.model.") and not starts("conditioner.embedders.1."):
            return Sniffed(CHECKPOINT, "SDXL Refiner", "refiner embedder")
        if starts("cond_stage_model.model."):
            return Sniffed(CHECKPOINT, SD2, "OpenCLIP text encoder")
        if starts("cond_stage_model.transformer."):
            return Sniffed(CHECKPOINT, SD15, "CLIP text encoder")
        width = _shape(header, "model.diffusion_model.input_blocks.1.1.transformer_blocks.0"
                               ".attn2.to_k.weight")
        return Sniffed(CHECKPOINT, meta_base or _width_base(width[1] if len(width) > 1
                                                            else None), "ldm UNet")

    # -- VAE: an autoencoder and nothing else -----------------------------------------
    if (starts("encoder.", "decoder.") or starts("first_stage_model.")) and has("decoder.") \
            and not has("diffusion_model"):
        shape = next((_shape(header, k) for k in keys
                      if k.endswith("decoder.conv_in.weight")), [])
        latent = shape[1] if len(shape) > 1 else None
        return Sniffed(VAE, FLUX_D if latent == 16 else None, "autoencoder keys")

    # -- upscalers (ESRGAN family) ----------------------------------------------------
    if ("conv_first.weight" in ks and (starts("body.", "RRDB_trunk.", "trunk_conv"))
            or ("model.0.weight" in ks and has("sub.") and has("RDB"))):
        return Sniffed(UPSCALER, None, "ESRGAN keys")

    if meta_base is not None and meta.get("modelspec.architecture"):
        return Sniffed(CHECKPOINT, meta_base, "modelspec.architecture")
    return Sniffed(OTHER, meta_base, "no known markers")


def _lora_base(header: Mapping[str, Any], keys: list[str]) -> str | None:
    if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.", "te2.")) for k in keys):
        return SDXL
    if any("double_blocks" in k or "single_blocks" in k or "single_transformer_blocks" in k
           or k.startswith(("lora_transformer_", "transformer.")) for k in keys):
        return FLUX_D
    if any(k.startswith("lora_unet_input_blocks_") or k.startswith("lora_unet_middle_block_")
           for k in keys):
        return SDXL  # kohya names SDXL's UNet by its ldm blocks
    for k in keys:
        # the cross-attention projection's input width is the text encoder's width
        if ("attn2_to_k" in k or "attn2.to_k" in k) and ("down" in k or "lora_A" in k):
            shape = _shape(header, k)
            if len(shape) >= 2:
                return _width_base(shape[1])
    return None


def _controlnet_base(header: Mapping[str, Any], keys: list[str]) -> str | None:
    if any(k.startswith(("control_model.label_emb", "add_embedding.")) for k in keys):
        return SDXL
    for k in keys:
        if k.endswith("attn2.to_k.weight"):
            shape = _shape(header, k)
            if len(shape) >= 2:
                return _width_base(shape[1])
    return None


def sniff_bytes(head: bytes) -> Sniffed | None:
    """Classify from a file's first bytes; None when they hold no whole header."""
    header = parse_header(head)
    return sniff(header) if header is not None else None
