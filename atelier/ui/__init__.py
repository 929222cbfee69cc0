"""The web pages: a single-page app built from ``web/`` into ``static/`` (committed)."""

from .pages import install

__all__ = ["install"]
