"""HTTP routers of the FileBrowser service."""

from . import account, files, usage

__all__ = ["account", "files", "usage"]
