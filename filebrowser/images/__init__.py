"""Images: thumbnails, generation parameters (A1111, ComfyUI, sidecars), the search index."""

from .formats import parse_comfyui
from .index import Index, IndexService, SearchQuery, search
from .infotext import GenParams, parse_infotext
from .meta import ImageMeta, read_meta
from .service import Images, ImagesDep
from .thumbs import Thumbnailer

__all__ = ["GenParams", "ImageMeta", "Images", "ImagesDep", "Index", "IndexService",
           "SearchQuery", "Thumbnailer", "parse_comfyui", "parse_infotext", "read_meta",
           "search"]
