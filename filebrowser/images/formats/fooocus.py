"""Fooocus: its two metadata schemes, and the ``log.html`` it keeps beside the images.

In the image (``modules/private_logger.py``, ``meta_parser.py``; off by default)::

    PNG        text "parameters" + text "fooocus_scheme" ("fooocus" | "a1111")
    JPEG/WebP  Pillow ``Image.Exif()`` IFD0: 0x9286 UserComment = the parameters,
               0x0131 Software = "Fooocus v2.5.5", 0x927C MakerNote = the scheme
    "fooocus"  JSON, keys sorted: prompt, negative_prompt, prompt_expansion, styles,
               performance, steps, resolution "(1152, 896)", guidance_scale, sharpness,
               adm_guidance, base_model (+_hash), refiner_model, sampler, scheduler, vae,
               seed, lora_combined_N "name : weight", loras [[name, weight, hash]],
               full_prompt [...], full_negative_prompt [...], version "Fooocus v2.5.5"
    "a1111"    A1111 infotext with "Version: Fooocus v2.5.5", "Raw prompt", "Sharpness"

``log.html`` in each day's folder, newest entry first; three layouts over the years::

    <= 2.1.8xx  <div id="name_png"><p>name</p><p>Prompt: <b>...</b></p>
                <p>Sharpness: <b>2</b>, Seed: <b>1</b></p>...<img src="name.png"></div>
    2.1.854+    <div id="name_png" class="image-container">... <img src='name.png' ...>
                <td class='key'>Prompt</td><td class='value'>...</td> ...
                <button onclick="to_clipboard('<url-quoted JSON {label: value}>')">
    2.2+        the same with <td class='label'>, and the JSON keyed by field
                ({"prompt": ..., "negative_prompt": ..., "lora_combined_1": ...})

The table rows are read (the same values as the clipboard JSON, which costs five times
as much to decode), else the JSON, else the paragraphs. A parsed log is cached by
(file, mtime, size): a folder of 2,000 images reads it once.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
import urllib.parse
from collections import OrderedDict
from typing import Any

from ..infotext import GenParams, add_lora, as_float, as_int, model_name, parse_infotext

_DICT_LIST = (dict, list)  # (a "dict | list" union is built at every call)

SCHEMES = ("fooocus", "a1111")
LOG_NAME = "log.html"
MAX_LOG_BYTES = 64 << 20
# Labels of the older layouts -> the field keys of the newer ones
_LABELS = {
    "prompt": "prompt", "negative prompt": "negative_prompt",
    "fooocus v2 expansion": "prompt_expansion", "styles": "styles", "style": "styles",
    "performance": "performance", "steps": "steps", "resolution": "resolution",
    "guidance scale": "guidance_scale", "sharpness": "sharpness",
    "adm guidance": "adm_guidance", "base model": "base_model",
    "refiner model": "refiner_model", "refiner switch": "refiner_switch",
    "sampler": "sampler", "scheduler": "scheduler", "seed": "seed", "vae": "vae",
    "clip skip": "clip_skip", "version": "version", "metadata scheme": "metadata_scheme",
}
_RE_LORA_LABEL = re.compile(r"^LoRA \[(.+)\] weight$")  # <= 2.1.8xx
_RE_LORA_N = re.compile(r"^(?:lora_combined_|LoRA )(\d+)$")
_RE_RES = re.compile(r"\(?\s*'?(\d+)'?\s*,\s*'?(\d+)'?\s*\)?")
_ENTRY = '<div id="'
_SKIP_LABELS = {"Full raw prompt"}
_SKIP = {"", "None", "none"}


def is_fooocus_json(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    v = doc.get("version")
    return (isinstance(v, str) and v.startswith("Fooocus")) or (
        "guidance_scale" in doc and ("base_model" in doc or "full_prompt" in doc))


_KEY_OF: dict[str, str] = {}  # a label as written -> its field key (_LABELS), memoised
_EXTRA_LABEL: dict[str, str] = {}  # a field key -> its label in ``extra``, memoised
_MEMO_MAX = 1024  # labels are few (a hostile log's thousands just go unmemoised)


def _key_of(label: str) -> str:
    key = _LABELS.get(label.lower(), label)
    if len(_KEY_OF) < _MEMO_MAX:
        _KEY_OF[label] = key
    return key


def _extra_label(key: str) -> str:
    label = key.replace("_", " ").capitalize()
    if len(_EXTRA_LABEL) < _MEMO_MAX:
        _EXTRA_LABEL[key] = label
    return label


def from_fields(fields: dict[str, Any], raw: str = "") -> GenParams:
    """Parameters from Fooocus fields (the JSON scheme, or a log entry)."""
    g = GenParams(source="fooocus", raw=raw)
    norm: dict[str, Any] = {}
    known = _KEY_OF.get
    for k, v in fields.items():
        key = known(k)
        if key is None:
            key = str(k)
            if key[:6] == "LoRA [":  # <= 2.1.8xx: "LoRA [name] weight"
                m = _RE_LORA_LABEL.match(key)
                if m:
                    add_lora(g.loras, model_name(m.group(1)) or m.group(1), as_float(v))
                    continue
                key = _LABELS.get(key.lower(), key)
            else:
                key = _key_of(key)
        norm[key] = v
    pop = norm.pop

    def s(key: str) -> str:
        v = pop(key, None)
        if type(v) is str:
            return v.strip()
        return str(v).strip() if v is not None and not isinstance(v, _DICT_LIST) else ""

    g.prompt = s("prompt")
    g.negative_prompt = s("negative_prompt")
    g.steps = as_int(norm.pop("steps", None))
    g.cfg_scale = as_float(norm.pop("guidance_scale", None))
    g.seed = as_int(norm.pop("seed", None))
    m = _RE_RES.fullmatch(s("resolution")[:64])
    if m:
        g.width, g.height = int(m.group(1)), int(m.group(2))
    g.sampler = s("sampler") or None
    g.scheduler = s("scheduler") or None
    g.model = model_name(s("base_model"))
    h = s("base_model_hash")
    g.model_hash = h[:80] or None
    vae = s("vae")
    g.vae = None if vae in _SKIP or vae.startswith("Default") else vae
    g.clip_skip = as_int(norm.pop("clip_skip", None))
    version = s("version")
    g.version = version if version.startswith("Fooocus") or not version else f"Fooocus {version}"
    for key in sorted(k for k in norm if k[:5] in ("lora_", "LoRA ") and _RE_LORA_N.match(k)):
        name, _, weight = str(norm.pop(key)).partition(" : ")
        if name.strip() not in _SKIP:
            add_lora(g.loras, model_name(name) or name.strip(), as_float(weight))
    loras = norm.pop("loras", None)
    for lo in loras if isinstance(loras, list) else []:
        if isinstance(lo, list | tuple) and lo and isinstance(lo[0], str):
            add_lora(g.loras, model_name(lo[0]) or lo[0],
                     as_float(lo[1]) if len(lo) > 1 else None,
                     lo[2] if len(lo) > 2 and isinstance(lo[2], str) else None)
    refiner = s("refiner_model")
    if refiner not in _SKIP:
        g.extra["Refiner"] = model_name(refiner) or refiner
    for key in ("full_prompt", "full_negative_prompt", "metadata_scheme", "refiner_model_hash",
                "created_by"):
        norm.pop(key, None)
    label_of = _EXTRA_LABEL.get
    for key, v in norm.items():
        if v is None or v == "" or isinstance(v, dict):
            continue
        label = label_of(key) or _extra_label(key)
        g.extra[label] = json.dumps(v, ensure_ascii=False) if isinstance(v, list) else str(v)
    return g


def parse_a1111_scheme(text: str) -> GenParams:
    """Fooocus' A1111 scheme: infotext, with the LoRA weights in "Lora weights"."""
    g = parse_infotext(text)
    g.source = "fooocus"
    for part in g.extra.get("Lora weights", "").split(","):
        name, sep, weight = part.rpartition(":")
        if sep and name.strip():
            add_lora(g.loras, name.strip(), as_float(weight))
    return g


# -- log.html ----------------------------------------------------------------------------


def _between(text: str, start: str, end: str, pos: int = 0) -> tuple[str, int] | None:
    """The text after ``start`` up to ``end`` (searching from ``pos``), and where it
    ends; None if either is missing. ``str.find`` only: a hostile log costs linear
    time (lazy regexes over a megabyte of unclosed tags took minutes)."""
    i = text.find(start, pos)
    if i < 0:
        return None
    i += len(start)
    j = text.find(end, i)
    return None if j < 0 else (text[i:j], j + len(end))


def _rows(chunk: str) -> list[tuple[str, str]]:
    """<td class='key|label'>L</td><td class='value'>V</td> pairs (2.1.854 and later).
    (The hottest loop of a log: ``find`` and ``startswith`` at known offsets only.)"""
    out: list[tuple[str, str]] = []
    find, at = chunk.find, chunk.startswith
    pos = 0
    while True:
        i = find("<td class='", pos)
        if i < 0:
            return out
        i += 11
        if at("key'>", i):
            i += 5
        elif at("label'>", i):
            i += 7
        else:
            pos = i
            continue
        j = find("</td>", i)
        if j < 0:
            return out
        pos = j + 5
        if not at("<td class='value'>", pos):
            continue
        k = find("</td>", pos + 18)
        if k < 0:
            continue
        out.append((chunk[i:j], chunk[pos + 18:k]))
        pos = k + 5


def _paragraphs(chunk: str) -> list[tuple[str, str]]:
    """Label: <b>value</b> pairs (the first layouts)."""
    out: list[tuple[str, str]] = []
    pos = 0
    while True:
        value = _between(chunk, "<b>", "</b>", pos)
        if value is None:
            return out
        b = chunk.find("<b>", pos)
        head = chunk[max(pos, b - 120):b].rstrip()
        if head.endswith(":"):
            label = head[:-1]
            cut = max(label.rfind(">"), label.rfind(","), label.rfind("\n"))
            out.append((label[cut + 1:], value[0]))
        pos = value[1]


def parse_log(html: str) -> dict[str, dict[str, Any]]:
    """Image name -> its fields, from a log.html of any layout."""
    out: dict[str, dict[str, Any]] = {}
    starts = []
    pos = html.find(_ENTRY)
    while pos >= 0:
        starts.append(pos)
        pos = html.find(_ENTRY, pos + len(_ENTRY))
    for i, start in enumerate(starts):
        chunk = html[start: starts[i + 1] if i + 1 < len(starts) else len(html)]
        src = _between(chunk, "<img src=", " ", 0)
        if src is None:
            continue
        name = urllib.parse.unquote(src[0].strip("'\"/>")).rpartition("/")[2]
        if not name or name in out:  # newest first: an older entry of a reused name loses
            continue
        fields: dict[str, Any] | None = None
        rows = _rows(chunk)
        if not rows:
            clip = _between(chunk, "to_clipboard('", "')")
            if clip is not None:
                try:
                    doc = json.loads(urllib.parse.unquote(clip[0]))
                except ValueError:
                    doc = None
                fields = doc if isinstance(doc, dict) else None
            if fields is None:
                rows = _paragraphs(chunk)
        if fields is None:
            fields = {}
            for k, v in rows:
                k = k.strip()
                if k and k not in _SKIP_LABELS:
                    fields[k] = v.replace(" </br> ", "\n").strip()
        if fields:
            out[name] = fields
    return out


class _LogCache:
    """Parsed logs by file identity (device, inode), valid while mtime and size hold;
    a few folders at a time. (Not by path: the info route names folders by
    /proc/self/fd numbers, which are reused.)"""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.items: OrderedDict[tuple[int, int],
                                tuple[tuple[int, int], dict[str, dict[str, Any]]]] = OrderedDict()

    def entries(self, path: str) -> dict[str, dict[str, Any]]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return {}
        try:
            st = os.fstat(fd)
            ident, key = (st.st_dev, st.st_ino), (st.st_mtime_ns, st.st_size)
            with self.lock:
                hit = self.items.get(ident)
                if hit is not None and hit[0] == key:
                    self.items.move_to_end(ident)
                    return hit[1]
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_LOG_BYTES:
                return {}
            data = b""
            while len(data) < st.st_size:
                chunk = os.read(fd, st.st_size - len(data))
                if not chunk:
                    break
                data += chunk
        except OSError:
            return {}
        finally:
            os.close(fd)
        parsed = parse_log(data.decode("utf-8", "replace"))
        with self.lock:
            self.items[ident] = (key, parsed)
            self.items.move_to_end(ident)
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return parsed


_CACHE = _LogCache()


def from_log(log_path: str | FolderLog, image_name: str) -> GenParams | None:
    """The parameters a Fooocus log.html holds for one image, if any."""
    entries = log_path.entries() if isinstance(log_path, FolderLog) \
        else _CACHE.entries(log_path)
    fields = entries.get(image_name)
    if not fields:
        return None
    return from_fields(fields)


class FolderLog:
    """A folder's log.html as one pass over the folder sees it: opened (and checked
    against the parse cache) once, at the first image that needs it, not at each."""

    __slots__ = ("path", "_entries")

    def __init__(self, path: str) -> None:
        self.path = path
        self._entries: dict[str, dict[str, Any]] | None = None

    def __str__(self) -> str:
        return self.path

    def __reduce__(self) -> tuple[type[FolderLog], tuple[str]]:
        return FolderLog, (self.path,)  # to a parsing worker: the path, not what was read

    def entries(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            self._entries = _CACHE.entries(self.path)
        return self._entries
