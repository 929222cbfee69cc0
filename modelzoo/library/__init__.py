"""The local library: model files on the NAS, hashed once, identified on Civitai, with
their sidecars completed (``index.py``: the hash cache and lookups; ``scan.py``: the
scan; ``listing.py``: what ``GET /api/models/library`` returns)."""
