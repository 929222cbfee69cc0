"""Big files in: resumable uploads (tus 1.0) and the WebDAV mount."""

from .dav import build as build_dav
from .tus import TusStore

__all__ = ["TusStore", "build_dav"]
