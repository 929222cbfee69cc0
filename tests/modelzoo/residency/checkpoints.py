"""Checkpoints of every family for the tests: synthetic headers and real tiny single files.

Synthetic: :func:`write_family` writes a safetensors file whose tensor names and shapes
are the markers of a family (SD 1.5, SD 2, SDXL, refiner, inpainting, SD 3, Flux, and the
kinds that must be refused), with the real models' shapes where a detector reads them.

Real: :func:`tiny_pipeline` builds a 2 M-parameter pipeline of a family (diffusers' own
dummy-component configs, no download), :func:`to_single_file` writes its weights the way
an A1111 checkpoint holds them (the LDM key names: ``model.diffusion_model.input_blocks...``,
``first_stage_model.encoder.down...``, ``cond_stage_model.transformer...`` or the OpenCLIP
form ``...model.transformer.resblocks.N.attn.in_proj_weight``) and :func:`config_folder`
keeps the pipeline's configs without weights: the ``ATELIER_GPU_DIFFUSERS_CONFIG/<family>``
folder for it. Loading the single file with that folder must give back the same weights.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path
from typing import Any

U = "model.diffusion_model."
TINY_VOCAB = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>",
              "t</w>", "low</w>", "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>",
              "<|startoftext|>", "<|endoftext|>", ",</w>"]

ITEM = {"F16": 2, "F32": 4, "BF16": 2, "I64": 8}


def write_header_file(path: Path, tensors: dict[str, tuple[str, list[int]]],
                      metadata: dict[str, str] | None = None) -> Path:
    header: dict[str, Any] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = ITEM[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + offset)  # sparse zeros: big files cost no disk
    return path


def _sd_unet(channels: int = 4, ctx: int = 768) -> dict[str, tuple[str, list[int]]]:
    return {U + "input_blocks.0.0.weight": ("F16", [320, channels, 3, 3]),
            U + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": ("F16", [320, ctx]),
            U + "out.2.weight": ("F16", [4, 320, 3, 3]),
            "first_stage_model.decoder.conv_in.weight": ("F16", [512, 4, 3, 3])}


SD1_TE = {"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight":
          ("F16", [77, 768])}
SD2_TE = {"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight":
          ("F16", [3072, 1024]), "cond_stage_model.model.token_embedding.weight":
          ("F16", [49408, 1024])}
XL_TE = {"conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight":
         ("F16", [77, 768]),
         "conditioner.embedders.1.model.ln_final.weight": ("F16", [1280]),
         "conditioner.embedders.1.model.positional_embedding": ("F16", [77, 1280])}
REFINER_TE = {"conditioner.embedders.0.model.ln_final.weight": ("F16", [1280]),
              "conditioner.embedders.0.model.text_projection": ("F16", [1280, 1280])}


def family_tensors(kind: str) -> dict[str, tuple[str, list[int]]]:
    """Header entries marking a family (or a kind that must be refused)."""
    if kind == "sd1":
        return {**_sd_unet(), **SD1_TE}
    if kind == "sd1-inpaint":
        return {**_sd_unet(9), **SD1_TE}
    if kind == "pix2pix":
        return {**_sd_unet(8), **SD1_TE}
    if kind in ("sd2", "sd2-v"):
        return {**_sd_unet(4, 1024), **SD2_TE}
    if kind == "sd2-inpaint":
        return {**_sd_unet(9, 1024), **SD2_TE}
    if kind == "sdxl":
        return {**_sd_unet(4, 2048), **XL_TE}
    if kind == "sdxl-vpred":
        return {**_sd_unet(4, 2048), **XL_TE, "v_pred": ("F32", [0]), "ztsnr": ("F32", [0])}
    if kind == "sdxl-inpaint":
        return {**_sd_unet(9, 2048), **XL_TE}
    if kind == "sdxl-refiner":
        return {**_sd_unet(4, 1280), **REFINER_TE}
    if kind == "sd3":
        return {U + "joint_blocks.0.context_block.adaLN_modulation.1.bias": ("F16", [9216]),
                U + "x_embedder.proj.weight": ("F16", [1536, 16, 2, 2]),
                U + "pos_embed": ("F16", [1, 36864, 1536])}
    if kind == "sd35-large":
        return {U + "joint_blocks.0.context_block.adaLN_modulation.1.bias": ("F16", [9216]),
                U + "joint_blocks.37.x_block.mlp.fc1.weight": ("F16", [9216, 2432])}
    if kind == "flux-dev":
        return {"double_blocks.0.img_attn.norm.key_norm.scale": ("BF16", [128]),
                "guidance_in.in_layer.bias": ("BF16", [3072]),
                "img_in.weight": ("BF16", [3072, 64])}
    if kind == "flux-schnell":
        return {U + "double_blocks.0.img_attn.norm.key_norm.scale": ("BF16", [128]),
                U + "img_in.weight": ("BF16", [3072, 64])}
    if kind == "flux-fill":
        return {"double_blocks.0.img_attn.norm.key_norm.scale": ("BF16", [128]),
                "guidance_in.in_layer.bias": ("BF16", [3072]),
                "img_in.weight": ("BF16", [3072, 384])}
    if kind == "lora":
        return {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight":
                ("F16", [8, 320]), "lora_unet_down_blocks_0_attentions_0_proj_in.alpha":
                ("F16", [])}
    if kind == "vae":
        return {"encoder.down.0.block.0.conv1.weight": ("F16", [128, 128, 3, 3]),
                "decoder.conv_in.weight": ("F16", [512, 4, 3, 3])}
    if kind == "controlnet":
        return {"control_model.input_hint_block.0.weight": ("F16", [16, 3, 3, 3]),
                "control_model.time_embed.0.weight": ("F16", [1280, 320])}
    if kind == "unet-only":
        return {U + "input_blocks.0.0.weight": ("F16", [320, 4, 3, 3])}
    raise ValueError(kind)


def write_family(path: Path, kind: str, pad_bytes: int = 0,
                 metadata: dict[str, str] | None = None) -> Path:
    tensors = family_tensors(kind)
    if pad_bytes:
        tensors[U + "middle_block.0.pad"] = ("F16", [pad_bytes // 2])
    meta = dict(metadata or {})
    if kind == "sd2-v":
        meta.setdefault("modelspec.prediction_type", "v")
    return write_header_file(path, tensors, meta)


# ---- real tiny pipelines -----------------------------------------------------------

def _tokenizer(folder: Path, pad: str = "<|endoftext|>") -> Any:
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(TINY_VOCAB)}))
    (folder / "merges.txt").write_text("#version: 0.2\nl o\nlo w</w>\ne r</w>\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         unk_token="<unk>", pad_token=pad, model_max_length=77)


def _clip(hidden: int = 32, projection: bool = False, proj_dim: int = 32, layers: int = 5
          ) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(bos_token_id=21, eos_token_id=22, hidden_size=hidden,
                         intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4,
                         num_hidden_layers=layers, pad_token_id=22, vocab_size=1000,
                         hidden_act="gelu", projection_dim=proj_dim)
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                         down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4)


def _scheduler(prediction: str = "epsilon") -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                         prediction_type=prediction)


def tiny_pipeline(folder: Path, family: str, seed: int = 0) -> Path:
    """Save a tiny diffusers pipeline of ``family`` (sd1, sd1-inpaint, sd2, sdxl)."""
    import diffusers
    import torch

    torch.manual_seed(seed)
    tok = _tokenizer(folder.parent / f".tok-{folder.name}")
    inpaint = family.endswith("-inpaint")
    common = {"block_out_channels": (32, 64), "layers_per_block": 2, "sample_size": 32,
              "in_channels": 9 if inpaint else 4, "out_channels": 4,
              "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
              "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D")}
    if family in ("sd1", "sd1-inpaint"):
        unet = diffusers.UNet2DConditionModel(**common, cross_attention_dim=32)
        cls = (diffusers.StableDiffusionInpaintPipeline if inpaint
               else diffusers.StableDiffusionPipeline)
        pipe = cls(unet=unet, vae=_vae(), text_encoder=_clip(), tokenizer=tok,
                   scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
                   requires_safety_checker=False)
    elif family == "sd2":
        unet = diffusers.UNet2DConditionModel(**common, cross_attention_dim=32,
                                              attention_head_dim=(2, 4),
                                              use_linear_projection=True)
        pipe = diffusers.StableDiffusionPipeline(
            unet=unet, vae=_vae(), text_encoder=_clip(), tokenizer=tok,
            scheduler=_scheduler("v_prediction"), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
    elif family == "sdxl":
        # the two encoders differ in width (32, 48) as CLIP-L and bigG do (768, 1280): the
        # single-file loader tells them apart by it
        unet = diffusers.UNet2DConditionModel(
            **common, attention_head_dim=(2, 4), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
            cross_attention_dim=80, norm_num_groups=32)
        pipe = diffusers.StableDiffusionXLPipeline(
            unet=unet, vae=_vae(), text_encoder=_clip(), tokenizer=tok,
            text_encoder_2=_clip(48, projection=True, proj_dim=32), tokenizer_2=tok,
            scheduler=_scheduler())
    else:
        raise ValueError(family)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def config_folder(pipeline_dir: Path, dest: Path) -> Path:
    """The pipeline's configs without its weights (what a family config folder holds)."""
    shutil.copytree(pipeline_dir, dest, ignore=shutil.ignore_patterns("*.safetensors",
                                                                      "*.bin"))
    return dest


# ---- diffusers -> A1111 (LDM) key names ----------------------------------------------

_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"),
           ("time_emb_proj", "emb_layers.1"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]


def _resnet(rest: str) -> str:
    for a, b in _RESNET:
        if rest.startswith(a + "."):
            return b + rest[len(a):]
    return rest


def unet_to_ldm(sd: dict[str, Any], layers: int, up_attention: list[bool]) -> dict[str, Any]:
    out = {}
    top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for k, v in sd.items():
        head, _, tail = k.rpartition(".")
        new = None
        if head in top:
            new = f"{top[head]}.{tail}"
        elif m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", k):
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            n = (layers + 1) * i + j + 1
            new = (f"input_blocks.{n}.0.{_resnet(rest)}" if kind == "resnets"
                   else f"input_blocks.{n}.1.{rest}")
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", k):
            new = f"input_blocks.{(layers + 1) * (int(m[1]) + 1)}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", k):
            new = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", k):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", k):
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            n = (layers + 1) * i + j
            new = (f"output_blocks.{n}.0.{_resnet(rest)}" if kind == "resnets"
                   else f"output_blocks.{n}.1.{rest}")
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", k):
            i = int(m[1])
            pos = 2 if up_attention[i] else 1
            new = f"output_blocks.{(layers + 1) * i + layers}.{pos}.conv.{m[2]}"
        if new is None:
            raise KeyError(f"no LDM name for UNet key {k}")
        out[U + new] = v
    return out


def vae_to_ldm(sd: dict[str, Any], n_blocks: int) -> dict[str, Any]:
    out = {}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for k, v in sd.items():
        new = k.replace("conv_norm_out", "norm_out")
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", k):
            new = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", k):
            new = f"decoder.up.{n_blocks - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", k):
            new = f"decoder.up.{n_blocks - 1 - int(m[1])}.upsample.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", k):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", k):
            rest = m[2]
            for a, b in attn.items():
                if rest.startswith(a + "."):
                    rest = b + rest[len(a):]
            new = f"{m[1]}.mid.attn_1.{rest}"
            if v.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                v = v[:, :, None, None]
        new = new.replace("conv_shortcut", "nin_shortcut")
        out["first_stage_model." + new] = v
    return out


def clip_to_ldm(sd: dict[str, Any], prefix: str) -> dict[str, Any]:
    """transformers CLIP (flat or wrapped) -> ``<prefix>text_model.*``."""
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in sd.items() if not k.endswith("position_ids")}


def clip_to_openclip(sd: dict[str, Any], prefix: str) -> dict[str, Any]:
    import torch

    flat = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out: dict[str, Any] = {
        prefix + "token_embedding.weight": flat["embeddings.token_embedding.weight"],
        prefix + "positional_embedding": flat["embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": flat["final_layer_norm.weight"],
        prefix + "ln_final.bias": flat["final_layer_norm.bias"],
    }
    if "text_projection.weight" in flat:
        out[prefix + "text_projection"] = flat["text_projection.weight"].T.contiguous()
    n = 0
    while f"encoder.layers.{n}.layer_norm1.weight" in flat:
        src, dst = f"encoder.layers.{n}.", f"{prefix}transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(
                [flat[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[f"{dst}attn.out_proj.{kind}"] = flat[f"{src}self_attn.out_proj.{kind}"]
            out[f"{dst}ln_1.{kind}"] = flat[f"{src}layer_norm1.{kind}"]
            out[f"{dst}ln_2.{kind}"] = flat[f"{src}layer_norm2.{kind}"]
            out[f"{dst}mlp.c_fc.{kind}"] = flat[f"{src}mlp.fc1.{kind}"]
            out[f"{dst}mlp.c_proj.{kind}"] = flat[f"{src}mlp.fc2.{kind}"]
        n += 1
    return out


def to_single_file(pipeline_dir: Path, family: str, dest: Path,
                   metadata: dict[str, str] | None = None) -> Path:
    """Write the pipeline's weights as one A1111-style checkpoint."""
    import diffusers
    from safetensors.torch import save_file

    pipe = diffusers.DiffusionPipeline.from_pretrained(pipeline_dir, local_files_only=True)
    unet = pipe.unet
    up_attention = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
    sd = unet_to_ldm(unet.state_dict(), unet.config.layers_per_block, up_attention)
    sd.update(vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.down_block_types)))
    if family in ("sd1", "sd1-inpaint"):
        sd.update(clip_to_ldm(pipe.text_encoder.state_dict(), "cond_stage_model.transformer."))
    elif family == "sd2":
        sd.update(clip_to_openclip(pipe.text_encoder.state_dict(), "cond_stage_model.model."))
    elif family == "sdxl":
        sd.update(clip_to_ldm(pipe.text_encoder.state_dict(),
                              "conditioner.embedders.0.transformer."))
        sd.update(clip_to_openclip(pipe.text_encoder_2.state_dict(),
                                   "conditioner.embedders.1.model."))
    else:
        raise ValueError(family)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(dest), metadata=metadata)
    return dest


# ---- add-ons: LoRA, embedding, VAE -----------------------------------------------------

def _lora_unet(pipeline_dir: Path, seed: int) -> dict[str, Any]:
    """peft LoRA weights (lora_A/lora_B) for the tiny UNet's attention, non-zero."""
    import diffusers
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = diffusers.UNet2DConditionModel.from_pretrained(pipeline_dir, subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora" in name:  # peft starts lora_B at zero: a LoRA that does nothing
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return dict(get_peft_model_state_dict(unet))


def make_lora(pipeline_dir: Path, dest: Path, *, kohya: bool = False, seed: int = 1) -> Path:
    """A LoRA file for the tiny SD 1 UNet, in diffusers form or as kohya's sd-scripts
    write it (``lora_unet_<module path with _>.lora_down.weight`` + ``.alpha``)."""
    import diffusers
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from safetensors.torch import save_file

    sd = _lora_unet(pipeline_dir, seed)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not kohya:
        diffusers.StableDiffusionPipeline.save_lora_weights(
            dest.parent, unet_lora_layers=convert_state_dict_to_diffusers(sd),
            safe_serialization=True, weight_name=dest.name)
        return dest
    out: dict[str, Any] = {}
    for k, v in sd.items():
        module, _, kind = k.rpartition(".lora_")
        name = "lora_unet_" + module.replace(".", "_")
        out[f"{name}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = v
        out[f"{name}.alpha"] = torch.tensor(4.0)  # alpha = rank: scale 1, as peft's
    save_file({k: v.contiguous() for k, v in out.items()}, str(dest),
              metadata={"ss_network_module": "networks.lora"})
    return dest


def make_embedding(dest: Path, vectors: int = 2, width: int = 32, seed: int = 5,
                   xl: bool = False) -> Path:
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    if xl:
        tensors = {"clip_l": torch.randn((vectors, width), generator=g),
                   "clip_g": torch.randn((vectors, 48), generator=g)}
    else:
        tensors = {"emb_params": torch.randn((vectors, width), generator=g)}
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest))
    return dest


def make_vae(dest_folder: Path, dest_file: Path, seed: int = 9) -> None:
    """The same new VAE twice: a diffusers folder and an A1111 single file (LDM keys)."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    vae = _vae()
    vae.save_pretrained(dest_folder, safe_serialization=True)
    ldm = vae_to_ldm(vae.state_dict(), len(vae.config.down_block_types))
    plain = {k.removeprefix("first_stage_model."): v.contiguous() for k, v in ldm.items()}
    dest_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(plain, str(dest_file))
