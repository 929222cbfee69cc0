"""ModelZoo: fetch models (Civitai, Hugging Face, ModelScope, URLs) and keep them resident.

Subpackages: ``sources`` (references and the catalogues), ``fetch`` (the segmented,
resumable, verified download engine), ``jobs`` (the persistent download queue),
``library`` (the models on the NAS: hashes, identification, listing) and ``residency``
(GPU-aware model switching); ``download`` joins them (resolve -> place -> engine) and
``api`` serves them. torch and diffusers are imported lazily.
"""
