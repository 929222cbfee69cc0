"""NovelAI: the PNG text chunks its image generation writes.

::

    Title        "NovelAI generated image"
    Description  the prompt (v4: the base caption)
    Software     "NovelAI"
    Source       the model and its short hash: "NovelAI Diffusion V4.5 4BDE2A90",
                 "Stable Diffusion XL C1E1DE52" (v3 anime)
    Comment      JSON: prompt, uc (the negative), steps, scale (CFG), seed, sampler
                 ("k_euler_ancestral"), noise_schedule, width, height, cfg_rescale,
                 strength/noise (img2img), request_type, signed_hash ...
                 v4 adds v4_prompt / v4_negative_prompt:
                     {"caption": {"base_caption": str,
                                  "char_captions": [{"char_caption": str, "centers": [...]}]},
                      "use_coords": bool, "use_order": bool}   (negative: "legacy_uc")

NovelAI also hides the same chunks as JSON in the alpha channel (``stealth_pngcomp``),
which :mod:`.stealth` decodes when enabled. Samplers and schedules are given A1111's
names (``k_euler_ancestral`` -> ``Euler a``) so the facets group them with A1111's.
"""

from __future__ import annotations

import re
from typing import Any

from ..infotext import GenParams, as_float, as_int
from .comfyui import load_json

_DICT_LIST = (dict, list)  # (a "dict | list" union is built at every call)

SAMPLERS = {
    "k_euler": "Euler", "k_euler_ancestral": "Euler a", "k_heun": "Heun", "k_lms": "LMS",
    "k_dpm_2": "DPM2", "k_dpm_2_ancestral": "DPM2 a", "k_dpmpp_2s_ancestral": "DPM++ 2S a",
    "k_dpmpp_2m": "DPM++ 2M", "k_dpmpp_sde": "DPM++ SDE", "k_dpmpp_2m_sde": "DPM++ 2M SDE",
    "k_dpm_fast": "DPM fast", "k_dpm_adaptive": "DPM adaptive", "ddim": "DDIM",
    "ddim_v3": "DDIM", "plms": "PLMS",
}
SCHEDULES = {"karras": "Karras", "exponential": "Exponential",
             "polyexponential": "Polyexponential"}
_RE_SOURCE = re.compile(r"^(.*?)\s+([0-9A-Fa-f]{8})$")


def is_novelai(texts: dict[str, str]) -> bool:
    if texts.get("Software", "").strip() == "NovelAI":
        return True
    comment = texts.get("Comment", "")
    return comment.startswith("{") and '"uc"' in comment and '"steps"' in comment


def _caption(v: Any) -> tuple[str, list[str]]:
    """(base caption, character captions) of a v4 prompt object."""
    if not isinstance(v, dict) or not isinstance(v.get("caption"), dict):
        return "", []
    cap = v["caption"]
    base = cap.get("base_caption") if isinstance(cap.get("base_caption"), str) else ""
    chars = [c["char_caption"] for c in cap.get("char_captions") or []
             if isinstance(c, dict) and isinstance(c.get("char_caption"), str)
             and c["char_caption"].strip()]
    return base, chars


def parse_novelai(texts: dict[str, str]) -> GenParams:
    """Parameters from NovelAI's chunks; ``source`` ``novelai`` even when the Comment
    is unreadable (the Description still gives the prompt)."""
    g = GenParams(source="novelai", raw=texts.get("Comment", ""))
    c = load_json(texts.get("Comment"))
    c = c if isinstance(c, dict) else {}
    base, chars = _caption(c.get("v4_prompt"))
    prompt = base or (c["prompt"] if isinstance(c.get("prompt"), str) else "") \
        or texts.get("Description", "")
    # character prompts are part of what was asked for: searchable with the prompt
    g.prompt = "\n".join([prompt.strip(), *[x.strip() for x in chars]]).strip()
    nbase, nchars = _caption(c.get("v4_negative_prompt"))
    neg = nbase or (c["uc"] if isinstance(c.get("uc"), str) else "")
    g.negative_prompt = "\n".join([neg.strip(), *[x.strip() for x in nchars]]).strip()
    g.steps = as_int(c.get("steps"))
    g.cfg_scale = as_float(c.get("scale"))
    g.seed = as_int(c.get("seed"))
    g.width, g.height = as_int(c.get("width")), as_int(c.get("height"))
    sampler = c.get("sampler")
    if isinstance(sampler, str):
        g.sampler = SAMPLERS.get(sampler, sampler)
    sched = c.get("noise_schedule")
    if isinstance(sched, str):
        g.scheduler = SCHEDULES.get(sched, sched)
    if c.get("strength") is not None and c.get("request_type") != "PromptGenerateRequest":
        g.denoising_strength = as_float(c.get("strength"))
    source = texts.get("Source", "").strip()
    m = _RE_SOURCE.match(source) if len(source) <= 256 else None  # (.*?)\s+ backtracks
    g.model, g.model_hash = (m.group(1), m.group(2)) if m else (source or None, None)
    for key, label in (("cfg_rescale", "CFG rescale"), ("uncond_scale", "Uncond scale"),
                       ("noise", "Noise"), ("request_type", "Request type")):
        v = c.get(key)
        if v is not None and not isinstance(v, _DICT_LIST) and v != "":
            g.extra[label] = str(v)
    if c.get("sm") or c.get("sm_dyn"):
        g.extra["SMEA"] = "DYN" if c.get("sm_dyn") else "on"
    if chars:
        g.extra["Characters"] = str(len(chars))
    gen_time = texts.get("Generation time")
    if gen_time:
        g.extra["Generation time"] = gen_time
    return g
