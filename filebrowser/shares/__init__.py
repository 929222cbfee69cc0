"""Share links: read-only, revocable, optionally with a password and an expiry."""

from .store import ShareAccess, ShareStore

__all__ = ["ShareAccess", "ShareStore"]
