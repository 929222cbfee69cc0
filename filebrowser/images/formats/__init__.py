"""Which generator wrote an image's metadata, and its parameters in one record.

:func:`detect` looks at the text fields :mod:`..meta` found (PNG text chunks, EXIF
fields) in this order; the first layout that is there wins::

    NovelAI    Software "NovelAI" / Comment JSON with "uc"          novelai.py
    InvokeAI   invokeai_metadata, invokeai_graph, sd-metadata, Dream  invokeai.py
    parameters (PNG) or UserComment (EXIF):
        JSON   {"sui_image_params": ...}                           swarmui.py
               Fooocus' scheme ("fooocus_scheme"/MakerNote, keys)    fooocus.py
               anything else: source "unknown", never prompt text
        text   A1111 infotext; its Version (or Fooocus' scheme) tells
               A1111 from Forge ("f2.0.1v1.10.1") and Fooocus        ../infotext.py
               (in EXIF only with A1111's parameter line: a camera's
               UserComment is not a prompt)
    ComfyUI    prompt / workflow (PNG), "prompt:"/"workflow:" in EXIF Model/Make
                                                                     comfyui.py
    sidecar    <stem>.txt beside the image (A1111 "save_txt")

Then, outside the file's own fields (:func:`..meta.read_meta`): Fooocus' ``log.html``
beside the image, and, when enabled, stealth info in the pixels (stealth.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..infotext import MAX_TEXT, GenParams, parse_infotext
from .comfyui import load_json, parse_comfyui
from .fooocus import FolderLog, from_fields, from_log, is_fooocus_json, parse_a1111_scheme
from .invokeai import is_invokeai, parse_invokeai
from .novelai import is_novelai, parse_novelai
from .stealth import read_stealth
from .swarmui import is_swarmui, parse_swarmui

__all__ = ["FolderLog", "detect", "detect_text", "from_log", "parse_comfyui", "read_stealth"]

_RE_FORGE = re.compile(r"^f\d+\.\d+")  # Forge: "f2.0.1v1.10.1-previous-..."


def _a1111(text: str, texts: dict[str, str]) -> GenParams:
    scheme = texts.get("fooocus_scheme") or texts.get("MakerNote", "")
    if scheme == "a1111" or texts.get("Software", "").startswith("Fooocus"):
        return parse_a1111_scheme(text)
    g = parse_infotext(text)
    v = g.version or ""
    if v.startswith("Fooocus"):
        g.source = "fooocus"
    elif _RE_FORGE.match(v):
        g.source = "forge"
    return g


def _json(doc: Any, text: str, texts: dict[str, str]) -> GenParams:
    scheme = texts.get("fooocus_scheme") or texts.get("MakerNote", "")
    if is_swarmui(doc):
        return parse_swarmui(doc, text)
    if (scheme == "fooocus" and isinstance(doc, dict)) or is_fooocus_json(doc):
        return from_fields(doc, raw=text)
    if isinstance(doc, dict) and is_novelai({k: v for k, v in doc.items() if isinstance(v, str)}):
        # NovelAI's chunks as one JSON object (what it hides in the alpha channel)
        return parse_novelai({k: v if isinstance(v, str) else json.dumps(v)
                              for k, v in doc.items()})
    return GenParams(source="unknown", raw=text)


def detect_text(text: str, texts: dict[str, str] | None = None) -> GenParams:
    """One text field holding parameters: JSON of a known layout, else A1111 infotext.
    JSON we cannot read gives ``source == "unknown"`` and no prompt. Never raises."""
    try:
        return _detect_text(text, texts or {})
    except Exception:
        return GenParams(source="unknown", raw=text[:MAX_TEXT])


def _detect_text(text: str, texts: dict[str, str]) -> GenParams:
    s = text.lstrip() if text[:1].isspace() else text  # (a copy only when needed)
    if s[:1] in ("{", "["):
        doc = load_json(s)
        if doc is not None:
            return _json(doc, text, texts)
    return _a1111(text, texts)


def detect(texts: dict[str, str], sidecar_text: str | None = None
           ) -> tuple[GenParams, str | None]:
    """(parameters, where they were found) from an image's text fields; never raises
    (a parser's bug on a hostile file makes it ``unknown``, not a failed scan)."""
    try:
        return _detect(texts, sidecar_text)
    except Exception:
        return GenParams(source="unknown"), "error"


def _detect(texts: dict[str, str], sidecar_text: str | None) -> tuple[GenParams, str | None]:
    if is_novelai(texts):
        return parse_novelai(texts), "png:Comment"
    if is_invokeai(texts):
        return parse_invokeai(texts)
    for key, where in (("UserComment", "exif:UserComment"), ("parameters", "png:parameters")):
        v = texts.get(key)
        if v and not v.isspace():  # v.strip() without copying v
            g = _detect_text(v, texts)
            if key == "UserComment" and g.source in ("a1111", "forge") and not g.params_text:
                # a camera's or an editor's comment, not A1111's (which always ends with
                # its parameter line): not prompt words
                g = GenParams(source="unknown", raw=v)
            return g, where
    comfy_p = texts.get("prompt")
    comfy_w = texts.get("workflow")
    if not comfy_p and texts.get("Model", "").startswith("prompt:"):
        comfy_p = texts["Model"][7:]  # ComfyUI's WebP/animated savers
    if not comfy_w and texts.get("Make", "").startswith("workflow:"):
        comfy_w = texts["Make"][9:]
    if comfy_p or comfy_w:
        g = parse_comfyui(comfy_p, comfy_w)
        if g.source == "comfyui":
            return g, "png:prompt" if comfy_p else "png:workflow"
    if sidecar_text and sidecar_text.strip():
        return _detect_text(sidecar_text, {}), "sidecar"
    return GenParams(), None
