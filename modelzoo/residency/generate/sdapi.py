"""The WebUI's API (``/sdapi/v1``), the subset its clients rely on, with its JSON shapes.

    POST /sdapi/v1/txt2img, /img2img     {images: [base64 PNG], parameters: <the request>,
                                         info: <JSON string: seeds, infotexts, ...>}
    GET  /sdapi/v1/sd-models             [{title, model_name, hash, sha256, filename, config}]
    GET/POST /sdapi/v1/options           sd_model_checkpoint (POST loads it through the
                                         residency manager), sd_vae, CLIP_stop_at_last_layers
    GET  /sdapi/v1/progress              the caller's job: progress, eta_relative, state,
                                         current_image (the preview), textinfo
    POST /sdapi/v1/interrupt             stop the caller's running job, keep its images
    GET  /sdapi/v1/samplers, /schedulers, /upscalers, /latent-upscale-modes, /sd-vae,
         /loras, /embeddings; POST /sdapi/v1/refresh-checkpoints (a no-op: folders are
         read live)

Differences a client may notice, all on purpose: the service is multi-user, so options
and progress are per user (the WebUI's are global), requests run as jobs through the fair
queue (the call still answers when the images are done), credentials are the service's
own (a token as ``Authorization: Bearer``, or HTTP Basic with the user's password, as
WebUI clients send for ``--api-auth``), and features this backend lacks (scripts,
ControlNet, face restoration, ESRGAN upscalers) are a 400 naming them, not ignored.
Images are saved under the user's outputs (``ATELIER_GPU_SDAPI_SAVE_IMAGES``).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from ...errors import InvalidGenerateRequest
from ..http import JsonErrors, require_role
from . import samplers
from .jobs import Job
from .request import IMAGE_UPSCALERS, LATENT_UPSCALERS
from .service import DEFAULT_VAE, OPTION_KEYS, GenerateService


class Txt2ImgBody(BaseModel):
    """The WebUI's ``StableDiffusionProcessingTxt2Img`` fields (the ones that matter here;
    unknown fields are ignored, as the WebUI's generated model ignores them)."""

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    denoising_strength: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    disable_extra_networks: bool = False
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    script_name: str | None = None
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = {}


class Img2ImgBody(Txt2ImgBody):
    init_images: list[str] | None = None
    resize_mode: int = 0
    denoising_strength: float | None = 0.75
    mask: str | None = None
    inpainting_mask_invert: int = 0
    include_init_images: bool = False


OptionsBody = Annotated[dict[str, Any], Body(...)]


def _js(job: Job, body: dict[str, Any], version: str) -> dict[str, Any]:
    """``Processed.js()``: the ``info`` the WebUI returns, as a dict."""
    req = job.req
    result = job.result or {}
    items = result.get("images", [])
    seeds = [i["seed"] for i in items] or req.seeds
    subseeds = [i["subseed"] for i in items] or req.subseeds
    n = len(items) or req.images
    model_hash = None
    if items:
        for part in items[0]["infotext"].split("\n")[-1].split(", "):
            if part.startswith("Model hash: "):
                model_hash = part[len("Model hash: "):]
    return {
        "prompt": req.prompt, "all_prompts": [req.prompt] * n,
        "negative_prompt": req.negative_prompt,
        "all_negative_prompts": [req.negative_prompt] * n,
        "seed": seeds[0] if seeds else req.seed, "all_seeds": seeds,
        "subseed": subseeds[0] if subseeds else req.subseed, "all_subseeds": subseeds,
        "subseed_strength": req.subseed_strength, "width": req.width, "height": req.height,
        "sampler_name": req.sampler.name, "scheduler": req.sampler.schedule,
        "cfg_scale": req.cfg_scale, "steps": req.steps, "batch_size": req.batch_size,
        "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": Path(req.model).name, "sd_model_hash": model_hash,
        "sd_vae_name": req.networks.vae[0] if req.networks.vae else None,
        "sd_vae_hash": None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": (req.denoising_strength if req.kind == "img2img" else
                               req.hires.denoising_strength if req.hires else None),
        "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": [i["infotext"] for i in items], "styles": body.get("styles") or [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)),
        "clip_skip": req.clip_skip, "is_using_inpainting_conditioning": False,
        "version": version,
        # ours: where the images were saved and the job that made them
        "job_id": job.id, "paths": [i["path"] for i in items],
        "interrupted": result.get("interrupted", False),
    }


def build_sdapi_router(gen: GenerateService, current_user: Any) -> APIRouter:
    router = APIRouter(route_class=JsonErrors, prefix="/sdapi/v1")
    User = Depends(current_user)
    settings = gen.settings

    async def run(kind: str, body: BaseModel, user: Any) -> Response:
        require_role(user, "admin", "user")
        data = body.model_dump()
        save = settings.sdapi_save_images == "always" or bool(data.get("save_images"))

        def submit() -> Job:
            req = gen.build(kind, data, user.name)
            return gen.submit(user, req, save=save, keep_images=True)

        job = await run_in_threadpool(submit)
        await job.wait()
        try:
            return answer(job, body, data)
        finally:
            job.pngs = []  # answered: do not hold the bytes for the job's memory life

    def answer(job: Job, body: BaseModel, data: dict[str, Any]) -> Response:
        if job.state in ("failed", "cancelled") and not job.pngs:
            err = job.error or {"error": job.state, "message": f"the job was {job.state}"}
            return JSONResponse({**err, "id": job.id},
                                status_code=job.status if job.state == "failed" else 409)
        images = ([base64.b64encode(p).decode("ascii") for p in job.pngs]
                  if data.get("send_images", True) else [])
        parameters = {k: v for k, v in body.model_dump().items() if k != "init_images"}
        if job.req.kind == "img2img":
            parameters["init_images"] = None  # as the WebUI: not echoed back
        info = json.dumps(_js(job, data, gen.version), ensure_ascii=False)
        return JSONResponse({"images": images, "parameters": parameters, "info": info})

    @router.post("/txt2img")
    async def txt2img(body: Txt2ImgBody, user: Any = User) -> Response:
        return await run("txt2img", body, user)

    @router.post("/img2img")
    async def img2img(body: Img2ImgBody, user: Any = User) -> Response:
        return await run("img2img", body, user)

    @router.get("/sd-models")
    async def sd_models(user: Any = User) -> list[dict[str, Any]]:
        def listing() -> list[dict[str, Any]]:
            out = []
            catalog = gen.service.catalog
            for name in catalog.names():
                path = catalog.path_of(name)
                h = gen.hashes.lookup(path) if path.is_file() else None
                file_name = f"{name}.safetensors" if path.is_file() else name
                try:
                    family: str | None = catalog.family(name).id
                except Exception:  # a broken or unsupported file is still listed
                    family = None
                out.append({"title": f"{file_name} [{h.short}]" if h else file_name,
                            "model_name": name.replace("/", "_"),
                            "hash": h.short if h else None, "sha256": h.sha256 if h else None,
                            "filename": str(path), "config": None, "family": family})
            return out

        return await run_in_threadpool(listing)

    @router.post("/refresh-checkpoints")
    async def refresh(user: Any = User) -> dict[str, Any]:
        return {}

    @router.get("/options")
    async def get_options(user: Any = User) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            opts = gen.options(user.name)
            try:
                model = gen.default_model(user.name)
            except Exception:
                model = None
            h = None
            if model:
                path = gen.service.catalog.path_of(model)
                h = gen.hashes.lookup(path) if path.is_file() else None
                model = f"{model}.safetensors" if path.is_file() else model
            return {"sd_model_checkpoint": f"{model} [{h.short}]" if model and h else model,
                    "sd_checkpoint_hash": h.sha256 if h else None,
                    "sd_vae": opts.get("sd_vae") or "Automatic",
                    "CLIP_stop_at_last_layers": opts.get("CLIP_stop_at_last_layers") or 1,
                    "samples_format": "png", "sd_checkpoints_limit": None}

        return await run_in_threadpool(read)

    @router.post("/options")
    async def set_options(body: OptionsBody, user: Any = User) -> Response:
        require_role(user, "admin", "user")
        changes: dict[str, Any] = {}
        if "sd_vae" in body:
            vae = body["sd_vae"]
            if vae not in DEFAULT_VAE:
                await run_in_threadpool(gen.vaes.find, str(vae))
            changes["sd_vae"] = vae
        if "CLIP_stop_at_last_layers" in body:
            try:
                skip = int(body["CLIP_stop_at_last_layers"])
            except (TypeError, ValueError):
                skip = 0
            if not 1 <= skip <= 12:
                raise InvalidGenerateRequest("CLIP_stop_at_last_layers must be 1..12",
                                             field="CLIP_stop_at_last_layers")
            changes["CLIP_stop_at_last_layers"] = skip
        if body.get("sd_model_checkpoint"):
            model = await run_in_threadpool(gen.resolve_model, str(body["sd_model_checkpoint"]))

            def load() -> Any:
                gen.family(model)
                gen.check_fits(model, 512, 512, 1)
                gen.check_config(model)
                return gen.service.placement.submit(model, lambda handle, device: None)

            import asyncio

            await asyncio.wrap_future(await run_in_threadpool(load))
            changes["sd_model_checkpoint"] = model
        changes = {k: v for k, v in changes.items() if k in OPTION_KEYS}
        if changes:
            await run_in_threadpool(gen.set_options, user.name, changes)
        return JSONResponse(None)

    @router.get("/progress")
    async def progress(user: Any = User, skip_current_image: bool = False) -> dict[str, Any]:
        jobs = gen.jobs.running(user)
        job = next((j for j in jobs if j.state == "running"), jobs[0] if jobs else None)
        state = {"skipped": False, "interrupted": False, "stopping_generation": False,
                 "job": "", "job_count": 0, "job_timestamp": "0", "job_no": 0,
                 "sampling_step": 0, "sampling_steps": 0}
        if job is None:
            return {"progress": 0.0, "eta_relative": 0.0, "state": state,
                    "current_image": None, "textinfo": None}
        frac = job.progress
        elapsed = time.time() - (job.started or time.time())
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        per = job.total // max(1, job.req.n_iter) if job.total else 0
        state.update({"interrupted": job.control.interrupted, "job": f"{job.req.kind} {job.id}",
                      "job_count": job.req.n_iter,
                      "job_timestamp": time.strftime("%Y%m%d%H%M%S",
                                                     time.localtime(job.created)),
                      "job_no": job.step // per if per else 0,
                      "sampling_step": job.step % per if per else job.step,
                      "sampling_steps": per})
        image = None
        if job.preview is not None and not skip_current_image:
            image = base64.b64encode(job.preview).decode("ascii")
        position = gen.jobs.position(job)
        text = (f"In queue: {position} ahead" if job.state == "queued" and position is not None
                else f"Step {job.step}/{job.total}")
        return {"progress": round(frac, 4), "eta_relative": round(eta, 3), "state": state,
                "current_image": image, "textinfo": text}

    @router.post("/interrupt")
    async def interrupt(user: Any = User) -> dict[str, Any]:
        gen.jobs.interrupt(user)
        return {}

    @router.get("/samplers")
    async def sampler_list(user: Any = User) -> list[dict[str, Any]]:
        return samplers.listing()

    @router.get("/schedulers")
    async def scheduler_list(user: Any = User) -> list[dict[str, Any]]:
        return samplers.schedule_listing()

    @router.get("/upscalers")
    async def upscalers(user: Any = User) -> list[dict[str, Any]]:
        return [{"name": n, "model_name": None, "model_path": None, "model_url": None,
                 "scale": 4 if n != "None" else 1} for n in IMAGE_UPSCALERS]

    @router.get("/latent-upscale-modes")
    async def latent_modes(user: Any = User) -> list[dict[str, Any]]:
        return [{"name": n} for n in LATENT_UPSCALERS]

    @router.get("/sd-vae")
    async def sd_vae(user: Any = User) -> list[dict[str, Any]]:
        def listing() -> list[dict[str, Any]]:
            return [{"model_name": n, "filename": str(gen.vaes.find(n))}
                    for n in gen.vaes.names()]

        return await run_in_threadpool(listing)

    @router.get("/loras")
    async def loras(user: Any = User) -> list[dict[str, Any]]:
        def listing() -> list[dict[str, Any]]:
            return [{"name": n.rpartition("/")[2], "alias": n.rpartition("/")[2],
                     "path": str(gen.loras.find(n)), "metadata": {}}
                    for n in gen.loras.names()]

        return await run_in_threadpool(listing)

    @router.get("/embeddings")
    async def embeddings(user: Any = User) -> dict[str, Any]:
        def listing() -> dict[str, Any]:
            return {"loaded": {n: {"step": None, "sd_checkpoint": None,
                                   "sd_checkpoint_name": None, "shape": None, "vectors": None}
                               for n in gen.embeddings.names() if "/" not in n},
                    "skipped": {}}

        return await run_in_threadpool(listing)

    return router

