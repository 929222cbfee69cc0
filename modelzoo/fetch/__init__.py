"""The ModelZoo fetch engine: multi-connection, resumable, verified, mirror-aware.

The names below load on first use (PEP 562): ``atelier pull`` and ``atelier --help``
import ``modelzoo.fetch.cli`` to register ``atelier fetch``, and must not pay for the
engine and its pydantic settings (a tenth of a second) to do so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .control import ControlFile, Validators
    from .engine import fetch
    from .lock import FileLock
    from .results import FetchProgress, FetchResult, MirrorReport
    from .segments import Scheduler, Segment
    from .settings import FetchSettings
    from .validate import (
        JsonFile,
        ModelFile,
        Safetensors,
        TextFile,
        Validator,
        check_safetensors,
        validator_for,
    )

_WHERE = {
    "ControlFile": "control", "Validators": "control",
    "FetchProgress": "results", "FetchResult": "results", "MirrorReport": "results",
    "fetch": "engine",
    "FileLock": "lock",
    "Scheduler": "segments", "Segment": "segments",
    "FetchSettings": "settings",
    "JsonFile": "validate", "ModelFile": "validate", "Safetensors": "validate",
    "TextFile": "validate", "Validator": "validate", "check_safetensors": "validate",
    "validator_for": "validate",
}

__all__ = [
    "ControlFile",
    "FetchProgress",
    "FetchResult",
    "FetchSettings",
    "FileLock",
    "JsonFile",
    "MirrorReport",
    "ModelFile",
    "Safetensors",
    "Scheduler",
    "Segment",
    "TextFile",
    "Validator",
    "Validators",
    "check_safetensors",
    "fetch",
    "validator_for",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
