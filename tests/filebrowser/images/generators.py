"""Images written the way each generator writes them (chunk names, encodings, JSON keys
and layouts from the generators' own writer code), for the parser tests and the bench.

- A1111: PNG ``PngInfo.add_text("parameters", ...)``; JPEG/WebP through piexif exactly
  as ``modules/images.py`` does (``piexif.dump({"Exif": {UserComment: UserComment.dump(
  text, encoding="unicode")}})``, ``piexif.insert``): big-endian TIFF, UTF-16BE.
- ComfyUI: ``SaveImage`` (nodes.py): ``add_text("prompt", json.dumps(prompt))`` and one
  chunk per extra_pnginfo key (``workflow``), ``compress_level=4``.
- NovelAI: tEXt Title, Description, Software, Source, Generation time, Comment (JSON).
- InvokeAI: ``image_files_disk.save``: add_text invokeai_metadata / invokeai_workflow /
  invokeai_graph; 2.x ``pngwriter``: "Dream" and "sd-metadata".
- SwarmUI: ImageSharp's PNG text (tEXt, zTXt past 1,024 characters, iTXt when not
  latin-1) named "parameters"; JPEG EXIF UserComment as ImageSharp writes a .NET
  string: little-endian TIFF, Exif IFD, "UNICODE\\0" + UTF-16LE.
- Fooocus: ``private_logger.log``: PNG "parameters" + "fooocus_scheme"; JPEG with
  ``meta_parser.get_exif`` (Pillow ``Image.Exif``: 0x9286, 0x0131, 0x927C in IFD0); and
  log.html in its three layouts.
- Stealth: A1111's stealth_pnginfo extension ``add_data``: bits of signature, 32-bit
  length (in bits) and payload, column by column, into alpha or R/G/B low bits.
"""

from __future__ import annotations

import gzip
import json
import struct
import urllib.parse
from pathlib import Path
from typing import Any

import piexif
import piexif.helper
from PIL import Image, PngImagePlugin

from .conftest import COMFY_PROMPT, COMFY_WORKFLOW


def _pixels(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (40, 90, 160)
            ) -> Image.Image:
    im = Image.new("RGB", size, color)
    for x in range(0, size[0], 4):
        im.putpixel((x, 0), (x % 256, 0, 0))
    return im


def png_with_texts(path: Path, texts: list[tuple[str, str]] | dict[str, str], *,
                   size: tuple[int, int] = (64, 48), compress_level: int = 6,
                   image: Image.Image | None = None) -> Path:
    """A PNG with Pillow's ``PngInfo.add_text`` chunks, in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    for k, v in (texts.items() if isinstance(texts, dict) else texts):
        info.add_text(k, v)
    (image or _pixels(size)).save(path, pnginfo=info, compress_level=compress_level)
    return path


# -- A1111 ----------------------------------------------------------------------------


def a1111_png(path: Path, text: str, **kw: Any) -> Path:
    return png_with_texts(path, {"parameters": text}, **kw)


def a1111_exif(path: Path, text: str, fmt: str = "JPEG", size: tuple[int, int] = (64, 48)
               ) -> Path:
    """JPEG/WebP/AVIF as A1111 saves them: image first, then piexif.insert."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _pixels(size).save(path, fmt, quality=90)
    exif = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(
        text, encoding="unicode")}})
    piexif.insert(exif, str(path))
    return path


# -- ComfyUI ----------------------------------------------------------------------------

FLUX_PROMPT: dict[str, Any] = {
    "6": {"class_type": "CLIPTextEncode", "_meta": {"title": "CLIP Text Encode (Positive)"},
          "inputs": {"text": "a red fox reading a newspaper in a cozy cabin, photo",
                     "clip": ["11", 0]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["10", 0]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI",
                                                "images": ["8", 0]}},
    "10": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
    "11": {"class_type": "DualCLIPLoader", "inputs": {
        "clip_name1": "t5xxl_fp16.safetensors", "clip_name2": "clip_l.safetensors",
        "type": "flux"}},
    "12": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux/flux1-dev.safetensors",
                                                  "weight_dtype": "default"}},
    "13": {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["25", 0], "guider": ["22", 0], "sampler": ["16", 0], "sigmas": ["17", 0],
        "latent_image": ["27", 0]}},
    "16": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
    "17": {"class_type": "BasicScheduler", "inputs": {"scheduler": "simple", "steps": 20,
                                                      "denoise": 1, "model": ["30", 0]}},
    "22": {"class_type": "BasicGuider", "inputs": {"model": ["30", 0],
                                                   "conditioning": ["26", 0]}},
    "25": {"class_type": "RandomNoise", "inputs": {"noise_seed": 219670278747233}},
    "26": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5,
                                                    "conditioning": ["6", 0]}},
    "27": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 768,
                                                           "batch_size": 1}},
    "28": {"class_type": "LoraLoaderModelOnly", "inputs": {
        "lora_name": "flux\\realism_lora.safetensors", "strength_model": 0.8,
        "model": ["12", 0]}},
    "30": {"class_type": "ModelSamplingFlux", "inputs": {
        "max_shift": 1.15, "base_shift": 0.5, "width": 1024, "height": 768,
        "model": ["28", 0]}},
}


def _node(nid: int, ntype: str, widgets: list[Any] | None = None,
          inputs: list[tuple[str, int | None]] = (), outputs: int = 1) -> dict[str, Any]:
    return {"id": nid, "type": ntype, "pos": [0, 0], "size": [300, 100], "flags": {},
            "order": nid, "mode": 0,
            "inputs": [{"name": n, "type": "*", "link": link} for n, link in inputs],
            "outputs": [{"name": "out", "type": "*", "links": []} for _ in range(outputs)],
            "properties": {"Node name for S&R": ntype},
            "widgets_values": widgets if widgets is not None else []}


FLUX_WORKFLOW: dict[str, Any] = {
    "last_node_id": 30, "last_link_id": 12,
    "nodes": [
        _node(6, "CLIPTextEncode", ["a red fox reading a newspaper in a cozy cabin, photo"],
              [("clip", 10)]),
        _node(10, "VAELoader", ["ae.safetensors"]),
        _node(11, "DualCLIPLoader", ["t5xxl_fp16.safetensors", "clip_l.safetensors", "flux"]),
        _node(12, "UNETLoader", ["flux/flux1-dev.safetensors", "default"]),
        _node(13, "SamplerCustomAdvanced", None, [
            ("noise", 1), ("guider", 2), ("sampler", 3), ("sigmas", 4), ("latent_image", 5)], 2),
        _node(16, "KSamplerSelect", ["euler"]),
        _node(17, "BasicScheduler", ["simple", 20, 1], [("model", 6)]),
        _node(22, "BasicGuider", None, [("model", 7), ("conditioning", 8)]),
        _node(25, "RandomNoise", [219670278747233, "randomize"]),
        _node(26, "FluxGuidance", [3.5], [("conditioning", 9)]),
        _node(27, "EmptySD3LatentImage", [1024, 768, 1]),
        _node(28, "LoraLoaderModelOnly", ["flux\\realism_lora.safetensors", 0.8],
              [("model", 11)]),
        _node(30, "ModelSamplingFlux", [1.15, 0.5, 1024, 768], [("model", 12)]),
    ],
    "links": [[1, 25, 0, 13, 0, "NOISE"], [2, 22, 0, 13, 1, "GUIDER"],
              [3, 16, 0, 13, 2, "SAMPLER"], [4, 17, 0, 13, 3, "SIGMAS"],
              [5, 27, 0, 13, 4, "LATENT"], [6, 30, 0, 17, 0, "MODEL"],
              [7, 30, 0, 22, 0, "MODEL"], [8, 26, 0, 22, 1, "CONDITIONING"],
              [9, 6, 0, 26, 0, "CONDITIONING"], [10, 11, 0, 6, 0, "CLIP"],
              [11, 12, 0, 28, 0, "MODEL"], [12, 28, 0, 30, 0, "MODEL"]],
    "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}}, "version": 0.4,
}

# KSamplerAdvanced, saved with the workflow only (the API graph stripped)
KSA_WORKFLOW: dict[str, Any] = {
    "last_node_id": 9, "last_link_id": 9,
    "nodes": [
        _node(4, "CheckpointLoaderSimple", ["SDXL\\juggernautXL_v9.safetensors"], [], 3),
        _node(5, "EmptyLatentImage", [832, 1216, 1]),
        _node(6, "CLIPTextEncode", ["portrait of an old sailor, dramatic light"], [("clip", 3)]),
        _node(7, "CLIPTextEncode", ["cartoon, blurry"], [("clip", 3)]),
        _node(8, "LoraLoader", ["detail_tweaker.safetensors", 0.7, 1.0],
              [("model", 1), ("clip", 2)], 2),
        _node(9, "KSamplerAdvanced",
              ["enable", 424242, "fixed", 30, 6.5, "dpmpp_2m_sde", "karras", 0, 10000,
               "disable"],
              [("model", 4), ("positive", 5), ("negative", 6), ("latent_image", 7)]),
    ],
    "links": [[1, 4, 0, 8, 0, "MODEL"], [2, 4, 1, 8, 1, "CLIP"], [3, 8, 1, 6, 0, "CLIP"],
              [4, 8, 0, 9, 0, "MODEL"], [5, 6, 0, 9, 1, "CONDITIONING"],
              [6, 7, 0, 9, 2, "CONDITIONING"], [7, 5, 0, 9, 3, "LATENT"]],
    "version": 0.4,
}


def custom_sampler_workflow(widget_inputs: bool) -> dict[str, Any]:
    """A custom sampler node (Efficiency Nodes' "KSampler (Efficient)") in a workflow
    only; ``widget_inputs``: the newer editor also lists each widget as an input."""
    sampler = _node(3, "KSampler (Efficient)",
                    [777, "fixed", 25, 7.5, "euler_ancestral", "normal", 1, "auto", "true"],
                    [("model", 1), ("positive", 2), ("negative", 3), ("latent_image", 4)])
    if widget_inputs:
        for name in ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise",
                     "preview_method", "vae_decode"):
            sampler["inputs"].append({"name": name, "type": "*", "widget": {"name": name},
                                      "link": None})
    return {
        "last_node_id": 7, "last_link_id": 4,
        "nodes": [
            _node(1, "CheckpointLoaderSimple", ["dreamshaper_8.safetensors"], [], 3),
            _node(2, "CLIPTextEncode", ["a lighthouse in a storm, oil painting"]),
            _node(5, "CLIPTextEncode", ["embedding:EasyNegative, lowres"]),
            _node(6, "EmptyLatentImage", [512, 768, 1]),
            sampler,
        ],
        "links": [[1, 1, 0, 3, 0, "MODEL"], [2, 2, 0, 3, 1, "CONDITIONING"],
                  [3, 5, 0, 3, 2, "CONDITIONING"], [4, 6, 0, 3, 3, "LATENT"]],
        "version": 0.4,
    }


def comfy_png(path: Path, prompt: Any = COMFY_PROMPT, workflow: Any = COMFY_WORKFLOW,
              **kw: Any) -> Path:
    texts = []
    if prompt is not None:
        texts.append(("prompt", json.dumps(prompt)))
    if workflow is not None:
        texts.append(("workflow", json.dumps(workflow)))
    return png_with_texts(path, texts, compress_level=4, **kw)


# -- NovelAI ----------------------------------------------------------------------------

NAI_V3_COMMENT: dict[str, Any] = {
    "prompt": "1girl, silver hair, night sky, fireflies, best quality, amazing quality",
    "steps": 28, "height": 1216, "width": 832, "scale": 5.0, "uncond_scale": 1.0,
    "cfg_rescale": 0.0, "seed": 1234567890, "n_samples": 1, "hide_debug_overlay": False,
    "noise_schedule": "native", "legacy_v3_extend": False,
    "reference_information_extracted": 1.0, "reference_strength": 0.6,
    "sampler": "k_euler_ancestral", "controlnet_strength": 1.0, "controlnet_model": None,
    "dynamic_thresholding": False, "dynamic_thresholding_percentile": 0.999,
    "dynamic_thresholding_mimic_scale": 10.0, "sm": True, "sm_dyn": False,
    "skip_cfg_below_sigma": 0.0, "lora_unet_weights": None, "lora_clip_weights": None,
    "uc": "lowres, bad anatomy, bad hands, text, error",
    "request_type": "PromptGenerateRequest", "signed_hash": "nH1i8yvWNiqRPMj7bA==",
}

NAI_V4_COMMENT: dict[str, Any] = {
    "prompt": "2girls, cafe interior, warm lighting, very aesthetic",
    "steps": 23, "height": 832, "width": 1216, "scale": 6.0, "uncond_scale": 0.0,
    "cfg_rescale": 0.2, "seed": 3543678127, "n_samples": 1, "noise_schedule": "karras",
    "legacy_v3_extend": False, "reference_information_extracted_multiple": [],
    "reference_strength_multiple": [], "sampler": "k_dpmpp_2m", "controlnet_strength": 1.0,
    "controlnet_model": None, "dynamic_thresholding": False, "skip_cfg_above_sigma": None,
    "skip_cfg_below_sigma": 0.0, "lora_unet_weights": None, "lora_clip_weights": None,
    "deliberate_euler_ancestral_bug": False, "prefer_brownian": True,
    "cfg_sched_eligibility": "enable_for_post_summer_samplers", "explike_fine_detail": False,
    "minimize_sigma_inf": False, "uncond_per_vibe": True, "wonky_vibe_correlation": True,
    "version": 1,
    "v4_prompt": {"caption": {
        "base_caption": "2girls, cafe interior, warm lighting, very aesthetic",
        "char_captions": [
            {"char_caption": "girl, red hair, green eyes, holding cup",
             "centers": [{"x": 0.3, "y": 0.5}]},
            {"char_caption": "girl, black hair, glasses, reading book",
             "centers": [{"x": 0.7, "y": 0.5}]}]},
        "use_coords": True, "use_order": True},
    "v4_negative_prompt": {"caption": {
        "base_caption": "blurry, lowres, error, worst quality",
        "char_captions": [{"char_caption": "extra fingers", "centers": [{"x": 0.3, "y": 0.5}]},
                          {"char_caption": "", "centers": [{"x": 0.7, "y": 0.5}]}]},
        "legacy_uc": False},
    "uc": "blurry, lowres, error, worst quality",
    "request_type": "PromptGenerateRequest", "signed_hash": "Hk0d1+9t0sE=",
}


def novelai_png(path: Path, comment: dict[str, Any] = NAI_V4_COMMENT,
                source: str = "NovelAI Diffusion V4.5 4BDE2A90", **kw: Any) -> Path:
    texts = [("Title", "NovelAI generated image"),
             ("Description", comment["v4_prompt"]["caption"]["base_caption"]
              if "v4_prompt" in comment else comment["prompt"]),
             ("Software", "NovelAI"), ("Source", source), ("Generation time", "5.2"),
             ("Comment", json.dumps(comment))]
    return png_with_texts(path, texts, **kw)


# -- InvokeAI ----------------------------------------------------------------------------

INVOKE3_META: dict[str, Any] = {
    "generation_mode": "txt2img", "positive_prompt": "a cozy cabin in snowy mountains, dusk",
    "negative_prompt": "lowres, jpeg artifacts", "width": 512, "height": 768, "seed": 98765,
    "rand_device": "cpu", "cfg_scale": 7.5, "steps": 30, "scheduler": "euler", "clip_skip": 0,
    "model": {"model_name": "stable-diffusion-v1-5", "base_model": "sd-1",
              "model_type": "main"},
    "controlnets": [], "ipAdapters": [], "t2iAdapters": [],
    "loras": [{"lora": {"model_name": "add_detail", "base_model": "sd-1"}, "weight": 0.75}],
    "vae": None, "positive_style_prompt": "", "negative_style_prompt": "",
    "app_version": "3.6.0",
}

INVOKE4_META: dict[str, Any] = {
    "generation_mode": "sdxl_txt2img", "positive_prompt": "an astronaut riding a horse, 35mm",
    "negative_prompt": "cartoon", "width": 1024, "height": 1024, "seed": 3141,
    "rand_device": "cpu", "cfg_scale": 6.0, "cfg_rescale_multiplier": 0, "steps": 25,
    "scheduler": "dpmpp_2m_k", "model": {
        "key": "2a8ee1d3-9b4c-4c38-8d2f-a4e0f0b6e9f4", "hash": "blake3:9c1ff3f2a1b0e7",
        "name": "Juggernaut XL v9", "base": "sdxl", "type": "main"},
    "loras": [{"model": {"key": "5f0c", "hash": "blake3:77aa", "name": "pixel-art-xl",
                         "base": "sdxl", "type": "lora"}, "weight": 0.6}],
    "vae": {"key": "v1", "hash": "blake3:00ff", "name": "sdxl-vae-fp16-fix", "base": "sdxl",
            "type": "vae"},
    "positive_style_prompt": "cinematic", "negative_style_prompt": "",
    "app_version": "4.2.9",
}

INVOKE3_GRAPH: dict[str, Any] = {
    "id": "text_to_image_graph",
    "nodes": {
        "main_model_loader": {"id": "main_model_loader", "type": "main_model_loader",
                              "is_intermediate": True,
                              "model": {"model_name": "dreamshaper-8", "base_model": "sd-1",
                                        "model_type": "main"}},
        "lora_loader_add_detail": {"id": "lora_loader_add_detail", "type": "lora_loader",
                                   "lora": {"model_name": "add_detail", "base_model": "sd-1"},
                                   "weight": 0.5},
        "positive_conditioning": {"id": "positive_conditioning", "type": "compel",
                                  "prompt": "a watercolor fox in autumn leaves"},
        "negative_conditioning": {"id": "negative_conditioning", "type": "compel",
                                  "prompt": "photo, 3d"},
        "noise": {"id": "noise", "type": "noise", "seed": 5150, "width": 640, "height": 512,
                  "use_cpu": True},
        "denoise_latents": {"id": "denoise_latents", "type": "denoise_latents",
                            "cfg_scale": 8.0, "scheduler": "dpmpp_2m", "steps": 35,
                            "denoising_start": 0, "denoising_end": 1},
        "latents_to_image": {"id": "latents_to_image", "type": "l2i", "fp32": False},
    },
    "edges": [
        {"source": {"node_id": "positive_conditioning", "field": "conditioning"},
         "destination": {"node_id": "denoise_latents", "field": "positive_conditioning"}},
        {"source": {"node_id": "negative_conditioning", "field": "conditioning"},
         "destination": {"node_id": "denoise_latents", "field": "negative_conditioning"}},
        {"source": {"node_id": "noise", "field": "noise"},
         "destination": {"node_id": "denoise_latents", "field": "noise"}},
        {"source": {"node_id": "denoise_latents", "field": "latents"},
         "destination": {"node_id": "latents_to_image", "field": "latents"}},
    ],
}


def invokeai_png(path: Path, metadata: dict[str, Any] | None = INVOKE4_META,
                 graph: dict[str, Any] | None = None, workflow: bool = True,
                 **kw: Any) -> Path:
    texts = []
    if metadata is not None:
        texts.append(("invokeai_metadata", json.dumps(metadata)))
    if workflow:
        texts.append(("invokeai_workflow", json.dumps({"name": "", "nodes": [], "edges": [],
                                                       "meta": {"version": "3.0.0"}})))
    if graph is not None:
        texts.append(("invokeai_graph", json.dumps(graph)))
    return png_with_texts(path, texts, **kw)


def invokeai2_png(path: Path, **kw: Any) -> Path:
    """InvokeAI 2.3 (pngwriter): "Dream" and "sd-metadata"."""
    meta = {"model": "stable diffusion", "model_weights": "stable-diffusion-1.5",
            "model_hash": "cc6cb27103417325ff94f52b7a5d2dde45a7515b25c255d8e396c90014281516",
            "app_id": "invoke-ai/InvokeAI", "app_version": "2.3.5",
            "image": {"prompt": [{"prompt": "a castle on a cliff [fog, blurry]",
                                  "weight": 1.0}],
                      "steps": 50, "cfg_scale": 7.5, "threshold": 0, "perlin": 0,
                      "height": 512, "width": 512, "seed": 2718281, "seamless": False,
                      "hires_fix": False, "type": "txt2img", "postprocessing": None,
                      "sampler": "k_lms", "variations": []}}
    dream = '"a castle on a cliff [fog, blurry]" -s 50 -S 2718281 -W 512 -H 512 -C 7.5 -A k_lms'
    return png_with_texts(path, [("Dream", dream), ("sd-metadata", json.dumps(meta))], **kw)


# -- SwarmUI ------------------------------------------------------------------------------

SWARM_DOC: dict[str, Any] = {
    "sui_image_params": {
        "prompt": "a glass teapot on a wooden table, <lora:teapot_style:0.6>",
        "negativeprompt": "blurry, watermark", "model": "OfficialStableDiffusion/sd_xl_base_1.0",
        "seed": 1618033, "steps": 24, "cfgscale": 6.5, "aspectratio": "Custom",
        "width": 1152, "height": 896, "sampler": "dpmpp_2m", "scheduler": "karras",
        "loras": ["Styles/film_grain", "detail"], "loraweights": ["0.8", "0.5"],
        "automaticvae": True, "refinercontrolpercentage": 0.2, "swarm_version": "0.9.6.2",
    },
    "sui_extra_data": {"date": "2025-06-01", "prep_time": "0.31 sec",
                       "generation_time": "4.84 sec"},
    "sui_models": [{"name": "OfficialStableDiffusion/sd_xl_base_1.0.safetensors",
                    "param": "model", "hash": "0x" + "d7a9105a" * 8}],
}


def _swarm_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)  # "human-readable format"


def swarm_png(path: Path, doc: dict[str, Any] = SWARM_DOC, **kw: Any) -> Path:
    """ImageSharp's PngEncoder: keyword "parameters", no language tag; compressed past
    TextCompressionThreshold (1,024), iTXt for text outside latin-1."""
    text = _swarm_text(doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    latin1 = all(ord(c) < 256 for c in text)
    if latin1:
        info.add_text("parameters", text, zip=len(text) > 1024)
    else:
        info.add_itxt("parameters", text, zip=len(text) > 1024)
    _pixels(kw.pop("size", (64, 48))).save(path, pnginfo=info)
    return path


def _tiff_le(entries0: list[tuple[int, int, bytes]], exif_entries: list[tuple[int, int, bytes]]
             ) -> bytes:
    """A little-endian TIFF: IFD0 with an Exif IFD pointer, then the Exif IFD."""
    def ifd(entries: list[tuple[int, int, bytes]], start: int) -> bytes:
        head = struct.pack("<H", len(entries))
        data = b""
        data_start = start + 2 + 12 * len(entries) + 4
        for tag, typ, value in entries:
            count = len(value) if typ in (1, 2, 7) else len(value) // 4
            if len(value) <= 4:
                head += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\0")
            else:
                head += struct.pack("<HHII", tag, typ, count, data_start + len(data))
                data += value + (b"\0" if len(value) % 2 else b"")
        return head + struct.pack("<I", 0) + data

    first = ifd(entries0 + [(0x8769, 4, struct.pack("<I", 0))], 8)
    exif_at = 8 + len(first)
    first = ifd(entries0 + [(0x8769, 4, struct.pack("<I", exif_at))], 8)
    return b"II*\0" + struct.pack("<I", 8) + first + ifd(exif_entries, exif_at)


def swarm_jpeg(path: Path, doc: dict[str, Any] = SWARM_DOC, size: tuple[int, int] = (64, 48)
               ) -> Path:
    """ImageSharp: ``ExifProfile.SetValue(ExifTag.UserComment, text)``: an EncodedString
    with the Unicode code, written in the profile's (little-endian) byte order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    comment = b"UNICODE\0" + _swarm_text(doc).encode("utf-16-le")
    tiff = _tiff_le([(0x011A, 5, struct.pack("<II", 72, 1))], [(0x9286, 7, comment)])
    _pixels(size).save(path, "JPEG", quality=90, exif=b"Exif\0\0" + tiff)
    return path


# -- Fooocus ------------------------------------------------------------------------------

FOOOCUS_FIELDS: list[tuple[str, str, Any]] = [  # (label, key, value) as save_and_log builds
    ("Prompt", "prompt", "a cat astronaut floating in space"),
    ("Negative Prompt", "negative_prompt", "unrealistic, saturated"),
    ("Fooocus V2 Expansion", "prompt_expansion",
     "a cat astronaut floating in space, intricate, highly detailed, cinematic"),
    ("Styles", "styles", "['Fooocus V2', 'Fooocus Enhance', 'Fooocus Sharp']"),
    ("Performance", "performance", "Speed"), ("Steps", "steps", 30),
    ("Resolution", "resolution", "(1152, 896)"), ("Guidance Scale", "guidance_scale", 4),
    ("Sharpness", "sharpness", 2), ("ADM Guidance", "adm_guidance", "(1.5, 0.8, 0.3)"),
    ("Base Model", "base_model", "juggernautXL_v8Rundiffusion.safetensors"),
    ("Refiner Model", "refiner_model", "None"), ("Refiner Switch", "refiner_switch", 0.5),
    ("Sampler", "sampler", "dpmpp_2m_sde_gpu"), ("Scheduler", "scheduler", "karras"),
    ("VAE", "vae", "Default (model)"), ("Seed", "seed", "6617028264713"),
    ("LoRA 1", "lora_combined_1", "sd_xl_offset_example-lora_1.0.safetensors : 0.1"),
    ("Metadata Scheme", "metadata_scheme", "fooocus"),
    ("Version", "version", "Fooocus v2.5.5"),
]


def fooocus_json_text(fields: list[tuple[str, str, Any]] = FOOOCUS_FIELDS) -> str:
    """FooocusMetadataParser.to_string: LoRA names to stems, plus its own keys, sorted."""
    res: dict[str, Any] = {}
    for _label, key, value in fields:
        if key.startswith("lora_combined_"):
            name, weight = value.split(" : ")
            value = f"{Path(name).stem} : {weight}"
        res[key] = value
    res["full_prompt"] = [res["prompt"], "intricate, highly detailed, cinematic"]
    res["full_negative_prompt"] = [res["negative_prompt"], "(worst quality, low quality:1.4)"]
    res["steps"] = 30
    res["base_model"] = "juggernautXL_v8Rundiffusion"
    res["base_model_hash"] = "aeb7e9e689"
    res["vae"] = "Default (model)"
    res["loras"] = [["sd_xl_offset_example-lora_1.0", 0.1, "4852686128"]]
    return json.dumps(dict(sorted(res.items())))


FOOOCUS_A1111 = (
    "a cat astronaut floating in space, intricate, highly detailed, cinematic\n"
    "Negative prompt: unrealistic, saturated, (worst quality, low quality:1.4)\n"
    "Steps: 30, Sampler: DPM++ 2M SDE Karras, Seed: 6617028264713, Size: 1152x896, "
    "CFG scale: 4, Sharpness: 2, ADM Guidance: \"(1.5, 0.8, 0.3)\", "
    "Model: juggernautXL_v8Rundiffusion, Model hash: aeb7e9e689, Performance: Speed, "
    "Scheduler: karras, VAE: Default (model), Raw prompt: a cat astronaut floating in space, "
    "Raw negative prompt: unrealistic, saturated, "
    "Lora hashes: \"sd_xl_offset_example-lora_1.0: 4852686128\", "
    "Lora weights: \"sd_xl_offset_example-lora_1.0: 0.1\", Version: Fooocus v2.5.5"
)


def fooocus_png(path: Path, scheme: str = "fooocus", **kw: Any) -> Path:
    text = fooocus_json_text() if scheme == "fooocus" else FOOOCUS_A1111
    return png_with_texts(path, [("parameters", text), ("fooocus_scheme", scheme)], **kw)


def fooocus_exif(path: Path, scheme: str = "fooocus", fmt: str = "JPEG",
                 size: tuple[int, int] = (64, 48)) -> Path:
    """meta_parser.get_exif: a Pillow ``Image.Exif`` with the tags set in IFD0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x9286] = fooocus_json_text() if scheme == "fooocus" else FOOOCUS_A1111
    exif[0x0131] = "Fooocus v2.5.5"
    exif[0x927C] = scheme
    _pixels(size).save(path, fmt, quality=95, exif=exif)
    return path


def fooocus_log(folder: Path, entries: list[tuple[str, list[tuple[str, str, Any]]]],
                layout: str = "2.5") -> Path:
    """log.html as ``private_logger.log`` writes it, newest entry first. ``layout``:
    "2.5" (label/key/value, JSON by key), "2.1.854" (key/value, JSON by label),
    "2.1.7" (paragraphs, no JSON)."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for name, fields in entries:
        div = name.replace(".", "_")
        if layout == "2.1.7":
            item = f'<div id="{div}">\n<table><tr><td><img src="{name}" width=auto height=100%'
            item += " loading=lazy style=\"height:auto;max-width:512px\" onerror=\"document."
            item += f"getElementById('{div}').style.display = 'none';\"></img></p></td>"
            item += f"<td><p>{name}</p>\n"
            for i, (label, _key, v) in enumerate(fields):
                if i < 3:
                    item += f"<p>{label}: <b>{v}</b></p>\n"
                elif (i - 3) % 2 == 0:
                    item += f"<p>{label}: <b>{v}</b>, "
                else:
                    item += f"{label}: <b>{v}</b></p>\n"
            item += "</td></tr></table><hr></div>\n"
        else:
            cls = "label" if layout == "2.5" else "key"
            item = f"<div id=\"{div}\" class=\"image-container\"><hr><table><tr>\n"
            item += (f"<td><a href=\"{name}\" target=\"_blank\"><img src='{name}' "
                     f"onerror=\"this.closest('.image-container').style.display='none';\" "
                     f"loading='lazy'/></a><div>{name}</div></td>")
            item += "<td><table class='metadata'>"
            for label, _key, value in fields:
                value_txt = str(value).replace("\n", " </br> ")
                item += (f"<tr><td class='{cls}'>{label}</td>"
                         f"<td class='value'>{value_txt}</td></tr>\n")
            item += "</table>"
            doc = {(k if layout == "2.5" else label): v for label, k, v in fields}
            js_txt = urllib.parse.quote(json.dumps(doc, indent=0), safe="")
            item += f"</br><button onclick=\"to_clipboard('{js_txt}')\">Copy to Clipboard</button>"
            item += "</td></tr></table></div>\n\n"
        items.append(item)
    middle = "".join(reversed(items))  # each new entry goes first
    if layout == "2.1.7":
        html = middle + "<p>Fooocus Log 2023-11-30 (private)</p>\n<p>All images do not " \
            "contain any hidden data.</p>"
    else:
        html = ("<!DOCTYPE html><html><head><title>Fooocus Log 2024-05-01</title></head>"
                "<body><p>Fooocus Log 2024-05-01 (private)</p>\n<!--fooocus-log-split-->\n\n"
                + middle + "\n<!--fooocus-log-split--></body></html>")
    (folder / "log.html").write_text(html, encoding="utf-8")
    return folder / "log.html"


# -- stealth ------------------------------------------------------------------------------


def stealth_png(path: Path, text: str, mode: str = "alpha", compressed: bool = True,
                size: tuple[int, int] = (96, 96), keep_text: bool = False) -> Path:
    """An A1111 image whose infotext is also (or only) in the pixels' low bits."""
    sig = f"stealth_{'png' if mode == 'alpha' else 'rgb'}{'comp' if compressed else 'info'}"
    payload = gzip.compress(text.encode()) if compressed else text.encode()
    bits = "".join(format(b, "08b") for b in sig.encode())
    body = "".join(format(b, "08b") for b in payload)
    bits += format(len(body), "032b") + body
    return stealth_bits_png(path, bits, mode, size, text if keep_text else None)


def stealth_bits_png(path: Path, bits: str, mode: str = "alpha",
                     size: tuple[int, int] = (96, 96), text: str | None = None) -> Path:
    """The extension's ``add_data``: ``bits`` into the low bits, column by column."""
    im = _pixels(size, (120, 130, 140))
    if mode == "alpha":
        im.putalpha(255)
    px = im.load()
    assert px is not None
    w, h = im.size
    assert len(bits) <= w * h * (1 if mode == "alpha" else 3), "image too small"
    i = 0
    for x in range(w):
        for y in range(h):
            if i >= len(bits):
                break
            if mode == "alpha":
                r, g, b, a = px[x, y]
                px[x, y] = (r, g, b, (a & ~1) | int(bits[i]))
                i += 1
            else:
                r, g, b = px[x, y][:3]
                r = (r & ~1) | int(bits[i])
                if i + 1 < len(bits):
                    g = (g & ~1) | int(bits[i + 1])
                if i + 2 < len(bits):
                    b = (b & ~1) | int(bits[i + 2])
                px[x, y] = (r, g, b)
                i += 3
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("parameters", text)
    im.save(path, pnginfo=info)
    return path
