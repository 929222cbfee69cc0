"""ModelZoo: fetch models (Civitai, Hugging Face, ModelScope, URLs) and keep them resident.

Subpackages: ``sources`` (references and the catalogues), ``fetch`` (the segmented,
resumable, verified download engine), ``jobs`` (the persistent download queue),
``library`` (the models on the NAS: hashes, identification, listing) and ``residency``
(GPU-aware model switching); ``download`` joins them (resolve -> place -> engine) and
``api`` serves them. torch and diffusers are imported lazily.
"""

from typing import TYPE_CHECKING

from atelier_io.lazy import exports

if TYPE_CHECKING:
    from .api import build_router
    from .cli import register
    from .errors import ModelZooError, QuotaExceeded
    from .fetch.settings import FetchSettings
    from .residency.webui import build_webui_router
    from .settings import ZooSettings

__all__ = ["FetchSettings", "ModelZooError", "QuotaExceeded", "ZooSettings", "build_router",
           "build_webui_router", "register"]

__getattr__, __dir__ = exports(__name__, {
    "build_router": "api", "register": "cli", "ModelZooError": "errors",
    "QuotaExceeded": "errors", "FetchSettings": "fetch.settings", "ZooSettings": "settings",
    "build_webui_router": "residency.webui",
})
