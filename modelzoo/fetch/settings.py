"""Fetch engine settings, declared once. Environment prefix ``ATELIER_FETCH_``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .netguard import DEFAULT_BLOCKED

KiB = 1024
MiB = 1024 * KiB


class FetchSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_FETCH_", extra="ignore")

    connections: int | None = Field(
        default=None, ge=1, le=128,
        description="Parallel connections per file (aria2 -x), fixed. Unset: automatic, "
                    "from initial_connections, doubling while each step adds speed, up to "
                    "max_connections.")
    blocked_networks: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED),
        description="Networks (CIDR) no download, redirect or probe may reach: by default "
                    "link-local addresses and the cloud instance-metadata services, which "
                    "hand out the machine's credentials. Add private ranges to keep users "
                    "off the internal network; [] turns the guard off.")
    initial_connections: int = Field(
        default=4, ge=1, le=128,
        description="Connections an automatic download starts with.")
    max_connections: int = Field(
        default=32, ge=1, le=128,
        description="Most connections an automatic download grows to. A CDN that caps each "
                    "connection (hf-mirror, nginx limit_rate) needs many; Civitai and "
                    "Hugging Face push back on aggressive clients, so 16 to 32 is polite.")
    tuning_window: float = Field(
        default=0.5, gt=0,
        description="Seconds the automatic connection count measures each step over.")
    mirror_keep_ratio: float = Field(
        default=0.5, gt=0, le=1,
        description="A mirror slower per connection than this fraction of the fastest is "
                    "left out (its connections would move fewer bytes there).")
    piece_size: int = Field(
        default=1 * MiB, ge=16 * KiB,
        description="Piece size in bytes: the smallest range split off by work stealing and "
                    "the unit of progress in the control file. A killed process refetches at "
                    "most connections x piece_size bytes.")
    buffer_size: int = Field(
        default=256 * KiB, ge=4 * KiB,
        description="Read buffer per connection in bytes (one preallocated buffer each; "
                    "256 KiB stays in the CPU cache between recv and pwrite).")
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to open a connection.")
    stall_timeout: float = Field(
        default=30.0, gt=0,
        description="Seconds without a byte on one connection before it is dropped and retried.")
    retries: int = Field(
        default=8, ge=0,
        description="Consecutive failed attempts a connection makes (without receiving a "
                    "byte) before it gives up; the download fails when every connection has.")
    backoff_initial: float = Field(
        default=0.5, ge=0, description="First retry delay in seconds.")
    backoff_max: float = Field(
        default=30.0, ge=0, description="Largest retry delay in seconds.")
    retry_after_max: float = Field(
        default=300.0, ge=0, description="Cap in seconds on a server's Retry-After (429/503).")
    demote_after: int = Field(
        default=3, ge=1,
        description="Consecutive failures after which a mirror is demoted and its "
                    "connections move to the other mirrors.")
    bandwidth_limit: int = Field(
        default=0, ge=0,
        description="Total download rate limit in bytes per second; 0 = unlimited.")
    proxy: str | None = Field(
        default=None,
        description="Proxy URL for all requests (http://, https://, socks5://, socks5h://). "
                    "Unset: HTTP_PROXY/HTTPS_PROXY/ALL_PROXY/NO_PROXY from the environment.")
    user_agent: str = Field(
        default="Atelier-ModelZoo/0.1",
        description="User-Agent. Must not look like a browser: Civitai answers browsers with "
                    "redirects to an HTML login page instead of a JSON error.")
    max_redirects: int = Field(
        default=10, ge=0, description="Redirect hops followed per request.")
    reserve_bytes: int = Field(
        default=64 * MiB, ge=0,
        description="Free space in bytes that must remain on the target filesystem after the "
                    "download's size is reserved.")
    preallocate: bool = Field(
        default=True,
        description="Reserve the file's blocks up front (posix_fallocate). Turn off on NFS "
                    "servers older than v4.2, where glibc emulates it by writing every block.")
    fsync: bool = Field(
        default=True,
        description="fsync the partial file (every sync_interval and before the rename), so a "
                    "machine crash never leaves a wrong file under the final name. Off: "
                    "faster where the disk is slower than the network (aria2c never fsyncs); "
                    "a killed process still loses nothing.")
    sync_interval: float = Field(
        default=2.0, gt=0,
        description="Seconds between fdatasync of the partial file and its control file.")
    probe_bytes: int = Field(
        default=256 * KiB, ge=1,
        description="Bytes read from each mirror to rank it (latency and throughput).")
    lock: bool = Field(
        default=True,
        description="Take an exclusive lock file per destination (replicas on one NAS).")
    lock_heartbeat: float = Field(
        default=5.0, gt=0, description="Seconds between heartbeats of a held lock file.")
    lock_stale_after: float = Field(
        default=60.0, gt=0,
        description="A lock whose heartbeat is older than this many seconds is taken over.")
    lock_wait: float = Field(
        default=6 * 3600.0, ge=0,
        description="Seconds to wait for another process's download of the same file.")
    progress_interval: float = Field(
        default=0.25, gt=0, description="Seconds between progress callbacks.")
