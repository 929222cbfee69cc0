"""The files beside a model that the WebUI and its helpers read.

    x.safetensors
    x.preview.png      the card image of A1111's extra-networks pages (first safe image)
    x.civitai.info     the raw Civitai version JSON (Civitai Helper's format; its scan
                       treats a model with this file as identified)
    x.json             A1111's extra-networks user metadata: "description",
                       "sd version" (SD1/SD2/SDXL/Unknown, the Lora page's choice),
                       "activation text" (trigger words), "preferred weight", "negative
                       text", "notes"; plus "base model" (Civitai's name) and "sha256"

A sidecar a user already edited is never clobbered: ``x.json`` gets only the keys that
are missing or empty. Each file is written to a hidden temporary name and renamed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .sources.model import Resolution


def stem_path(model: Path, suffix: str) -> Path:
    stem = model.name.rsplit(".", 1)[0] if "." in model.name else model.name
    return model.with_name(stem + suffix)


def sd_version(base_model: str | None) -> str:
    b = (base_model or "").lower()
    if b.startswith("sd 1"):
        return "SD1"
    if b.startswith("sd 2"):
        return "SD2"
    if b.startswith("sdxl") or b in ("pony", "illustrious", "noobai"):
        return "SDXL"
    return "Unknown"


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def user_metadata(res: Resolution, sha256: str | None) -> dict[str, Any]:
    notes = res.page or res.ref
    return {
        "description": res.description or "",
        "sd version": sd_version(res.base_model),
        "activation text": ", ".join(res.trigger_words),
        "preferred weight": 0,
        "negative text": "",
        "notes": notes,
        "base model": res.base_model or "",
        **({"sha256": sha256} if sha256 else {}),
    }


def write(model: Path, res: Resolution, *, sha256: str | None = None,
          preview_png: bytes | None = None) -> list[Path]:
    """Write the sidecars of ``model``; returns those written."""
    written: list[Path] = []
    if preview_png:
        preview = stem_path(model, ".preview.png")
        if not preview.exists():
            atomic_write(preview, preview_png)
            written.append(preview)
    if res.info is not None:
        info = stem_path(model, ".civitai.info")
        atomic_write(info, json.dumps(res.info, indent=4, ensure_ascii=False).encode())
        written.append(info)
    meta_path = stem_path(model, ".json")
    fresh = user_metadata(res, sha256)
    try:
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(old, dict):
            old = {}
    except (OSError, ValueError):
        old = {}
    merged = {**fresh, **{k: v for k, v in old.items() if v not in ("", None)}}
    if merged != old:
        atomic_write(meta_path, json.dumps(merged, indent=4, ensure_ascii=False).encode())
        written.append(meta_path)
    return written


def read(model: Path) -> dict[str, Any]:
    """What the sidecars say: trigger words, base model, preview path (or empty)."""
    out: dict[str, Any] = {}
    try:
        meta = json.loads(stem_path(model, ".json").read_text(encoding="utf-8"))
        if isinstance(meta, dict):
            words = [w.strip() for w in str(meta.get("activation text") or "").split(",")]
            out["trigger_words"] = [w for w in words if w]
            if meta.get("base model"):
                out["base_model"] = str(meta["base model"])
    except (OSError, ValueError):
        pass
    for suffix in (".preview.png", ".preview.jpg", ".preview.jpeg", ".preview.webp", ".png"):
        p = stem_path(model, suffix)
        if p.is_file():
            out["preview"] = p
            break
    return out
