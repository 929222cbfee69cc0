"""One generation request, checked and normalised before it is queued.

Both front doors build it: ``POST /api/generate`` (our names) and ``/sdapi/v1/txt2img``
and ``/img2img`` (A1111's names). Everything that can be refused is refused here, at
submit, with a 4xx naming the field: sizes, steps, the sampler, LoRA / VAE names (looked
up in their folders), init images that are not images. Random seeds are drawn here, so
the job record holds the seeds actually used.

Seeds follow the WebUI: ``seed = -1`` draws one; image ``i`` of the job (``batch_size``
per pass, ``n_iter`` passes) uses ``seed + i`` and ``subseed + i``; with
``subseed_strength > 0`` its starting noise is ``slerp(strength, noise(seed),
noise(subseed))`` ("variation seed"). The same seed gives the same image whatever its
position in a batch.
"""

from __future__ import annotations

import base64
import binascii
import io
import secrets
from dataclasses import dataclass, field
from typing import Any

from ...errors import InvalidGenerateRequest
from .networks import Networks
from .samplers import Choice

SEED_MAX = 2**32 - 1
LATENT_UPSCALERS = {
    "Latent": ("bilinear", False), "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False), "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False), "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS = {"None": "LANCZOS", "Lanczos": "LANCZOS", "Nearest": "NEAREST"}
MAX_INIT_IMAGE_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class Hires:
    width: int
    height: int
    upscaler: str
    steps: int  # 0: as many as the first pass
    denoising_strength: float
    sampler: Choice
    prompt: str
    negative_prompt: str
    scale: float
    resize_x: int = 0
    resize_y: int = 0


@dataclass
class GenerationRequest:
    kind: str  # "txt2img" | "img2img"
    model: str
    prompt: str
    negative_prompt: str
    steps: int
    cfg_scale: float
    width: int
    height: int
    sampler: Choice
    seed: int
    subseed: int = -1
    subseed_strength: float = 0.0
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int = 1
    networks: Networks = field(default_factory=Networks)
    hires: Hires | None = None
    init_images: list[bytes] = field(default_factory=list)
    mask: bytes | None = None
    denoising_strength: float = 0.75
    resize_mode: int = 0
    preview_every: int = 0
    device: str | None = None  # run on this GPU (else placement chooses)

    @property
    def images(self) -> int:
        return self.batch_size * self.n_iter

    @property
    def seeds(self) -> list[int]:
        return [(self.seed + i) % (SEED_MAX + 1) for i in range(self.images)]

    @property
    def subseeds(self) -> list[int]:
        return [(self.subseed + i) % (SEED_MAX + 1) for i in range(self.images)]

    @property
    def out_size(self) -> tuple[int, int]:
        if self.hires is not None:
            return self.hires.width, self.hires.height
        return self.width, self.height

    def to_json(self) -> dict[str, Any]:
        """What the job record keeps (no image bytes; they can be megabytes)."""
        out: dict[str, Any] = {
            "kind": self.kind, "model": self.model, "prompt": self.prompt,
            "negative_prompt": self.negative_prompt, "steps": self.steps,
            "cfg_scale": self.cfg_scale, "width": self.width, "height": self.height,
            "sampler_name": self.sampler.name, "scheduler": self.sampler.schedule,
            "seed": self.seed, "subseed": self.subseed,
            "subseed_strength": self.subseed_strength, "batch_size": self.batch_size,
            "n_iter": self.n_iter, "clip_skip": self.clip_skip,
            "loras": [r.tag for r, _ in self.networks.loras],
            "sd_vae": self.networks.vae[0] if self.networks.vae else None,
            "init_images": len(self.init_images), "mask": self.mask is not None,
        }
        if self.kind == "img2img":
            out["denoising_strength"] = self.denoising_strength
            out["resize_mode"] = self.resize_mode
        if self.hires is not None:
            h = self.hires
            out["hires"] = {"width": h.width, "height": h.height, "upscaler": h.upscaler,
                            "steps": h.steps, "denoising_strength": h.denoising_strength,
                            "sampler_name": h.sampler.name, "scale": h.scale}
        return out


def draw_seed(seed: int | None) -> int:
    if seed is None or seed == -1:
        return secrets.randbelow(SEED_MAX)
    if not 0 <= seed <= SEED_MAX:
        raise InvalidGenerateRequest("seed must be -1 (random) or 0..4294967295", field="seed")
    return seed


def decode_image(data: str, field: str) -> bytes:
    """A1111 sends images as base64, optionally as a data URL. Only images we can open
    pass (URLs are not fetched: the WebUI's own default refuses them too)."""
    from PIL import Image

    text = data.strip()
    if text.startswith(("http://", "https://")):
        raise InvalidGenerateRequest("images are sent as base64, not as URLs", field=field)
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        raw = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise InvalidGenerateRequest(f"{field} is not base64", field=field) from None
    try:
        with Image.open(io.BytesIO(raw)) as im:
            w, h = im.size
            if w * h > MAX_INIT_IMAGE_PIXELS:
                raise InvalidGenerateRequest(f"{field} is {w}x{h}: too large", field=field)
            im.verify()
    except InvalidGenerateRequest:
        raise
    except Exception:  # PIL raises many kinds for broken data
        raise InvalidGenerateRequest(f"{field} is not an image PIL can read", field=field) \
            from None
    return raw
