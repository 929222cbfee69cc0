"""Where a model goes: the WebUI folder for its type, under the caller's models root.

    <root>/models/Stable-diffusion   Checkpoint
                 /Lora               LORA, LoCon (LyCORIS), DoRA
                 /embeddings         TextualInversion (the WebUI's embeddings/ links here)
                 /VAE                VAE
                 /ControlNet         Controlnet
                 /ESRGAN             Upscaler
                 /hypernetworks      Hypernetwork
                 /diffusers/<org>/<repo>   a whole Hugging Face repo
                 /Other              anything else
    optionally /<base model>/ below the type folder (``models_base_subfolder``)

The models root is the shared ``models/`` for admins and the users an admin allows,
``users/<name>/models/`` for everyone else (``access.py`` decides). Paths here are
virtual (relative to the NAS root, ``/``-separated); ``real_path`` maps one to disk
after checking that no symlink leads it out of where it is allowed to be.
"""

from __future__ import annotations

import os
import posixpath
import unicodedata
from pathlib import Path

from . import naming
from .errors import NotAllowed

TYPE_FOLDERS = {
    "Checkpoint": "Stable-diffusion",
    "LORA": "Lora", "LoCon": "Lora", "DoRA": "Lora",
    "TextualInversion": "embeddings",
    "VAE": "VAE",
    "Controlnet": "ControlNet",
    "Upscaler": "ESRGAN",
    "Hypernetwork": "hypernetworks",
    "Diffusers": "diffusers",
    "MotionModule": "AnimateDiff",
    "Detection": "adetailer",
}
OTHER_FOLDER = "Other"
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf", ".onnx")


def type_folder(model_type: str | None) -> str:
    return TYPE_FOLDERS.get(model_type or "", OTHER_FOLDER)


def folder_for(model_type: str | None, base_model: str | None, models_root: str = "models",
               base_subfolder: bool = False) -> str:
    """The virtual folder for a model of this type (and base model, if asked)."""
    folder = posixpath.join(models_root, type_folder(model_type))
    if base_subfolder and base_model and model_type != "Diffusers":
        sub = naming.sanitize(base_model)
        if sub:
            folder = posixpath.join(folder, sub)
    return folder


def clean(path: str) -> str:
    """A virtual path as typed by a user: relative, normalised, nothing hidden or odd."""
    if not isinstance(path, str) or "\x00" in path or len(path) > 4096:
        raise NotAllowed("invalid destination path")
    p = unicodedata.normalize("NFC", path.replace("\\", "/")).strip().strip("/")
    parts = [s for s in p.split("/") if s not in ("", ".")]
    for s in parts:
        if s == ".." or s.startswith(".") or any(ord(c) < 32 for c in s):
            raise NotAllowed(f"destination {path!r} may not contain '..' or hidden folders")
    return "/".join(parts)


def within(path: str, prefix: str) -> bool:
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


def real_path(root: Path, vpath: str, allowed: str) -> Path:
    """``root/vpath`` on disk, refused if it (or its deepest existing folder, through
    symlinks) is not under ``root/allowed``. ``vpath`` must already be within ``allowed``
    lexically; ``allowed`` is created when missing (it is the caller's models root or a
    folder they may write)."""
    if not within(vpath, allowed):
        raise NotAllowed(f"destination {vpath!r} is outside {allowed or 'the root'}")
    root_real = Path(os.path.realpath(root))
    (root_real / allowed).mkdir(parents=True, exist_ok=True)
    limit = os.path.realpath(root_real / allowed)
    if os.path.commonpath([limit, root_real]) != str(root_real):
        raise NotAllowed(f"{allowed!r} leads outside the NAS root")
    target = root_real / vpath
    probe = target
    while not probe.exists() and probe != root_real:
        probe = probe.parent
    real = os.path.realpath(probe)
    if os.path.commonpath([real, limit]) != limit:
        raise NotAllowed(f"destination {vpath!r} leads outside {allowed or 'the root'}")
    return target


def is_model_name(name: str) -> bool:
    return name.lower().endswith(MODEL_SUFFIXES)
