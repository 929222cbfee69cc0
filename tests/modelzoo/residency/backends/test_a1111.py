"""The A1111 adapter against stand-ins for the WebUI modules placed in sys.modules."""

from __future__ import annotations

import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from modelzoo.errors import UnknownModel
from modelzoo.residency.backends.a1111 import FORGE_NOTICE, A1111Residency, decide_limits
from modelzoo.residency.footprint import ReserveRule

GIB = 1 << 30
MIB = 1 << 20


def test_decide_limits_gpu_ram_and_too_small() -> None:
    # 24 GiB card, 2 GiB models, 1.2 GiB reserve: 11 fit, keep 10 (slider max) on the GPU
    lim = decide_limits([2 * GIB], vram_free=24 * GIB, vram_ours=0, ram_free=64 * GIB,
                        ram_ours=0, reserve=GIB, ram_reserve=2 * GIB)
    assert (lim.checkpoints_limit, lim.keep_in_cpu, lim.gpu_slots) == (10, False, 11)
    # 8 GiB card with SDXL-sized models: one fits, the rest go to RAM
    lim = decide_limits([int(6.5 * GIB), 2 * GIB], vram_free=8 * GIB, vram_ours=0,
                        ram_free=20 * GIB, ram_ours=0, reserve=GIB, ram_reserve=2 * GIB)
    assert (lim.checkpoints_limit, lim.keep_in_cpu) == (2, True)  # 2 fit in RAM, minus 1
    # models we already hold count as room
    lim2 = decide_limits([2 * GIB], vram_free=1 * GIB, vram_ours=6 * GIB, ram_free=0,
                         ram_ours=0, reserve=GIB, ram_reserve=0)
    assert (lim2.checkpoints_limit, lim2.keep_in_cpu) == (2, False)
    lim3 = decide_limits([8 * GIB], vram_free=6 * GIB, vram_ours=0, ram_free=64 * GIB,
                         ram_ours=0, reserve=GIB, ram_reserve=0)
    assert (lim3.checkpoints_limit, lim3.keep_in_cpu, lim3.gpu_slots) == (1, True, 0)
    assert "medvram" in lim3.reason


class FIFOLock:
    """Like modules.fifo_lock.FIFOLock: not re-entrant; records who held it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entered = 0

    def __enter__(self) -> None:
        assert self._lock.acquire(timeout=5), "queue_lock is not re-entrant: deadlock"
        self.entered += 1

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class Opts:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {"sd_checkpoints_limit": 1,
                                     "sd_checkpoints_keep_in_cpu": True}
        self.set_calls: list[tuple[str, Any]] = []

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True
            ) -> bool:
        self.set_calls.append((key, value))
        self.data[key] = value
        return True

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["data"][key]
        except KeyError:
            raise AttributeError(key) from None


@pytest.fixture
def webui(tmp_path: Path, write_ckpt, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """modules.shared / sd_models / call_queue stand-ins, with two real checkpoints."""
    a = write_ckpt(tmp_path / "a.safetensors", {"unet": 3 * MIB, "vae": MIB})
    b = write_ckpt(tmp_path / "b.safetensors", {"unet": 6 * MIB, "vae": 2 * MIB})
    infos = {p.stem: SimpleNamespace(filename=str(p), title=f"{p.name} [0123456789]",
                                     name=p.name) for p in (a, b)}
    pkg = types.ModuleType("modules")
    pkg.__path__ = []
    shared = types.ModuleType("modules.shared")
    shared.opts = Opts()  # type: ignore[attr-defined]
    call_queue = types.ModuleType("modules.call_queue")
    call_queue.queue_lock = FIFOLock()  # type: ignore[attr-defined]
    sd_models = types.ModuleType("modules.sd_models")
    current = torch.nn.Linear(512, 1024)  # 2 MiB of fp32 parameters, on the CPU
    current.sd_checkpoint_info = infos["a"]  # type: ignore[assignment]
    sd_models.model_data = SimpleNamespace(loaded_sd_models=[current])  # type: ignore
    reloads: list[tuple[Any, bool]] = []

    def reload_model_weights(sd_model: Any = None, info: Any = None,
                             forced_reload: bool = False) -> None:
        # the adapter must hold the queue lock, and have set the limits first
        reloads.append((info, call_queue.queue_lock._lock.locked()))  # type: ignore

    def get_closet_checkpoint_match(name: str) -> Any:
        return infos.get(name.split(" ")[0].removesuffix(".safetensors"))

    sd_models.reload_model_weights = reload_model_weights  # type: ignore[attr-defined]
    sd_models.get_closet_checkpoint_match = get_closet_checkpoint_match  # type: ignore
    pkg.shared, pkg.sd_models, pkg.call_queue = shared, sd_models, call_queue  # type: ignore
    for name, mod in (("modules", pkg), ("modules.shared", shared),
                      ("modules.sd_models", sd_models), ("modules.call_queue", call_queue)):
        monkeypatch.setitem(sys.modules, name, mod)
    yield SimpleNamespace(opts=shared.opts, sd_models=sd_models, call_queue=call_queue,
                          reloads=reloads, infos=infos, pkg=pkg)


def _adapter(vram: tuple[int, int] | None, log: list[str]) -> A1111Residency:
    return A1111Residency(reserve=ReserveRule(MIB, 0, 0), ram_reserve=0,
                          vram=lambda: vram, log=log.append)


def test_switch_sets_limits_from_measure_and_reloads_under_queue_lock(webui) -> None:
    log: list[str] = []
    r = _adapter((40 * MIB, 64 * MIB), log)  # b is the largest in use: 8 MiB at fp16
    info = r.switch("b")
    assert info is webui.infos["b"]
    assert webui.reloads == [(info, True)]
    assert webui.call_queue.queue_lock.entered == 1
    # (40 MiB free - 1 MiB reserve) // 8 MiB = 4 slots, minus A1111's overshoot of one
    assert webui.opts.data["sd_checkpoints_limit"] == 3
    assert webui.opts.data["sd_checkpoints_keep_in_cpu"] is False
    assert webui.opts.set_calls[:2] == [("sd_checkpoints_limit", 3),
                                        ("sd_checkpoints_keep_in_cpu", False)]
    assert "sd_checkpoints_limit=3" in log[0]
    with pytest.raises(UnknownModel):
        r.switch("missing")


def test_little_vram_keeps_other_models_in_ram(webui) -> None:
    log: list[str] = []
    r = _adapter((10 * MIB, 64 * MIB), log)  # one 8 MiB model fits beside the reserve
    limits = r.apply([webui.infos["b"].filename])
    assert limits.keep_in_cpu is True and limits.gpu_slots == 1
    assert webui.opts.data["sd_checkpoints_keep_in_cpu"] is True
    assert webui.opts.data["sd_checkpoints_limit"] == min(10, limits.ram_slots)
    assert r.apply().checkpoints_limit >= 1  # sizes of the loaded model alone


def test_no_cuda_means_one_checkpoint(webui) -> None:
    r = _adapter(None, [])
    limits = r.apply()
    assert (limits.checkpoints_limit, limits.keep_in_cpu) == (1, True)


def test_forge_falls_back_with_a_notice(webui, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    webui.sd_models.forge_model_reload = lambda: calls.append("reload")
    forge = types.ModuleType("modules_forge")
    forge.__path__ = []
    entry = types.ModuleType("modules_forge.main_entry")
    entry.refresh_model_loading_parameters = lambda: calls.append("refresh")  # type: ignore
    forge.main_entry = entry  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modules_forge", forge)
    monkeypatch.setitem(sys.modules, "modules_forge.main_entry", entry)
    log: list[str] = []
    r = _adapter((40 * MIB, 64 * MIB), log)
    assert r.forge
    limits = r.apply()
    assert limits.checkpoints_limit == 1 and limits.reason == FORGE_NOTICE
    assert ("sd_checkpoints_limit", 3) not in webui.opts.set_calls  # nothing to set on Forge
    r.switch("b")
    assert webui.opts.data["sd_model_checkpoint"] == webui.infos["b"].title
    assert calls == ["refresh"] and webui.reloads == []  # Forge loads lazily, its own way
    assert log == [FORGE_NOTICE]  # said once, clearly


def test_adapter_imports_without_the_web_stack() -> None:
    """Inside the WebUI: no fastapi, pydantic, sqlalchemy, diffusers, and torch only lazily."""
    code = (
        "import sys\n"
        "for m in ('fastapi', 'pydantic', 'pydantic_settings', 'sqlalchemy', 'starlette',"
        " 'diffusers', 'transformers', 'psutil'):\n"
        "    sys.modules[m] = None\n"
        "import modelzoo.residency.backends.a1111 as a\n"
        "assert 'torch' not in sys.modules, 'torch imported at import time'\n"
        "print(a.decide_limits([1], vram_free=10, vram_ours=0, ram_free=0, ram_ours=0,"
        " reserve=0, ram_reserve=0).checkpoints_limit)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[4], timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "9"


def test_ram_slots_follow_the_containers_cgroup_limit(webui, tmp_path) -> None:
    """In a 40 MiB container on a large host, RAM holds 4 models of 8 MiB, not hundreds."""
    from modelzoo.residency.devices import HostMemory

    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("memory\n")
    (root / "memory.max").write_text(f"{40 * MIB}\n")
    (root / "memory.current").write_text(f"{8 * MIB}\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/\n")
    host = HostMemory(pinned_max=0, cgroup_root=root, proc_cgroup=proc)
    r = A1111Residency(reserve=ReserveRule(MIB, 0, 0), ram_reserve=0,
                       vram=lambda: (10 * MIB, 64 * MIB), ram=host.memory, log=[].append)
    limits = r.apply([webui.infos["b"].filename])
    assert limits.keep_in_cpu is True
    assert limits.ram_slots == (40 - 8) // 8
    assert limits.checkpoints_limit == 1 + limits.ram_slots - 1
