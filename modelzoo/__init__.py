"""ModelZoo: fetch models (Civitai, Hugging Face, ModelScope, URLs) and keep them resident.

Subpackages: ``fetch`` (the segmented, resumable, verified download engine) and
``residency`` (GPU-aware model switching). torch and diffusers are imported lazily.
"""

from atelier_io.lazy import exports

__all__ = ["register"]

__getattr__, __dir__ = exports(__name__, {"register": "cli"})
