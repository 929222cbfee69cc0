"""The diffusers backend: pipelines from local files only, never the Hub.

    <models>/name/model_index.json     a diffusers folder  -> DiffusionPipeline.from_pretrained
    <models>/name.safetensors          an A1111 checkpoint -> <family pipeline>.from_single_file(
                                          config=<ATELIER_GPU_DIFFUSERS_CONFIG>/<family>)

A single file's family (``families.py``: SD 1.x, SD 2.x, SDXL, SDXL refiner, the
inpainting variants, SD 3, Flux) is read from its header first; it picks the pipeline
class and the local config folder it is loaded with::

    <ATELIER_GPU_DIFFUSERS_CONFIG>/
        sd1/  sd1-inpaint/  sd2/  sd2-inpaint/  sdxl/  sdxl-inpaint/  sdxl-refiner/
        sd3/  sd35-medium/  sd35-large/  flux-dev/  flux-schnell/
            model_index.json, scheduler/, tokenizer*/, <component>/config.json

``from_single_file`` otherwise fetches those configs from the Hub (the research notes,
§3); without the folder a checkpoint is refused (422 ``missing_config``, naming the
folder it looked for) rather than left to time out offline. Flux and SD 3 files often
hold only the transformer: then the text encoders and VAE come from the config folder's
own weights. Unknown families never get a guessed pipeline (422 ``unsupported_model``).

After loading, the scheduler config gets the family's prediction type (v-prediction for
SD 2.x 768 models, decided by A1111's UNet test when the file carries no hint, see
:func:`is_v_prediction`) and is kept on the pipeline (``atelier_scheduler_config``) as
the base every job's sampler is built from.

A pipeline moves between tiers with ``pipe.to`` (every ``nn.Module`` component). On a
simulated or CPU compute device it stays where it is: there is only one memory.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import (
    BackendUnavailable,
    InvalidCheckpoint,
    ModelConfigMissing,
    ResidencyError,
)
from ..devices import Device, PinnedLedger, is_oom
from ..families import Family
from ..footprint import read_header
from .base import ModelSpec

_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
_LEGACY_FAMILIES = {"sd1": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}


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


# from_pretrained builds modules under accelerate's init_empty_weights, which patches
# torch.nn.Module globally: two pipelines built at once in two threads (the residency
# manager loads for different GPUs in parallel) get each other's parameters on "meta"
_build_lock = threading.Lock()


def is_v_prediction(unet: Any) -> bool:
    """A1111's ``is_using_v_parameterization_for_sd2``: at timestep 999 with a constant
    latent and context, a v-prediction UNet's output lies well below its input."""
    import torch

    p = next(unet.parameters())
    ch = unet.config.in_channels
    ctx = int(unet.config.cross_attention_dim)
    x = torch.ones((1, ch, 8, 8), device=p.device, dtype=p.dtype) * 0.5
    cond = torch.ones((1, 2, ctx), device=p.device, dtype=p.dtype) * 0.5
    with torch.no_grad():
        out = unet(x, torch.tensor([999], device=p.device), encoder_hidden_states=cond).sample
    return bool((out[:, :4] - x[:, :4]).float().mean().item() < -1)


def _has_components(path: Path) -> bool:
    """True when a single file carries text encoder and VAE weights, not only the
    diffusion model (Flux/SD 3 transformer-only files)."""
    tensors, _, _ = read_header(path)
    prefixes = ("first_stage_model.", "vae.", "text_encoders.", "conditioner.",
                "cond_stage_model.")
    return any(t.name.startswith(prefixes) for t in tensors)


class DiffusersBackend:
    def __init__(self, dtype: str = "fp16", config_dir: str | os.PathLike[str] | None = None,
                 family_of: Callable[[str], Family] | None = None) -> None:
        self.dtype = dtype
        self.config_dir = Path(config_dir) if config_dir else None
        self.family_of = family_of

    def config_for(self, fam: Family) -> Path:
        """The local diffusers config folder for a family (422 when there is none)."""
        if self.config_dir is not None:
            sub = self.config_dir / fam.config
            if (sub / "model_index.json").is_file():
                return sub
            top = self.config_dir / "model_index.json"
            if fam.id in _LEGACY_FAMILIES and top.is_file():
                try:  # one folder for one family: the layout before families existed
                    cls = json.loads(top.read_text()).get("_class_name")
                except (OSError, ValueError):
                    cls = None
                if cls == _LEGACY_FAMILIES[fam.id]:
                    return self.config_dir
        where = (self.config_dir / fam.config if self.config_dir is not None
                 else f"$ATELIER_GPU_DIFFUSERS_CONFIG/{fam.config}")
        raise ModelConfigMissing(
            f"this is an {fam.label} checkpoint; loading it offline needs the diffusers "
            f"configs of that family in {where} (model_index.json, scheduler/, tokenizer/ "
            "and each component's config.json; see README)", family=fam.id,
            config_dir=str(where))

    def _family(self, spec: ModelSpec) -> Family:
        if self.family_of is not None:
            return self.family_of(spec.name)
        from ..families import detect, detect_folder

        if spec.path.is_dir():
            return detect_folder(spec.path)
        tensors, metadata, _ = read_header(spec.path)
        return detect({t.name: t.shape for t in tensors}, metadata)

    def load(self, spec: ModelSpec, host: Device) -> Any:
        torch, diffusers = _modules()
        dtype = {_dtype_kwarg(diffusers): getattr(torch, _DTYPES[self.dtype])}
        fam = self._family(spec)
        try:
            with _build_lock:
                if spec.path.is_dir():
                    pipe = diffusers.DiffusionPipeline.from_pretrained(
                        spec.path, local_files_only=True, **dtype)
                else:
                    pipe = self._single_file(diffusers, spec, fam, dtype)
        except ResidencyError:
            raise
        except Exception as exc:
            if is_oom(exc):
                raise
            raise InvalidCheckpoint(
                f"{spec.name}: loading it as {fam.label} failed: {type(exc).__name__}: "
                f"{str(exc)[:500]}", model=spec.name, family=fam.id) from exc
        pipe.set_progress_bar_config(disable=True)
        if getattr(pipe, "safety_checker", None) is not None:
            pipe.safety_checker = None  # the WebUI has none either
        self._prediction(pipe, fam)
        pipe.atelier_family = fam
        self._pin(pipe, getattr(host, "pinned", None))
        return pipe

    def _single_file(self, diffusers: Any, spec: ModelSpec, fam: Family,
                     dtype: dict[str, Any]) -> Any:
        cfg = self.config_for(fam)
        cls = getattr(diffusers, fam.pipeline)
        if fam.style in ("flux", "sd3") and not _has_components(spec.path):
            model_cls = (diffusers.FluxTransformer2DModel if fam.style == "flux"
                         else diffusers.SD3Transformer2DModel)
            transformer = model_cls.from_single_file(
                str(spec.path), config=str(cfg), subfolder="transformer",
                local_files_only=True, **dtype)
            return cls.from_pretrained(str(cfg), transformer=transformer,
                                       local_files_only=True, **dtype)
        return cls.from_single_file(str(spec.path), config=str(cfg), local_files_only=True,
                                    **dtype)

    @staticmethod
    def _prediction(pipe: Any, fam: Family) -> None:
        config = dict(pipe.scheduler.config)
        prediction = fam.prediction
        if prediction == "probe":
            prediction = "v_prediction" if is_v_prediction(pipe.unet) else "epsilon"
        if prediction in ("epsilon", "v_prediction"):
            config["prediction_type"] = prediction
        if fam.zero_snr:
            config["rescale_betas_zero_snr"] = True
        if config != dict(pipe.scheduler.config):
            pipe.scheduler = type(pipe.scheduler).from_config(config)
        pipe.atelier_scheduler_config = dict(pipe.scheduler.config)

    @staticmethod
    def _pin(pipe: Any, ledger: PinnedLedger | None) -> None:
        """Page-lock the pipeline's host weights, within the host's pinned-memory cap
        (``ATELIER_GPU_PINNED_MAX``): what does not fit stays pageable. What is taken is
        recorded on the pipeline and given back when it leaves the host or is dropped."""
        if ledger is None or not ledger.active:
            return
        import torch

        real = torch.cuda.is_available()  # else a simulated host: counted, not pinned
        for comp in pipe.components.values():
            params = getattr(comp, "parameters", None)
            if params is None:
                continue
            for p in params():
                if p.device.type != "cpu" or (real and p.data.is_pinned()):
                    continue
                n = p.data.numel() * p.data.element_size()
                if not ledger.take(n):
                    return  # the cap is reached: the rest stays pageable
                if real:
                    p.data = p.data.pin_memory()
                pipe.atelier_pinned = getattr(pipe, "atelier_pinned", 0) + n
                pipe.atelier_pin_ledger = ledger

    @staticmethod
    def _unpin(pipe: Any) -> None:
        ledger: PinnedLedger | None = getattr(pipe, "atelier_pin_ledger", None)
        n = getattr(pipe, "atelier_pinned", 0)
        if ledger is not None and n:
            ledger.give(n)
        pipe.atelier_pinned = 0

    def to_device(self, handle: Any, device: Device) -> Any:
        if device.torch_device == "cpu":
            return handle
        moved = handle.to(device.torch_device)  # in place: the host copy is gone
        self._unpin(handle)
        return moved

    def to_host(self, handle: Any, device: Device, host: Device) -> Any:
        if device.torch_device == "cpu":
            return handle
        handle.to("cpu")
        self._pin(handle, getattr(host, "pinned", None))
        return handle

    def drop(self, handle: Any) -> None:
        self._unpin(handle)  # the manager forgets the reference; torch frees the tensors
