"""The A1111 adapter: size the WebUI's own checkpoint cache from measured memory.

Runs *inside* the WebUI process, so it imports only the standard library, torch and the
WebUI's ``modules`` (never fastapi/pydantic/sqlalchemy: the WebUI pins its own, see
PRODUCT.md "Two processes, two environments"), all lazily.

A1111 already keeps several checkpoints (``sd_models.reuse_model_from_already_loaded``):
``sd_checkpoints_limit`` models, all on the GPU, or with ``sd_checkpoints_keep_in_cpu``
only the current one on the GPU and the rest in RAM. It never measures memory; this does::

    gpu_slots = (free VRAM + VRAM our checkpoints hold - inference reserve) // largest model
    ram_slots = (available RAM + RAM our checkpoints hold - RAM reserve)    // largest model
    gpu_slots - 1 >= 2  -> keep_in_cpu=False, limit = gpu_slots - 1   (switches ~instant)
    otherwise           -> keep_in_cpu=True,  limit = 1 + ram_slots - 1   (switches ~1 s)

The "- 1" is A1111 issue #13376: its ``>`` check can leave limit+1 models loaded.
Switches go through ``sd_models.reload_model_weights`` under ``call_queue.queue_lock``,
as the WebUI's own option hook does (``wrap_queued_call``).

Forge keeps one checkpoint (``reload_model_weights`` is a stub, the limit "doesn't do
anything", Forge #2211): detected by ``sd_models.forge_model_reload``, it gets a notice
and the option change only; Forge loads the model lazily at the next generation.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from ...errors import UnknownModel
from ..devices import GIB, HostMemory, MemoryReading
from ..footprint import ReserveRule, file_footprint

FORGE_NOTICE = ("Atelier: Forge keeps a single checkpoint (sd_checkpoints_limit has no effect "
                "there); model switching falls back to Forge's own single-model loading.")


@dataclass(frozen=True)
class Limits:
    checkpoints_limit: int
    keep_in_cpu: bool
    gpu_slots: int
    ram_slots: int
    reason: str


def decide_limits(model_bytes: Iterable[int], *, vram_free: int, vram_ours: int,
                  ram_free: int, ram_ours: int, reserve: int, ram_reserve: int,
                  overshoot: int = 1, max_limit: int = 10) -> Limits:
    """Pure: the two A1111 settings from measured memory and the sizes of models in use."""
    sizes = [s for s in model_bytes if s > 0]
    unit = max(sizes) if sizes else 2 * GIB  # an SD1.5 checkpoint at fp16 when nothing known
    gpu_slots = max(0, (vram_free + vram_ours - reserve) // unit)
    ram_slots = max(0, (ram_free + ram_ours - ram_reserve) // unit)
    if gpu_slots < 1:
        return Limits(1, True, gpu_slots, ram_slots,
                      f"a {unit} byte model does not fit beside the {reserve} byte inference "
                      "reserve; only one checkpoint (consider --medvram)")
    on_gpu = min(max_limit, gpu_slots - overshoot)
    if on_gpu >= 2:
        return Limits(on_gpu, False, gpu_slots, ram_slots,
                      f"{gpu_slots} checkpoints of {unit} bytes fit in VRAM; keeping {on_gpu} "
                      "on the GPU")
    in_ram = min(max_limit, 1 + max(0, ram_slots - overshoot))
    return Limits(in_ram, True, gpu_slots, ram_slots,
                  f"one checkpoint fits in VRAM; keeping {in_ram - 1} more in RAM "
                  f"({ram_slots} fit)")


def webui_modules() -> SimpleNamespace:
    """The WebUI modules this adapter drives (imported here, inside the WebUI)."""
    from modules import call_queue, sd_models, shared

    return SimpleNamespace(shared=shared, sd_models=sd_models, call_queue=call_queue)


def is_forge(sd_models: Any) -> bool:
    return hasattr(sd_models, "forge_model_reload")


def _module_bytes(model: Any) -> tuple[int, int]:
    """(bytes on CUDA, bytes on CPU) of a loaded checkpoint's parameters and buffers."""
    cuda = cpu = 0
    tensors = list(getattr(model, "parameters", lambda: [])())
    tensors += list(getattr(model, "buffers", lambda: [])())
    for t in tensors:
        n = t.numel() * t.element_size()
        if t.device.type == "cuda":
            cuda += n
        elif t.device.type == "cpu":
            cpu += n
    return cuda, cpu


def cuda_free(index: int | None = None) -> tuple[int, int] | None:
    """(free, total) of the WebUI's CUDA device, ComfyUI's formula; None without CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    idx = torch.cuda.current_device() if index is None else index
    free, total = torch.cuda.mem_get_info(idx)
    stats = torch.cuda.memory_stats(idx)
    spare = stats.get("reserved_bytes.all.current", 0) - stats.get("active_bytes.all.current", 0)
    return int(free) + max(0, int(spare)), int(total)


class A1111Residency:
    def __init__(self, *, reserve: ReserveRule | None = None, ram_reserve: int = 2 * GIB,
                 overshoot: int = 1, dtype: str = "fp16",
                 modules: SimpleNamespace | None = None,
                 vram: Callable[[], tuple[int, int] | None] = cuda_free,
                 ram: Callable[[], MemoryReading] | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.reserve = reserve or ReserveRule()
        self.ram_reserve = ram_reserve
        self.overshoot = overshoot
        self.dtype = dtype
        self._modules = modules
        self._vram = vram
        # RAM as the container sees it: its cgroup limit when below the host's memory
        self._ram = ram or HostMemory(pinned_max=0).memory
        self.log = log
        self._forge_noticed = False

    @property
    def m(self) -> SimpleNamespace:
        if self._modules is None:
            self._modules = webui_modules()
        return self._modules

    @property
    def forge(self) -> bool:
        return is_forge(self.m.sd_models)

    def _loaded(self) -> list[Any]:
        data = getattr(self.m.sd_models, "model_data", None)
        return list(getattr(data, "loaded_sd_models", None) or [])

    def model_sizes(self, extra: Iterable[str] = ()) -> list[int]:
        files = [getattr(getattr(m, "sd_checkpoint_info", None), "filename", None)
                 for m in self._loaded()]
        sizes = []
        for f in [*files, *extra]:
            if f and os.path.isfile(f) and f.endswith(".safetensors"):
                sizes.append(file_footprint(f, dtype=self.dtype).weights)
        return sizes

    def plan(self, extra: Iterable[str] = (), width: int = 512, height: int = 512) -> Limits:
        vram_ours = ram_ours = 0
        for model in self._loaded():
            on_gpu, on_cpu = _module_bytes(model)
            vram_ours += on_gpu
            ram_ours += on_cpu
        reading = self._vram()
        vram_free = reading[0] if reading else 0
        return decide_limits(self.model_sizes(extra), vram_free=vram_free, vram_ours=vram_ours,
                             ram_free=self._ram().free, ram_ours=ram_ours,
                             reserve=self.reserve.bytes_for(width, height),
                             ram_reserve=self.ram_reserve, overshoot=self.overshoot)

    def _notice_forge(self) -> None:
        if not self._forge_noticed:
            self._forge_noticed = True
            self.log(FORGE_NOTICE)

    def apply(self, extra: Iterable[str] = ()) -> Limits:
        """Measure and set ``sd_checkpoints_limit`` / ``sd_checkpoints_keep_in_cpu``."""
        limits = self.plan(extra)
        if self.forge:
            self._notice_forge()
            return Limits(1, True, limits.gpu_slots, limits.ram_slots, FORGE_NOTICE)
        opts = self.m.shared.opts
        opts.set("sd_checkpoints_limit", limits.checkpoints_limit)
        opts.set("sd_checkpoints_keep_in_cpu", limits.keep_in_cpu)
        self.log(f"Atelier: sd_checkpoints_limit={limits.checkpoints_limit}, "
                 f"keep_in_cpu={limits.keep_in_cpu}: {limits.reason}")
        return limits

    def switch(self, name: str) -> Any:
        """Make ``name`` the current checkpoint, the WebUI's way, under its queue lock."""
        sd_models = self.m.sd_models
        info = sd_models.get_closet_checkpoint_match(name)
        if info is None:
            raise UnknownModel(f"the WebUI knows no checkpoint {name!r}", model=name)
        with self.m.call_queue.queue_lock:
            if self.forge:
                self._notice_forge()
                # Forge's option hook is disabled; it reloads lazily in process_images
                self.m.shared.opts.set("sd_model_checkpoint", info.title)
                try:
                    from modules_forge import main_entry
                except ImportError:
                    pass
                else:
                    main_entry.refresh_model_loading_parameters()
                return info
            self.apply([info.filename])
            sd_models.reload_model_weights(info=info)
        return info
