"""ComfyUI: the API graph (``prompt``) and the editor graph (``workflow``) to parameters.

``SaveImage`` writes both as PNG text chunks (``nodes.py``: ``metadata.add_text("prompt",
json.dumps(prompt))`` and one chunk per ``extra_pnginfo`` key, i.e. ``workflow``); its
WebP/animated savers put ``prompt:{json}`` in EXIF Model and ``workflow:{json}`` in Make.

The API graph is ``{id: {"class_type", "inputs": {name: value | [from_id, slot]}}}``. The
sampler is found and each field is followed through the links that feed it::

    KSampler / KSamplerAdvanced      seed|noise_seed, steps, cfg, sampler_name, scheduler,
                                     positive, negative (inputs of the node itself)
    SamplerCustom                    noise_seed, cfg, positive, negative; sampler -> ...
    SamplerCustomAdvanced (Flux)     noise   -> RandomNoise.noise_seed
                                     guider  -> BasicGuider.conditioning
                                                | CFGGuider.cfg, positive, negative
                                                   -> FluxGuidance.guidance, conditioning
                                                      -> CLIPTextEncode.text
                                     sampler -> KSamplerSelect.sampler_name
                                     sigmas  -> BasicScheduler.scheduler, steps, denoise

A value given as a link (a seed from a primitive node) is resolved the same way. The
editor graph (``{"nodes": [{id, type, inputs: [{name, link}], widgets_values}],
"links": [[id, from, slot, to, slot, type]]}``) holds widget values by position, so
it is first turned into an API graph with the widget layout of each node type (and,
for custom samplers, by what the values look like); one walker reads both.

Model and LoRA names lose folders and extension (``SDXL/x.safetensors`` -> ``x``), as
A1111 writes them, so one model is one facet value whichever tool made the image.
"""

from __future__ import annotations

import json
from typing import Any

from ..infotext import (
    GenParams,
    add_lora,
    as_float,
    as_int,
    embeddings_in,
    model_name,
)

_STR_INT = (str, int)  # isinstance() tuples: a "str | int" union is built at every call
_DICT_LIST = (dict, list)

MAX_JSON = 64 << 20
_MAX_DEPTH = 32
_TEXT_KEYS = ("text", "text_g", "text_l", "clip_l", "t5xxl", "string", "value", "prompt",
              "populated_text", "wildcard_text", "text_positive", "positive_prompt")
_SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
_CONTROL = {"fixed", "increment", "decrement", "randomize"}  # control_after_generate
# ComfyUI's comfy.samplers.KSAMPLER_NAMES / SCHEDULER_NAMES (and common additions):
# how a custom sampler's widget strings are told apart.
_SAMPLER_NAMES = {
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
    "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "gradient_estimation",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "ddim", "uni_pc", "uni_pc_bh2"}
_SCHEDULER_NAMES = {"normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform",
                    "beta", "linear_quadratic", "kl_optimal", "AYS SDXL", "AYS SD1", "AYS SVD",
                    "GITS", "OSS FLUX", "OSS Wan", "OSS Chroma"}
# Editor-graph widget layouts: the names of widgets_values by position ("" = the
# control_after_generate value that follows a seed widget, not an input).
_LAYOUTS: dict[str, tuple[str, ...]] = {
    "KSampler": ("seed", "", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": ("add_noise", "noise_seed", "", "steps", "cfg", "sampler_name",
                         "scheduler", "start_at_step", "end_at_step",
                         "return_with_leftover_noise"),
    "SamplerCustom": ("add_noise", "noise_seed", "", "cfg"),
    "RandomNoise": ("noise_seed", ""),
    "BasicScheduler": ("scheduler", "steps", "denoise"),
    "KarrasScheduler": ("steps", "sigma_max", "sigma_min", "rho"),
    "ExponentialScheduler": ("steps", "sigma_max", "sigma_min"),
    "SDTurboScheduler": ("steps", "denoise"),
    "BetaSamplingScheduler": ("steps", "alpha", "beta"),
    "AlignYourStepsScheduler": ("model_type", "steps", "denoise"),
    "KSamplerSelect": ("sampler_name",),
    "CFGGuider": ("cfg",),
    "DualCFGGuider": ("cfg_conds", "cfg_cond2_negative", "style"),
    "FluxGuidance": ("guidance",),
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeFlux": ("clip_l", "t5xxl", "guidance"),
    "CLIPTextEncodeSDXL": ("width", "height", "crop_w", "crop_h", "target_width",
                           "target_height", "text_g", "text_l"),
    "CLIPTextEncodeSDXLRefiner": ("ascore", "width", "height", "text"),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "CheckpointLoader": ("config_name", "ckpt_name"),
    "UNETLoader": ("unet_name", "weight_dtype"),
    "UnetLoaderGGUF": ("unet_name",),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"),
    "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "VAELoader": ("vae_name",),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "EmptySD3LatentImage": ("width", "height", "batch_size"),
    "EmptyHunyuanLatentVideo": ("width", "height", "length", "batch_size"),
    "PrimitiveNode": ("value", ""),
}
_SEED_KEYS = ("seed", "noise_seed")
_EMPTY: dict[str, Any] = {}


def load_json(value: Any) -> Any:
    """A JSON document from a text chunk (or an already parsed value); None if not."""
    if isinstance(value, _DICT_LIST):
        return value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str) or not value or value.isspace():  # (no copy)
        return None
    try:
        return json.loads(value[:MAX_JSON])
    except (ValueError, RecursionError):
        return None


class Graph:
    """An API-format graph: ``{id: {"class_type", "inputs"}}``."""

    def __init__(self, nodes: dict[str, Any]) -> None:
        # class and inputs of each node, checked once (the walk asks for them often)
        self.classes: dict[str, str] = {}
        self.ins: dict[str, dict[str, Any]] = {}
        classes, ins = self.classes, self.ins
        for k, v in nodes.items():
            if isinstance(v, dict):
                c, i = v.get("class_type"), v.get("inputs")
                k = k if type(k) is str else str(k)
                classes[k] = c if type(c) is str or isinstance(c, str) else ""
                ins[k] = i if type(i) is dict or isinstance(i, dict) else {}
        self.nodes = self.classes

    def cls(self, nid: str | None) -> str:
        return self.classes.get(nid, "")  # type: ignore[arg-type]  # None: never a key

    def inputs(self, nid: str | None) -> dict[str, Any]:
        return self.ins.get(nid, _EMPTY)  # type: ignore[arg-type]  # None: never a key

    @staticmethod
    def link(value: Any) -> str | None:
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], _STR_INT) \
                and not isinstance(value[0], bool):
            return str(value[0])
        return None

    def source(self, nid: str | None, key: str) -> str | None:
        """The node an input of ``nid`` is linked from."""
        return self.link(self.inputs(nid).get(key))

    def value(self, value: Any, depth: int = 0) -> Any:
        """A widget value, following a link to the node that provides it (a primitive
        node, a "seed" node: the first scalar input it has)."""
        if not isinstance(value, list):  # most are literals: no call to link()
            return value
        nid = self.link(value)
        if nid is None:
            return value
        if depth > 4:
            return None
        inp = self.inputs(nid)
        for key in ("value", "seed", "noise_seed", "int", "number", "float", "text", "string"):
            if key in inp:
                return self.value(inp[key], depth + 1)
        for v in inp.values():
            if isinstance(v, int | float | str) and not isinstance(v, bool):
                return v
        return None

    def text(self, value: Any, extra: dict[str, str], depth: int = 0,
             seen: set[str] | None = None) -> str:
        """The prompt text an input leads to, following links through any node
        (combiners, guiders, ControlNet appliers); a FluxGuidance on the way is noted."""
        if isinstance(value, str):
            return value
        nid = self.link(value)
        seen = seen if seen is not None else set()
        if nid is None or nid in seen or depth > _MAX_DEPTH:
            return ""
        seen.add(nid)
        inputs = self.inputs(nid)
        if self.cls(nid) == "FluxGuidance":
            g = as_float(self.value(inputs.get("guidance")))
            if g is not None:
                extra.setdefault("Guidance", _num(g))
        parts: list[str] = []
        for key in _TEXT_KEYS:
            if key in inputs:
                t = self.text(inputs[key], extra, depth + 1, seen)
                if t and t not in parts:
                    parts.append(t)
        if parts:
            return "\n".join(parts)
        for key, v in inputs.items():
            if ("cond" in key or "positive" in key) and self.link(v):  # "conditioning" too
                t = self.text(v, extra, depth + 1, seen)
                if t and t not in parts:
                    parts.append(t)
        return "\n".join(parts)


def _num(v: float) -> str:
    return str(int(v)) if v.is_integer() else str(v)


def _sort_key(nid: str) -> tuple[int, str]:
    return (int(nid), nid) if nid.isdigit() else (1 << 62, nid)


def _is_sampler(graph: Graph, nid: str) -> bool:
    c = graph.cls(nid)
    if c in _SAMPLERS:
        return True
    # custom samplers (Efficiency, Impact, Inspire...): a "sampler" node taking a
    # prompt or a guider and a seed
    inp = graph.inputs(nid)
    return "sampler" in c.lower() and ("positive" in inp or "guider" in inp) and any(
        k in inp for k in ("seed", "noise_seed", "noise", "steps"))


def _from_sigmas(g: GenParams, graph: Graph, nid: str | None) -> None:
    """Steps and scheduler from the node that makes the sigmas."""
    if nid is None:
        return
    inp, c = graph.inputs(nid), graph.cls(nid)
    if g.steps is None:
        g.steps = as_int(graph.value(inp.get("steps")))
    sch = graph.value(inp.get("scheduler"))
    if isinstance(sch, str):
        g.scheduler = g.scheduler or sch
    elif c.endswith("Scheduler") and c != "BasicScheduler":
        g.scheduler = g.scheduler or c[: -len("Scheduler")].lower()
    if g.denoising_strength is None:
        d = as_float(graph.value(inp.get("denoise")))
        g.denoising_strength = d


def _from_sampler_node(g: GenParams, graph: Graph, nid: str | None) -> None:
    """The sampler name from a KSamplerSelect (or a SamplerXxx node's class)."""
    if nid is None or g.sampler:
        return
    s = graph.value(graph.inputs(nid).get("sampler_name"))
    if isinstance(s, str):
        g.sampler = s
    elif graph.cls(nid).startswith("Sampler"):
        g.sampler = graph.cls(nid)[len("Sampler"):].lower() or None


def _walk_model(graph: Graph, nid: str | None, depth: int = 0) -> str | None:
    """Follow ``model`` links up to the loader: the model the sampler really used."""
    seen: set[str] = set()
    while nid is not None and nid not in seen and depth < _MAX_DEPTH:
        seen.add(nid)
        inp = graph.inputs(nid)
        for key in ("ckpt_name", "unet_name", "model_name"):
            name = graph.value(inp.get(key))
            if isinstance(name, str):
                return name
        nid = graph.source(nid, "model")
        depth += 1
    return None


def _walk_size(graph: Graph, nid: str | None) -> tuple[int | None, int | None]:
    seen: set[str] = set()
    while nid is not None and nid not in seen and len(seen) < _MAX_DEPTH:
        seen.add(nid)
        inp = graph.inputs(nid)
        c = graph.cls(nid)
        if "LatentImage" in c or ("Latent" in c and "width" in inp):
            return as_int(graph.value(inp.get("width"))), as_int(graph.value(inp.get("height")))
        nid = graph.source(nid, "samples") or graph.source(nid, "latent_image") \
            or graph.source(nid, "latent")
    return None, None


def read_graph(g: GenParams, graph: Graph) -> None:
    """Fill ``g`` from an API-format graph."""
    try:  # ids are numbers in every graph ComfyUI writes: int() is the fast key
        ordered = sorted(graph.nodes, key=int) if all(map(str.isdigit, graph.nodes)) \
            else sorted(graph.nodes, key=_sort_key)
    except ValueError:  # digits int() refuses ("²")
        ordered = sorted(graph.nodes, key=_sort_key)
    classes = graph.classes  # (a node that is no sampler costs one lookup here)
    sampler_id = next((n for n in ordered if classes[n] in _SAMPLERS
                       or ("ampler" in classes[n].lower() and _is_sampler(graph, n))), None)
    extra: dict[str, str] = {}
    model_from = None
    if sampler_id is not None:
        inp = graph.inputs(sampler_id)
        seed = graph.value(inp.get("seed", inp.get("noise_seed")))
        noise = graph.source(sampler_id, "noise")
        if seed is None and noise is not None:
            seed = graph.value(graph.inputs(noise).get("noise_seed",
                                                        graph.inputs(noise).get("seed")))
        g.seed = as_int(seed)
        g.steps = as_int(graph.value(inp.get("steps")))
        g.cfg_scale = as_float(graph.value(inp.get("cfg")))
        s, sch = graph.value(inp.get("sampler_name")), graph.value(inp.get("scheduler"))
        g.sampler = s if isinstance(s, str) else None
        g.scheduler = sch if isinstance(sch, str) else None
        g.denoising_strength = as_float(graph.value(inp.get("denoise")))
        _from_sampler_node(g, graph, graph.source(sampler_id, "sampler"))
        _from_sigmas(g, graph, graph.source(sampler_id, "sigmas"))
        positive, negative = inp.get("positive"), inp.get("negative")
        model_from = sampler_id
        guider = graph.source(sampler_id, "guider")
        if guider is not None:
            ginp = graph.inputs(guider)
            positive = ginp.get("positive", ginp.get("conditioning", ginp.get("cond1")))
            negative = ginp.get("negative")
            if g.cfg_scale is None:
                g.cfg_scale = as_float(graph.value(ginp.get("cfg", ginp.get("cfg_conds"))))
            model_from = guider
        g.prompt = graph.text(positive, extra).strip()
        g.negative_prompt = graph.text(negative, extra).strip()
        g.width, g.height = _walk_size(graph, graph.source(sampler_id, "latent_image"))
        g.model = model_name(_walk_model(graph, graph.source(model_from, "model")))
    for nid in ordered:
        c = graph.classes[nid]
        if "Lora" in c:
            inp = graph.ins[nid]
            lora = graph.value(inp.get("lora_name"))
            name = model_name(lora)
            if name:
                add_lora(g.loras, name,
                         as_float(graph.value(inp.get("strength_model", inp.get("strength")))))
        elif c.startswith("CheckpointLoader") and g.model is None:
            g.model = model_name(graph.value(graph.ins[nid].get("ckpt_name")))
        elif c in ("UNETLoader", "UnetLoaderGGUF") and g.model is None:
            g.model = model_name(graph.value(graph.ins[nid].get("unet_name")))
        elif c == "VAELoader" and g.vae is None:
            vae = graph.value(graph.ins[nid].get("vae_name"))
            g.vae = vae if isinstance(vae, str) else None
        elif "LatentImage" in c and g.width is None:
            inp = graph.ins[nid]
            g.width = as_int(graph.value(inp.get("width")))
            g.height = as_int(graph.value(inp.get("height")))
    g.extra.update(extra)
    pos = embeddings_in(g.prompt)
    g.embeddings = pos + [e for e in embeddings_in(g.negative_prompt) if e not in pos]


# -- the editor graph ------------------------------------------------------------------


def _links(wf: dict[str, Any]) -> dict[Any, tuple[str, int]]:
    """link id -> (origin node id, origin slot); lists (classic) or objects (newer)."""
    out: dict[Any, tuple[str, int]] = {}
    for link in wf.get("links") or []:
        if isinstance(link, list) and len(link) >= 3:
            out[link[0]] = (str(link[1]), as_int(link[2]) or 0)
        elif isinstance(link, dict) and "id" in link and "origin_id" in link:
            out[link["id"]] = (str(link["origin_id"]), as_int(link.get("origin_slot")) or 0)
    return out


def _widget_names(node: dict[str, Any], values: list[Any]) -> list[str]:
    """Names for widgets_values: the node type's known layout, else the widget inputs
    the newer editor lists, else a guess from the values (custom samplers)."""
    layout = _LAYOUTS.get(str(node.get("type")))
    if layout is not None:
        return list(layout)
    named = [i["widget"]["name"] for i in node.get("inputs") or []
             if isinstance(i, dict) and isinstance(i.get("widget"), dict)
             and isinstance(i["widget"].get("name"), str)]
    names: list[str] = []
    if named:
        it = iter(named)
        for i, v in enumerate(values):
            if i and isinstance(v, str) and v in _CONTROL and names and names[-1] in _SEED_KEYS:
                names.append("")
                continue
            names.append(next(it, ""))
        return names
    return _guess(str(node.get("type", "")), values)


def _guess(ntype: str, values: list[Any]) -> list[str]:
    """A custom node's widgets by what they hold: an int followed by a control word is
    the seed; in a sampler, then steps, cfg, sampler and scheduler names; strings in a
    text node are its text."""
    names = [""] * len(values)
    low = ntype.lower()
    if "sampler" in low:
        after_seed = False
        for i, v in enumerate(values):
            nxt = values[i + 1] if i + 1 < len(values) else None
            if not after_seed and isinstance(v, int) and not isinstance(v, bool) \
                    and isinstance(nxt, str) and nxt in _CONTROL:
                names[i], after_seed = "seed", True
            elif after_seed and isinstance(v, int) and not isinstance(v, bool) \
                    and "steps" not in names:
                names[i] = "steps"
            elif after_seed and isinstance(v, int | float) and not isinstance(v, bool) \
                    and "steps" in names and "cfg" not in names:
                names[i] = "cfg"
            elif isinstance(v, str) and v in _SAMPLER_NAMES and "sampler_name" not in names:
                names[i] = "sampler_name"
            elif isinstance(v, str) and v in _SCHEDULER_NAMES and "scheduler" not in names:
                names[i] = "scheduler"
    elif any(w in low for w in ("text", "prompt", "string", "wildcard")):
        strings = [i for i, v in enumerate(values) if isinstance(v, str) and v not in _CONTROL]
        if strings:
            names[max(strings, key=lambda i: len(values[i]))] = "text"
    elif "lora" in low:
        for i, v in enumerate(values):
            if isinstance(v, str) and v.lower().endswith((".safetensors", ".pt", ".ckpt")):
                names[i] = "lora_name"
                if i + 1 < len(values) and isinstance(values[i + 1], int | float):
                    names[i + 1] = "strength_model"
                break
    elif "loader" in low:
        for i, v in enumerate(values):
            if isinstance(v, str) and v.lower().endswith((".safetensors", ".ckpt", ".gguf")):
                names[i] = "ckpt_name"
                break
    return names


def workflow_graph(wf: dict[str, Any]) -> Graph:
    """The editor graph as an API graph: widget values by name, links as [from, slot]."""
    links = _links(wf)
    nodes: dict[str, Any] = {}
    for n in wf.get("nodes") or []:
        if not isinstance(n, dict) or "id" not in n:
            continue
        if n.get("mode") in (2, 4):  # muted or bypassed: not part of the run
            continue
        inputs: dict[str, Any] = {}
        w = n.get("widgets_values")
        if isinstance(w, dict):  # some custom nodes store widgets by name
            inputs.update({str(k): v for k, v in w.items()})
        elif isinstance(w, list):
            for name, v in zip(_widget_names(n, w), w, strict=False):
                if name:
                    inputs[name] = v
        for i in n.get("inputs") or []:
            if isinstance(i, dict) and isinstance(i.get("name"), str) and i.get("link") in links:
                origin, slot = links[i["link"]]
                inputs[i["name"]] = [origin, slot]
        nodes[str(n["id"])] = {"class_type": str(n.get("type", "")), "inputs": inputs}
    return Graph(nodes)


def parse_comfyui(prompt: Any, workflow: Any = None) -> GenParams:
    """Fields from ComfyUI's ``prompt`` (API graph) and/or ``workflow`` (editor graph)
    JSON; the workflow is read only when the prompt is missing or yields nothing.
    Never raises; ``source`` is ``none`` when neither is a graph."""
    g = GenParams(source="comfyui")
    raw_p = load_json(prompt)
    done = False
    try:
        if isinstance(raw_p, dict):
            read_graph(g, Graph(raw_p))
            done = bool(g.prompt) and g.steps is not None
        if not done:
            raw_w = load_json(workflow)
            if isinstance(raw_w, dict) and isinstance(raw_w.get("nodes"), list):
                w = GenParams(source="comfyui")
                read_graph(w, workflow_graph(raw_w))
                if not isinstance(raw_p, dict) or w.prompt or w.steps is not None:
                    g = w if not isinstance(raw_p, dict) else _merge(g, w)
            elif not isinstance(raw_p, dict):
                g.source = "none"
    except Exception:  # a hostile graph must not break indexing
        pass
    return g


def _merge(a: GenParams, b: GenParams) -> GenParams:
    """``a`` with its empty fields taken from ``b``."""
    for f in ("prompt", "negative_prompt", "steps", "sampler", "scheduler", "cfg_scale", "seed",
              "width", "height", "model", "vae", "denoising_strength"):
        if getattr(a, f) in (None, ""):
            setattr(a, f, getattr(b, f))
    for lo in b.loras:
        add_lora(a.loras, lo.name, lo.weight)
    for k, v in b.extra.items():
        a.extra.setdefault(k, v)
    return a
