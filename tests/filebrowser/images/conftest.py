"""Helpers for the image tests: real images written with Pillow, the way generators do.

- A1111 PNG: a ``parameters`` text chunk via ``PngInfo.add_text`` (tEXt when latin-1,
  iTXt otherwise, or forced iTXt/zTXt), exactly what ``modules/images.py`` does.
- A1111 JPEG/WebP: EXIF ExifIFD UserComment = b"UNICODE\\0" + UTF-16BE (piexif's
  ``UserComment.dump(..., encoding="unicode")``), in a big- or little-endian TIFF.
- ComfyUI PNG: ``prompt`` (API graph) and ``workflow`` (editor graph) JSON text chunks.
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

A1111_TEXT = (
    "masterpiece, best quality, 1girl, red hair, (blue eyes:1.2), <lora:add_detail:0.8>,\n"
    "forest background, <lora:styleX_v2:1.1>\n"
    "Negative prompt: lowres, bad hands, (worst quality:1.4)\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, "
    "Size: 512x768, Model hash: 45dee52b, Model: anything-v5, VAE: vae-ft-mse.safetensors, "
    "Denoising strength: 0.45, Clip skip: 2, Hires upscale: 2, Hires steps: 10, "
    "Hires upscaler: 4x-UltraSharp, ADetailer model: face_yolov8n.pt, "
    'ADetailer prompt: "smile, closed eyes: 1", ADetailer confidence: 0.3, '
    'Lora hashes: "add_detail: 7c6bad76eb54, styleX_v2: 0123456789ab", Version: v1.10.1'
)

CHINESE_TEXT = (
    "杰作, 一个红发女孩, 森林, <lora:汉服:0.7>\n"
    "Negative prompt: 低质量, 模糊\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512, Model: 国风模型"
)

COMFY_PROMPT = {
    "3": {"class_type": "KSampler", "inputs": {
        "seed": 156680208700286, "steps": 20, "cfg": 8.0, "sampler_name": "euler",
        "scheduler": "normal", "denoise": 1.0, "model": ["10", 0], "positive": ["6", 0],
        "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple",
          "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage",
          "inputs": {"width": 640, "height": 384, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {
        "text": "beautiful scenery nature glass bottle landscape, purple galaxy bottle",
        "clip": ["10", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark",
                                                     "clip": ["10", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "10": {"class_type": "LoraLoader", "inputs": {
        "lora_name": "glassy.safetensors", "strength_model": 0.75, "strength_clip": 1.0,
        "model": ["4", 0], "clip": ["4", 1]}},
}

COMFY_WORKFLOW = {
    "last_node_id": 10, "last_link_id": 9,
    "nodes": [
        {"id": 3, "type": "KSampler", "inputs": [
            {"name": "model", "link": 1}, {"name": "positive", "link": 4},
            {"name": "negative", "link": 6}],
         "widgets_values": [99, "randomize", 25, 5.5, "dpmpp_2m", "karras", 1]},
        {"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": ["sdxl_base.safetensors"]},
        {"id": 6, "type": "CLIPTextEncode", "widgets_values": ["a castle on a hill"]},
        {"id": 7, "type": "CLIPTextEncode", "widgets_values": ["blurry"]},
    ],
    "links": [[1, 4, 0, 3, 0, "MODEL"], [4, 6, 0, 3, 1, "CONDITIONING"],
              [6, 7, 0, 3, 2, "CONDITIONING"]],
}


def _pixels(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 40, 40),
            mode: str = "RGB") -> Image.Image:
    im = Image.new(mode, size, color if mode == "RGB" else color[0])
    # a gradient so thumbnails of different images differ
    for x in range(0, size[0], 4):
        im.putpixel((x, 0), (x % 256, 0, 0) if mode == "RGB" else x % 256)
    return im


def write_png(path: Path, text: str | None = A1111_TEXT, *, chunk: str = "auto",
              extra: dict[str, str] | None = None, size: tuple[int, int] = (64, 48),
              color: tuple[int, int, int] = (200, 40, 40)) -> Path:
    """An A1111 PNG. ``chunk``: auto (Pillow decides, like A1111), itxt, ztxt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if text is not None:
        if chunk == "auto":
            info.add_text("parameters", text)
        elif chunk == "itxt":
            info.add_itxt("parameters", text)
        elif chunk == "ztxt":
            info.add_text("parameters", text, zip=True)
    for k, v in (extra or {}).items():
        info.add_text(k, v)
    _pixels(size, color).save(path, pnginfo=info)
    return path


def comfy_png(path: Path, prompt: Any = COMFY_PROMPT, workflow: Any = COMFY_WORKFLOW) -> Path:
    extra = {}
    if prompt is not None:
        extra["prompt"] = json.dumps(prompt)
    if workflow is not None:
        extra["workflow"] = json.dumps(workflow)
    return write_png(path, None, extra=extra)


def user_comment(text: str, encoding: str = "unicode-be") -> bytes:
    if encoding == "unicode-be":
        return b"UNICODE\0" + text.encode("utf-16-be")
    if encoding == "unicode-le":
        return b"UNICODE\0" + text.encode("utf-16-le")
    return b"ASCII\0\0\0" + text.encode("ascii")


def exif_bytes(text: str, *, endian: str = ">", encoding: str = "unicode-be") -> bytes:
    ex = Image.Exif()
    ex.endian = endian
    ex.get_ifd(0x8769)[0x9286] = user_comment(text, encoding)
    return ex.tobytes()


def write_exif_image(path: Path, text: str, fmt: str = "JPEG", **kw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _pixels().save(path, fmt, exif=exif_bytes(text, **kw), quality=90)
    return path


def png_bomb(path: Path, width: int = 50_000, height: int = 50_000) -> Path:
    """A tiny PNG whose header claims width x height pixels (2.5 gigapixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\0" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
                     + chunk(b"IEND", b""))
    return path


def bump_mtime(path: Path, seconds: float = 5.0) -> None:
    """Move a file's mtime forward, as a rewrite a few seconds later would."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(seconds * 1e9)))


def wait_until(cond: Callable[[], Any], timeout: float = 20.0, every: float = 0.05,
               what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last value {last!r}")
