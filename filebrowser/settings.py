"""FileBrowser settings, declared once.

Read from ``ATELIER_*`` environment variables (or passed explicitly) and handed to
``create_app(settings)``; nothing reads the environment at import time. Each field's
description is the help text the README table and ``atelier serve --help`` show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .statedir import default_state_dir


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_", extra="ignore")

    root: Path = Field(
        Path("./nas"), description="The NAS folder served (models/, outputs/, users/).")
    state_dir: Path = Field(
        default_factory=lambda data: default_state_dir(data.get("root", Path("./nas"))),
        description="Local state outside the NAS: the SQLite database and caches. "
        "SQLite must sit on local disk, never on NFS. Default: one folder per root, "
        "~/.local/state/atelier/<root name>-<hash of its real path>.",
    )
    db_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<state_dir>/atelier.db. "
        "Use PostgreSQL when several replicas share state.",
    )
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(7862, description="Port to listen on.")
    admin_password: str | None = Field(
        None, description="Password of the 'admin' account created on first start; "
        "if unset, one is generated and printed once.",
    )
    session_idle_hours: float = Field(
        24.0, description="A browser session expires after this long without a request "
        "(sliding; long enough for multi-hour uploads).",
    )
    session_max_days: float = Field(14.0, description="Absolute lifetime of a browser session.")
    cookie_secure: bool = Field(False, description="Mark cookies Secure (set behind HTTPS).")
    login_max_failures_user: int = Field(
        8, description="Failed logins allowed per user name within the window.")
    login_max_failures_addr: int = Field(
        30, description="Failed logins allowed per client address within the window.")
    login_window_seconds: int = Field(900, description="Window of the failed-login limit.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDRs of gateways whose user header is believed.",
    )
    proxy_user_header: str = Field(
        "X-Forwarded-User", description="Header in which a trusted gateway names the user.")
    proxy_auto_create: bool = Field(
        True, description="Create a 'user' account for a name a trusted gateway sends.")
    gateway_secret: str | None = Field(
        None, description="A request whose X-Atelier-Gateway header carries this secret is "
        "a trusted gateway whatever its address (the WebUI extension's proxy, which sets it "
        "for the service it starts); it may then name the user in proxy_user_header.")
    default_quota_bytes: int | None = Field(
        None, description="Storage quota for new users (bytes); none means unlimited.")
    list_page_max: int = Field(1000, description="Largest page a listing returns.")
    upload_max_bytes: int = Field(
        512 * 1024 * 1024, description="Largest small (multipart) upload; bigger files use tus.")

    # -- resumable uploads (tus) ------------------------------------------------------
    tus_max_size: int = Field(
        64 * 1024**3, description="Largest resumable upload accepted (Tus-Max-Size).")
    tus_expire_hours: float = Field(
        48.0, description="An unfinished upload expires this long after its last PATCH; "
        "its partial file is then removed.")
    tus_cleanup_seconds: float = Field(300.0, description="How often expired uploads are swept.")
    quota_recheck_seconds: float = Field(
        30.0, ge=0, description="Resumable uploads check the quota against a walk of the home at "
        "most this old (the service's own writes count at once; files other programs put "
        "in the home, after at most this long).")
    tmp_stale_seconds: float = Field(
        6 * 3600.0, ge=0, description="A hidden temporary file (.atelier-tmp-*) untouched "
        "this long, and not locked by a live writer, was left by a killed process and is "
        "removed.")
    tmp_sweep_seconds: float = Field(
        3600.0, ge=0, description="How often the NAS is swept for stale temporary files "
        "(also once at start); 0: only at start.")
    upload_direct_io: Literal["auto", "on", "off"] = Field(
        "auto", description="Write big uploads (tus, WebDAV PUT) with O_DIRECT, past the "
        "page cache: auto = on local disk filesystems (ext4, xfs, btrfs, f2fs) for uploads "
        "of 16 MiB or more, never on NFS, SMB or FUSE; on = everywhere it is accepted.")

    # -- images: thumbnails, index, shares (issue 4) --------------------------------
    thumb_workers: int = Field(
        2, description="Threads making thumbnails (Pillow releases the GIL while decoding).")
    thumb_max_pixels: int = Field(
        89_478_485, description="Images with more pixels get a placeholder thumbnail "
        "(decompression-bomb guard; Pillow's own default).")
    thumb_cache_max_bytes: int = Field(
        2 << 30, description="Thumbnail cache size (in state_dir, local disk); the least "
        "recently used are removed beyond it.")
    index_enabled: bool = Field(
        True, description="Index images and models for search (a rebuildable cache).")
    index_watch: bool = Field(
        True, description="Follow local changes with filesystem events (inotify); "
        "NFS writes by other hosts are caught by the rescan.")
    index_rescan_seconds: float = Field(
        60.0, description="Check folder mtimes this often and re-read changed folders.")
    index_deep_rescan_seconds: float = Field(
        3600.0, description="Stat every indexed file this often (catches in-place "
        "rewrites that leave the folder mtime unchanged).")
    index_workers: int | None = Field(
        None, ge=0, description="Processes that read images' metadata in parallel when a "
        "scan has many files to read (at least 512: a first index, a new folder of "
        "thousands). Unset: one per CPU, at most 4 (none on one CPU); 0: read them in the "
        "indexing thread.")
    index_count_limit: int = Field(
        1000, ge=0, description="Search totals are counted exactly up to this many "
        "matches; past it a search answers this number with total_exact false (counting "
        "every match of a common word cost more than the page). 0: always exact.")
    index_facet_limit: int = Field(
        20_000, ge=1, description="Facet counts look at up to this many matches, the "
        "newest first; past it they count those only (exact false).")
    images_stealth_pnginfo: bool = Field(
        False, description="Also read parameters hidden in the pixels' low bits (A1111's "
        "stealth_pnginfo extension, NovelAI, SwarmUI) from PNG and lossless WebP images "
        "that carry no other metadata. Decodes every pixel of those images: indexing "
        "them is many times slower.")

    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{self.state_dir / 'atelier.db'}"
