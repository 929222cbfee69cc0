"""The image features built from the settings: the thumbnailer and the index service.

The app (``filebrowser.app``) keeps one :class:`Images` on ``app.state.images``, starts
the index writer (initial scan, watcher, rescans) with its lifespan and stops it with
the thumbnail pool on shutdown; routes reach it through :data:`ImagesDep`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..core import FileBrowser
from .index import Index, IndexService
from .thumbs import Thumbnailer


class Images:
    def __init__(self, fb: FileBrowser) -> None:
        s = fb.settings
        self.fb = fb
        self.thumbs = Thumbnailer(s.state_dir / "thumbs", workers=s.thumb_workers,
                                  max_pixels=s.thumb_max_pixels,
                                  max_bytes=s.thumb_cache_max_bytes)
        self.index: Index | None = None
        self.service: IndexService | None = None
        if s.index_enabled:
            self.index = Index(fb.engine, fb.root, stealth=s.images_stealth_pnginfo,
                               count_limit=s.index_count_limit,
                               facet_limit=s.index_facet_limit, workers=s.index_workers)
            self.service = IndexService(self.index, watch=s.index_watch,
                                        rescan_seconds=s.index_rescan_seconds,
                                        deep_seconds=s.index_deep_rescan_seconds)

    def start(self) -> None:
        if self.service is not None:
            self.service.start()

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
        self.thumbs.close()


def get_images(request: Request) -> Images:
    images: Images = request.app.state.images
    return images


ImagesDep = Annotated[Images, Depends(get_images)]
