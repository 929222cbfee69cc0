"""InvokeAI: core metadata, the graph, and the 2.x layouts.

What ``image_files_disk.save`` writes as PNG text chunks (``PngInfo.add_text``)::

    invokeai_metadata  3.x-5.x: the core metadata node's fields as JSON:
                       positive_prompt, negative_prompt, width, height, seed, steps,
                       cfg_scale, scheduler, clip_skip, strength, generation_mode,
                       positive_style_prompt, negative_style_prompt, hrf_*, app_version,
                       model  3.x {"model_name", "base_model", "model_type"}
                              4.x {"key", "hash" ("blake3:..."), "name", "base", "type"}
                       loras  3.x [{"lora": {"model_name", ...}, "weight"}]
                              4.x [{"model": {"name", ...}, "weight"}]
                       vae, refiner_model: as model
    invokeai_graph     the graph run: {"nodes": {id: {"type", fields...}},
                       "edges": [{"source": {"node_id", "field"},
                                  "destination": {"node_id", "field"}}]}
    invokeai_workflow  the editor workflow (not read: the graph says the same)
    sd-metadata        2.x JSON: model_weights, model_hash, app_version,
                       image {prompt: [{prompt, weight}] | str, steps, cfg_scale, seed,
                       width, height, sampler, type, strength}
    Dream              before 1.15: '"a prompt [negative]" -s 50 -S 42 -W 512 -H 512
                       -C 7.5 -A k_lms'

In 2.x prompts, ``[bracketed]`` parts are the negative prompt.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from ..infotext import GenParams, add_lora, as_float, as_int, model_name
from .comfyui import load_json

_DICT_LIST_BOOL = (dict, list, bool)  # (a union is built at every call)

KEYS = ("invokeai_metadata", "invokeai_graph", "sd-metadata", "Dream")
_RE_NEG = re.compile(r"\[(.+?)\]", re.S)
_DENOISE = ("denoise_latents", "t2l", "l2l", "flux_denoise", "sd3_denoise", "cogview4_denoise",
            "flux_denoise_meta", "denoise_latents_meta")
_TEXT = ("compel", "sdxl_compel_prompt", "sdxl_refiner_compel_prompt", "flux_text_encoder",
         "sd3_text_encoder", "cogview4_text_encoder", "string", "prompt")


def is_invokeai(texts: dict[str, str]) -> bool:
    return not texts.keys().isdisjoint(KEYS)


def _model(v: Any) -> tuple[str | None, str | None]:
    """(name, hash) of a model field of either generation."""
    if isinstance(v, str):
        return model_name(v), None
    if not isinstance(v, dict):
        return None, None
    name = v.get("name", v.get("model_name"))
    h = v.get("hash")
    return (model_name(name) if isinstance(name, str) else None,
            h if isinstance(h, str) and h else None)


def _core(g: GenParams, m: dict[str, Any]) -> None:
    """The core metadata fields (also the graph's core_metadata node)."""
    def s(key: str) -> str:
        v = m.get(key)
        return v if isinstance(v, str) else ""

    g.prompt = s("positive_prompt").strip()
    g.negative_prompt = s("negative_prompt").strip()
    g.width, g.height = as_int(m.get("width")), as_int(m.get("height"))
    g.seed = as_int(m.get("seed"))
    g.steps = as_int(m.get("steps"))
    g.cfg_scale = as_float(m.get("cfg_scale"))
    # InvokeAI's "scheduler" is the sampler and its schedule in one (euler, dpmpp_2m_k)
    g.sampler = s("scheduler") or None
    g.clip_skip = as_int(m.get("clip_skip")) or None
    if m.get("generation_mode") not in (None, "txt2img", "sdxl_txt2img", "flux_txt2img"):
        g.denoising_strength = as_float(m.get("strength"))
    g.model, h = _model(m.get("model"))
    g.model_hash = h[:80] if h else None
    vae, _ = _model(m.get("vae"))
    g.vae = vae
    for lo in m.get("loras") or []:
        if isinstance(lo, dict):
            name, h = _model(lo.get("model", lo.get("lora")))
            if name:
                add_lora(g.loras, name, as_float(lo.get("weight")), h)
    for key, label in (("positive_style_prompt", "Style prompt"),
                       ("negative_style_prompt", "Negative style prompt"),
                       ("generation_mode", "Mode"),
                       ("hrf_method", "Hires method"), ("hrf_strength", "Hires strength"),
                       ("rand_device", "RNG"), ("cfg_rescale_multiplier", "CFG rescale")):
        v = m.get(key)
        if v not in (None, "") and not isinstance(v, _DICT_LIST_BOOL):
            g.extra[label] = str(v)
    if m.get("hrf_enabled") is True:
        g.hires["enabled"] = "true"
    ref, _ = _model(m.get("refiner_model"))
    if ref:
        g.extra["Refiner"] = ref
    v = m.get("app_version")
    g.version = str(v) if isinstance(v, str | int | float) and v != "" else None


def _graph(g: GenParams, graph: dict[str, Any]) -> None:
    nodes = graph.get("nodes")
    if isinstance(nodes, list):  # older serialisations: a list of nodes
        nodes = {str(n.get("id")): n for n in nodes if isinstance(n, dict)}
    if not isinstance(nodes, dict):
        return
    nodes = {str(k): v for k, v in nodes.items() if isinstance(v, dict)}
    for n in nodes.values():
        if n.get("type") in ("core_metadata", "metadata_accumulator"):
            _core(g, n)
            if g.prompt or g.steps is not None:
                return
    into: dict[tuple[str, str], str] = {}
    for e in graph.get("edges") or []:
        if isinstance(e, dict) and isinstance(e.get("source"), dict) \
                and isinstance(e.get("destination"), dict):
            dst = (str(e["destination"].get("node_id")), str(e["destination"].get("field")))
            into[dst] = str(e["source"].get("node_id"))

    def text(nid: str | None, depth: int = 0) -> str:
        n = nodes.get(nid or "")
        if n is None or depth > 16:  # a cycle of edges ends here
            return ""
        for key in ("prompt", "value", "prompt_2", "t5_encoder_prompt"):
            if isinstance(n.get(key), str) and n[key].strip():
                return str(n[key])
        for field in ("prompt", "value"):
            up = into.get((nid or "", field))
            if up and up != nid:
                return text(up, depth + 1)
        return ""

    den = next((k for k, n in sorted(nodes.items()) if n.get("type") in _DENOISE), None)
    if den is not None:
        n = nodes[den]
        g.steps = as_int(n.get("steps", n.get("num_steps")))
        g.cfg_scale = as_float(n.get("cfg_scale", n.get("guidance")))
        sch = n.get("scheduler")
        g.sampler = sch if isinstance(sch, str) else None
        g.prompt = text(into.get((den, "positive_conditioning")) or
                        into.get((den, "positive_text_conditioning"))).strip()
        g.negative_prompt = text(into.get((den, "negative_conditioning")) or
                                 into.get((den, "negative_text_conditioning"))).strip()
        noise = nodes.get(into.get((den, "noise"), ""), n)
        g.seed = as_int(noise.get("seed", n.get("seed")))
        g.width = as_int(noise.get("width", n.get("width")))
        g.height = as_int(noise.get("height", n.get("height")))
    for n in nodes.values():
        t = str(n.get("type", ""))
        if t.endswith("model_loader") and g.model is None:
            g.model, h = _model(n.get("model"))
            g.model_hash = h[:80] if h else None
        elif "lora" in t and isinstance(n.get("lora"), dict):
            name, h = _model(n["lora"])
            if name:
                add_lora(g.loras, name, as_float(n.get("weight")), h)
        elif t in _TEXT and not g.prompt and isinstance(n.get("prompt"), str):
            g.prompt = n["prompt"].strip()


def _split(raw: str) -> tuple[str, str]:
    """2.x: the [bracketed] parts of a prompt are its negative."""
    negs = [m.strip().strip(",").strip() for m in _RE_NEG.findall(raw)]
    pos = _RE_NEG.sub("", raw)
    pos = re.sub(r"\s{2,}", " ", pos).strip().strip(",").strip()
    return pos, ", ".join(n for n in negs if n)


def _sd_metadata(g: GenParams, m: dict[str, Any]) -> None:
    img: dict[str, Any] = m["image"] if isinstance(m.get("image"), dict) else {}
    prompt = img.get("prompt")
    if isinstance(prompt, list):
        prompt = " ".join(p["prompt"] for p in prompt
                          if isinstance(p, dict) and isinstance(p.get("prompt"), str))
    if isinstance(prompt, str):
        g.prompt, g.negative_prompt = _split(prompt)
    g.steps = as_int(img.get("steps"))
    g.cfg_scale = as_float(img.get("cfg_scale"))
    g.seed = as_int(img.get("seed"))
    g.width, g.height = as_int(img.get("width")), as_int(img.get("height"))
    s = img.get("sampler")
    g.sampler = s if isinstance(s, str) else None
    if img.get("type") == "img2img":
        g.denoising_strength = as_float(img.get("strength"))
    g.model = model_name(m.get("model_weights")) if isinstance(m.get("model_weights"), str) \
        else None
    h = m.get("model_hash")
    g.model_hash = h[:80] if isinstance(h, str) and h else None
    v = m.get("app_version")
    g.version = v if isinstance(v, str) else None


def _dream(g: GenParams, text: str) -> None:
    try:
        parts = shlex.split(text)
    except ValueError:
        parts = text.split()
    words: list[str] = []
    opts: dict[str, str] = {}
    it = iter(parts)
    for p in it:
        if p.startswith("-") and len(p) >= 2 and not p[1].isdigit():
            opts[p.lstrip("-")] = next(it, "")
        else:
            words.append(p)
    g.prompt, g.negative_prompt = _split(" ".join(words))
    g.steps = as_int(opts.get("s", opts.get("steps")))
    g.seed = as_int(opts.get("S", opts.get("seed")))
    g.width = as_int(opts.get("W", opts.get("width")))
    g.height = as_int(opts.get("H", opts.get("height")))
    g.cfg_scale = as_float(opts.get("C", opts.get("cfg_scale")))
    g.sampler = opts.get("A", opts.get("sampler")) or None


def parse_invokeai(texts: dict[str, str]) -> tuple[GenParams, str]:
    """(parameters, the chunk they came from); never raises."""
    g = GenParams(source="invokeai")
    try:
        meta = load_json(texts.get("invokeai_metadata"))
        if isinstance(meta, dict):
            g.raw = texts["invokeai_metadata"]
            _core(g, meta)
            if g.prompt or g.steps is not None:
                return g, "png:invokeai_metadata"
        graph = load_json(texts.get("invokeai_graph"))
        if isinstance(graph, dict):
            g.raw = texts["invokeai_graph"]
            _graph(g, graph)
            return g, "png:invokeai_graph"
        sd = load_json(texts.get("sd-metadata"))
        if isinstance(sd, dict):
            g.raw = texts["sd-metadata"]
            _sd_metadata(g, sd)
            if g.prompt or not texts.get("Dream"):
                return g, "png:sd-metadata"
        if texts.get("Dream"):
            g.raw = texts["Dream"]
            _dream(g, texts["Dream"])
            return g, "png:Dream"
    except Exception:  # hostile metadata must not break indexing
        pass
    return g, "png:invokeai_metadata"
