"""ModelZoo settings (sources, placement, jobs, library), declared once.

Environment prefix ``ATELIER_``; a few also read the variables their ecosystem already
uses (``CIVITAI_TOKEN``, ``HF_ENDPOINT``, ``HF_TOKEN``), as huggingface_hub does. Tokens,
mirrors and the shared-write list can be changed by an admin through the API; what is
stored in the database then wins over these defaults (``modelzoo/store.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "atelier"


class ZooSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_", extra="ignore",
                                      populate_by_name=True)

    # -- where (the same variables as the service's; `atelier fetch` reads them too) --
    root: Path | None = Field(
        None, description="The NAS root; models go by type under <root>/models/ when no "
                          "destination is given (`atelier fetch --root` overrides it).")
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="Local state outside the NAS (database, preview cache).")
    db_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<state_dir>/atelier.db.")

    # -- sources ----------------------------------------------------------------------
    civitai_url: str = Field(
        "https://civitai.com",
        description="Civitai site (API under /api/v1, downloads under /api/download); "
                    "https://civitai.red or a proxy work the same.")
    civitai_token: str | None = Field(
        None, validation_alias=AliasChoices("ATELIER_CIVITAI_TOKEN", "CIVITAI_TOKEN",
                                            "civitai_token"),
        description="Civitai API key, sent as a Bearer token to the Civitai host only "
                    "(never to the storage host it redirects to). Also read from "
                    "CIVITAI_TOKEN.")
    hf_endpoint: str = Field(
        "https://huggingface.co",
        validation_alias=AliasChoices("ATELIER_HF_ENDPOINT", "HF_ENDPOINT", "hf_endpoint"),
        description="Hugging Face endpoint (HF_ENDPOINT, as huggingface_hub reads it), "
                    "e.g. https://hf-mirror.com.")
    hf_token: str | None = Field(
        None, validation_alias=AliasChoices("ATELIER_HF_TOKEN", "HF_TOKEN", "hf_token"),
        description="Hugging Face token for gated and private repos (HF_TOKEN, else "
                    "huggingface_hub's stored login). Sent to the endpoint and the mirrors.")
    hf_mirrors: list[str] = Field(
        default_factory=list,
        description="JSON list of extra Hugging Face endpoints serving the same files "
                    "(e.g. [\"https://hf-mirror.com\"]); the download engine ranks them by "
                    "measured speed and stripes one file across them.")
    modelscope_url: str = Field(
        "https://www.modelscope.cn",
        description="ModelScope site (https://www.modelscope.ai for the international one).")
    modelscope_token: str | None = Field(
        None, description="ModelScope access token for private repos (optional).")

    # -- placement and sidecars -------------------------------------------------------
    models_base_subfolder: bool = Field(
        False, description="Put models in a sub-folder per base model "
                           "(models/Lora/SDXL 1.0/x.safetensors); a request may override it.")
    models_preview_nsfw_level: int = Field(
        1, ge=1, le=32,
        description="Highest Civitai nsfwLevel a preview image may have (1 PG, 2 PG-13, "
                    "4 R, 8 X, 16 XXX); the first image at or below it is the preview.")
    models_preview_max_side: int = Field(
        768, ge=64, le=4096,
        description="Previews are scaled down to fit this many pixels per side (PNG).")
    models_preview_max_bytes: int = Field(
        20 * 1024 * 1024, ge=1024,
        description="Largest remote preview image read, in bytes.")

    # -- jobs -------------------------------------------------------------------------
    models_concurrency: int = Field(
        2, ge=1, le=32, description="Downloads running at once per replica.")
    models_lease_seconds: float = Field(
        30.0, gt=1,
        description="A running job's claim lasts this long without a heartbeat; then "
                    "another replica takes it over (and resumes its partial file).")
    models_poll_seconds: float = Field(
        1.0, gt=0, description="How often the job runner looks for queued jobs.")
    models_events_ping_seconds: float = Field(
        15.0, gt=0, description="Seconds between keep-alive comments on the job event "
                                "stream (GET /api/models/events).")
    models_replica_id: str | None = Field(
        None, description="This replica's name in job claims; default host name and state "
                          "folder, stable across restarts so its jobs resume at once.")

    @field_validator("civitai_url", "hf_endpoint", "modelscope_url")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @field_validator("hf_mirrors")
    @classmethod
    def _mirrors(cls, v: list[str]) -> list[str]:
        return [m.rstrip("/") for m in v if m.strip()]

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.state_dir / 'atelier.db'}"
