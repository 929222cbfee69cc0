"""The checkpoint adapter inside the WebUI, against the stand-in A1111 and Forge modules
(real torch modules as checkpoints, loaded from real safetensors files).

Memory readings are injected where a decision is checked (a GPU this machine does not
have; an exact amount of RAM); one test reads the machine's own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import load_script
from .webui_standins import write_checkpoint

GIB = 1 << 30
ELEMENTS = 256 * 1024  # per checkpoint: 512 KiB at fp16, 1 MiB at fp32


@pytest.fixture
def models(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    for i, name in enumerate(("a", "b", "c", "d")):
        write_checkpoint(d / f"{name}.safetensors", ELEMENTS, seed=i)
    write_checkpoint(d / "fp32.safetensors", ELEMENTS, dtype="float32", seed=9)
    return d


def reading(name: str, free: int, total: int | None = None) -> Any:
    from atelier_ext.memory import Reading

    return Reading(name, free, total or free * 2)


def adapter(w: Any, ram: int = 64 * GIB, cuda: list[tuple[str, int]] | None = None,
            pins: Path | None = None, settings: dict[str, object] | None = None) -> Any:
    from atelier_ext.residency import Adapter

    return Adapter(modules=None, pins_file=pins, log=w.log.append,
                   settings=(lambda: {**w.shared.opts.data, **(settings or {})}),
                   ram=lambda: reading("ram", ram),
                   cuda=lambda: [reading(n, f) for n, f in (cuda or [])])


def test_plan_limits_from_memory(ext: Any) -> None:
    from atelier_ext.residency import plan_limits

    base = dict(unit=2 * GIB, device_ours=0, ram_ours=0, inference_reserve=2 * GIB,
                ram_reserve=2 * GIB)
    roomy = plan_limits(device_free=24 * GIB, ram_free=64 * GIB, on_cpu=False, **base)
    assert (roomy.checkpoints_limit, roomy.keep_in_cpu) == (10, False)  # the slider's max
    small = plan_limits(device_free=8 * GIB, ram_free=32 * GIB, on_cpu=False, **base)
    assert (small.device_slots, small.checkpoints_limit, small.keep_in_cpu) == (3, 2, False)
    tight = plan_limits(device_free=5 * GIB, ram_free=10 * GIB, on_cpu=False, **base)
    assert (tight.checkpoints_limit, tight.keep_in_cpu) == (4, True)  # 1 on GPU + 3 in RAM
    none = plan_limits(device_free=1 * GIB, ram_free=10 * GIB, on_cpu=False, **base)
    assert (none.checkpoints_limit, none.keep_in_cpu) == (1, True) and "medvram" in none.reason
    # what our checkpoints already hold counts as free for them
    held = plan_limits(device_free=1 * GIB, ram_free=2 * GIB, on_cpu=False,
                       **{**base, "device_ours": 6 * GIB, "ram_ours": 4 * GIB})
    assert held.device_slots == 2 and held.ram_slots == 2
    cpu = plan_limits(device_free=0, ram_free=12 * GIB, on_cpu=True, **base)
    assert (cpu.device_slots, cpu.checkpoints_limit) == (4, 3) and "CPU-only" in cpu.reason
    pinned = plan_limits(device_free=8 * GIB, ram_free=32 * GIB, on_cpu=False, pinned=3,
                         **base)
    assert "3 pinned but only 2 fit" in pinned.reason


def test_a1111_limits_are_set_saved_and_follow_each_load(
        make_webui: Callable[..., Any], models: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    w = make_webui("a1111", models_dir=models, config_file=config, use_cpu=[])
    a = adapter(w, ram=6 * GIB, cuda=[("cuda:0", 5 * GIB)])
    applied = a.apply()
    assert applied.applied
    # unit 2 GiB (nothing known yet); reserve 0.8 + 0.4 + 1 GiB -> 1 slot on the GPU;
    # RAM (6 - 2 reserve) // 2 = 2 slots -> 1 + 1 in RAM
    assert w.shared.opts.data["sd_checkpoints_limit"] == 2
    assert w.shared.opts.data["sd_checkpoints_keep_in_cpu"] is True
    saved = json.loads(config.read_text())
    assert saved["sd_checkpoints_limit"] == 2, "saved to config.json (opts.save)"
    # A model load calls back; a roomier GPU now gives more checkpoints on the device.
    w.shared.opts.data["sd_model_checkpoint"] = "a.safetensors"
    a._cuda = lambda: [reading("cuda:0", 20 * GIB)]
    w.sd_models.load_model(w.sd_models.get_closet_checkpoint_match("a"))
    a.on_model_loaded(w.sd_models.model_data.sd_model)
    assert w.shared.opts.data["sd_checkpoints_keep_in_cpu"] is False
    assert w.shared.opts.data["sd_checkpoints_limit"] == 10
    assert any("sd_checkpoints_limit=10" in line for line in w.log)


def test_frozen_settings_are_reported_not_set(make_webui: Callable[..., Any],
                                              models: Path) -> None:
    w = make_webui("a1111", models_dir=models, freeze_settings=True)
    with pytest.raises(AssertionError):
        w.shared.opts.set("sd_checkpoints_limit", 3)  # the stand-in is as strict as A1111
    a = adapter(w, ram=40 * GIB)
    applied = a.apply()  # no AssertionError
    assert not applied.applied and "--freeze-settings" in applied.note
    assert "sd_checkpoints_limit=" in applied.note
    assert w.shared.opts.data["sd_checkpoints_limit"] == 1
    assert w.shared.opts.saved == []
    one = make_webui("a1111", models_dir=models, freeze_specific_settings="sd_checkpoints_limit")
    applied = adapter(one, ram=40 * GIB).apply()
    assert not applied.applied and "frozen" in applied.note
    assert one.shared.opts.saved == []
    off = make_webui("a1111", models_dir=models)
    applied = adapter(off, settings={"atelier_residency": False}).apply()
    assert not applied.applied and "sizing is off" in applied.note
    assert off.shared.opts.data["sd_checkpoints_limit"] == 1


@pytest.mark.parametrize("no_half", [False, True])
def test_no_half_and_fp32_checkpoints_count_double(make_webui: Callable[..., Any],
                                                    models: Path, no_half: bool) -> None:
    w = make_webui("a1111", models_dir=models, no_half=no_half)
    a = adapter(w)
    w.shared.opts.data["sd_model_checkpoint"] = "a.safetensors"
    fp16_file = a.plan().unit
    assert fp16_file == ELEMENTS * (4 if no_half else 2)
    w.shared.opts.data["sd_model_checkpoint"] = "fp32.safetensors"
    assert a.plan().unit == fp16_file, "an fp32 file is held at the WebUI's dtype"
    model = w.sd_models.load_model(w.sd_models.get_closet_checkpoint_match("a"))
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    assert held == fp16_file
    report = a.report()
    [ckpt] = report["checkpoints"]
    assert ckpt["bytes"] == held and ckpt["current"] and ckpt["device"] == "cpu"
    assert report["webui"]["full_precision"] is no_half


def test_cpu_only_webui_counts_ram(make_webui: Callable[..., Any], models: Path) -> None:
    w = make_webui("a1111", models_dir=models, use_cpu=["all"])
    a = adapter(w, ram=12 * GIB, cuda=[("cuda:0", 80 * GIB)])  # a GPU it does not use
    limits = a.apply().limits
    assert a.on_cpu and "CPU-only" in limits.reason
    # (12 GiB - 2 reserve - 2.2 inference) // 2 GiB = 3 slots, minus one (A1111 #13376)
    assert (limits.device_slots, limits.checkpoints_limit) == (3, 2)


def test_the_machines_own_memory_is_read(ext: Any) -> None:
    from atelier_ext import memory

    ram = memory.ram()
    available, total = memory.meminfo()
    assert 0 < ram.free <= available <= total and 0 < ram.total <= total
    assert memory.cuda() == [] or all(r.total > 0 for r in memory.cuda())


def test_cgroup_limits_cap_ram(ext: Any, tmp_path: Path) -> None:
    from atelier_ext import memory

    root = tmp_path
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/meminfo").write_text("MemTotal:       65536000 kB\nMemFree:  1000 kB\n"
                                       "MemAvailable:   60000000 kB\n")
    (root / "proc/self/cgroup").write_text("0::/webui.slice\n")
    group = root / "sys/fs/cgroup/webui.slice"
    group.mkdir(parents=True)
    (group / "memory.max").write_text(f"{16 * GIB}\n")
    (group / "memory.current").write_text(f"{10 * GIB}\n")
    (group / "memory.stat").write_text(f"anon 1\ninactive_file {2 * GIB}\n")
    r = memory.ram(root)
    assert (r.free, r.total) == (8 * GIB, 16 * GIB)
    (group / "memory.max").write_text("max\n")
    assert memory.ram(root).free == 60000000 * 1024
    (group / "memory.max").unlink()
    v1 = root / "sys/fs/cgroup/memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{8 * GIB}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{7 * GIB}\n")
    (v1 / "memory.stat").write_text(f"total_inactive_file {GIB}\n")
    assert memory.ram(root).free == 2 * GIB


# -- commands -------------------------------------------------------------------------


def _lock_checked(w: Any) -> list[bool]:
    """Record whether the queue lock is held whenever the WebUI loads weights."""
    held: list[bool] = []
    for name in ("load_model", "reload_model_weights", "forge_model_reload"):
        if hasattr(w.sd_models, name):
            original = getattr(w.sd_models, name)

            def wrapped(*args: Any, _o: Any = original, **kw: Any) -> Any:
                held.append(w.call_queue.queue_lock.locked())
                return _o(*args, **kw)

            setattr(w.sd_models, name, wrapped)
    return held


def test_a1111_load_unload_pin_under_the_queue_lock(make_webui: Callable[..., Any],
                                                    models: Path, tmp_path: Path) -> None:
    w = make_webui("a1111", models_dir=models, opts_overrides={"sd_checkpoints_limit": 3,
                                                               "sd_checkpoints_keep_in_cpu": False})
    a = adapter(w, pins=tmp_path / "pins.json", settings={"atelier_residency": False})
    w.callbacks["model_loaded"].append(a.on_model_loaded)  # as the script registers it
    held = _lock_checked(w)
    assert a.run({"action": "load", "model": "a"}).startswith("a.safetensors")
    assert a.run({"action": "load", "model": "b.safetensors"})
    assert held and all(held), "weights load under modules.call_queue.queue_lock"
    data = w.sd_models.model_data
    assert [m.sd_checkpoint_info.name for m in data.loaded_sd_models] == [
        "b.safetensors", "a.safetensors"]
    assert w.shared.opts.data["sd_model_checkpoint"].startswith("b.safetensors")
    # pin a: kept through switches that would evict it first (it is least recent)
    assert "pinned" in a.run({"action": "pin", "model": "a", "pinned": True})
    assert json.loads((tmp_path / "pins.json").read_text())[0].endswith("a.safetensors")
    for name in ("c", "d", "c"):
        a.run({"action": "load", "model": name})
    loaded = [m.sd_checkpoint_info.name for m in data.loaded_sd_models]
    assert "a.safetensors" in loaded and len(loaded) <= 3, loaded
    assert a.report()["checkpoints"][loaded.index("a.safetensors")]["pinned"] is True
    # unload a non-current one: dropped; the current one: A1111's unload, to RAM
    message = a.run({"action": "unload", "model": "a"})
    assert message.startswith("a.safetensors") and message.endswith(" unloaded")
    assert "a.safetensors" not in [m.sd_checkpoint_info.name for m in data.loaded_sd_models]
    assert "moved to RAM" in a.run({"action": "unload", "model": "c"})
    from atelier_ext.residency import CommandError

    with pytest.raises(CommandError) as err:
        a.run({"action": "load", "model": "nope"})
    assert err.value.status == 404
    with pytest.raises(CommandError, match="not loaded"):
        a.run({"action": "unload", "model": "fp32"})
    assert not w.call_queue.queue_lock.locked()


def test_a_command_waits_for_a_generation_holding_the_lock(make_webui: Callable[..., Any],
                                                          models: Path) -> None:
    w = make_webui("a1111", models_dir=models)
    a = adapter(w, settings={"atelier_residency": False})
    w.call_queue.queue_lock.acquire()  # a generation is running
    done = threading.Event()
    t = threading.Thread(target=lambda: (a.run({"action": "load", "model": "a"}), done.set()))
    t.start()
    assert not done.wait(1.0), "the switch must not run during the generation"
    assert w.sd_models.loads == []
    w.call_queue.queue_lock.release()
    assert done.wait(30)
    assert w.sd_models.loads == [w.sd_models.get_closet_checkpoint_match("a").title]


@pytest.mark.parametrize("flavor", ["forge", "forge-classic"])
def test_forge_gets_a_notice_and_single_model_commands(make_webui: Callable[..., Any],
                                                       models: Path, flavor: str) -> None:
    w = make_webui(flavor, models_dir=models)
    assert hasattr(w.sd_models, "forge_model_reload") is (flavor == "forge")
    a = adapter(w, ram=40 * GIB)
    applied = a.apply()
    assert not applied.applied and "single checkpoint" in applied.note
    assert w.shared.opts.data["sd_checkpoints_limit"] == 1, "Forge's limit is left alone"
    assert sum("single checkpoint" in line for line in w.log) == 1
    a.apply()
    assert sum("single checkpoint" in line for line in w.log) == 1, "said once"
    held = _lock_checked(w)
    assert a.run({"action": "load", "model": "a"}).startswith("a.safetensors")
    assert held == [True]
    ran = w.modules["modules_forge.main_thread"].ran
    assert ran == ["forge-main-thread"], "model work runs on Forge's main thread"
    assert a.current().sd_checkpoint_info.name == "a.safetensors"
    a.run({"action": "load", "model": "b"})
    assert [m.sd_checkpoint_info.name for m in a.loaded()] == ["b.safetensors"]
    report = a.report()
    assert report["webui"]["generation"] == flavor and report["webui"]["single_model"]
    assert report["webui"]["notice"]
    from atelier_ext.residency import CommandError

    with pytest.raises(CommandError, match="single checkpoint"):
        a.run({"action": "pin", "model": "b"})
    if flavor == "forge":
        assert "off the GPU" in a.run({"action": "unload", "model": "b"})
    else:
        with pytest.raises(CommandError, match="cannot unload"):
            a.run({"action": "unload", "model": "b"})


def test_the_script_sizes_after_each_model_load(make_webui: Callable[..., Any], models: Path,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from .conftest import install_webui

    webui = install_webui(tmp_path, 17999)
    w = make_webui("a1111", models_dir=models, config_file=tmp_path / "config.json")
    load_script(webui / "extensions" / "atelier")
    w.run("ui_settings")
    assert w.shared.opts.data["sd_checkpoints_limit"] == 1
    w.sd_models.load_model(w.sd_models.get_closet_checkpoint_match("a"))  # calls back
    assert w.shared.opts.data["sd_checkpoints_limit"] > 1, w.log
    assert json.loads((tmp_path / "config.json").read_text())["sd_checkpoints_limit"] > 1
