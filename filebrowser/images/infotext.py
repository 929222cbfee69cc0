"""Generation parameters: one structured record, and A1111's infotext parsed into it.

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

The other generators' layouts (ComfyUI, NovelAI, InvokeAI, SwarmUI, Fooocus) are read
by :mod:`filebrowser.images.formats` into the same :class:`GenParams`; the helpers
here (numbers, model names, LoRAs) are shared with them.

Everything here is pure and total: :func:`parse_infotext` never raises, whatever
bytes a file held.
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
# ComfyUI's (and SwarmUI's) prompt syntax for a textual-inversion embedding
_RE_EMBEDDING = re.compile(r"\bembedding:([^\s,()<>:\[\]{}]{1,255})", re.IGNORECASE)
_RE_HASHED_NAME = re.compile(r"^(.*?)\(([0-9a-fA-F]{6,64})\)$")

# Keys that become structured fields, so they are not repeated in ``extra``.
_STRUCTURED = {"Steps", "Sampler", "Schedule type", "Scheduler", "CFG scale", "Seed",
               "Size-1", "Size-2", "Model", "Model hash", "VAE", "VAE hash", "Clip skip",
               "Denoising strength", "Version", "Lora hashes"}
# What a model or LoRA file name may end with; A1111 names them without it.
MODEL_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")
_MODEL_EXTS = frozenset(MODEL_EXTS)
# The generators :attr:`GenParams.source` names (``none``: no parameters found;
# ``unknown``: metadata in a layout we do not read, never taken for prompt text).
SOURCES = ("a1111", "forge", "comfyui", "novelai", "invokeai", "swarmui", "fooocus",
           "unknown")
_STRUCTURED_OR_SIZE = frozenset(_STRUCTURED | {"Size"})


@dataclass
class Lora:
    name: str
    weight: float | None = None
    hash: str | None = None


@dataclass(slots=True)
class GenParams:
    """What made an image. ``source`` is one of :data:`SOURCES` or ``none``."""

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
    embeddings: list[str] = field(default_factory=list)
    hires: dict[str, str] = field(default_factory=dict)
    adetailer: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    raw: str = ""
    # A1111 layout only: the parameter line(s) as written, after the prompts (the index
    # keeps these instead of a JSON of the fields; see index.params_value)
    params_text: str = ""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["params_text"]
        out["infotext"] = self.infotext()
        return out

    @property
    def lora_names(self) -> list[str]:
        return [lo.name for lo in self.loras]

    def infotext(self) -> str:
        """The parameters as A1111 infotext (what "send to txt2img" pastes): the text
        itself for A1111 and Forge, written out from the fields for the others."""
        if self.source in ("a1111", "forge") and self.raw:
            return self.raw
        if self.source == "none":
            return ""
        prompt = self.prompt
        names = {lo.name.lower() for lo in loras_in(prompt)}
        extra = [f"<lora:{lo.name}:{_num(lo.weight if lo.weight is not None else 1.0)}>"
                 for lo in self.loras if lo.name.lower() not in names]
        if extra:
            prompt = ", ".join(x for x in (prompt, ", ".join(extra)) if x)
        lines = [prompt]
        if self.negative_prompt:
            lines.append("Negative prompt: " + self.negative_prompt)
        pairs: list[tuple[str, Any]] = [
            ("Steps", self.steps), ("Sampler", self.sampler), ("Schedule type", self.scheduler),
            ("CFG scale", self.cfg_scale), ("Seed", self.seed),
            ("Size", f"{self.width}x{self.height}" if self.width and self.height else None),
            ("Model hash", self.model_hash), ("Model", self.model), ("VAE", self.vae),
            ("Clip skip", self.clip_skip), ("Denoising strength", self.denoising_strength)]
        pairs += [(f"Hires {k}", v) for k, v in self.hires.items()]
        pairs += [(f"ADetailer {k}", v) for k, v in self.adetailer.items()]
        pairs += list(self.extra.items())
        pairs.append(("Version", self.version))
        params = ", ".join(f"{k}: {_quote(_num(v))}" for k, v in pairs
                           if v is not None and v != "")
        if params:
            lines.append(params)
        return "\n".join(lines)


def _num(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _quote(v: str) -> str:
    """A1111's ``infotext_utils.quote``: JSON-quote a value holding , : or a newline."""
    if "," not in v and "\n" not in v and ":" not in v:
        return v
    return json.dumps(v, ensure_ascii=False)


def model_name(value: Any) -> str | None:
    """A model or LoRA as A1111 names it: the file name without folders or extension
    (ComfyUI and SwarmUI write ``SDXL/juggernaut.safetensors``; A1111 ``juggernaut``)."""
    if not isinstance(value, str):
        return None
    base = value.strip().replace("\\", "/").rpartition("/")[2]
    stem, dot, ext = base.rpartition(".")
    if dot and "." + ext.lower() in _MODEL_EXTS:  # (each of them has one dot)
        base = stem
    return base.strip() or None


def embeddings_in(text: str) -> list[str]:
    """Embedding names written ``embedding:name`` in a prompt (ComfyUI's syntax)."""
    if "mbedding:" not in text and "MBEDDING:" not in text:
        return []
    out: list[str] = []
    for m in _RE_EMBEDDING.finditer(text):
        name = model_name(m.group(1).rstrip("."))
        if name and name not in out:
            out.append(name)
    return out


def as_int(v: Any) -> int | None:
    """An integer from whatever a metadata field held (``"20"``, ``20.0``); else None."""
    t = type(v)  # the common cases first: a call per number of every image
    if t is int:
        return v
    if t is str:
        try:
            return int(v)
        except ValueError:
            pass
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


def as_float(v: Any) -> float | None:
    """A finite float from whatever a metadata field held; else None."""
    t = type(v)  # the common cases first: a call per number of every image
    if t is float:
        f = v
    elif t is str:
        try:
            f = float(v)  # (it strips whitespace itself)
        except ValueError:
            return None
    elif v is None or isinstance(v, bool):
        return None
    else:
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


def _split(text: str) -> tuple[list[str], dict[str, str], list[str], str]:
    """(prompt/negative lines, parameters, trailing key lines, the parameter lines)."""
    lines = text.strip().split("\n")
    found = _RE_PARAM.findall(lines[-1])
    if len(found) >= 3:
        return lines[:-1], _pairs(found), [], lines[-1]
    # Extensions (sd-dynamic-prompts: "Template:", "Negative Template:") append lines
    # after the parameter line; look back a few lines for one starting with "Steps:".
    for i in range(len(lines) - 2, max(-1, len(lines) - 12), -1):
        line = lines[i].lstrip()
        if line.startswith("Steps:"):
            found = _RE_PARAM.findall(line)
            if len(found) >= 3:
                return lines[:i], _pairs(found), lines[i + 1:], "\n".join(lines[i:])
    return lines, {}, [], ""


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


def loras_in(prompt: str) -> list[Lora]:
    """``<lora:name:weight>`` (and lyco/locon/...) tags of a prompt."""
    found: list[Lora] = []
    if "<" not in prompt:  # every match starts with one; most prompts have none
        return found
    for m in _RE_LORA.finditer(prompt):
        name = m.group(2).strip()
        if not name:
            continue
        weight = as_float(m.group(3)) if m.group(3) is not None else 1.0
        found.append(Lora(name, weight))
    return found


def add_lora(loras: list[Lora], name: str, weight: float | None, hash_: str | None = None
             ) -> None:
    """Add a LoRA, or complete the one of the same name (case-insensitive)."""
    for lo in loras:
        if lo.name.lower() == name.lower():
            lo.hash = lo.hash or hash_
            if lo.weight is None:
                lo.weight = weight
            return
    loras.append(Lora(name, weight, hash_))


def _apply_params(g: GenParams, params: dict[str, str]) -> None:
    get = params.get
    g.steps = as_int(get("Steps"))
    g.sampler = get("Sampler")
    g.scheduler = get("Schedule type") or get("Scheduler")
    g.cfg_scale = as_float(get("CFG scale"))
    g.seed = as_int(get("Seed"))
    g.model = get("Model")
    g.model_hash = get("Model hash")
    g.vae = get("VAE")
    g.vae_hash = get("VAE hash")
    g.clip_skip = as_int(get("Clip skip"))
    g.denoising_strength = as_float(get("Denoising strength"))
    g.version = get("Version")
    size = get("Size")
    m = _RE_SIZE.match(size) if size else None
    if m:
        g.width, g.height = int(m.group(1)), int(m.group(2))
    # "Lora hashes": "name: hash, name2: hash2" (A1111 >= 1.5)
    hashes = get("Lora hashes")
    for part in hashes.split(",") if hashes else ():
        name, sep, h = part.rpartition(":")
        if sep and name.strip():
            add_lora(g.loras, name.strip(), None, h.strip() or None)
    # "TI hashes": "name: hash, name2: hash2" (A1111 >= 1.6), the embeddings used
    hashes = get("TI hashes")
    for part in hashes.split(",") if hashes else ():
        name, sep, _h = part.rpartition(":")
        if sep and name.strip() and name.strip() not in g.embeddings:
            g.embeddings.append(name.strip())
    for key, value in params.items():
        if key in _STRUCTURED_OR_SIZE:
            continue
        if key.startswith("AddNet Model "):
            # sd-webui-additional-networks: "AddNet Model 1: name(hash), AddNet Weight A 1"
            m = _RE_ADDNET_MODEL.match(key)
            hm = _RE_HASHED_NAME.match(value)
            lname, lhash = (hm.group(1), hm.group(2)) if hm else (value, None)
            if m and lname.strip():
                add_lora(g.loras, lname.strip(),
                          as_float(params.get(f"AddNet Weight A {m.group(1)}")), lhash)
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
    body, params, trailing, g.params_text = _split(text)
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
    g.loras = loras_in(g.prompt)
    g.embeddings = embeddings_in(g.prompt) + embeddings_in(g.negative_prompt)
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
    if not text or text.isspace():  # (not text.strip(): without copying the text)
        return GenParams(raw=text)
    try:
        return _parse(text)
    except Exception:  # a parser bug must not break listing or indexing
        return GenParams(source="a1111", prompt=text[:MAX_TEXT].strip(), raw=text[:MAX_TEXT])
