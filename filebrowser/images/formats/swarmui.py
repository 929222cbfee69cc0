"""SwarmUI: the JSON its ``ImageFile`` writes (docs/Image Metadata Format.md).

::

    PNG   text chunk "parameters" (ImageSharp: tEXt, zTXt past 1 KiB, iTXt if not latin-1)
    JPEG  EXIF UserComment, "UNICODE\\0" + UTF-16 in the TIFF's (little-endian) order,
          as ImageSharp writes a .NET string
    {"sui_image_params": {"prompt", "negativeprompt", "model" ("Folder/name", no
                          extension), "seed", "steps", "cfgscale", "width", "height",
                          "aspectratio", "sampler", "scheduler", "loras": [...] | "a,b",
                          "loraweights", "vae", "clipstopatlayer", "initimagecreativity",
                          "refinermodel", "swarm_version", ... any parameter id},
     "sui_extra_data": {"date", "prep_time", "generation_time", "original_prompt", ...},
     "sui_models": [{"name": "Folder/name.safetensors", "param": "model",
                     "hash": "0x<sha256>"}]}

Values are often strings ("1.0"); lists may be JSON lists or comma-separated strings.
Parameter ids are lower-case names without spaces; the ones not mapped to a field are
kept (``extra``), so every parameter is searchable.
"""

from __future__ import annotations

import json
from typing import Any

from ..infotext import GenParams, add_lora, as_float, as_int, embeddings_in, loras_in, model_name

_FIELDS = {"prompt", "negativeprompt", "model", "seed", "steps", "cfgscale", "width", "height",
           "sampler", "scheduler", "loras", "loraweights", "vae", "clipstopatlayer",
           "initimagecreativity", "swarm_version", "images", "batchsize"}


def is_swarmui(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("sui_image_params"), dict)


def _list(v: Any) -> list[str]:
    if isinstance(v, list):
        return [str(x).strip() for x in v if str(x).strip()]
    if isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    return []


def _text(v: Any) -> str:
    return v.strip() if isinstance(v, str) else ""


def parse_swarmui(doc: dict[str, Any], raw: str = "") -> GenParams:
    p: dict[str, Any] = doc["sui_image_params"]
    g = GenParams(source="swarmui", raw=raw)
    g.prompt = _text(p.get("prompt"))
    g.negative_prompt = _text(p.get("negativeprompt"))
    g.model = model_name(p.get("model"))
    g.seed = as_int(p.get("seed"))
    g.steps = as_int(p.get("steps"))
    g.cfg_scale = as_float(p.get("cfgscale"))
    g.width, g.height = as_int(p.get("width")), as_int(p.get("height"))
    s, sch = p.get("sampler"), p.get("scheduler")
    g.sampler = s if isinstance(s, str) and s else None
    g.scheduler = sch if isinstance(sch, str) and sch else None
    vae = p.get("vae")
    g.vae = model_name(vae) if isinstance(vae, str) and vae.lower() not in ("", "none") else None
    clip = as_int(p.get("clipstopatlayer"))
    g.clip_skip = abs(clip) if clip else None
    if p.get("initimagecreativity") is not None:
        g.denoising_strength = as_float(p.get("initimagecreativity"))
    v = p.get("swarm_version")
    g.version = f"SwarmUI {v}" if isinstance(v, str | int | float) and v != "" else None
    weights = _list(p.get("loraweights"))
    for i, name in enumerate(_list(p.get("loras"))):
        n = model_name(name)
        if n:
            add_lora(g.loras, n, as_float(weights[i]) if i < len(weights) else None)
    for lo in loras_in(g.prompt):  # <lora:name:w> in the prompt, Swarm's other way
        add_lora(g.loras, model_name(lo.name) or lo.name, lo.weight)
    pos = embeddings_in(g.prompt)
    g.embeddings = pos + [e for e in embeddings_in(g.negative_prompt) if e not in pos]
    for key, value in p.items():
        if key in _FIELDS or value is None or value == "":
            continue
        g.extra[key] = value if isinstance(value, str) else _scalar(value)
    extra = doc.get("sui_extra_data")
    if isinstance(extra, dict):
        for key in ("original_prompt", "original_negativeprompt", "date", "generation_time"):
            if isinstance(extra.get(key), str | int | float) and extra[key] != "":
                g.extra[key] = str(extra[key])
    for m in doc.get("sui_models") or []:
        if isinstance(m, dict) and m.get("param") == "model" and isinstance(m.get("hash"), str):
            g.model_hash = m["hash"][:80]
    return g


def _scalar(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)[:2000]
