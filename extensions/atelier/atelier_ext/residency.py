"""Checkpoint switching inside the WebUI, sized from measured memory.

Runs in the WebUI process: the standard library, torch (already imported by the WebUI)
and the WebUI's own ``modules``. The service's ``modelzoo/residency/backends/a1111.py``
cannot be used here: the WebUI has none of the service's packages.

A1111 keeps several checkpoints (``sd_models.reuse_model_from_already_loaded``):
``sd_checkpoints_limit`` models, all on the device, or with ``sd_checkpoints_keep_in_cpu``
the current one on the device and the rest in RAM. It never measures memory; at start
and after each model load this sets both from what is free::

    unit        = the largest checkpoint in use, at the WebUI's dtype (x2 under --no-half)
    device      = (free VRAM + VRAM our checkpoints hold - inference reserve) // unit
    ram         = (available RAM + RAM our checkpoints hold - RAM reserve)    // unit
    device - 1 >= 2 -> keep_in_cpu off, limit = device - 1    (switches about instant)
    otherwise       -> keep_in_cpu on,  limit = 1 + ram - 1   (switches about 1 s)
    CPU-only WebUI  -> the device is RAM: limit = ram - 1

The "- 1" is A1111 issue #13376: its ``>`` check can leave limit + 1 models loaded.
With ``--freeze-settings`` (``opts.set`` asserts) it only reports what it would set.

Forge keeps one checkpoint: before August 2024 ("classic", ``reload_model_weights`` is
``load_model``), and since (``sd_models.forge_model_reload``, loaded lazily when a
generation starts, ``modules_forge.main_entry``); model work there runs on Forge's main
thread (``modules_forge.main_thread``). It is reported with a notice; no limit is set.

Commands from the Models on GPU tab run under ``modules.call_queue.queue_lock``, as the
WebUI's own checkpoint switch does (``wrap_queued_call``); they never call ``opts.set``
on the checkpoint option, whose change hook takes that same (non re-entrant) lock.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import memory, state, webui_settings

GIB = memory.GIB
LIMIT_MAX = 10  # the WebUI's own slider goes to 10
OVERSHOOT = 1
INFERENCE_EXTRA = int(0.4 * GIB) + GIB  # ComfyUI's extra reserve + a 1024x1024 image

FORGE_NOTICE = ("Forge keeps a single checkpoint and loads it when a generation starts: "
                "'Maximum number of checkpoints loaded' has no effect there. Atelier "
                "reports its memory and can switch or unload it; pinning is not available.")
FORGE_CLASSIC_NOTICE = ("This Forge (before August 2024) keeps a single checkpoint: "
                        "'Maximum number of checkpoints loaded' has no effect there. Atelier "
                        "reports its memory and can switch it; unloading and pinning are not "
                        "available.")


class CommandError(Exception):
    """A command the WebUI cannot carry out; ``status`` is the HTTP status to report."""

    def __init__(self, message: str, status: int = 409, code: str = "webui_refused") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Limits:
    checkpoints_limit: int
    keep_in_cpu: bool
    device_slots: int
    ram_slots: int
    unit: int
    reason: str


def plan_limits(*, unit: int, device_free: int, device_ours: int, ram_free: int,
                ram_ours: int, inference_reserve: int, ram_reserve: int, on_cpu: bool,
                pinned: int = 0, overshoot: int = OVERSHOOT,
                max_limit: int = LIMIT_MAX) -> Limits:
    """Pure: A1111's two settings from measured memory and the model size ``unit``."""
    unit = max(1, unit)
    ram_slots = max(0, (ram_free + ram_ours - ram_reserve) // unit)
    note = ""
    if on_cpu:
        slots = max(0, (ram_free + ram_ours - ram_reserve - inference_reserve) // unit)
        limit = min(max_limit, max(1, slots - overshoot))
        if pinned + 1 > limit:
            note = f"; {pinned} pinned but only {limit} fit"
        return Limits(limit, False, slots, ram_slots, unit,
                      f"CPU-only WebUI: {slots} checkpoints of {unit} bytes fit in RAM; "
                      f"keeping {limit}{note}")
    device_slots = max(0, (device_free + device_ours - inference_reserve) // unit)
    if device_slots < 1:
        return Limits(1, True, device_slots, ram_slots, unit,
                      f"a {unit} byte checkpoint does not fit beside the {inference_reserve} "
                      "byte inference reserve: one checkpoint (consider --medvram)")
    on_device = min(max_limit, device_slots - overshoot)
    if on_device >= 2:
        if pinned + 1 > on_device:
            note = f"; {pinned} pinned but only {on_device} fit"
        return Limits(on_device, False, device_slots, ram_slots, unit,
                      f"{device_slots} checkpoints of {unit} bytes fit on the GPU; keeping "
                      f"{on_device} there{note}")
    in_ram = min(max_limit, 1 + max(0, ram_slots - overshoot))
    if pinned + 1 > in_ram:
        note = f"; {pinned} pinned but only {in_ram} fit"
    return Limits(in_ram, True, device_slots, ram_slots, unit,
                  f"one checkpoint fits on the GPU; keeping {in_ram - 1} more in RAM "
                  f"({ram_slots} fit){note}")


def order_pinned(models: list[Any], pinned: set[str], current: Any) -> list[Any]:
    """A1111 evicts from the end of ``loaded_sd_models`` (index 0 is the current model):
    keep the current first, then the pinned, then the rest in their order."""
    def is_pinned(m: Any) -> bool:
        return _filename(m) in pinned

    head = [m for m in models if m is current]
    return head + [m for m in models if m is not current and is_pinned(m)] + \
        [m for m in models if m is not current and not is_pinned(m)]


def _info(model: Any) -> Any:
    return getattr(model, "sd_checkpoint_info", None)


def _filename(model: Any) -> str | None:
    info = _info(model)
    name = getattr(info, "filename", None)
    return str(name) if name else None


def _device_name(dev: Any) -> str:
    kind = getattr(dev, "type", None) or str(dev).split(":", 1)[0]
    index = getattr(dev, "index", None)
    if kind == "cuda" and index is None:
        torch = sys.modules.get("torch")
        index = torch.cuda.current_device() if torch is not None and \
            torch.cuda.is_available() else 0
    return kind if index is None else f"{kind}:{index}"


def webui_modules() -> SimpleNamespace:
    """The WebUI modules this adapter drives (imported here, inside the WebUI)."""
    from modules import call_queue, sd_models, shared

    try:
        from modules import devices
    except ImportError:  # the device is then read from shared / --use-cpu
        devices = None
    return SimpleNamespace(shared=shared, sd_models=sd_models, call_queue=call_queue,
                           devices=devices)


@dataclass
class Applied:
    limits: Limits
    applied: bool
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {"planned": asdict(self.limits), "applied": self.applied, "note": self.note}


class Adapter:
    """The WebUI's checkpoints: measured, sized, reported, and driven by commands."""

    def __init__(self, *, modules: SimpleNamespace | None = None,
                 settings: Callable[[], Mapping[str, object]] | None = None,
                 pins_file: Path | None = None, log: Callable[[str], Any] = print,
                 ram: Callable[[], memory.Reading] = memory.ram,
                 cuda: Callable[[], list[memory.Reading]] = memory.cuda) -> None:
        self._modules = modules
        self._settings = settings
        self.pins_file = pins_file
        self.pins = state.load_pins(pins_file) if pins_file else set()
        self.log = log
        self._ram = ram
        self._cuda = cuda
        self.last: Applied | None = None
        self._noticed = False
        self._lock = threading.Lock()
        self.on_change: Callable[[], None] = lambda: None

    @property
    def m(self) -> SimpleNamespace:
        if self._modules is None:
            self._modules = webui_modules()
        return self._modules

    def settings(self) -> Mapping[str, object]:
        if self._settings is not None:
            return self._settings()
        return getattr(self.m.shared.opts, "data", {}) or {}

    # -- what WebUI this is --------------------------------------------------------

    @property
    def generation(self) -> str:
        if hasattr(self.m.sd_models, "forge_model_reload"):
            return "forge"
        if "modules_forge" in sys.modules:
            return "forge-classic"
        return "a1111"

    @property
    def single_model(self) -> bool:
        return self.generation != "a1111"

    @property
    def notice(self) -> str | None:
        return {"forge": FORGE_NOTICE, "forge-classic": FORGE_CLASSIC_NOTICE}.get(
            self.generation)

    def _cmd(self, name: str, default: Any = None) -> Any:
        return getattr(getattr(self.m.shared, "cmd_opts", None), name, default)

    @property
    def full_precision(self) -> bool:
        return bool(self._cmd("no_half", False))

    @property
    def frozen(self) -> bool:
        return bool(self._cmd("freeze_settings", False))

    @property
    def device(self) -> str:
        dev = getattr(self.m.devices, "device", None) or getattr(self.m.shared, "device", None)
        if dev is None:
            use_cpu = self._cmd("use_cpu", None) or []
            return "cpu" if "all" in use_cpu or "sd" in use_cpu else "cuda:0"
        return _device_name(dev)

    @property
    def on_cpu(self) -> bool:
        return not self.device.startswith("cuda")

    # -- the WebUI's checkpoints ---------------------------------------------------

    def current(self) -> Any:
        model = getattr(getattr(self.m.sd_models, "model_data", None), "sd_model", None)
        return model if _info(model) is not None else None

    def loaded(self) -> list[Any]:
        data = getattr(self.m.sd_models, "model_data", None)
        models = list(getattr(data, "loaded_sd_models", None) or [])
        current = self.current()
        if current is not None and all(m is not current for m in models):
            models.insert(0, current)  # Forge keeps no list
        return [m for m in models if _info(m) is not None]

    def selected_file(self) -> str | None:
        """The checkpoint the WebUI will load (its setting), loaded or not."""
        opts = self.m.shared.opts
        title = getattr(opts, "data", {}).get("sd_model_checkpoint")
        find = getattr(self.m.sd_models, "get_closet_checkpoint_match", None)
        if not title or find is None:
            return None
        info = find(title)
        return getattr(info, "filename", None)

    def _resolve(self, name: str) -> Any:
        find = getattr(self.m.sd_models, "get_closet_checkpoint_match", None)
        info = find(name) if find is not None else None
        if info is None:
            raise CommandError(f"the WebUI knows no checkpoint {name!r} (refresh its list?)",
                               404, "unknown_model")
        return info

    # -- measuring and sizing -------------------------------------------------------

    def readings(self) -> list[memory.Reading]:
        return [*self._cuda(), self._ram()]

    def plan(self, extra: Iterable[str] = ()) -> Limits:
        dev = self.device
        full = self.full_precision
        sizes, device_ours, ram_ours = [], 0, 0
        for model in self.loaded():
            by = memory.module_bytes(model)
            held = sum(v for k, v in by.items() if k != "meta")
            if held:
                sizes.append(held)
            if not self.on_cpu:
                device_ours += by.get(dev, 0)
            ram_ours += by.get("cpu", 0)
        for path in [self.selected_file(), *extra]:
            if path:
                size = memory.checkpoint_bytes(path, full_precision=full)
                if size:
                    sizes.append(size)
        unit = max(sizes) if sizes else 2 * GIB * (2 if full else 1)  # SD1.5 at fp16
        readings = self.readings()
        ram = next(r for r in readings if r.name == "ram")
        gpu = next((r for r in readings if r.name == dev), None)
        ram_reserve, vram_reserve = webui_settings.reserves(self.settings())
        pinned = sum(1 for m in self.loaded() if _filename(m) in self.pins)
        return plan_limits(unit=unit, device_free=gpu.free if gpu else 0,
                           device_ours=device_ours, ram_free=ram.free, ram_ours=ram_ours,
                           inference_reserve=vram_reserve + INFERENCE_EXTRA,
                           ram_reserve=ram_reserve, on_cpu=self.on_cpu, pinned=pinned)

    def apply(self, extra: Iterable[str] = ()) -> Applied:
        """Measure and set ``sd_checkpoints_limit`` / ``sd_checkpoints_keep_in_cpu``."""
        with self._lock:
            self.last = self._apply(extra)
        self.on_change()
        return self.last

    def _apply(self, extra: Iterable[str]) -> Applied:
        limits = self.plan(extra)
        if self.single_model:
            if not self._noticed:
                self._noticed = True
                self.log(f"Atelier: {self.notice}")
            return Applied(limits, False, self.notice or "")
        wanted = {"sd_checkpoints_limit": limits.checkpoints_limit,
                  "sd_checkpoints_keep_in_cpu": limits.keep_in_cpu}
        would = ", ".join(f"{k}={v}" for k, v in wanted.items())
        if not webui_settings.residency_on(self.settings()):
            return Applied(limits, False, f"sizing is off in Settings > Atelier; it would set "
                                          f"{would}: {limits.reason}")
        if self.frozen:
            return Applied(limits, False, f"settings are frozen (--freeze-settings); Atelier "
                                          f"would set {would}: {limits.reason}")
        opts = self.m.shared.opts
        changed = False
        try:
            for key, val in wanted.items():
                if opts.data.get(key) != val:
                    opts.set(key, val)
                    changed = changed or opts.data.get(key) == val
        except (AssertionError, RuntimeError) as exc:  # frozen key or section
            return Applied(limits, False, f"cannot change settings ({exc}); Atelier would set "
                                          f"{would}: {limits.reason}")
        note = f"{would}: {limits.reason}"
        if changed:
            try:
                opts.save(self.m.shared.config_filename)
            except (AssertionError, OSError) as exc:
                note += f" (not saved: {exc})"
            self.log(f"Atelier: {note}")
        return Applied(limits, True, note)

    # -- the WebUI's hooks ----------------------------------------------------------

    def on_model_loaded(self, sd_model: Any = None) -> None:
        """``script_callbacks.on_model_loaded``: runs in the loading thread, usually under
        the queue lock, so it never takes that lock itself."""
        try:
            self._order_pins()
            self.apply()
        except Exception as exc:  # a hook must never break the WebUI's model load
            self.log(f"Atelier: sizing the checkpoint cache failed: {exc!r}")

    def _order_pins(self) -> None:
        data = getattr(self.m.sd_models, "model_data", None)
        models = getattr(data, "loaded_sd_models", None)
        if isinstance(models, list) and self.pins:
            models[:] = order_pinned(models, self.pins, getattr(data, "sd_model", None))

    # -- the report -----------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        current = self.current()
        pinned = self.pins
        checkpoints = []
        for model in self.loaded():
            info = _info(model)
            by = memory.module_bytes(model)
            held = {k: v for k, v in by.items() if k != "meta" and v}
            checkpoints.append({
                "title": getattr(info, "title", None), "name": getattr(info, "name", None),
                "filename": getattr(info, "filename", None), "current": model is current,
                "device": max(held, key=lambda k: held[k]) if held else "unloaded",
                "bytes": sum(held.values()), "bytes_by_device": held,
                "pinned": getattr(info, "filename", None) in pinned})
        listed = getattr(self.m.sd_models, "checkpoints_list", {}) or {}
        available = [{"title": getattr(i, "title", t), "name": getattr(i, "name", None),
                      "pinned": getattr(i, "filename", None) in pinned}
                     for t, i in list(listed.items())[:1000]]
        opts_data = getattr(self.m.shared.opts, "data", {})
        limits: dict[str, Any] = {
            "sd_checkpoints_limit": opts_data.get("sd_checkpoints_limit"),
            "sd_checkpoints_keep_in_cpu": opts_data.get("sd_checkpoints_keep_in_cpu")}
        if self.last is not None:
            limits.update(self.last.as_dict())
        return {
            "webui": {"generation": self.generation, "single_model": self.single_model,
                      "notice": self.notice, "pid": os.getpid(), "device": self.device,
                      "full_precision": self.full_precision, "frozen": self.frozen,
                      "residency": webui_settings.residency_on(self.settings())},
            "checkpoints": checkpoints, "available": available,
            "devices": [r.as_dict() for r in self.readings()], "limits": limits}

    # -- commands from the Models on GPU tab ------------------------------------------

    def run(self, command: Mapping[str, Any]) -> str:
        """Carry out one command under the WebUI's queue lock; a message, or CommandError."""
        action, name = command.get("action"), str(command.get("model") or "")
        if action not in ("load", "unload", "pin"):
            raise CommandError(f"unknown action {action!r}", 400, "bad_request")
        info = self._resolve(name)
        if action == "pin":
            return self._pin(info, bool(command.get("pinned", True)))
        with self.m.call_queue.queue_lock:
            message = self._load(info) if action == "load" else self._unload(info)
        self.on_change()
        return message

    def _main_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        """Forge runs model work on its main thread; A1111 on the caller's."""
        runner = sys.modules.get("modules_forge.main_thread")
        if runner is None and self.single_model:
            try:
                from modules_forge import main_thread as runner  # type: ignore[no-redef]
            except ImportError:
                runner = None
        if runner is not None and hasattr(runner, "run_and_wait_result"):
            return runner.run_and_wait_result(func, *args)
        return func(*args)

    def _save_choice(self, info: Any) -> None:
        opts = self.m.shared.opts
        opts.data["sd_model_checkpoint"] = info.title  # as load_model_weights writes it
        if not self.frozen:
            try:
                opts.save(self.m.shared.config_filename)
            except (AssertionError, OSError):
                pass

    def _load(self, info: Any) -> str:
        sd_models = self.m.sd_models
        gen = self.generation
        if gen == "forge":
            self._save_choice(info)
            try:
                from modules_forge import main_entry
            except ImportError:
                main_entry = None
            if main_entry is not None and hasattr(main_entry, "refresh_model_loading_parameters"):
                main_entry.refresh_model_loading_parameters()
            self._main_thread(sd_models.forge_model_reload)
        elif gen == "forge-classic":
            self._main_thread(sd_models.reload_model_weights, None, info)
            self._save_choice(info)
        else:
            sd_models.reload_model_weights(info=info)
            self._save_choice(info)
        now = self.current()
        if _filename(now) != info.filename:
            raise CommandError(f"the WebUI did not load {info.title} (see its console)", 500,
                               "load_failed")
        return f"{info.title} is the current checkpoint"

    def _unload(self, info: Any) -> str:
        sd_models = self.m.sd_models
        gen = self.generation
        if gen == "forge-classic":
            raise CommandError("this Forge cannot unload its checkpoint")
        if gen == "forge":
            if _filename(self.current()) != info.filename:
                raise CommandError(f"{info.title} is not loaded", 404, "not_loaded")
            self._main_thread(sd_models.unload_model_weights)
            return f"Forge moved {info.title} off the GPU"
        match = next((m for m in self.loaded() if _filename(m) == info.filename), None)
        if match is None:
            raise CommandError(f"{info.title} is not loaded", 404, "not_loaded")
        if match is self.current():
            sd_models.unload_model_weights()  # A1111's own unload: the current one to RAM
            return f"{info.title} moved to RAM (it is the current checkpoint)"
        sd_models.send_model_to_trash(match)
        models = sd_models.model_data.loaded_sd_models
        if match in models:
            models.remove(match)
        return f"{info.title} unloaded"

    def _pin(self, info: Any, pinned: bool) -> str:
        if self.single_model:
            raise CommandError(self.notice or "this WebUI keeps a single checkpoint")
        if pinned:
            self.pins.add(info.filename)
        else:
            self.pins.discard(info.filename)
        if self.pins_file is not None:
            state.save_pins(self.pins_file, self.pins)
        with self.m.call_queue.queue_lock:  # the list is the WebUI's: reorder it quietly
            self._order_pins()
        self.apply()
        return f"{info.title} {'pinned' if pinned else 'unpinned'}"
