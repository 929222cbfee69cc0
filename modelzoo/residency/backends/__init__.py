"""Backends that move weights between tiers: ``tensors`` (state dicts), ``diffusers``
(pipelines, the API edition) and ``a1111`` (drives the WebUI's own checkpoint cache).
Nothing is imported here: the a1111 adapter must load inside the WebUI without the rest."""
