"""The diffusers backend: txt2img pipelines from local files only, never the Hub.

    <models>/name/model_index.json     a diffusers folder  -> DiffusionPipeline.from_pretrained
    <models>/name.safetensors          an A1111 checkpoint -> from_single_file(config=<local>)

``from_single_file`` fetches component configs from the Hub unless given a local
``config`` folder (the research notes, §3), so single files need ``diffusers_config``;
without it they are refused with a message rather than left to time out offline.

A pipeline moves between tiers with ``pipe.to`` (every ``nn.Module`` component). On a
simulated or CPU compute device it stays where it is: there is only one memory.
A1111 sampler names map to diffusers schedulers, so infotext stays WebUI-compatible.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import BackendUnavailable, InvalidCheckpoint, InvalidGenerateRequest
from ..devices import Device
from .base import ModelSpec

_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}

# A1111 sampler name -> (diffusers scheduler class, extra config)
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
}


@dataclass(frozen=True)
class Txt2Img:
    prompt: str
    negative_prompt: str = ""
    steps: int = 20
    width: int = 512
    height: int = 512
    seed: int = -1
    sampler: str = "Euler a"
    cfg_scale: float = 7.0


def _modules() -> tuple[Any, Any]:
    try:
        import diffusers
        import torch
    except ImportError as exc:
        raise BackendUnavailable("diffusers and torch are needed to generate "
                                 "(pip install atelier[gpu])") from exc
    return torch, diffusers


def _dtype_kwarg(diffusers: Any) -> str:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (and warns on the old name)."""
    utils = getattr(getattr(diffusers, "pipelines", None), "pipeline_utils", None)
    return "dtype" if hasattr(utils, "_resolve_dtype") else "torch_dtype"


_hash_lock = threading.Lock()
# from_pretrained builds modules under accelerate's init_empty_weights, which patches
# torch.nn.Module globally: two pipelines built at once in two threads (the residency
# manager loads for different GPUs in parallel) get each other's parameters on "meta"
_build_lock = threading.Lock()
_hashes: dict[tuple[str, int, int], str] = {}


def short_hash(path: Path) -> str | None:
    """A1111's "Model hash": the first 10 hex digits of the file's sha256 (cached)."""
    if not path.is_file():
        return None
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hashes:
            return _hashes[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    digest = h.hexdigest()[:10]
    with _hash_lock:
        _hashes[key] = digest
    return digest


def infotext(req: Txt2Img, seed: int, model: str, model_hash: str | None,
             version: str = "atelier") -> str:
    """The A1111 ``parameters`` text: prompt, negative prompt line, then key: value pairs."""
    lines = [req.prompt]
    if req.negative_prompt:
        lines.append(f"Negative prompt: {req.negative_prompt}")
    pairs = [("Steps", str(req.steps)), ("Sampler", req.sampler),
             ("CFG scale", f"{req.cfg_scale:g}"), ("Seed", str(seed)),
             ("Size", f"{req.width}x{req.height}")]
    if model_hash:
        pairs.append(("Model hash", model_hash))
    pairs += [("Model", model.replace(",", " ")), ("Version", version)]
    lines.append(", ".join(f"{k}: {v}" for k, v in pairs))
    return "\n".join(lines)


class DiffusersBackend:
    def __init__(self, dtype: str = "fp16", config_dir: str | os.PathLike[str] | None = None
                 ) -> None:
        self.dtype = dtype
        self.config_dir = Path(config_dir) if config_dir else None

    def load(self, spec: ModelSpec, host: Device) -> Any:
        torch, diffusers = _modules()
        dtype = {_dtype_kwarg(diffusers): getattr(torch, _DTYPES[self.dtype])}
        with _build_lock:
            pipe = self._build(spec, diffusers, dtype)
        pipe.set_progress_bar_config(disable=True)
        if getattr(pipe, "safety_checker", None) is not None:
            pipe.safety_checker = None  # the WebUI has none either
        if torch.cuda.is_available():
            self._pin(pipe)
        return pipe

    def _build(self, spec: ModelSpec, diffusers: Any, dtype: dict[str, Any]) -> Any:
        if spec.path.is_dir():
            pipe = diffusers.DiffusionPipeline.from_pretrained(
                spec.path, local_files_only=True, **dtype)
        else:
            if self.config_dir is None:
                raise InvalidCheckpoint(
                    f"{spec.name}: a single-file checkpoint needs a local diffusers config "
                    "folder offline (set ATELIER_GPU_DIFFUSERS_CONFIG)", model=spec.name)
            xl = "text_encoder_2" in spec.footprint.components
            cls = (diffusers.StableDiffusionXLPipeline if xl
                   else diffusers.StableDiffusionPipeline)
            pipe = cls.from_single_file(str(spec.path), config=str(self.config_dir),
                                        local_files_only=True, **dtype)
        return pipe

    @staticmethod
    def _pin(pipe: Any) -> None:
        for comp in pipe.components.values():
            params = getattr(comp, "parameters", None)
            if params is None:
                continue
            for p in params():
                if p.device.type == "cpu":
                    p.data = p.data.pin_memory()

    def to_device(self, handle: Any, device: Device) -> Any:
        if device.torch_device == "cpu":
            return handle
        return handle.to(device.torch_device)

    def to_host(self, handle: Any, device: Device, host: Device) -> Any:
        if device.torch_device == "cpu":
            return handle
        torch, _ = _modules()
        handle.to("cpu")
        if torch.cuda.is_available():
            self._pin(handle)
        return handle

    def drop(self, handle: Any) -> None:
        return None  # the manager forgets the reference; torch frees the tensors

    def generate(self, pipe: Any, device: Device, req: Txt2Img) -> tuple[Any, int]:
        """Run txt2img; returns (PIL image, seed used)."""
        torch, diffusers = _modules()
        if req.sampler not in SAMPLERS:
            raise InvalidGenerateRequest(
                f"unknown sampler {req.sampler!r}; use one of {', '.join(SAMPLERS)}",
                sampler=req.sampler)
        cls_name, extra = SAMPLERS[req.sampler]
        cls = getattr(diffusers, cls_name)
        pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
        seed = req.seed if req.seed >= 0 else secrets.randbelow(2**32)
        gen_device = device.torch_device if device.torch_device.startswith("cuda") else "cpu"
        generator = torch.Generator(device=gen_device).manual_seed(seed)
        with torch.inference_mode():
            out = pipe(prompt=req.prompt, negative_prompt=req.negative_prompt or None,
                       num_inference_steps=req.steps, width=req.width, height=req.height,
                       guidance_scale=req.cfg_scale, generator=generator, output_type="pil")
        return out.images[0], seed
