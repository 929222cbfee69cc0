"""Synthetic model files with real safetensors headers (tensor names, shapes, metadata).

Each builder gives valid safetensors bytes shaped like the real kind (the key names and
the shapes that tell it apart), with tiny tensors; ``pad`` adds a filler tensor to reach
a size for download tests. Bytes are deterministic per ``seed``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct
from collections.abc import Mapping, Sequence

Spec = Mapping[str, tuple[str, Sequence[int]]]
BITS = {"F16": 16, "BF16": 16, "F32": 32, "U8": 8, "I64": 64}


def safetensors(tensors: Spec, metadata: Mapping[str, str] | None = None, *,
                pad: int = 0, seed: int = 0) -> bytes:
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    spec = dict(tensors)
    if pad > 0:
        spec["zz_pad"] = ("U8", [pad])
    for name, (dtype, shape) in spec.items():
        n = math.prod(shape) * BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset,
                                                                              offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    body = hashlib.shake_256(f"{seed}:{sorted(spec)}".encode()).digest(offset) if offset else b""
    return struct.pack("<Q", len(raw)) + raw + body


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


F16 = "F16"


def sd15_checkpoint(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({
        "model.diffusion_model.input_blocks.0.0.weight": (F16, [320, 4, 3, 3]),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight":
            (F16, [320, 768]),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight":
            (F16, [8, 768]),
        "first_stage_model.decoder.conv_in.weight": (F16, [8, 4, 3, 3]),
    }, pad=pad, seed=seed)


def sdxl_checkpoint(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({
        "model.diffusion_model.input_blocks.0.0.weight": (F16, [320, 4, 3, 3]),
        "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight":
            (F16, [8, 768]),
        "conditioner.embedders.1.model.ln_final.weight": (F16, [1280]),
        "first_stage_model.decoder.conv_in.weight": (F16, [8, 4, 3, 3]),
    }, pad=pad, seed=seed)


def flux_checkpoint(dev: bool = True, pad: int = 0, seed: int = 0) -> bytes:
    t: dict[str, tuple[str, Sequence[int]]] = {
        "double_blocks.0.img_attn.norm.key_norm.scale": ("BF16", [128]),
        "single_blocks.0.linear1.weight": ("BF16", [8, 16]),
        "img_in.weight": ("BF16", [8, 64]),
    }
    if dev:
        t["guidance_in.in_layer.weight"] = ("BF16", [8, 256])
    return safetensors(t, pad=pad, seed=seed)


def lora_kohya_sd15(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
            (F16, [4, 768]),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight":
            (F16, [320, 4]),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha":
            (F16, [1]),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (F16, [4, 768]),
    }, {"ss_network_module": "networks.lora", "ss_output_name": "tiny"}, pad=pad, seed=seed)


def lora_kohya_sdxl(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight":
            (F16, [4, 2048]),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight":
            (F16, [640, 4]),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (F16, [4, 768]),
        "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (F16, [4, 1280]),
    }, {"ss_base_model_version": "sdxl_base_v1-0", "ss_network_module": "networks.lora"},
        pad=pad, seed=seed)


def lora_peft_sdxl(pad: int = 0, seed: int = 0) -> bytes:
    """diffusers/PEFT key style, no kohya metadata: the width says SDXL."""
    return safetensors({
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight":
            (F16, [4, 2048]),
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight":
            (F16, [640, 4]),
    }, pad=pad, seed=seed)


def lora_flux(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({
        "transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight": ("BF16", [4, 64]),
        "transformer.single_transformer_blocks.0.attn.to_k.lora_B.weight": ("BF16", [64, 4]),
    }, pad=pad, seed=seed)


def locon(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": (F16, [4, 320, 3, 3]),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": (F16, [320, 4, 1, 1]),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
            (F16, [4, 768]),
    }, {"ss_network_module": "lycoris.kohya"}, pad=pad, seed=seed)


def loha(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({
        "lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a": (F16, [320, 4]),
        "lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_b": (F16, [4, 320]),
        "lora_unet_down_blocks_0_attentions_0_proj_in.hada_w2_a": (F16, [320, 4]),
        "lora_unet_down_blocks_0_attentions_0_proj_in.hada_w2_b": (F16, [4, 320]),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.hada_w1_a": (F16, [4, 4]),
    }, pad=pad, seed=seed)


def lokr(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({
        "lora_unet_down_blocks_0_attentions_0_proj_in.lokr_w1": (F16, [8, 8]),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lokr_w2": (F16, [40, 40]),
    }, pad=pad, seed=seed)


def dora(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight":
            (F16, [4, 2048]),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight":
            (F16, [640, 4]),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.dora_scale": (F16, [1, 2048]),
    }, pad=pad, seed=seed)


def ti_sd15(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({"emb_params": ("F32", [4, 768])}, pad=pad, seed=seed)


def ti_sdxl(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({"clip_l": ("F32", [4, 768]), "clip_g": ("F32", [4, 1280])},
                       pad=pad, seed=seed)


def vae(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({
        "encoder.down.0.block.0.conv1.weight": (F16, [8, 8, 3, 3]),
        "decoder.conv_in.weight": (F16, [8, 4, 3, 3]),
        "quant_conv.weight": (F16, [8, 8, 1, 1]),
    }, pad=pad, seed=seed)


def vae_flux(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({
        "encoder.down.0.block.0.conv1.weight": ("BF16", [8, 8, 3, 3]),
        "decoder.conv_in.weight": ("BF16", [8, 16, 3, 3]),
    }, pad=pad, seed=seed)


def controlnet_sd15(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({
        "control_model.input_hint_block.0.weight": (F16, [16, 3, 3, 3]),
        "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight":
            (F16, [320, 768]),
        "control_model.zero_convs.0.0.weight": (F16, [320, 320, 1, 1]),
    }, pad=pad, seed=seed)


def controlnet_sdxl_diffusers(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({
        "controlnet_cond_embedding.conv_in.weight": (F16, [16, 3, 3, 3]),
        "add_embedding.linear_1.weight": (F16, [8, 2816]),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (F16, [640, 2048]),
    }, pad=pad, seed=seed)


def upscaler(pad: int = 0, seed: int = 0) -> bytes:
    return safetensors({
        "conv_first.weight": ("F32", [64, 3, 3, 3]),
        "body.0.rdb1.conv1.weight": ("F32", [32, 64, 3, 3]),
        "conv_up1.weight": ("F32", [64, 64, 3, 3]),
        "conv_last.weight": ("F32", [3, 64, 3, 3]),
    }, pad=pad, seed=seed)


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 40, 40),
        fmt: str = "PNG") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format=fmt)
    return out.getvalue()
