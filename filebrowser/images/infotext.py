"""Generation parameters: A1111 infotext and ComfyUI graphs to one structured record.

A1111 (and Forge) write one text per image (``processing.create_infotext``)::

    <prompt, may span lines>
    Negative prompt: <negative, may span lines>          (line absent when empty)
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x768, Model: x, ...
    Template: ...                                         (sd-dynamic-prompts, optional)

The last line is the parameter line when it holds at least three ``key: value`` pairs
(A1111's own rule, ``infotext_utils.parse_generation_parameters``). Values containing
``,``, ``:`` or a newline are JSON-quoted by A1111's ``quote()``, so a quoted value is
``json.loads``-ed. Our regex is A1111's with the key length bounded, so a long line of
letters costs linear time instead of quadratic backtracking.

ComfyUI stores its API graph (``prompt``) and editor graph (``workflow``) as JSON; the
sampler node's inputs and the text nodes its ``positive``/``negative`` links lead to
give the same fields.

Everything here is pure and total: :func:`parse_infotext` and :func:`parse_comfyui`
never raise, whatever bytes a file held.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_TEXT = 1 << 20  # characters parsed; a longer "infotext" is not one
_INF = float("inf")
# A1111's re_param, with the key bounded to 80 characters (see module docstring).
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]{0,79}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_SIZE = re.compile(r"^(\d{1,6})x(\d{1,6})$")
_RE_KEYLINE = re.compile(r"^(\w[\w \-/]{0,79}):\s?(.*)$")
_RE_LORA = re.compile(r"<(lora|lyco|locon|loha|lokr):([^:<>]{1,255})(?::([^:<>]{0,64}))?"
                      r"(?::[^<>]{0,64})?>", re.IGNORECASE)
_RE_ADDNET_MODEL = re.compile(r"^AddNet Model (\d+)$")
_RE_HASHED_NAME = re.compile(r"^(.*?)\(([0-9a-fA-F]{6,64})\)$")

# Keys that become structured fields, so they are not repeated in ``extra``.
_STRUCTURED = {"Steps", "Sampler", "Schedule type", "Scheduler", "CFG scale", "Seed",
               "Size-1", "Size-2", "Model", "Model hash", "VAE", "VAE hash", "Clip skip",
               "Denoising strength", "Version", "Lora hashes"}
_STRUCTURED_OR_SIZE = frozenset(_STRUCTURED | {"Size"})


@dataclass
class Lora:
    name: str
    weight: float | None = None
    hash: str | None = None


@dataclass
class GenParams:
    """What made an image. ``source`` is ``a1111``, ``comfyui`` or ``none``."""

    source: str = "none"
    prompt: str = ""
    negative_prompt: str = ""
    steps: int | None = None
    sampler: str | None = None
    scheduler: str | None = None
    cfg_scale: float | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    model: str | None = None
    model_hash: str | None = None
    vae: str | None = None
    vae_hash: str | None = None
    clip_skip: int | None = None
    denoising_strength: float | None = None
    version: str | None = None
    loras: list[Lora] = field(default_factory=list)
    hires: dict[str, str] = field(default_factory=dict)
    adetailer: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    raw: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def lora_names(self) -> list[str]:
        return [lo.name for lo in self.loras]


def _int(v: Any) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    try:
        return int(v if isinstance(v, str) else str(v))
    except (ValueError, TypeError):
        try:
            f = float(str(v).strip())
        except (ValueError, TypeError, OverflowError):
            return None
        return int(f) if f == f and abs(f) < 1e18 else None


def _float(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v if isinstance(v, int | float) else str(v).strip())
    except (ValueError, TypeError, OverflowError):
        return None
    return f if f == f and abs(f) != _INF else None


def _unquote(v: str) -> str:
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        try:
            out = json.loads(v)
        except ValueError:
            return v[1:-1]
        return out if isinstance(out, str) else v[1:-1]
    return v


def _pairs(matches: list[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for k, v in matches:  # (hot when indexing: the call to _unquote only when quoted)
        v = v.strip()
        out[k.strip()] = _unquote(v) if v[:1] == '"' else v
    return out


def parse_param_line(line: str) -> dict[str, str]:
    """``Steps: 20, Sampler: "a, b"`` -> ``{"Steps": "20", "Sampler": "a, b"}``."""
    return _pairs(_RE_PARAM.findall(line))


def _split(text: str) -> tuple[list[str], dict[str, str], list[str]]:
    """(prompt/negative lines, parameters, trailing key lines)."""
    lines = text.strip().split("\n")
    found = _RE_PARAM.findall(lines[-1])
    if len(found) >= 3:
        return lines[:-1], _pairs(found), []
    # Extensions (sd-dynamic-prompts: "Template:", "Negative Template:") append lines
    # after the parameter line; look back a few lines for one starting with "Steps:".
    for i in range(len(lines) - 2, max(-1, len(lines) - 12), -1):
        line = lines[i].lstrip()
        if line.startswith("Steps:"):
            found = _RE_PARAM.findall(line)
            if len(found) >= 3:
                return lines[:i], _pairs(found), lines[i + 1:]
    return lines, {}, []


def _trailing(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    key = None
    for line in lines:
        m = _RE_KEYLINE.match(line)
        if m:
            key = m.group(1).strip()
            out[key] = m.group(2)
        elif key is not None:
            out[key] += "\n" + line
        elif line.strip():
            key = "Trailing text"
            out[key] = line
    return out


def _loras_from_prompt(prompt: str) -> list[Lora]:
    found: list[Lora] = []
    if "<" not in prompt:  # every match starts with one; most prompts have none
        return found
    for m in _RE_LORA.finditer(prompt):
        name = m.group(2).strip()
        if not name:
            continue
        weight = _float(m.group(3)) if m.group(3) is not None else 1.0
        found.append(Lora(name, weight))
    return found


def _add_lora(loras: list[Lora], name: str, weight: float | None, hash_: str | None) -> None:
    for lo in loras:
        if lo.name.lower() == name.lower():
            lo.hash = lo.hash or hash_
            if lo.weight is None:
                lo.weight = weight
            return
    loras.append(Lora(name, weight, hash_))


def _apply_params(g: GenParams, params: dict[str, str]) -> None:
    get = params.get
    g.steps = _int(get("Steps"))
    g.sampler = get("Sampler")
    g.scheduler = get("Schedule type") or get("Scheduler")
    g.cfg_scale = _float(get("CFG scale"))
    g.seed = _int(get("Seed"))
    g.model = get("Model")
    g.model_hash = get("Model hash")
    g.vae = get("VAE")
    g.vae_hash = get("VAE hash")
    g.clip_skip = _int(get("Clip skip"))
    g.denoising_strength = _float(get("Denoising strength"))
    g.version = get("Version")
    size = get("Size")
    m = _RE_SIZE.match(size) if size else None
    if m:
        g.width, g.height = int(m.group(1)), int(m.group(2))
    # "Lora hashes": "name: hash, name2: hash2" (A1111 >= 1.5)
    for part in (get("Lora hashes") or "").split(","):
        name, sep, h = part.rpartition(":")
        if sep and name.strip():
            _add_lora(g.loras, name.strip(), None, h.strip() or None)
    for key, value in params.items():
        if key in _STRUCTURED_OR_SIZE:
            continue
        if key.startswith("AddNet Model "):
            # sd-webui-additional-networks: "AddNet Model 1: name(hash), AddNet Weight A 1"
            m = _RE_ADDNET_MODEL.match(key)
            hm = _RE_HASHED_NAME.match(value)
            lname, lhash = (hm.group(1), hm.group(2)) if hm else (value, None)
            if m and lname.strip():
                _add_lora(g.loras, lname.strip(),
                          _float(params.get(f"AddNet Weight A {m.group(1)}")), lhash)
        if key.startswith("Hires "):
            g.hires[key[6:]] = value
        elif key.startswith("ADetailer "):
            g.adetailer[key[10:]] = value
        else:
            g.extra[key] = value


def _parse(text: str) -> GenParams:
    """The parser proper; :func:`parse_infotext` adds the never-raise guard."""
    text = text[:MAX_TEXT]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        text = text.replace("\x00", "")
    g = GenParams(source="a1111", raw=text)
    body, params, trailing = _split(text)
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in body:
        s = line.strip()
        if s.startswith("Negative prompt:"):
            in_negative = True
            s = s[16:].strip()
        (negative if in_negative else prompt).append(s)
    g.prompt = "\n".join(prompt).strip()
    g.negative_prompt = "\n".join(negative).strip()
    g.loras = _loras_from_prompt(g.prompt)
    if trailing:
        params.update(_trailing(trailing))
    _apply_params(g, params)
    return g


def parse_infotext(text: str | bytes | None) -> GenParams:
    """Parse A1111 infotext; never raises. Empty input gives ``source == "none"``."""
    if text is None:
        return GenParams()
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not text.strip():
        return GenParams(raw=text)
    try:
        return _parse(text)
    except Exception:  # a parser bug must not break listing or indexing
        return GenParams(source="a1111", prompt=text[:MAX_TEXT].strip(), raw=text[:MAX_TEXT])


# -- ComfyUI -------------------------------------------------------------------------

_SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
_TEXT_KEYS = ("text", "text_g", "text_l", "string", "value", "prompt", "wildcard_text")
_MAX_DEPTH = 32


def _load_json(value: Any) -> Any:
    if isinstance(value, dict | list):
        return value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return json.loads(value[: 64 * MAX_TEXT])
    except (ValueError, RecursionError):
        return None


class _Graph:
    """ComfyUI API-format graph: ``{id: {"class_type", "inputs"}}``."""

    def __init__(self, nodes: dict[str, Any]) -> None:
        self.nodes = {str(k): v for k, v in nodes.items() if isinstance(v, dict)}

    def cls(self, nid: str) -> str:
        c = self.nodes.get(nid, {}).get("class_type")
        return c if isinstance(c, str) else ""

    def inputs(self, nid: str) -> dict[str, Any]:
        i = self.nodes.get(nid, {}).get("inputs")
        return i if isinstance(i, dict) else {}

    @staticmethod
    def link(value: Any) -> str | None:
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str | int):
            return str(value[0])
        return None

    def text(self, value: Any, depth: int = 0, seen: set[str] | None = None) -> str:
        """The prompt text an input leads to, following links through any node."""
        if isinstance(value, str):
            return value
        nid = self.link(value)
        seen = seen if seen is not None else set()
        if nid is None or nid in seen or depth > _MAX_DEPTH:
            return ""
        seen.add(nid)
        inputs = self.inputs(nid)
        parts = []
        for key in _TEXT_KEYS:
            if key in inputs:
                t = self.text(inputs[key], depth + 1, seen)
                if t and t not in parts:
                    parts.append(t)
        if parts:
            return "\n".join(parts)
        # conditioning combiners, guiders, controlnet appliers: follow what feeds them
        for key, v in inputs.items():
            if self.link(v) and any(w in key for w in ("conditioning", "positive", "cond")):
                t = self.text(v, depth + 1, seen)
                if t:
                    parts.append(t)
        return "\n".join(parts)


def _sort_key(nid: str) -> tuple[int, str]:
    return (int(nid), nid) if nid.isdigit() else (1 << 62, nid)


def _comfy_from_prompt(g: GenParams, graph: _Graph) -> None:
    sampler_id = next((n for n in sorted(graph.nodes, key=_sort_key)
                       if graph.cls(n) in _SAMPLERS), None)
    if sampler_id is not None:
        inp = graph.inputs(sampler_id)
        g.steps = _int(inp.get("steps"))
        g.cfg_scale = _float(inp.get("cfg"))
        g.seed = _int(inp.get("seed", inp.get("noise_seed")))
        s, sch = inp.get("sampler_name"), inp.get("scheduler")
        g.sampler = s if isinstance(s, str) else None
        g.scheduler = sch if isinstance(sch, str) else None
        g.denoising_strength = _float(inp.get("denoise"))
        g.prompt = graph.text(inp.get("positive")).strip()
        g.negative_prompt = graph.text(inp.get("negative")).strip()
    for nid in sorted(graph.nodes, key=_sort_key):
        c, inp = graph.cls(nid), graph.inputs(nid)
        if "LoraLoader" in c and isinstance(inp.get("lora_name"), str):
            _add_lora(g.loras, inp["lora_name"], _float(inp.get("strength_model")), None)
        elif c.startswith("CheckpointLoader") and g.model is None:
            name = inp.get("ckpt_name")
            g.model = name if isinstance(name, str) else None
        elif c in ("UNETLoader", "UnetLoaderGGUF") and g.model is None:
            name = inp.get("unet_name")
            g.model = name if isinstance(name, str) else None
        elif c == "VAELoader" and isinstance(inp.get("vae_name"), str):
            g.vae = inp["vae_name"]
        elif "LatentImage" in c and g.width is None:
            g.width, g.height = _int(inp.get("width")), _int(inp.get("height"))


def _comfy_from_workflow(g: GenParams, wf: dict[str, Any]) -> None:
    """Editor format: ``nodes[{id, type, inputs[{name, link}], widgets_values}]``, ``links``."""
    nodes = {str(n.get("id")): n for n in wf.get("nodes", []) if isinstance(n, dict)}
    link_from: dict[Any, str] = {}
    for link in wf.get("links", []) or []:
        if isinstance(link, list) and len(link) >= 2:
            link_from[link[0]] = str(link[1])

    def widgets(n: dict[str, Any]) -> list[Any]:
        w = n.get("widgets_values")
        return w if isinstance(w, list) else []

    def text_of(nid: str | None, depth: int = 0) -> str:
        n = nodes.get(nid or "")
        if n is None or depth > _MAX_DEPTH:
            return ""
        strings = [w for w in widgets(n) if isinstance(w, str)]
        if "TextEncode" in str(n.get("type")) and strings:
            return max(strings, key=len)
        for i in n.get("inputs", []) or []:
            if isinstance(i, dict) and i.get("link") in link_from:
                t = text_of(link_from[i["link"]], depth + 1)
                if t:
                    return t
        return ""

    for nid in sorted(nodes, key=_sort_key):
        n = nodes[nid]
        t, w = str(n.get("type", "")), widgets(n)
        if t in _SAMPLERS and g.steps is None and len(w) >= 6 and t == "KSampler":
            g.seed, g.steps, g.cfg_scale = _int(w[0]), _int(w[2]), _float(w[3])
            g.sampler = w[4] if isinstance(w[4], str) else None
            g.scheduler = w[5] if isinstance(w[5], str) else None
            ins = {i.get("name"): i.get("link") for i in n.get("inputs", []) or []
                   if isinstance(i, dict)}
            g.prompt = text_of(link_from.get(ins.get("positive"))).strip()
            g.negative_prompt = text_of(link_from.get(ins.get("negative"))).strip()
        elif "LoraLoader" in t and w and isinstance(w[0], str):
            _add_lora(g.loras, w[0], _float(w[1]) if len(w) > 1 else None, None)
        elif t.startswith("CheckpointLoader") and w and isinstance(w[0], str) and not g.model:
            g.model = w[0]


def parse_comfyui(prompt: Any, workflow: Any = None) -> GenParams:
    """Fields from ComfyUI's ``prompt`` (API graph) and/or ``workflow`` JSON; never raises."""
    raw_p, raw_w = _load_json(prompt), _load_json(workflow)
    g = GenParams(source="comfyui")
    try:
        if isinstance(raw_p, dict):
            _comfy_from_prompt(g, _Graph(raw_p))
        if isinstance(raw_w, dict) and (not g.prompt or g.steps is None):
            _comfy_from_workflow(g, raw_w)
    except Exception:  # a hostile graph must not break indexing
        pass
    if raw_p is None and raw_w is None:
        g.source = "none"
    return g
