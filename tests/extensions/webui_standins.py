"""Stand-ins for the WebUI's ``modules.*`` and for gradio, put in ``sys.modules``.

Modelled on the real sources (lllyasviel/stable-diffusion-webui-forge history: A1111
c8a5322d, ~v1.8; Forge 0af28699, June 2024, "classic"; Forge main dfdcbab6), in the points
the extension depends on:

- ``modules.options``: ``opts.set`` asserts under ``--freeze-settings`` (and for frozen
  keys), only ``RuntimeError`` is caught inside it; ``opts.save`` asserts too.
- ``modules.call_queue.queue_lock``: a FIFO lock that is NOT re-entrant.
- ``modules.initialize_util.configure_sigint_handler`` and ``modules.restart``: leave with
  ``os._exit(0)``, so no exit hook runs.
- ``modules.sd_models`` (A1111): ``model_data.loaded_sd_models`` (current at index 0),
  ``reuse_model_from_already_loaded`` evicting from the end past ``sd_checkpoints_limit``,
  ``sd_checkpoints_keep_in_cpu``, ``model_loaded_callback`` before ``set_sd_model`` in
  ``reload_model_weights``; weights in fp16 unless ``--no-half``.
- Forge classic: one model, ``reload_model_weights`` is ``load_model``, ``modules_forge``
  imported, model work on ``modules_forge.main_thread``.
- Forge main: ``sd_models.forge_model_reload`` (loads what ``forge_loading_parameters``
  name, set by ``main_entry.refresh_model_loading_parameters``), ``unload_model_weights``
  unloads everything.
- gradio: ``Blocks``/``HTML``/``Textbox``/``Number``/``Checkbox`` recorders, and an ``App``
  (a FastAPI app) with ``auth``/``tokens`` and the login cookie of gradio 3.41
  (``access-token``) or 4.x (``access-token-{cookie_id}``).

"Checkpoints" are small safetensors files loaded into tiny torch modules.
"""

from __future__ import annotations

import collections
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

MODULE_NAMES = (
    "modules", "modules.script_callbacks", "modules.shared", "modules.options",
    "modules.call_queue", "modules.devices", "modules.sd_models", "modules.initialize_util",
    "modules.restart", "modules_forge", "modules_forge.main_thread", "modules_forge.main_entry",
    "gradio", "gradio.routes")


# -- gradio -----------------------------------------------------------------------------


@dataclass
class Component:
    kind: str
    value: Any = None
    kwargs: dict[str, Any] = field(default_factory=dict)


class Blocks:
    current: Blocks | None = None
    made: list[Blocks] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.children: list[Component] = []
        Blocks.made.append(self)

    def __enter__(self) -> Blocks:
        Blocks.current = self
        return self

    def __exit__(self, *exc: object) -> None:
        Blocks.current = None


def _component(kind: str) -> Callable[..., Component]:
    def make(value: Any = None, **kwargs: Any) -> Component:
        c = Component(kind, value, kwargs)
        if Blocks.current is not None:
            Blocks.current.children.append(c)
        return c
    make.__name__ = kind
    return make


def gradio_app_class(version: int) -> type:
    """gradio's ``routes.App``: a FastAPI app with ``auth`` (set at launch) and ``tokens``
    (filled by its login route, read from the login cookie)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    class App(FastAPI):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.tokens: dict[str, str] = {}
            self.auth: Any = None
            if version >= 4:
                self.cookie_id = secrets.token_urlsafe(32)

            async def login(request: Any) -> Any:
                form = parse_qs((await request.body()).decode())
                user = form.get("username", [""])[0].strip()
                password = form.get("password", [""])[0]
                if self.auth is None or self.auth.get(user) != password:
                    return JSONResponse({"detail": "Incorrect credentials."}, status_code=400)
                token = secrets.token_urlsafe(16)
                self.tokens[token] = user
                suffix = f"-{self.cookie_id}" if version >= 4 else ""
                response = JSONResponse({"success": True})
                response.set_cookie(f"access-token{suffix}", token, httponly=True,
                                    samesite="none", secure=True)
                response.set_cookie(f"access-token-unsecure{suffix}", token, httponly=True)
                return response

            self.add_route("/login", login, methods=["POST"])

    return App


def make_gradio(version: int = 3) -> tuple[ModuleType, ModuleType]:
    gr = ModuleType("gradio")
    gr.__version__ = "3.41.2" if version < 4 else "4.40.0"  # type: ignore[attr-defined]
    gr.Blocks = Blocks  # type: ignore[attr-defined]
    for kind in ("HTML", "Textbox", "Number", "Checkbox", "Slider", "Dropdown", "State"):
        setattr(gr, kind, _component(kind))
    routes = ModuleType("gradio.routes")
    routes.App = gradio_app_class(version)  # type: ignore[attr-defined]
    gr.routes = routes  # type: ignore[attr-defined]
    return gr, routes


# -- modules.options / shared --------------------------------------------------------------


class OptionInfo:
    def __init__(self, default: Any = None, label: str = "", component: Any = None,
                 component_args: Any = None, onchange: Callable[[], Any] | None = None,
                 section: tuple[str, str] | None = None, refresh: Any = None,
                 comment_before: str = "", comment_after: str = "", infotext: Any = None,
                 restrict_api: bool = False, category_id: Any = None) -> None:
        self.default, self.label, self.component = default, label, component
        self.component_args, self.onchange, self.section = component_args, onchange, section
        self.do_not_save = False
        self.comment_after = comment_after

    def info(self, text: str) -> OptionInfo:
        self.comment_after += f"<span class='info'>({text})</span>"
        return self


class Options:
    """A1111's Options where it matters: set() asserts when settings are frozen."""

    def __init__(self, data_labels: dict[str, OptionInfo], cmd_opts: Any) -> None:
        object.__setattr__(self, "data_labels", data_labels)
        object.__setattr__(self, "data", {k: v.default for k, v in data_labels.items()})
        object.__setattr__(self, "cmd_opts", cmd_opts)
        object.__setattr__(self, "saved", [])

    def __setattr__(self, key: str, value: Any) -> None:
        if key in self.data or key in self.data_labels:
            assert not self.cmd_opts.freeze_settings, "changing settings is disabled"
            info = self.data_labels.get(key)
            if self.cmd_opts.freeze_settings_in_sections is not None and info is not None:
                frozen = [s.strip() for s in self.cmd_opts.freeze_settings_in_sections.split(",")]
                assert info.section[0] not in frozen, f"not possible to set '{key}' because " \
                    "settings in its section are frozen with --freeze-settings-in-sections"
            if self.cmd_opts.freeze_specific_settings is not None:
                frozen = [s.strip() for s in self.cmd_opts.freeze_specific_settings.split(",")]
                assert key not in frozen, f"not possible to set '{key}' because this setting " \
                    "is frozen with --freeze-specific-settings"
            self.data[key] = value
            return
        object.__setattr__(self, key, value)

    def __getattr__(self, item: str) -> Any:
        data = object.__getattribute__(self, "data")
        if item in data:
            return data[item]
        labels = object.__getattribute__(self, "data_labels")
        if item in labels:
            return labels[item].default
        raise AttributeError(item)

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        oldval = self.data.get(key, None)
        if oldval == value:
            return False
        option = self.data_labels[key]
        try:
            setattr(self, key, value)
        except RuntimeError:
            return False
        if run_callbacks and option.onchange is not None:
            try:
                option.onchange()
            except Exception:
                setattr(self, key, oldval)
                return False
        return True

    def save(self, filename: str) -> None:
        assert not self.cmd_opts.freeze_settings, "saving settings is disabled"
        import json

        with open(filename, "w", encoding="utf8") as f:
            json.dump(self.data, f, indent=4)
        self.saved.append(dict(self.data))

    def add_option(self, key: str, info: OptionInfo) -> None:
        self.data_labels[key] = info
        if key not in self.data:
            self.data[key] = info.default

    def onchange(self, key: str, func: Callable[[], Any], call: bool = True) -> None:
        self.data_labels[key].onchange = func
        if call:
            func()


def cmd_opts(**overrides: Any) -> SimpleNamespace:
    base = dict(freeze_settings=False, freeze_settings_in_sections=None,
                freeze_specific_settings=None, no_half=False, use_cpu=["all"], api_auth=None,
                gradio_auth=None, gradio_auth_path=None, cors_allow_origins=None,
                cors_allow_origins_regex=None, device_id=None, nowebui=False)
    base.update(overrides)
    return SimpleNamespace(**base)


# -- the queue lock ------------------------------------------------------------------------


class FIFOLock:
    """modules/fifo_lock.py: first come first served, not re-entrant."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inner_lock = threading.Lock()
        self._pending_threads: collections.deque[threading.Event] = collections.deque()

    def acquire(self, blocking: bool = True) -> bool:
        with self._inner_lock:
            if self._lock.acquire(False):
                return True
            if not blocking:
                return False
            release_event = threading.Event()
            self._pending_threads.append(release_event)
        release_event.wait()
        return self._lock.acquire()

    def release(self) -> None:
        with self._inner_lock:
            if self._pending_threads:
                self._pending_threads.popleft().set()
            self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- checkpoints ---------------------------------------------------------------------------


def write_checkpoint(path: Path, elements: int = 256 * 1024, dtype: str = "float16",
                     seed: int = 0) -> Path:
    """A small "checkpoint": two tensors of ``elements`` total in ``dtype``."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    half = elements // 2
    t = getattr(torch, dtype)
    save_file({"model.diffusion_model.w": torch.randn(half, generator=g).to(t),
               "first_stage_model.w": torch.randn(elements - half, generator=g).to(t)},
              str(path))
    return path


class CheckpointInfo:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.name = os.path.basename(filename)
        self.model_name = os.path.splitext(self.name)[0]
        self.hash = self.sha256 = None
        self.shorthash = f"{abs(hash(filename)) % 16**10:010x}"
        self.title = f"{self.name} [{self.shorthash}]"


def _tiny_model(info: CheckpointInfo, dtype: Any, device: Any) -> Any:
    import torch
    from safetensors.torch import load_file

    class SdModel(torch.nn.Module):
        pass

    m = SdModel()
    for i, (k, v) in enumerate(sorted(load_file(info.filename).items())):
        m.register_parameter(f"p{i}", torch.nn.Parameter(v.to(dtype), requires_grad=False))
        del k
    m.to(_placeable(device))
    m.sd_checkpoint_info = info
    m.sd_model_checkpoint = info.filename
    m.filename = info.filename
    m.lowvram = False
    m.used_config = "v1-inference.yaml"
    return m


# -- the whole WebUI ---------------------------------------------------------------------


@dataclass
class WebUI:
    """One stand-in WebUI: its modules, and what the extension registered with them."""

    flavor: str
    modules: dict[str, ModuleType]
    callbacks: dict[str, list[Callable[..., Any]]]
    shared: ModuleType
    sd_models: ModuleType
    call_queue: ModuleType
    gradio: ModuleType
    log: list[str] = field(default_factory=list)

    def install(self) -> None:
        sys.modules.update(self.modules)

    def uninstall(self) -> None:
        for name in MODULE_NAMES:
            sys.modules.pop(name, None)

    def run(self, name: str, *args: Any) -> list[Any]:
        return [cb(*args) for cb in self.callbacks[name]]


def make_webui(flavor: str = "a1111", *, models_dir: Path | None = None,
               config_file: Path | None = None, opts_overrides: dict[str, Any] | None = None,
               gradio_version: int | None = None, **cmd: Any) -> WebUI:
    """``flavor``: "a1111", "forge-classic" or "forge". torch is optional (the proxy tests
    run under the WebUIs' pinned web stacks, in venvs without it)."""
    try:
        import torch
        device: Callable[[str], Any] = torch.device
    except ImportError:
        def device(kind: str) -> Any:
            return SimpleNamespace(type=kind, index=None)

    callbacks: dict[str, list[Callable[..., Any]]] = {
        k: [] for k in ("ui_tabs", "ui_settings", "app_started", "model_loaded")}
    modules_pkg = ModuleType("modules")
    modules_pkg.__path__ = []  # type: ignore[attr-defined]

    sc = ModuleType("modules.script_callbacks")
    for name in callbacks:
        def register(cb: Callable[..., Any], *, name: str | None = None,
                     _key: str = name) -> None:
            callbacks[_key].append(cb)
        setattr(sc, f"on_{name}", register)
    sc.model_loaded_callback = lambda m: [cb(m) for cb in callbacks["model_loaded"]]  # type: ignore[attr-defined]
    sc.app_started_callback = lambda demo, app: [  # type: ignore[attr-defined]
        cb(demo, app) for cb in callbacks["app_started"]]

    cmd_ns = cmd_opts(**cmd)
    options = ModuleType("modules.options")
    options.OptionInfo = OptionInfo  # type: ignore[attr-defined]
    options.Options = Options  # type: ignore[attr-defined]
    labels = {
        "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint"),
        "sd_checkpoints_limit": OptionInfo(1, "Maximum number of checkpoints loaded at the "
                                           "same time", section=("sd", "Stable Diffusion")),
        "sd_checkpoints_keep_in_cpu": OptionInfo(True, "Only keep one model on device",
                                                 section=("sd", "Stable Diffusion")),
    }
    opts = Options(labels, cmd_ns)
    opts.data.update(opts_overrides or {})

    shared = ModuleType("modules.shared")
    shared.opts = opts  # type: ignore[attr-defined]
    shared.cmd_opts = cmd_ns  # type: ignore[attr-defined]
    shared.OptionInfo = OptionInfo  # type: ignore[attr-defined]
    shared.config_filename = str(config_file or Path(os.devnull))  # type: ignore[attr-defined]

    devices = ModuleType("modules.devices")
    on_cpu = "all" in (cmd_ns.use_cpu or []) or "sd" in (cmd_ns.use_cpu or [])
    devices.cpu = device("cpu")  # type: ignore[attr-defined]
    devices.device = device("cpu") if on_cpu else device("cuda")  # type: ignore[attr-defined]
    devices.torch_gc = lambda: None  # type: ignore[attr-defined]
    shared.device = devices.device  # type: ignore[attr-defined]

    cq = ModuleType("modules.call_queue")
    cq.queue_lock = FIFOLock()  # type: ignore[attr-defined]

    def wrap_queued_call(func: Callable[..., Any]) -> Callable[..., Any]:
        def f(*args: Any, **kwargs: Any) -> Any:
            with cq.queue_lock:  # type: ignore[attr-defined]
                return func(*args, **kwargs)
        return f

    cq.wrap_queued_call = wrap_queued_call  # type: ignore[attr-defined]

    iu = ModuleType("modules.initialize_util")

    def configure_sigint_handler() -> None:
        def sigint_handler(sig: int, frame: Any) -> None:
            print(f"Interrupted with signal {sig} in {frame}", flush=True)
            os._exit(0)

        signal.signal(signal.SIGINT, sigint_handler)

    iu.configure_sigint_handler = configure_sigint_handler  # type: ignore[attr-defined]

    restart = ModuleType("modules.restart")

    def restart_program() -> None:
        tmp = Path(os.environ.get("WEBUI_ROOT", ".")) / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "restart").touch()
        os._exit(0)

    restart.restart_program = restart_program  # type: ignore[attr-defined]
    restart.stop_program = lambda: os._exit(0)  # type: ignore[attr-defined]

    sd = _sd_models(flavor, models_dir, shared, devices, sc, cmd_ns)
    gr, routes = make_gradio(gradio_version or (4 if flavor == "forge" else 3))
    mods: dict[str, ModuleType] = {
        "modules": modules_pkg, "modules.script_callbacks": sc, "modules.shared": shared,
        "modules.options": options, "modules.call_queue": cq, "modules.devices": devices,
        "modules.sd_models": sd, "modules.initialize_util": iu, "modules.restart": restart,
        "gradio": gr, "gradio.routes": routes}
    for name, mod in list(mods.items()):
        if name.startswith("modules."):
            setattr(modules_pkg, name.split(".", 1)[1], mod)
    if flavor != "a1111":
        mods.update(_forge_modules(flavor, sd, shared))
    return WebUI(flavor, mods, callbacks, shared, sd, cq, gr)


def _sd_models(flavor: str, models_dir: Path | None, shared: ModuleType, devices: ModuleType,
               sc: ModuleType, cmd_ns: Any) -> ModuleType:
    sd = ModuleType("modules.sd_models")
    sd.CheckpointInfo = CheckpointInfo  # type: ignore[attr-defined]
    checkpoints_list: dict[str, CheckpointInfo] = {}
    sd.checkpoints_list = checkpoints_list  # type: ignore[attr-defined]
    sd.loads = []  # type: ignore[attr-defined]  # what the stand-in loaded, for the tests

    def list_models() -> None:
        checkpoints_list.clear()
        for p in sorted((models_dir or Path("/nonexistent")).glob("*.safetensors")):
            info = CheckpointInfo(str(p))
            checkpoints_list[info.title] = info

    def get_closet_checkpoint_match(search: str) -> CheckpointInfo | None:
        if not search:
            return None
        for info in checkpoints_list.values():
            if search in (info.title, info.name, info.model_name, info.filename,
                          info.shorthash):
                return info
        found = sorted((i for i in checkpoints_list.values() if search in i.title),
                       key=lambda i: len(i.title))
        return found[0] if found else None

    def select_checkpoint() -> CheckpointInfo | None:
        info = get_closet_checkpoint_match(shared.opts.data.get("sd_model_checkpoint") or "")
        return info or next(iter(checkpoints_list.values()), None)

    def dtype() -> Any:
        import torch

        return torch.float32 if cmd_ns.no_half else torch.float16

    list_models()
    sd.list_models = list_models  # type: ignore[attr-defined]
    sd.get_closet_checkpoint_match = get_closet_checkpoint_match  # type: ignore[attr-defined]
    sd.select_checkpoint = select_checkpoint  # type: ignore[attr-defined]

    if flavor == "forge":
        class ForgeModelData:
            def __init__(self) -> None:
                self.sd_model: Any = SimpleNamespace(cond_stage_model=None)  # FakeInitialModel
                self.forge_loading_parameters: dict[str, Any] = {}
                self.forge_hash = ""

            def get_sd_model(self) -> Any:
                return self.sd_model

            def set_sd_model(self, v: Any) -> None:
                self.sd_model = v

        data = ForgeModelData()
        sd.model_data = data  # type: ignore[attr-defined]

        def forge_model_reload() -> tuple[Any, bool]:
            current_hash = str(data.forge_loading_parameters)
            if data.forge_hash == current_hash:
                return data.sd_model, False
            data.sd_model = None
            info = data.forge_loading_parameters["checkpoint_info"]
            model = _tiny_model(info, dtype(), devices.device)
            sd.loads.append(info.title)  # type: ignore[attr-defined]
            data.set_sd_model(model)
            sc.model_loaded_callback(model)  # type: ignore[attr-defined]
            data.forge_hash = current_hash
            return model, True

        def unload_model_weights(sd_model: Any = None, info: Any = None) -> None:
            if _has_info(data.sd_model):
                data.sd_model.to("meta")  # memory_management.unload_all_models

        sd.forge_model_reload = forge_model_reload  # type: ignore[attr-defined]
        sd.unload_model_weights = unload_model_weights  # type: ignore[attr-defined]
        for name in ("load_model", "reload_model_weights", "reuse_model_from_already_loaded",
                     "send_model_to_cpu", "send_model_to_device", "send_model_to_trash"):
            setattr(sd, name, lambda *a, **k: None)  # Forge main: stubs
        return sd

    class SdModelData:
        def __init__(self) -> None:
            self.sd_model: Any = None
            self.loaded_sd_models: list[Any] = []
            self.was_loaded_at_least_once = False
            self.lock = threading.Lock()

        def set_sd_model(self, v: Any, already_loaded: bool = False) -> None:
            self.sd_model = v
            if flavor == "a1111":
                try:
                    self.loaded_sd_models.remove(v)
                except ValueError:
                    pass
                if v is not None:
                    self.loaded_sd_models.insert(0, v)

    data = SdModelData()
    sd.model_data = data  # type: ignore[attr-defined]

    def send_model_to_cpu(m: Any) -> None:
        m.to(devices.cpu)

    def send_model_to_device(m: Any) -> None:
        m.to(_placeable(devices.device))

    def send_model_to_trash(m: Any) -> None:
        m.to(device="meta")

    def load_model(checkpoint_info: CheckpointInfo | None = None,
                   already_loaded_state_dict: Any = None) -> Any:
        info = checkpoint_info or select_checkpoint()
        if flavor == "forge-classic" and data.sd_model is not None:
            if data.sd_model.filename == info.filename:
                return data.sd_model
            data.sd_model = None
            data.loaded_sd_models = []
        if flavor == "a1111" and data.sd_model is not None:
            send_model_to_trash(data.sd_model)
            data.sd_model = None
        model = _tiny_model(info, dtype(), devices.device)
        sd.loads.append(info.title)  # type: ignore[attr-defined]
        shared.opts.data["sd_model_checkpoint"] = info.title
        data.set_sd_model(model)
        data.was_loaded_at_least_once = True
        sc.model_loaded_callback(model)  # type: ignore[attr-defined]
        return model

    def reuse_model_from_already_loaded(sd_model: Any, info: CheckpointInfo) -> Any:
        """A1111's multi-checkpoint cache: evict from the end past the limit."""
        already_loaded = None
        limit = shared.opts.data["sd_checkpoints_limit"]
        for i in reversed(range(len(data.loaded_sd_models))):
            loaded = data.loaded_sd_models[i]
            if loaded.sd_checkpoint_info.filename == info.filename:
                already_loaded = loaded
                continue
            if len(data.loaded_sd_models) > limit > 0:
                data.loaded_sd_models.pop()
                send_model_to_trash(loaded)
            if shared.opts.data["sd_checkpoints_keep_in_cpu"]:
                send_model_to_cpu(sd_model)
        if already_loaded is not None:
            send_model_to_device(already_loaded)
            data.set_sd_model(already_loaded, already_loaded=True)
            shared.opts.data["sd_model_checkpoint"] = already_loaded.sd_checkpoint_info.title
            return data.sd_model
        if limit > 1 and len(data.loaded_sd_models) < limit:
            data.sd_model = None
            load_model(info)
            return data.sd_model
        if data.loaded_sd_models:
            model = data.loaded_sd_models.pop()
            data.sd_model = model
            return model
        return None

    def reload_model_weights(sd_model: Any = None, info: CheckpointInfo | None = None,
                             forced_reload: bool = False) -> Any:
        if flavor == "forge-classic":
            return load_model(info)
        info = info or select_checkpoint()
        sd_model = sd_model or data.sd_model
        if sd_model is not None and sd_model.filename == info.filename and not forced_reload:
            return sd_model
        sd_model = reuse_model_from_already_loaded(sd_model, info)
        if sd_model is not None and sd_model.sd_checkpoint_info.filename == info.filename:
            return sd_model
        if sd_model is None:
            return load_model(info)
        fresh = _tiny_model(info, dtype(), devices.device)  # weights into the same module
        sd_model.load_state_dict(fresh.state_dict())
        sd_model.sd_checkpoint_info = info
        sd_model.sd_model_checkpoint = sd_model.filename = info.filename
        sd.loads.append(info.title)  # type: ignore[attr-defined]
        shared.opts.data["sd_model_checkpoint"] = info.title
        sc.model_loaded_callback(sd_model)  # type: ignore[attr-defined]  # before set_sd_model
        data.set_sd_model(sd_model)
        return sd_model

    def unload_model_weights(sd_model: Any = None, info: Any = None) -> Any:
        if flavor == "forge-classic":
            return sd_model
        send_model_to_cpu(sd_model or data.sd_model)
        return sd_model

    for f in (send_model_to_cpu, send_model_to_device, send_model_to_trash, load_model,
              reuse_model_from_already_loaded, reload_model_weights, unload_model_weights):
        setattr(sd, f.__name__, f)
    return sd


def _placeable(device: Any) -> Any:
    """This machine has no GPU: a "cuda" WebUI's weights stay on the CPU."""
    import torch

    return device if device.type != "cuda" or torch.cuda.is_available() else "cpu"


def _has_info(model: Any) -> bool:
    return getattr(model, "sd_checkpoint_info", None) is not None


def _forge_modules(flavor: str, sd: ModuleType, shared: ModuleType) -> dict[str, ModuleType]:
    forge = ModuleType("modules_forge")
    forge.__path__ = []  # type: ignore[attr-defined]
    main_thread = ModuleType("modules_forge.main_thread")
    waiting: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
    finished: dict[int, Any] = {}
    lock = threading.Lock()
    ids = iter(range(1, 1 << 30))
    main_thread.ran = []  # type: ignore[attr-defined]  # thread names work ran on

    def loop() -> None:  # Forge's main thread: runs queued model work, swallows errors
        while True:
            time.sleep(0.01)
            with lock:
                task = waiting.pop(0) if waiting else None
            if task is None:
                continue
            tid, func, args = task[2]["id"], task[0], task[1]
            main_thread.ran.append(threading.current_thread().name)  # type: ignore[attr-defined]
            try:
                result = func(*args)
            except Exception as exc:  # Forge prints the traceback and returns None
                print(f"Forge main thread: {exc!r}", flush=True)
                result = None
            with lock:
                finished[tid] = result

    threading.Thread(target=loop, name="forge-main-thread", daemon=True).start()

    def run_and_wait_result(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with lock:
            tid = next(ids)
            waiting.append((func, args, {"id": tid}))
        while True:
            time.sleep(0.01)
            with lock:
                if tid in finished:
                    return finished.pop(tid)

    main_thread.run_and_wait_result = run_and_wait_result  # type: ignore[attr-defined]
    forge.main_thread = main_thread  # type: ignore[attr-defined]
    mods = {"modules_forge": forge, "modules_forge.main_thread": main_thread}
    if flavor == "forge":
        main_entry = ModuleType("modules_forge.main_entry")

        def refresh_model_loading_parameters() -> None:
            sd.model_data.forge_loading_parameters = dict(  # type: ignore[attr-defined]
                checkpoint_info=sd.select_checkpoint(),  # type: ignore[attr-defined]
                additional_modules=[], unet_storage_dtype=None)

        main_entry.refresh_model_loading_parameters = refresh_model_loading_parameters  # type: ignore[attr-defined]
        forge.main_entry = main_entry  # type: ignore[attr-defined]
        mods["modules_forge.main_entry"] = main_entry
    return mods
