"""Atelier's settings in the WebUI's Settings page, and what they become for the service.

The script registers these with ``shared.opts.add_option`` in section ("atelier",
"Atelier"); values live in the WebUI's config.json. The service gets them as environment
variables when the extension (re)starts it; a change restarts it (``Supervisor.restart``).
The NAS folder also replaces ``--root`` in the recorded command, which would win over
``ATELIER_ROOT``.
Empty values leave the service's own default (or an ``ATELIER_*`` variable already in
the WebUI's environment) in place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

SECTION = ("atelier", "Atelier")
GIB = 1 << 30


@dataclass(frozen=True)
class Setting:
    key: str
    default: object
    label: str
    kind: str  # "text" | "password" | "number" | "bool"
    info: str = ""
    env: str | None = None  # the service variable it sets


SETTINGS: tuple[Setting, ...] = (
    Setting("atelier_nas_root", "", "NAS folder served by Atelier", "text",
            "empty: the folder given to install.py --nas. Model folders install.py linked "
            "keep pointing there.", "ATELIER_ROOT"),
    Setting("atelier_civitai_token", "", "Civitai API token", "password",
            "for models that need a Civitai login", "ATELIER_CIVITAI_TOKEN"),
    Setting("atelier_civitai_url", "", "Civitai address (mirror)", "text",
            "empty: https://civitai.com", "ATELIER_CIVITAI_URL"),
    Setting("atelier_hf_mirrors", "", "Hugging Face mirrors", "text",
            "addresses separated by commas or spaces, tried in order, e.g. "
            "https://hf-mirror.com", "ATELIER_HF_MIRRORS"),
    Setting("atelier_modelscope_url", "", "ModelScope address", "text",
            "empty: https://www.modelscope.cn", "ATELIER_MODELSCOPE_URL"),
    Setting("atelier_residency", True, "Size the checkpoint cache from measured memory",
            "bool", "sets 'Maximum number of checkpoints loaded at the same time' and 'Only "
            "keep one model on device' at start and after each model load; off: only report"),
    Setting("atelier_ram_reserve_gib", 2.0, "RAM kept free for the system (GiB)", "number",
            "checkpoints kept in RAM never eat into this", "ATELIER_GPU_RAM_RESERVE"),
    Setting("atelier_vram_reserve_gib", 0.8, "GPU memory kept free for generation (GiB)",
            "number", "plus 0.4 GiB, and 1 GiB for a 1024x1024 image", "ATELIER_GPU_RESERVE_BASE"),
    Setting("atelier_service_grace", 10.0, "Keep the service this long after the WebUI stops "
            "(seconds)", "number", "a WebUI restarted within it takes the running service "
            "over (uploads and downloads go on)"),
)

BY_KEY = {s.key: s for s in SETTINGS}


def value(opts_data: Mapping[str, object], key: str) -> object:
    """A setting's value from the WebUI's ``opts.data`` (set or not, registered or not:
    under ``--nowebui`` the Settings page is never built)."""
    v = opts_data.get(key)
    return BY_KEY[key].default if v is None else v


def _number(v: object, default: float) -> float:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return f if f >= 0 else default


def mirrors(text: str) -> list[str]:
    return [m for m in re.split(r"[\s,]+", text.strip()) if m]


def service_env(opts_data: Mapping[str, object]) -> dict[str, str]:
    """The environment these settings give the service (unset ones are left out)."""
    env: dict[str, str] = {}
    for s in SETTINGS:
        if s.env is None:
            continue
        v = value(opts_data, s.key)
        if s.kind == "number":
            env[s.env] = str(int(_number(v, float(s.default)) * GIB))  # type: ignore[arg-type]
        elif s.key == "atelier_hf_mirrors":
            if str(v).strip():
                env[s.env] = json.dumps(mirrors(str(v)))
        elif str(v).strip():
            env[s.env] = str(v).strip()
    return env


def nas_root(opts_data: Mapping[str, object]) -> str | None:
    return str(value(opts_data, "atelier_nas_root")).strip() or None


def grace(opts_data: Mapping[str, object]) -> float:
    return _number(value(opts_data, "atelier_service_grace"), 10.0)


def residency_on(opts_data: Mapping[str, object]) -> bool:
    return bool(value(opts_data, "atelier_residency"))


def reserves(opts_data: Mapping[str, object]) -> tuple[int, int]:
    """(RAM reserve, GPU inference reserve) in bytes."""
    ram = _number(value(opts_data, "atelier_ram_reserve_gib"), 2.0)
    vram = _number(value(opts_data, "atelier_vram_reserve_gib"), 0.8)
    return int(ram * GIB), int(vram * GIB)
