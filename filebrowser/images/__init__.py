"""Images: thumbnails, generation parameters (A1111, ComfyUI, sidecars), the search index.

The names below load on first use, so the index's parsing workers, which import only
:mod:`.rows` and the parsers, do not load SQLAlchemy and the web stack."""

from __future__ import annotations

from typing import TYPE_CHECKING

from atelier_io.lazy import exports

if TYPE_CHECKING:
    from .formats import parse_comfyui
    from .index import Index, IndexService, SearchQuery, search
    from .infotext import GenParams, parse_infotext
    from .meta import ImageMeta, read_meta
    from .service import Images, ImagesDep
    from .thumbs import Thumbnailer

__all__ = ["GenParams", "ImageMeta", "Images", "ImagesDep", "Index", "IndexService",
           "SearchQuery", "Thumbnailer", "parse_comfyui", "parse_infotext", "read_meta",
           "search"]

__getattr__, __dir__ = exports(__name__, {
    "parse_comfyui": "formats", "Index": "index", "IndexService": "index",
    "SearchQuery": "index", "search": "index", "GenParams": "infotext",
    "parse_infotext": "infotext", "ImageMeta": "meta", "read_meta": "meta",
    "Images": "service", "ImagesDep": "service", "Thumbnailer": "thumbs"})
