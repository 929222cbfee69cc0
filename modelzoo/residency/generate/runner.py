"""Run one :class:`GenerationRequest` on a leased pipeline (a GPU worker thread).

    for each of n_iter passes (batch_size images each, seeds seed+i):
        txt2img  : noise(seed, subseed) -> txt2img pipeline  [-> hires: upscale the latent
                   or the image, then img2img at the target size with denoising_strength]
        img2img  : init image resized to width x height -> img2img (or inpaint with a mask)
        inpainting models run every mode through their inpaint pipeline (txt2img = a full
        mask over a grey image)

The pipelines for the modes share the leased pipeline's modules (``from_pipe``), and the
job's scheduler, LoRAs, embeddings and VAE are set on them for this job only
(``networks.applied``), so the next job finds the model as it was loaded.

Progress and control go through the pipeline's step callback (``callback_on_step_end``),
called between denoising steps: it reports ``step/total`` (all passes and phases of the
job together), hands the latents to a preview every N steps, raises :class:`Cancelled`
for a cancel (the job ends without images) and sets the pipeline's ``_interrupt`` for an
A1111 interrupt (the current pass stops and is decoded, the rest is skipped, the images
made so far are kept: the WebUI's behaviour).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import InvalidGenerateRequest
from ..families import IMG2IMG, INPAINT, TXT2IMG, Family
from . import samplers
from .conditioning import PromptEncoder
from .infotext import infotext
from .networks import applied
from .prompts import extract_networks, plain
from .request import IMAGE_UPSCALERS, LATENT_UPSCALERS, GenerationRequest

# Latent -> RGB by a 4x3 linear map, a 1/8-size preview without the VAE ("Approx cheap"
# in the WebUI; coefficients from the diffusers forum thread on decoding latents to RGB).
PREVIEW_SD = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264),
              (-0.184, -0.271, -0.473))
PREVIEW_SDXL = ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250),
                (0.1074, 0.0886, -0.0163), (-0.3730, -0.2499, -0.2088))


class Cancelled(Exception):
    """Raised from the step callback when the job was cancelled."""


class Control:
    """Shared between the job's owner (cancel, interrupt) and the runner (progress)."""

    def __init__(self, on_progress: Callable[[int, int, Any], None] | None = None) -> None:
        self.cancelled = False
        self.interrupted = False
        self.on_progress = on_progress

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        if self.on_progress is not None:
            self.on_progress(step, total, preview)


@dataclass
class Output:
    image: Any  # PIL image
    seed: int
    subseed: int
    infotext: str


@dataclass
class RunResult:
    outputs: list[Output]
    interrupted: bool
    seconds: float


def preview_image(latents: Any, style: str) -> Any:
    """Latents (B, 4, h, w) -> a small PIL image of the first item."""
    import torch
    from PIL import Image

    if latents is None or latents.ndim != 4 or latents.shape[1] != 4:
        return None
    coefs = torch.tensor(PREVIEW_SDXL if style == "sdxl" else PREVIEW_SD,
                         dtype=torch.float32)
    x = torch.einsum("lxy,lr->rxy", latents[0].detach().float().cpu(), coefs)
    rgb = ((x.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(rgb)


def _slerp(t: float, a: Any, b: Any) -> Any:
    """Spherical interpolation of two noise tensors (the WebUI's variation seeds)."""
    import torch

    na, nb = a / a.norm(), b / b.norm()
    dot = (na * nb).sum().clamp(-1.0, 1.0)
    if dot.abs() > 0.9995:
        return (1 - t) * a + t * b
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def _pipeline(pipe: Any, cls_name: str) -> Any:
    import diffusers

    cls = getattr(diffusers, cls_name)
    p = pipe if type(pipe) is cls else cls.from_pipe(pipe)
    p.set_progress_bar_config(disable=True)
    return p


def _phase_steps(scheduler: Any, steps: int, strength: float | None) -> int:
    """How many times the step callback will run for this phase."""
    try:
        scheduler.set_timesteps(steps, device="cpu")
        n = len(scheduler.timesteps)
    except Exception:  # flow-matching schedulers need more arguments; count plain steps
        return steps if strength is None else max(1, int(steps * strength))
    if strength is None:
        return n
    order = getattr(scheduler, "order", 1)
    init = min(int(steps * strength), steps)
    return max(0, n - max(steps - init, 0) * order)


class Runner:
    def __init__(self, pipe: Any, req: GenerationRequest, ctl: Control, *, model_name: str,
                 model_hash: str | None, version: str, lora_hashes: dict[str, str] | None = None,
                 vae_hash: str | None = None) -> None:
        self.pipe = pipe
        self.req = req
        self.ctl = ctl
        self.family: Family = pipe.atelier_family
        self.style = self.family.style
        self.flow = self.style in ("sd3", "flux")
        self.base_config = dict(pipe.atelier_scheduler_config)
        self.model_name = model_name
        self.model_hash = model_hash
        self.version = version
        self.lora_hashes = lora_hashes or {}
        self.vae_hash = vae_hash
        self.done = 0
        self.total = 0

    # ---- plumbing ------------------------------------------------------------------
    def _scheduler(self, choice: samplers.Choice, seed: int) -> Any:
        if self.flow:
            return self.pipe.scheduler  # the flow-matching model's own
        return samplers.build(choice, self.base_config, seed=seed)

    def _callback(self, offset: int) -> Callable[..., dict[str, Any]]:
        every = self.req.preview_every

        def cb(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
            if self.ctl.cancelled:
                raise Cancelled()
            step = min(self.total, offset + i + 1)
            preview = None
            if every and (i + 1) % every == 0:
                preview = preview_image(kw.get("latents"), self.style)
            self.ctl.progress(step, self.total, preview)
            if self.ctl.interrupted:
                p._interrupt = True
            return kw

        return cb

    def _plan_total(self) -> None:
        req = self.req
        per = 0
        sched = self._scheduler(req.sampler, 0) if not self.flow else None
        if req.kind == "img2img" or self.family.inpaint and req.kind == "txt2img":
            strength = req.denoising_strength if req.kind == "img2img" else 1.0
            per += (_phase_steps(sched, req.steps, strength) if sched is not None
                    else max(1, int(req.steps * strength)))
        else:
            per += _phase_steps(sched, req.steps, None) if sched is not None else req.steps
        if req.hires is not None:
            h = req.hires
            hs = self._scheduler(h.sampler, 0) if not self.flow else None
            steps = h.steps or req.steps
            per += (_phase_steps(hs, steps, h.denoising_strength) if hs is not None
                    else max(1, int(steps * h.denoising_strength)))
        self.total = per * req.n_iter

    def _conditioning(self, prompt: str, negative: str) -> dict[str, Any]:
        text, _ = extract_networks(prompt)
        neg, _ = extract_networks(negative)
        if self.flow:
            out: dict[str, Any] = {"prompt": plain(text)}
            if self.style == "sd3":
                out["negative_prompt"] = plain(neg)
            return out
        enc = PromptEncoder(self.pipe, self.style, self.req.clip_skip)
        return enc(text, neg)

    def _noise(self, seeds: list[int], subseeds: list[int], shape: tuple[int, ...]
               ) -> tuple[Any, list[Any]]:
        """Starting latents and the generators the sampler continues with, per image."""
        import torch

        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        noises = []
        for g, sub in zip(gens, subseeds, strict=True):
            x = torch.randn(shape, generator=g, dtype=torch.float32)
            if self.req.subseed_strength > 0:
                y = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(sub),
                                dtype=torch.float32)
                x = _slerp(self.req.subseed_strength, x, y)
            noises.append(x)
        return torch.stack(noises), gens

    def _device_dtype(self) -> tuple[Any, Any]:
        module = getattr(self.pipe, "unet", None)
        if module is None:
            module = self.pipe.transformer
        param = next(module.parameters())
        return param.device, param.dtype

    # ---- phases --------------------------------------------------------------------
    def _common(self, cond: dict[str, Any], gens: list[Any], offset: int) -> dict[str, Any]:
        return {**cond, "generator": gens, "num_images_per_prompt": len(gens),
                "guidance_scale": self.req.cfg_scale,  # Flux dev: its distilled guidance
                "callback_on_step_end": self._callback(offset)}

    def _txt2img(self, cond: dict[str, Any], seeds: list[int], subseeds: list[int],
                 latent_out: bool) -> Any:
        req = self.req
        if self.family.inpaint:  # an inpainting model: a full mask over grey
            return self._inpaint_blank(cond, seeds, latent_out)
        if not self.family.txt2img:
            raise InvalidGenerateRequest(f"{self.family.label} models only refine: use "
                                         "img2img", field="model")
        p = _pipeline(self.pipe, TXT2IMG[self.style])
        p.scheduler = self._scheduler(req.sampler, seeds[0])
        device, dtype = self._device_dtype()
        latents = None
        if not self.flow:
            ch = p.unet.config.in_channels
            scale = getattr(p, "vae_scale_factor", 8)
            latents, gens = self._noise(seeds, subseeds,
                                        (ch, req.height // scale, req.width // scale))
        else:
            import torch

            gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        kw = self._common(cond, gens, self.done)
        if latents is not None:
            kw["latents"] = latents.to(device=device, dtype=dtype)
        before = self.done
        out = p(num_inference_steps=req.steps, width=req.width, height=req.height,
                output_type="latent" if latent_out else "pil", **kw)
        self.done = before + self._phase_total(p)
        return out.images

    def _phase_total(self, p: Any) -> int:
        return int(getattr(p, "_num_timesteps", 0) or 0)

    def _inpaint_blank(self, cond: dict[str, Any], seeds: list[int], latent_out: bool) -> Any:
        import torch
        from PIL import Image

        req = self.req
        p = _pipeline(self.pipe, INPAINT[self.style])
        p.scheduler = self._scheduler(req.sampler, seeds[0])
        grey = Image.new("RGB", (req.width, req.height), (127, 127, 127))
        white = Image.new("L", (req.width, req.height), 255)
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        kw = self._common(cond, gens, self.done)
        out = p(image=grey, mask_image=white, strength=1.0, num_inference_steps=req.steps,
                width=req.width, height=req.height,
                output_type="latent" if latent_out else "pil", **kw)
        self.done += self._phase_total(p)
        return out.images

    def _img2img(self, cond: dict[str, Any], seeds: list[int], images: Any, strength: float,
                 steps: int, choice: samplers.Choice, width: int, height: int,
                 mask: Any = None) -> Any:
        import torch

        masked = mask is not None or self.family.inpaint
        cls = INPAINT[self.style] if masked else IMG2IMG[self.style]
        p = _pipeline(self.pipe, cls)
        p.scheduler = self._scheduler(choice, seeds[0])
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        kw = self._common(cond, gens, self.done)
        extra: dict[str, Any] = {}
        if masked:
            from PIL import Image

            extra["mask_image"] = mask if mask is not None else Image.new(
                "L", (width, height), 255)
            extra["width"], extra["height"] = width, height
        if self.style == "flux":
            extra["width"], extra["height"] = width, height
        out = p(image=images, strength=strength, num_inference_steps=steps, output_type="pil",
                **extra, **kw)
        self.done += self._phase_total(p)
        return out.images

    def _hires(self, first: Any, seeds: list[int]) -> Any:
        import torch
        from PIL import Image

        req = self.req
        h = req.hires
        assert h is not None
        cond = self._conditioning(h.prompt or req.prompt,
                                  h.negative_prompt or req.negative_prompt)
        if h.upscaler in LATENT_UPSCALERS and isinstance(first, torch.Tensor):
            mode, antialias = LATENT_UPSCALERS[h.upscaler]
            scale = getattr(self.pipe, "vae_scale_factor", 8)
            size = (h.height // scale, h.width // scale)
            kw: dict[str, Any] = {"mode": mode}
            if mode in ("bilinear", "bicubic"):
                kw["antialias"] = antialias
                kw["align_corners"] = False
            images: Any = torch.nn.functional.interpolate(first, size=size, **kw)
        else:  # an image upscaler, or an inpainting model (its pipeline takes images)
            name = IMAGE_UPSCALERS.get(h.upscaler) or {
                "nearest": "NEAREST", "nearest-exact": "NEAREST", "bicubic": "BICUBIC",
            }.get(LATENT_UPSCALERS[h.upscaler][0], "BILINEAR")
            resample = getattr(Image.Resampling, name)
            images = [im.resize((h.width, h.height), resample) for im in first]
        return self._img2img(cond, seeds, images, h.denoising_strength, h.steps or req.steps,
                             h.sampler, h.width, h.height)

    def _init_images(self, count: int) -> tuple[list[Any], Any]:
        from PIL import Image, ImageOps

        req = self.req
        size = (req.width, req.height)
        out = []
        for i in range(count):
            raw = req.init_images[i % len(req.init_images)]
            im = ImageOps.exif_transpose(Image.open(io.BytesIO(raw))).convert("RGB")
            if req.resize_mode == 1:  # crop and resize
                im = ImageOps.fit(im, size, Image.Resampling.LANCZOS)
            elif req.resize_mode == 2:  # resize and fill
                im = ImageOps.pad(im, size, Image.Resampling.LANCZOS)
            else:  # 0 just resize (3, latent upscale, resizes the image too)
                im = im.resize(size, Image.Resampling.LANCZOS)
            out.append(im)
        mask = None
        if req.mask is not None:
            mask = Image.open(io.BytesIO(req.mask)).convert("L").resize(
                size, Image.Resampling.LANCZOS)
        return out, mask

    # ---- the job -------------------------------------------------------------------
    def run(self) -> RunResult:
        t0 = time.perf_counter()
        req = self.req
        self._plan_total()
        outputs: list[Output] = []
        all_seeds, all_subseeds = req.seeds, req.subseeds
        with applied(self.pipe, req.networks, self.style) as used:
            cond = self._conditioning(req.prompt, req.negative_prompt)
            for it in range(req.n_iter):
                if self.ctl.interrupted:
                    break
                sl = slice(it * req.batch_size, (it + 1) * req.batch_size)
                seeds, subseeds = all_seeds[sl], all_subseeds[sl]
                if req.kind == "img2img":
                    images, mask = self._init_images(len(seeds))
                    result = self._img2img(cond, seeds, images, req.denoising_strength,
                                           req.steps, req.sampler, req.width, req.height,
                                           mask)
                else:
                    hires = req.hires is not None and not self.flow
                    latent_out = (hires and not self.family.inpaint
                                  and req.hires.upscaler in LATENT_UPSCALERS)  # type: ignore[union-attr]
                    result = self._txt2img(cond, seeds, subseeds, latent_out)
                    if hires and not self.ctl.interrupted:
                        result = self._hires(result, seeds)
                    elif latent_out:  # interrupted before the second pass: decode the first
                        result = self._decode(result)
                for k, im in enumerate(result):
                    outputs.append(Output(im, seeds[k], subseeds[k],
                                          self._infotext(seeds[k], subseeds[k], used)))
        return RunResult(outputs, self.ctl.interrupted, time.perf_counter() - t0)

    def _decode(self, latents: Any) -> Any:
        import torch

        vae = self.pipe.vae
        with torch.no_grad():
            x = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return self.pipe.image_processor.postprocess(x, output_type="pil")

    def _infotext(self, seed: int, subseed: int, used: dict[str, Any]) -> str:
        req = self.req
        params: list[tuple[str, Any]] = [
            ("Steps", req.steps),
            ("Sampler", req.sampler.name),
            ("Schedule type", req.sampler.label if not self.flow else None),
            ("CFG scale", req.cfg_scale),
            ("Seed", seed),
            ("Size", f"{req.width}x{req.height}"),
            ("Model hash", self.model_hash),
            ("Model", self.model_name),
        ]
        if used.get("vae"):
            params += [("VAE hash", self.vae_hash), ("VAE", used["vae"][1].name)]
        if req.subseed_strength > 0:
            params += [("Variation seed", subseed),
                       ("Variation seed strength", req.subseed_strength)]
        if req.kind == "img2img":
            params.append(("Denoising strength", req.denoising_strength))
        if req.clip_skip > 1:
            params.append(("Clip skip", req.clip_skip))
        if req.hires is not None:
            h = req.hires
            params += [("Denoising strength", h.denoising_strength),
                       ("Hires upscale", h.scale) if not (h.resize_x or h.resize_y)
                       else ("Hires resize", f"{h.width}x{h.height}"),
                       ("Hires steps", h.steps or None),
                       ("Hires upscaler", h.upscaler)]
            if h.sampler.name != req.sampler.name:
                params.append(("Hires sampler", h.sampler.name))
        if used.get("loras"):
            hashes = [f"{r.name}: {self.lora_hashes[r.name]}" for r, _ in used["loras"]
                      if r.name in self.lora_hashes]
            params.append(("Lora hashes", ", ".join(hashes) or None))
        if used.get("embeddings"):
            params.append(("TI", ", ".join(n for n, _ in used["embeddings"])))
        params.append(("RNG", "CPU"))
        params.append(("Version", self.version))
        return infotext(req.prompt, req.negative_prompt, params)
