"""ModelZoo: fetch models (Civitai, Hugging Face, ModelScope, URLs) and keep them resident.

Subpackages: ``fetch`` (the segmented, resumable, verified download engine) and
``residency`` (GPU-aware model switching). torch and diffusers are imported lazily.
"""
