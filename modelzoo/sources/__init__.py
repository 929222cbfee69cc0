"""Model sources: references, the catalogues (Civitai, Hugging Face, ModelScope, plain
URLs) and what they resolve to. Names load on first use (PEP 562): ``atelier --help``
must not pay for requests or huggingface_hub.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import RemoteFile, Resolution
    from .refs import ACCEPTED, CivitaiRef, HfRef, ModelScopeRef, Reference, UrlRef, parse
    from .resolve import Sources

_WHERE = {
    "RemoteFile": "model", "Resolution": "model",
    "ACCEPTED": "refs", "CivitaiRef": "refs", "HfRef": "refs", "ModelScopeRef": "refs",
    "Reference": "refs", "UrlRef": "refs", "parse": "refs",
    "Sources": "resolve",
}

__all__ = [
    "ACCEPTED",
    "CivitaiRef",
    "HfRef",
    "ModelScopeRef",
    "Reference",
    "RemoteFile",
    "Resolution",
    "Sources",
    "UrlRef",
    "parse",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
