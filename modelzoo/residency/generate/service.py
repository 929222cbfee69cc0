"""What both front doors share: turn a body into a checked request and queue it.

``POST /api/generate`` and ``/sdapi/v1/txt2img|img2img`` speak the same field names (the
WebUI's), so one :func:`GenerateService.build` checks them all. Refusals happen here,
before anything is queued::

    400 invalid_request     sizes, steps, batch, sampler/schedule, upscaler, images,
                            features the backend does not have (restore_faces, scripts...)
    404 unknown_model / unknown_network / unknown_device
    422 unsupported_model / missing_config   the checkpoint's family cannot be loaded
    507 model_too_large     weights + inference reserve exceed every device's budget,
                            or the weights exceed the RAM they pass through
    507 quota_exceeded      the images could not fit in the owner's quota
    429 queue_full          the queue is at its bound (all users, or this user)

Per-user A1111 options (``/sdapi/v1/options``: the checkpoint, VAE and clip skip a user's
requests default to) live in ``residency_options``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ...errors import (
    InvalidCheckpoint,
    InvalidGenerateRequest,
    ModelTooLarge,
    UnknownModel,
)
from .. import db
from ..families import Family
from ..hashes import HashStore
from ..service import ResidencyService
from ..settings import ResidencySettings
from . import samplers
from .images import Storage, estimate
from .jobs import Job, JobManager
from .networks import Folder, Networks, embeddings_in
from .prompts import extract_networks
from .request import (
    IMAGE_UPSCALERS,
    LATENT_UPSCALERS,
    GenerationRequest,
    Hires,
    decode_image,
    draw_seed,
)

OPTION_KEYS = ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers")
DEFAULT_VAE = ("Automatic", "None", "", None)
# WebUI features this backend does not have: refused, never silently dropped
UNSUPPORTED_FIELDS = {
    "restore_faces": "face restoration", "tiling": "tiling", "script_name": "scripts",
    "refiner_checkpoint": "a refiner pass", "hr_checkpoint_name": "a hires checkpoint",
    "latent_mask": "latent masks",
}


def _num(body: dict[str, Any], key: str, default: Any, kind: type = int) -> Any:
    v = body.get(key)
    if v is None:
        return default
    try:
        return kind(v)
    except (TypeError, ValueError):
        raise InvalidGenerateRequest(f"{key} must be a number, not {v!r}", field=key) from None


class GenerateService:
    def __init__(self, settings: ResidencySettings, service: ResidencyService,
                 engine: sa.Engine, storage: Storage, *, version: str = "atelier") -> None:
        self.settings = settings
        self.service = service
        self.engine = engine
        self.storage = storage
        self.version = version
        models = Path(settings.models_dir)
        self.loras = Folder(settings.lora_dir or models.parent / "Lora", "LoRA",
                            (".safetensors",))
        self.embeddings = Folder(settings.embeddings_dir or models.parent / "embeddings",
                                 "embedding", (".safetensors", ".pt"))
        self.vaes = Folder(settings.vae_dir or models.parent / "VAE", "VAE", (".safetensors",),
                           dirs_with="config.json")
        self.hashes = HashStore(engine)
        self.jobs = JobManager(placement=service.placement, catalog=service.catalog,
                               engine=engine, storage=storage, hashes=self.hashes,
                               queue_max=settings.queue_max,
                               queue_max_per_user=settings.queue_max_per_user, version=version)

    # ---- options -------------------------------------------------------------------
    def options(self, user: str) -> dict[str, Any]:
        t = db.options
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.key, t.c.value).where(t.c.user == user)).all()
        return {r.key: r.value for r in rows}

    def set_options(self, user: str, values: dict[str, Any]) -> None:
        t = db.options
        with self.engine.begin() as conn:
            for k, v in values.items():
                conn.execute(t.delete().where(t.c.user == user, t.c.key == k))
                conn.execute(t.insert().values(user=user, key=k, value=v))

    # ---- models --------------------------------------------------------------------
    def resolve_model(self, name: str) -> str:
        """A catalog name from what A1111 clients send: a name, a title with its hash
        (``"sd15.safetensors [6ce0161689]"``), a ``model_name`` or a short hash."""
        catalog = self.service.catalog
        try:
            return str(catalog.get(name).name)
        except UnknownModel:
            pass
        wanted = re.sub(r"\s*\[[0-9a-fA-F]{8,64}\]$", "", name.strip())
        for n in catalog.names():
            if n.replace("/", "_") == wanted:
                return n
            path = catalog.path_of(n)
            if re.fullmatch(r"[0-9a-fA-F]{10}|[0-9a-fA-F]{64}", wanted) and path.is_file():
                h = self.hashes.lookup(path)
                if h is not None and wanted.lower() in (h.short, h.sha256):
                    return n
        raise UnknownModel(f"no model {name!r} in the models folder", model=name)

    def default_model(self, user: str) -> str:
        chosen = self.options(user).get("sd_model_checkpoint")
        if chosen:
            try:
                return self.resolve_model(str(chosen))
            except UnknownModel:
                pass  # deleted since: fall back like the WebUI does
        for name in self.service.catalog.names():  # the first one that can run
            try:
                self.family(name)
            except InvalidCheckpoint:
                continue
            return name
        raise UnknownModel("there are no usable checkpoints in the models folder")

    def family(self, model: str) -> Family:
        return self.service.catalog.family(model)

    def check_config(self, model: str) -> None:
        """422 missing_config now rather than in the job."""
        spec = self.service.catalog.get(model)
        if spec.path.is_file():
            self.service.backend.config_for(self.family(model))

    def check_fits(self, model: str, width: int, height: int, batch: int,
                   device: str | None = None) -> None:
        """507 at submit when the model cannot fit on any device even with every other
        model evicted (weights + inference reserve > the device's budget), or cannot pass
        through RAM."""
        manager = self.service.manager
        spec = manager.spec(model)
        reserve = manager.reserve_for(width, height, batch)
        names = [manager.device(device).name] if device else list(manager.devices)
        budgets = [manager.budget(n, reserve) for n in names]
        best = max(budgets, key=lambda b: b.limit)
        if spec.nbytes > best.limit:
            need = spec.nbytes + reserve
            raise ModelTooLarge(
                f"{spec.name} needs {need} bytes ({spec.nbytes} of weights + {reserve} "
                f"reserved for a {width}x{height} batch of {batch}); the largest budget is "
                f"{best.limit} bytes on {best.device} ({best.free} free of {best.total}, "
                f"our models hold {best.ours})", model=spec.name, device=best.device,
                needed_bytes=need, weights_bytes=spec.nbytes, reserve_bytes=reserve,
                free_bytes=best.free, total_bytes=best.total, ours_bytes=best.ours,
                limit_bytes=best.limit)
        hb = manager.budget(manager.host.name)
        if spec.nbytes > hb.limit:
            raise ModelTooLarge(
                f"{spec.name} has {spec.nbytes} bytes of weights; RAM, which every load "
                f"passes through, allows {hb.limit} ({hb.free} free of {hb.total})",
                model=spec.name, device="ram", needed_bytes=spec.nbytes,
                weights_bytes=spec.nbytes, reserve_bytes=0, free_bytes=hb.free,
                total_bytes=hb.total, ours_bytes=hb.ours, limit_bytes=hb.limit)

    # ---- requests ------------------------------------------------------------------
    def _size(self, name: str, v: int) -> int:
        s = self.settings
        if not s.min_size <= v <= s.max_size:
            raise InvalidGenerateRequest(f"{name} {v} is out of range {s.min_size}.."
                                         f"{s.max_size}", field=name)
        if v % 8:
            raise InvalidGenerateRequest(f"{name} {v} must be a multiple of 8", field=name)
        return v

    def _networks(self, texts: list[str], vae: str | None, disabled: bool) -> Networks:
        nets = Networks()
        if not disabled:
            seen = set()
            for text in texts:
                try:
                    _, refs = extract_networks(text)
                except ValueError as exc:
                    raise InvalidGenerateRequest(str(exc), field="prompt") from None
                for ref in refs:
                    if ref.name not in seen:
                        seen.add(ref.name)
                        nets.loras.append((ref, self.loras.find(ref.name)))
        joined = "\n".join(extract_networks(t)[0] for t in texts)
        nets.embeddings = embeddings_in(joined, self.embeddings)
        if vae not in DEFAULT_VAE:
            nets.vae = (str(vae), self.vaes.find(str(vae)))
        return nets

    def build(self, kind: str, body: dict[str, Any], user: str) -> GenerationRequest:
        """Check and normalise a WebUI-style body (``/api/generate`` adds ``model``,
        ``sampler``, ``size``, ``vae`` and ``clip_skip`` as shorthands)."""
        s = self.settings
        for key, what in UNSUPPORTED_FIELDS.items():
            if body.get(key):
                raise InvalidGenerateRequest(f"{what} is not supported by this server "
                                             f"({key})", field=key)
        if body.get("alwayson_scripts"):
            raise InvalidGenerateRequest("always-on scripts (ControlNet, ...) are not "
                                         "supported by this server", field="alwayson_scripts")
        if any(_num(body, k, 0) > 0 for k in ("seed_resize_from_w", "seed_resize_from_h")):
            raise InvalidGenerateRequest("seed resize is not supported", field="seed_resize_from_w")
        opts = self.options(user)
        override = body.get("override_settings") or {}
        if not isinstance(override, dict):
            raise InvalidGenerateRequest("override_settings must be an object",
                                         field="override_settings")
        model_name = body.get("model") or override.get("sd_model_checkpoint")
        model = self.resolve_model(str(model_name)) if model_name else self.default_model(user)
        fam = self.family(model)
        width, height = _num(body, "width", 512), _num(body, "height", 512)
        if body.get("size"):
            try:
                w, _, h = str(body["size"]).lower().partition("x")
                width, height = int(w), int(h)
            except ValueError:
                raise InvalidGenerateRequest(f"size must look like 512x768, not "
                                             f"{body['size']!r}", field="size") from None
        self._size("width", width)
        self._size("height", height)
        steps = _num(body, "steps", 20)
        if not 1 <= steps <= s.max_steps:
            raise InvalidGenerateRequest(f"steps {steps} is out of range 1..{s.max_steps}",
                                         field="steps")
        prompt, negative = str(body.get("prompt") or ""), str(body.get("negative_prompt") or "")
        if len(prompt) > s.max_prompt_chars or len(negative) > s.max_prompt_chars:
            raise InvalidGenerateRequest(f"prompts are limited to {s.max_prompt_chars} "
                                         "characters", field="prompt")
        cfg = _num(body, "cfg_scale", 7.0, float)
        if not 0 <= cfg <= 50:
            raise InvalidGenerateRequest("cfg_scale must be within 0..50", field="cfg_scale")
        batch, n_iter = _num(body, "batch_size", 1), _num(body, "n_iter", 1)
        if batch < 1 or n_iter < 1 or batch * n_iter > s.max_images:
            raise InvalidGenerateRequest(f"batch_size x n_iter must be 1..{s.max_images}",
                                         field="batch_size")
        flow = fam.style in ("sd3", "flux")
        sampler_name = body.get("sampler") or body.get("sampler_name") or body.get(
            "sampler_index")
        choice = samplers.resolve(sampler_name, body.get("scheduler"),
                                  default=s.default_sampler, flow=flow)
        seed = draw_seed(_num(body, "seed", -1))
        subseed = draw_seed(_num(body, "subseed", -1))
        strength = _num(body, "subseed_strength", 0.0, float)
        if not 0 <= strength <= 1:
            raise InvalidGenerateRequest("subseed_strength must be within 0..1",
                                         field="subseed_strength")
        clip_skip = _num(body, "clip_skip", None) or _num(
            override, "CLIP_stop_at_last_layers", None) or _num(
            opts, "CLIP_stop_at_last_layers", 1)
        if not 1 <= clip_skip <= 12:
            raise InvalidGenerateRequest("clip skip must be within 1..12", field="clip_skip")
        vae = body.get("vae") or override.get("sd_vae") or opts.get("sd_vae")
        preview = _num(body, "preview_every", s.preview_every)
        if preview < 0:
            raise InvalidGenerateRequest("preview_every must be >= 0", field="preview_every")
        texts = [prompt, negative]
        hires = None
        if kind == "txt2img" and body.get("enable_hr"):
            if flow:
                raise InvalidGenerateRequest(f"hires fix is not supported for {fam.label}",
                                             field="enable_hr")
            hires = self._hires(body, width, height, choice, flow, prompt, negative)
            texts += [hires.prompt, hires.negative_prompt]
        if kind == "txt2img" and not fam.txt2img:
            raise InvalidGenerateRequest(f"{fam.label} models only refine images: use img2img",
                                         field="model")
        req = GenerationRequest(
            kind=kind, model=model, prompt=prompt, negative_prompt=negative, steps=steps,
            cfg_scale=cfg, width=width, height=height, sampler=choice, seed=seed,
            subseed=subseed, subseed_strength=strength, batch_size=batch, n_iter=n_iter,
            clip_skip=int(clip_skip), hires=hires, preview_every=preview,
            networks=self._networks(texts, vae, bool(body.get("disable_extra_networks"))))
        if kind == "img2img":
            self._img2img(req, body)
        return req

    def _hires(self, body: dict[str, Any], width: int, height: int, choice: samplers.Choice,
               flow: bool, prompt: str, negative: str) -> Hires:
        upscaler = str(body.get("hr_upscaler") or "Latent")
        if upscaler not in LATENT_UPSCALERS and upscaler not in IMAGE_UPSCALERS:
            raise InvalidGenerateRequest(
                f"unknown hires upscaler {upscaler!r}; use one of "
                f"{', '.join([*LATENT_UPSCALERS, *IMAGE_UPSCALERS])}", field="hr_upscaler")
        scale = _num(body, "hr_scale", 2.0, float)
        rx, ry = _num(body, "hr_resize_x", 0), _num(body, "hr_resize_y", 0)
        if rx or ry:  # the WebUI keeps the aspect when only one side is given
            tw = rx or int(width * ry / height)
            th = ry or int(height * rx / width)
        else:
            if not 1 <= scale <= 4:
                raise InvalidGenerateRequest("hr_scale must be within 1..4", field="hr_scale")
            tw, th = int(width * scale), int(height * scale)
        tw, th = tw // 8 * 8, th // 8 * 8
        self._size("hires width", tw)
        self._size("hires height", th)
        steps = _num(body, "hr_second_pass_steps", 0)
        if not 0 <= steps <= self.settings.max_steps:
            raise InvalidGenerateRequest(
                f"hr_second_pass_steps must be 0..{self.settings.max_steps}",
                field="hr_second_pass_steps")
        denoise = _num(body, "denoising_strength", 0.7, float)
        if not 0 < denoise <= 1:
            raise InvalidGenerateRequest("denoising_strength must be within (0, 1]",
                                         field="denoising_strength")
        hs = body.get("hr_sampler_name")
        hr_choice = choice if not hs or hs == "Use same sampler" else samplers.resolve(
            hs, body.get("hr_scheduler"), flow=flow, field="hr_sampler_name")
        return Hires(tw, th, upscaler, steps, denoise, hr_choice,
                     str(body.get("hr_prompt") or prompt),
                     str(body.get("hr_negative_prompt") or negative), scale, rx, ry)

    def _img2img(self, req: GenerationRequest, body: dict[str, Any]) -> None:
        images = body.get("init_images") or []
        if not isinstance(images, list) or not images:
            raise InvalidGenerateRequest("img2img needs init_images (base64 images)",
                                         field="init_images")
        req.init_images = [decode_image(str(im), "init_images") for im in images[:64]]
        if body.get("mask"):
            req.mask = decode_image(str(body["mask"]), "mask")
            if body.get("inpainting_mask_invert"):
                req.mask = _invert(req.mask)
        req.denoising_strength = _num(body, "denoising_strength", 0.75, float)
        if not 0 < req.denoising_strength <= 1:
            raise InvalidGenerateRequest("denoising_strength must be within (0, 1]",
                                         field="denoising_strength")
        req.resize_mode = _num(body, "resize_mode", 0)
        if req.resize_mode not in (0, 1, 2, 3):
            raise InvalidGenerateRequest("resize_mode must be 0..3", field="resize_mode")

    # ---- submit --------------------------------------------------------------------
    def submit(self, principal: Any, req: GenerationRequest, *, save: bool = True,
               device: str | None = None, keep_images: bool = False) -> Job:
        """The last checks (memory, quota), then queue (blocking; call from a thread)."""
        w, h = req.out_size
        req.device = device
        self.check_fits(req.model, w, h, req.batch_size, device)
        self.check_config(req.model)
        if save:
            self.storage.check(principal, estimate(w, h, req.images))
        spec = self.service.catalog.get(req.model)
        if spec.path.is_file():
            self.hashes.warm(spec.path)  # ready, usually, before the job needs it
        return self.jobs.submit(principal, req, save=save, keep_images=keep_images)

    def close(self) -> None:
        self.jobs.close()
        self.hashes.close()


def _invert(png: bytes) -> bytes:
    import io

    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(png)) as im:
        buf = io.BytesIO()
        ImageOps.invert(im.convert("L")).save(buf, format="PNG")
    return buf.getvalue()
