"""Settings of the GPU residency service, declared once (env prefix ``ATELIER_GPU_``).

Sizes accept units: ``ATELIER_GPU_RAM_BUDGET=24GiB``, ``ATELIER_GPU_RESERVE_BASE=0.8GiB``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .footprint import ReserveRule


class ResidencySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_GPU_", extra="ignore")

    models_dir: Path = Field(
        Path("models/Stable-diffusion"),
        description="Folder of checkpoints (*.safetensors) and diffusers folders that may be "
                    "loaded; the standalone service passes <root>/models/Stable-diffusion.")
    devices: str = Field(
        "auto", description="Compute devices: 'auto' (every CUDA GPU, else one CPU device), "
                            "'cuda:0,cuda:1', 'cpu', or simulated 'sim:8GiB,sim:8GiB'.")
    cpu_device_memory: ByteSize = Field(
        ByteSize(4 << 30), description="Weights budget of the CPU compute device used when no "
                                       "GPU exists (there is no VRAM to measure).")
    vram_budget: ByteSize | None = Field(
        None, description="Cap on the bytes of weights per GPU; unset = measured free memory "
                          "minus the inference reserve.")
    ram_budget: ByteSize | None = Field(
        None, description="Cap on the bytes of weights kept in CPU RAM; unset = measured "
                          "available RAM minus ram_reserve.")
    ram_reserve: ByteSize = Field(
        ByteSize(2 << 30), description="CPU RAM always left to the rest of the system.")
    pinned_max: ByteSize | None = Field(
        None, description="Most host RAM kept page-locked (pinned) for full-speed copies to "
                          "the GPU; copies beyond it stay pageable. Pinned memory cannot be "
                          "swapped or reclaimed. Unset = half the RAM (or the container's "
                          "cgroup limit, when lower).")
    reserve_base: ByteSize = Field(
        ByteSize(int(0.8 * (1 << 30))),
        description="Inference memory kept free on a GPU (ComfyUI's minimum_inference_memory).")
    reserve_extra: ByteSize = Field(
        ByteSize(int(0.4 * (1 << 30))),
        description="Extra GPU memory kept free (ComfyUI's EXTRA_RESERVED_VRAM).")
    reserve_per_megapixel: ByteSize = Field(
        ByteSize(1 << 30), description="Further GPU memory per megapixel of image per batch "
                                       "item (activations grow with resolution).")
    dtype: Literal["fp16", "bf16", "fp32"] = Field(
        "fp16", description="Dtype models run in; sizes are computed at this dtype.")
    policy: Literal["cost", "lru"] = Field(
        "cost", description="'cost': GreedyDual-Size-Frequency eviction (reload seconds per GiB "
                            "held, times the uses), an inclusive RAM tier, and GPU victims "
                            "copied down only when cheaper than a re-read; 'lru': the "
                            "classic exclusive two-tier least-recently-used cache.")
    prefetch: bool = Field(
        True, description="Warm the next queued request's model into RAM during the current job.")
    spread_queue: int = Field(
        3, ge=0, description="Load another copy of a model on a GPU with room when every GPU "
                             "holding it has this many more jobs queued (0 = never).")
    diffusers_config: Path | None = Field(
        None, description="Local folder holding one diffusers config folder per model family "
                          "(sd1, sd1-inpaint, sd2, sd2-inpaint, sdxl, sdxl-inpaint, "
                          "sdxl-refiner, sd3, sd35-medium, sd35-large, flux-dev, "
                          "flux-schnell), needed to load single-file checkpoints offline.")
    warm_recent: int = Field(
        2, ge=0, description="At start, load this many of the most recently used models "
                             "again, most recent first (onto a GPU while they fit without "
                             "evicting, then into RAM), in the background; 0: none.")
    max_steps: int = Field(150, ge=1, description="Most sampling steps a request may ask for.")
    min_size: int = Field(64, ge=8, description="Smallest image side in pixels.")
    max_size: int = Field(2048, ge=64, description="Largest image side in pixels.")
    max_prompt_chars: int = Field(10_000, ge=1, description="Longest prompt accepted.")
    default_sampler: str = Field("Euler a", description="Sampler used when a request names none.")
    lora_dir: Path | None = Field(
        None, description="Folder of LoRAs for <lora:name:weight> prompt tags; unset = "
                          "models/Lora beside the models folder.")
    embeddings_dir: Path | None = Field(
        None, description="Folder of textual-inversion embeddings (used when a prompt word "
                          "equals a file name); unset = models/embeddings.")
    vae_dir: Path | None = Field(
        None, description="Folder of VAEs (single files or diffusers folders) for sd_vae; "
                          "unset = models/VAE.")
    queue_max: int = Field(64, ge=1, description="Most generation jobs waiting, all users "
                                                 "together; more are refused with 429.")
    queue_max_per_user: int = Field(16, ge=1, description="Most generation jobs one user may "
                                                          "have waiting.")
    max_images: int = Field(16, ge=1, description="Most images per request "
                                                  "(batch_size x n_iter).")
    preview_every: int = Field(0, ge=0, description="Default for sending a preview image "
                                                    "every N steps over SSE (0: none).")
    sdapi_save_images: Literal["always", "request"] = Field(
        "always", description="Whether /sdapi/v1 images are saved under the user's outputs "
                              "always, or only when the request says save_images (the "
                              "WebUI's default is not to save API images).")

    def reserve_rule(self) -> ReserveRule:
        return ReserveRule(int(self.reserve_base), int(self.reserve_extra),
                           int(self.reserve_per_megapixel))
