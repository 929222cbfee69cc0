"""Files on the NAS: listing, writes placed atomically, trash, downloads, zip streams."""

from .fs import Entry, list_dir, stat_entry
from .responses import SAFE_HEADERS, file_response
from .trash import Trash
from .zipstream import stream_zip

__all__ = ["SAFE_HEADERS", "Entry", "Trash", "file_response", "list_dir", "stat_entry",
           "stream_zip"]
