from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from modelzoo.errors import ModelBusy, ModelTooLarge, OutOfDeviceMemory, UnknownModel
from modelzoo.residency.backends.tensors import TensorsBackend, Weights
from modelzoo.residency.devices import GIB, Device, SimulatedOutOfMemoryError
from modelzoo.residency.plan import Tier
from modelzoo.residency.policy import Policy

K = 1024


def test_cold_then_warm_then_hit(world, make_model) -> None:
    make_model("a", 64 * K)
    w = world([200 * K], 400 * K)
    with w.manager.acquire("a", "sim:0") as lease:
        assert lease.switch.source is Tier.DISK
        assert isinstance(lease.handle, dict)
        assert all(t.dtype == torch.float16 for t in lease.handle.values())
        assert sum(t.numel() * 2 for t in lease.handle.values()) == 64 * K
    w.check_ledgers()
    with w.manager.acquire("a", "sim:0") as lease:
        assert lease.switch.source is Tier.GPU
    w.manager.unload("a", Tier.RAM)
    assert w.tiers() == {"a": ("ram", None)}
    w.check_ledgers()
    with w.manager.acquire("a", "sim:0") as lease:
        assert lease.switch.source is Tier.RAM
    assert w.manager.metrics.switches() == {"disk": 1, "gpu": 1, "ram": 1}


def test_victim_goes_to_ram_when_ram_has_room(world, make_model) -> None:
    for n in "abc":
        make_model(n, 64 * K)
    w = world([130 * K], 1000 * K)
    for n in "ab":
        w.manager.acquire(n, "sim:0").release()
    assert {m for m, (t, _) in w.tiers().items() if t == "gpu"} == {"a", "b"}
    w.manager.acquire("c", "sim:0").release()
    tiers = w.tiers()
    assert tiers["c"] == ("gpu", "sim:0")
    assert sorted(t for t, _ in tiers.values()) == ["gpu", "gpu", "ram"]
    w.check_ledgers()


def test_victim_dropped_when_ram_is_full(world, make_model) -> None:
    for n in "ab":
        make_model(n, 64 * K)
    w = world([100 * K], 70 * K, policy="lru")  # RAM can stage one model, keep none beside
    w.manager.acquire("a", "sim:0").release()
    plan = w.manager.plan_load("b", "sim:0")
    assert [(m.model, m.src, m.dst) for m in plan.moves] == [
        ("a", Tier.GPU, Tier.DISK), ("b", Tier.DISK, Tier.RAM), ("b", Tier.RAM, Tier.GPU)]
    plan.execute()
    assert w.tiers() == {"b": ("gpu", "sim:0")}
    w.check_ledgers()


def test_plan_moves_nothing_until_executed(world, make_model) -> None:
    for n in "ab":
        make_model(n, 64 * K)
    w = world([100 * K], 1000 * K)
    w.manager.acquire("a", "sim:0").release()
    plan = w.manager.plan_load("b", "sim:0")
    assert w.tiers() == {"a": ("gpu", "sim:0")}
    js = plan.to_json()
    assert js["bytes_freed"] == {"sim:0": 64 * K}
    assert [m["model"] for m in js["moves"]] == ["a", "b", "b"]
    assert js["executed"] is False
    done = plan.execute()
    assert done.executed and w.tiers() == {"a": ("ram", None), "b": ("gpu", "sim:0")}
    with pytest.raises(RuntimeError):
        done.execute()


def test_stale_plan_is_replanned_against_new_measure(world, make_model) -> None:
    for n in "abc":
        make_model(n, 40 * K)
    w = world([120 * K], 1000 * K)
    w.manager.acquire("a", "sim:0").release()
    w.manager.acquire("b", "sim:0").release()
    plan = w.manager.plan_load("c", "sim:0")
    assert plan.evictions == []
    w.gpus[0].set_external(30 * K)  # another process took memory meanwhile
    done = plan.execute()
    assert len(done.evictions) == 1
    assert w.gpus[0].peak <= 120 * K
    w.check_ledgers()


def test_external_pressure_shrinks_budget_at_next_decision(world, make_model) -> None:
    for n in "abc":
        make_model(n, 30 * K)
    w = world([100 * K], 1000 * K)
    w.manager.acquire("a", "sim:0").release()
    w.manager.acquire("b", "sim:0").release()
    w.gpus[0].set_external(40 * K)
    w.manager.acquire("c", "sim:0").release()
    assert w.gpus[0].used == 60 * K  # one of a/b went to make room
    assert [m for m, (t, _) in w.tiers().items() if t == "gpu"].count("c") == 1


def test_too_large_is_507_with_numbers(world, make_model) -> None:
    make_model("big", 200 * K)
    w = world([100 * K], 1000 * K, reserve=10 * K)
    with pytest.raises(ModelTooLarge) as info:
        w.manager.acquire("big", "sim:0")
    err = info.value
    assert err.status == 507 and isinstance(err, MemoryError)
    assert err.extra["needed_bytes"] == 210 * K
    assert err.extra["total_bytes"] == 100 * K
    assert "200" not in err.message or str(200 * K) in err.message
    assert str(210 * K) in err.message
    w.check_ledgers()


def test_reserve_is_kept_free(world, make_model) -> None:
    for n in "ab":
        make_model(n, 40 * K)
    w = world([100 * K], 1000 * K, reserve=30 * K)
    w.manager.acquire("a", "sim:0").release()
    w.manager.acquire("b", "sim:0").release()  # 80 + 30 > 100: a must go
    assert w.tiers()["a"] == ("ram", None)
    assert w.gpus[0].peak <= 100 * K - 30 * K


def test_pinned_and_running_models_are_never_evicted(world, make_model) -> None:
    for n in "abc":
        make_model(n, 60 * K)
    w = world([130 * K], 1000 * K)
    w.manager.acquire("a", "sim:0").release()
    w.manager.pin("a")
    held = w.manager.acquire("b", "sim:0")
    with pytest.raises(ModelTooLarge) as info:
        w.manager.acquire("c", "sim:0")
    assert info.value.extra["blocked_bytes"] == 120 * K
    held.release()
    w.manager.acquire("c", "sim:0").release()
    assert w.tiers()["a"] == ("gpu", "sim:0") and w.tiers()["b"] == ("ram", None)
    with pytest.raises(ModelBusy):
        w.manager.unload("a")
    w.manager.pin("a", False)
    w.manager.unload("a", Tier.DISK)
    assert "a" not in w.tiers()
    w.check_ledgers()


def test_cost_policy_keeps_large_often_used_models(world, make_model) -> None:
    make_model("large", 80 * K)
    make_model("small1", 20 * K)
    make_model("small2", 20 * K)
    w = world([115 * K], 1000 * K)
    for _ in range(3):
        w.manager.acquire("large", "sim:0").release()
    w.manager.acquire("small1", "sim:0").release()
    w.manager.acquire("small2", "sim:0").release()  # LRU would evict "large" here
    assert w.tiers()["large"] == ("gpu", "sim:0")
    assert w.tiers()["small1"] == ("ram", None)


def test_lru_policy_evicts_least_recent(world, make_model) -> None:
    make_model("large", 80 * K)
    make_model("small1", 20 * K)
    make_model("small2", 20 * K)
    w = world([115 * K], 1000 * K, policy="lru")
    for _ in range(3):
        w.manager.acquire("large", "sim:0").release()
    w.manager.acquire("small1", "sim:0").release()
    w.manager.acquire("small2", "sim:0").release()
    assert w.tiers()["large"] == ("ram", None)


def test_unknown_model(world) -> None:
    w = world([100 * K], 100 * K)
    with pytest.raises(UnknownModel):
        w.manager.acquire("nope", "sim:0")


def test_oom_while_moving_in_evicts_one_and_retries(world, make_model) -> None:
    for n in "ab":
        make_model(n, 30 * K)
    w = world([100 * K], 1000 * K)
    w.manager.acquire("a", "sim:0").release()
    w.gpus[0].fail_next = 1  # a racing process grabbed the memory for a moment
    with w.manager.acquire("b", "sim:0") as lease:
        assert lease.switch.source is Tier.DISK
    assert w.tiers() == {"a": ("ram", None), "b": ("gpu", "sim:0")}
    assert w.manager.metrics.oom_retries == 1
    w.check_ledgers()


def test_oom_twice_is_a_clean_error(world, make_model) -> None:
    make_model("a", 30 * K)
    w = world([100 * K], 1000 * K)
    w.gpus[0].fail_next = 2
    with pytest.raises(OutOfDeviceMemory) as info:
        w.manager.acquire("a", "sim:0")
    assert info.value.status == 507
    assert w.tiers() == {"a": ("ram", None)}  # staged, not lost
    w.check_ledgers()
    w.manager.acquire("a", "sim:0").release()  # and usable afterwards
    assert w.tiers() == {"a": ("gpu", "sim:0")}


def _activations(nbytes: int):
    def run(handle: dict[str, Any], device: Device) -> int:
        device.allocate(nbytes)  # what the UNet's activations would take
        try:
            return sum(int(t.numel()) for t in handle.values())
        finally:
            device.release(nbytes)
    return run


def test_oom_during_inference_evicts_one_and_retries(world, make_model) -> None:
    for n in "ab":
        make_model(n, 40 * K)
    w = world([100 * K], 1000 * K)  # reserve 0: the activations will not fit beside both
    w.manager.acquire("a", "sim:0").release()
    w.manager.acquire("b", "sim:0").release()
    result, switch = w.manager.run("b", _activations(30 * K), "sim:0")
    assert result == 20 * K and switch.source is Tier.GPU
    assert w.tiers()["a"] == ("ram", None)
    assert w.manager.metrics.oom_retries == 1
    with pytest.raises(OutOfDeviceMemory):
        w.manager.run("b", _activations(90 * K), "sim:0")
    with pytest.raises(ZeroDivisionError):  # other errors pass through untouched
        w.manager.run("b", lambda h, d: 1 // 0, "sim:0")
    assert w.manager.entries()[0].in_use == 0 and all(e.in_use == 0
                                                       for e in w.manager.entries())


def test_prefetch_warms_into_ram_without_evicting_better_models(world, make_model) -> None:
    for n in "abc":
        make_model(n, 40 * K)
    w = world([100 * K], 90 * K)
    assert w.manager.prefetch("a") is not None
    assert w.tiers() == {"a": ("ram", None)}
    assert w.manager.prefetch("a") is None  # already warm
    for _ in range(3):
        w.manager.acquire("b", "sim:0").release()
    w.manager.unload("b", Tier.RAM)
    # c would have to push out a or b; b is worth more (used 3 times), a is protected
    assert w.manager.prefetch("c", protect={"a"}) is None
    assert w.manager.prefetch("c") is not None
    assert set(w.tiers()) == {"b", "c"}
    w.check_ledgers()


@pytest.mark.parametrize(("policy", "source"), [("lru", Tier.DISK), ("cost", Tier.RAM)])
def test_a_second_gpu_gets_its_own_copy(world, make_model, policy: str, source: Tier) -> None:
    """No GPU-to-GPU move: a model wanted on a second GPU gets a copy there (from disk
    with LRU; from the RAM copy the cost policy kept), and a job on the first GPU keeps
    its weights."""
    make_model("a", 40 * K)
    w = world([100 * K, 100 * K], 1000 * K, policy=policy)
    w.manager.acquire("a", "sim:0").release()
    held = w.manager.acquire("a", "sim:0")
    with w.manager.acquire("a", "sim:1") as other:
        assert other.switch.source is source
        assert w.manager.locations("a") == ["sim:0", "sim:1"]
        assert w.gpus[0].used == w.gpus[1].used == 40 * K
        assert torch.equal(held.handle["model.diffusion_model.weight"],
                           other.handle["model.diffusion_model.weight"])
    held.release()
    w.check_ledgers()
    w.manager.unload("a", Tier.RAM)  # one copy goes down to RAM, the other is dropped
    assert w.tiers() == {"a": ("ram", None)} and w.gpus[0].used == w.gpus[1].used == 0
    w.check_ledgers()


def test_an_evicted_replica_with_a_copy_in_ram_is_dropped(world, make_model) -> None:
    """A model on two GPUs whose first copy went down to RAM: evicting the second copy
    drops it (RAM has one), it must not overwrite the RAM copy and leak its bytes."""
    for n in "abc":
        make_model(n, 40 * K)
    w = world([50 * K, 50 * K], 1000 * K, policy="lru")
    w.manager.acquire("a", "sim:0").release()
    w.manager.acquire("a", "sim:1").release()
    w.manager.acquire("b", "sim:0").release()  # a's copy on sim:0 goes down to RAM
    assert w.tiers() == {"a": ("gpu", "sim:1"), "b": ("gpu", "sim:0")}
    assert w.manager.held(Tier.RAM)[0].name == "a"
    plan = w.manager.plan_load("c", "sim:1")
    assert [(m.model, m.src, m.dst) for m in plan.evictions] == [("a", Tier.GPU, Tier.DISK)]
    plan.execute()
    assert [e.name for e in w.manager.held(Tier.RAM)] == ["a"]
    w.check_ledgers()


def test_concurrent_acquires_from_real_threads(world, make_model) -> None:
    names = [f"m{i}" for i in range(6)]
    for i, n in enumerate(names):
        make_model(n, (20 + 5 * i) * K, seed=i)
    w = world([90 * K, 90 * K], 150 * K)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker(k: int) -> None:
        import random

        rnd = random.Random(k)
        barrier.wait()
        for _ in range(40):
            try:
                with w.manager.acquire(rnd.choice(names), f"sim:{k % 2}") as lease:
                    assert lease.handle  # weights are there while leased
                    assert sum(t.numel() * 2 for t in lease.handle.values()) > 0
            except BaseException as exc:  # pragma: no cover - the assertion below reports it
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    w.check_ledgers()
    for g in w.gpus:
        assert g.peak <= g.capacity
    assert all(e.in_use == 0 and not e.moving for e in w.manager.entries())


def test_failed_disk_load_leaves_state_consistent(world, make_model, models_dir: Path) -> None:
    make_model("a", 40 * K)
    w = world([100 * K], 1000 * K)
    w.manager.acquire("a", "sim:0").release()
    w.manager.unload("a", Tier.DISK)

    class Boom(Exception):
        pass

    def broken(*a: object) -> None:
        raise Boom

    w.manager.backend.load = broken  # type: ignore[method-assign]
    with pytest.raises(Boom):
        w.manager.acquire("a", "sim:0")
    assert w.tiers() == {}
    w.check_ledgers()


def test_sim_oom_error_is_classified() -> None:
    from modelzoo.residency.devices import is_oom

    assert is_oom(SimulatedOutOfMemoryError("x"))
    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_oom(RuntimeError("shape mismatch"))


def test_simulated_device_reuses_freed_buffers_within_its_capacity(world, make_model) -> None:
    for n in "ab":
        make_model(n, 40 * K)
    w = world([100 * K], 1000 * K)
    with w.manager.acquire("a", "sim:0") as lease:
        ptrs = {t.data_ptr() for t in lease.handle.values()}
    w.manager.unload("a", Tier.RAM)
    with w.manager.acquire("b", "sim:0") as lease:  # same layout: a's freed buffers
        assert {t.data_ptr() for t in lease.handle.values()} == ptrs
        assert lease.handle["model.diffusion_model.weight"][0].item() != 0  # b's own bytes
    pool = w.manager.backend._devices["sim:0"]
    assert pool.nbytes == 0
    w.manager.unload("b", Tier.DISK)
    assert pool.nbytes == 40 * K <= w.gpus[0].capacity - w.gpus[0].used


class HalfwayOOM(TensorsBackend):
    """Runs out of device memory after moving half of a model's tensors, as a CUDA
    ``.to()`` does when another process grabs memory mid-copy."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.partial: list[Any] = []

    def to_device(self, handle: Any, device: Device) -> Any:
        if self.failures <= 0:
            return super().to_device(handle, device)
        self.failures -= 1
        half = dict(list(handle.items())[: len(handle) // 2])
        moved = super().to_device(Weights(half), device)  # charged to the device
        self.partial.append(moved)
        assert device.memory().free < device.memory().total  # the half is really there
        try:
            raise SimulatedOutOfMemoryError(f"{device.name}: out of memory half way")
        finally:
            self.drop(moved)  # the backend's contract: what it placed is freed


def _many_tensors(models_dir: Path, name: str, n: int, each: int, seed: int) -> None:
    from .conftest import write_safetensors  # type: ignore[import-not-found]

    write_safetensors(models_dir / f"{name}.safetensors",
                      {f"model.diffusion_model.w{i}": ("F16", [each // 2]) for i in range(n)},
                      fill=seed)


def test_a_move_that_fails_half_way_rolls_back(world, models_dir: Path) -> None:
    """OOM after half the tensors, twice: 507, no byte left on the device that no copy
    accounts for, the cache emptied, and the weights whole in RAM for the next try."""
    _many_tensors(models_dir, "a", 8, 4 * K, seed=7)
    _many_tensors(models_dir, "b", 2, 4 * K, seed=8)
    w = world([100 * K], 1000 * K)
    w.manager.acquire("b", "sim:0").release()
    backend = HalfwayOOM(failures=2)
    w.manager.backend = backend
    caches = w.gpus[0].empty_caches
    with pytest.raises(OutOfDeviceMemory):
        w.manager.acquire("a", "sim:0")
    assert w.gpus[0].peak >= 8 * K + 16 * K  # the halves were on the device
    assert w.tiers() == {"a": ("ram", None), "b": ("ram", None)}  # b evicted for the retry
    w.check_ledgers()  # nothing invisible: the device holds exactly our copies (none)
    assert w.gpus[0].used == 0
    assert w.gpus[0].empty_caches >= caches + 2
    assert w.manager.metrics.oom_retries == 1
    with w.manager.acquire("a", "sim:0") as lease:  # and it works afterwards, from RAM
        assert lease.switch.source is Tier.RAM
        assert len(lease.handle) == 8
        assert all(t.view(torch.int16)[0].item() == 7 * 257 for t in lease.handle.values())
    w.check_ledgers()


class InPlace:
    """A pipeline-like handle moved in place by ``.to``, failing half way when told."""

    def __init__(self, tensors: dict[str, Any]) -> None:
        self.tensors = tensors
        self.device = "cpu"
        self.fail_after: int | None = None

    def to(self, device: str) -> InPlace:
        for i, key in enumerate(self.tensors):
            if self.fail_after is not None and i == self.fail_after:
                self.fail_after = None
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate")
            self.tensors[key] = self.tensors[key].to(torch.float32 if device != "cpu"
                                                     else torch.float16)
        self.device = device
        return self


class InPlaceBackend:
    """Moves handles in place, like DiffusersBackend's ``pipe.to``; the manager charges."""

    def __init__(self) -> None:
        self.fail_after: int | None = None

    def load(self, spec: Any, host: Device) -> InPlace:
        from safetensors.torch import load_file

        return InPlace(dict(load_file(str(spec.path))))

    def to_device(self, handle: InPlace, device: Device) -> InPlace:
        handle.fail_after, self.fail_after = self.fail_after, None
        return handle.to("sim")

    def to_host(self, handle: InPlace, device: Device, host: Device) -> InPlace:
        return handle.to("cpu")

    def drop(self, handle: Any) -> None:
        return None


def test_an_in_place_move_that_fails_half_way_is_moved_back(world, models_dir: Path) -> None:
    _many_tensors(models_dir, "a", 4, 4 * K, seed=2)
    w = world([100 * K], 1000 * K)
    backend = InPlaceBackend()
    w.manager.backend = backend
    w.manager._charges = False
    w.manager.load("a", tier=Tier.RAM)
    backend.fail_after = 2
    with w.manager.acquire("a", "sim:0") as lease:  # one OOM, rolled back, retried
        assert lease.handle.device == "sim"
        assert all(t.dtype == torch.float32 for t in lease.handle.tensors.values())
    assert w.manager.entries()[0].ram is None  # moved, not copied: no RAM copy to keep
    assert w.manager.metrics.oom_retries == 1
    w.check_ledgers()
    w.manager.unload("a", Tier.RAM)
    e = w.manager.entries()[0]
    assert e.ram is not None and e.ram.handle.device == "cpu"
    backend.fail_after = 1
    w.gpus[0].fail_next = 0

    def fail_twice(handle: InPlace, device: Device) -> InPlace:
        handle.fail_after = 1
        return handle.to("sim")

    backend.to_device = fail_twice  # type: ignore[method-assign]
    with pytest.raises(OutOfDeviceMemory):
        w.manager.acquire("a", "sim:0")
    e = w.manager.entries()[0]
    assert e.ram is not None and e.ram.handle.device == "cpu"
    assert all(t.dtype == torch.float16 for t in e.ram.handle.tensors.values())  # all back
    w.check_ledgers()


def test_host_and_our_own_memory_errors_are_not_device_ooms() -> None:
    from modelzoo.residency.devices import is_oom

    assert not is_oom(MemoryError())  # the host is out of RAM: evicting a GPU model won't help
    assert not is_oom(ModelTooLarge("too large"))  # our 507 answers are not accidents
    assert not is_oom(OutOfDeviceMemory("again"))
    assert not is_oom(RuntimeError("DefaultCPUAllocator: not enough memory: you tried to "
                                   "allocate 1073741824 bytes"))
    assert is_oom(RuntimeError("HIP out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("MPS backend out of memory"))


def test_reload_cost_counts_the_bytes_on_disk(world, models_dir: Path) -> None:
    """Two models of the same size at run dtype (fp16), one stored as fp32: reading it
    takes twice as long, so the cost policy keeps it and evicts the other."""
    from .conftest import write_safetensors  # type: ignore[import-not-found]

    write_safetensors(models_dir / "wide.safetensors",
                      {"model.diffusion_model.w": ("F32", [20 * K])}, fill=1)
    write_safetensors(models_dir / "slim.safetensors",
                      {"model.diffusion_model.w": ("F16", [20 * K])}, fill=2)
    write_safetensors(models_dir / "new.safetensors",
                      {"model.diffusion_model.w": ("F16", [20 * K])}, fill=3)
    w = world([90 * K], 1000 * K)
    m = w.manager
    wide, slim = m.spec("wide"), m.spec("slim")
    assert wide.nbytes == slim.nbytes == 40 * K
    assert wide.disk_bytes > 2 * 40 * K > slim.disk_bytes
    assert m.reload_seconds(wide) > 1.9 * m.reload_seconds(slim)
    read = [mv for mv in m.plan_load("wide", "sim:0").moves if mv.src is Tier.DISK][0]
    assert read.seconds == pytest.approx(m.reload_seconds(wide))
    m.acquire("wide", "sim:0").release()  # older, so LRU would evict it
    m.acquire("slim", "sim:0").release()
    m.acquire("new", "sim:0").release()
    assert w.tiers()["wide"] == ("gpu", "sim:0") and w.tiers()["slim"] == ("ram", None)


def test_the_cost_policy_keeps_the_ram_copy_of_a_model_it_moves_up(world, make_model) -> None:
    """Inclusive RAM tier: the read that staged the model stays as its RAM copy, so
    evicting it from the GPU later is free (no copy down) and it comes back from RAM.
    LRU keeps the classic exclusive tiers: the copy goes up, and comes down on eviction."""
    for n in "ab":
        make_model(n, 40 * K)
    ours = world([50 * K], 1000 * K)
    ours.manager.acquire("a", "sim:0").release()
    assert ours.ram.used == ours.gpus[0].used == 40 * K
    plan = ours.manager.plan_load("b", "sim:0")
    assert [(m.model, m.src, m.dst) for m in plan.evictions] == [("a", Tier.GPU, Tier.DISK)]
    assert "a copy stays in RAM" in plan.evictions[0].reason
    plan.execute()
    with ours.manager.acquire("a", "sim:0") as lease:
        assert lease.switch.source is Tier.RAM
    assert {e.name for e in ours.manager.held(Tier.RAM)} == {"a", "b"}
    ours.check_ledgers()

    lru = world([50 * K], 1000 * K, policy="lru")
    lru.manager.acquire("a", "sim:0").release()
    assert lru.ram.used == 0
    plan = lru.manager.plan_load("b", "sim:0")
    assert [(m.model, m.src, m.dst) for m in plan.evictions] == [("a", Tier.GPU, Tier.RAM)]
    lru.check_ledgers()


def test_the_cost_policy_copies_a_victim_down_only_when_cheaper_than_a_reread(
        world, make_model) -> None:
    for n in "ab":
        make_model(n, 4 << 20)  # 4 MiB: large enough for speeds to be measured
    w = world([6 << 20], 64 << 20, policy="lru")
    m = w.manager
    m.acquire("a", "sim:0").release()  # exclusive: no RAM copy of a
    m.rules = Policy("cost", m.speeds)
    m.speeds.bps.update(disk=1.0 * GIB, h2d=12.0 * GIB, d2h=12.0 * GIB)  # a NAS and PCIe
    m.speeds.measured = {"disk", "h2d", "d2h"}
    assert [(x.src, x.dst) for x in m.plan_load("b", "sim:0").evictions] == [
        (Tier.GPU, Tier.RAM)]
    m.speeds.bps.update(disk=2.0 * GIB, d2h=2.0 * GIB)  # the page cache: a re-read is a copy
    assert [(x.src, x.dst) for x in m.plan_load("b", "sim:0").evictions] == [
        (Tier.GPU, Tier.DISK)]
    m.speeds.measured = {"disk", "h2d"}  # copies down not measured yet: as fast as up
    m.speeds.bps.update(h2d=12.0 * GIB)
    assert [(x.src, x.dst) for x in m.plan_load("b", "sim:0").evictions] == [
        (Tier.GPU, Tier.RAM)]
    m.rules = Policy("lru", m.speeds)  # LRU copies down, whatever the speeds
    m.speeds.bps.update(disk=2.0 * GIB, d2h=2.0 * GIB)
    assert [(x.src, x.dst) for x in m.plan_load("b", "sim:0").evictions] == [
        (Tier.GPU, Tier.RAM)]


@pytest.mark.parametrize(("policy", "evicted"), [("cost", "big"), ("lru", "small")])
def test_size_and_frequency_pick_the_victim(world, make_model, policy: str,
                                            evicted: str) -> None:
    """GreedyDual-Size-Frequency: a large model used once goes before a small one used
    twice, even if more recent; LRU takes the least recent."""
    make_model("small", 20 * K)
    make_model("big", 60 * K)
    make_model("new", 30 * K)
    w = world([100 * K], 1000 * K, policy=policy)
    for _ in range(2):
        w.manager.acquire("small", "sim:0").release()
    w.manager.acquire("big", "sim:0").release()
    w.manager.acquire("new", "sim:0").release()
    assert evicted not in w.manager.locations("new") and w.manager.locations(evicted) == []
    assert w.manager.locations({"big": "small", "small": "big"}[evicted]) == ["sim:0"]


def test_pinned_host_memory_is_given_back_when_a_ram_copy_goes(models_dir: Path,
                                                                make_model) -> None:
    """RAM copies are pinned up to the cap (simulated here: no CUDA); evicting one gives
    its pinned bytes back, and the snapshot shows the ledger."""
    from modelzoo.residency.catalog import ModelCatalog
    from modelzoo.residency.devices import SimulatedDevice
    from modelzoo.residency.footprint import ReserveRule
    from modelzoo.residency.manager import ResidencyManager

    for n in "abc":
        make_model(n, 40 * K)
    host = SimulatedDevice("ram", 90 * K, kind="ram", pinned_max=60 * K)
    m = ResidencyManager(TensorsBackend(), [SimulatedDevice("sim:0", 50 * K)], host,
                         ModelCatalog(models_dir), reserve=ReserveRule(0, 0, 0))
    assert host.pinned is not None
    m.acquire("a", "sim:0").release()  # its staged read stays in RAM, pinned
    assert host.pinned.used == 40 * K
    m.acquire("b", "sim:0").release()  # b's small tensors fit under the cap, not its UNet
    assert 40 * K < host.pinned.used <= 60 * K and host.pinned.refused == 30 * K
    m.acquire("c", "sim:0").release()  # RAM is full: a's copy goes, and gives its pins
    assert {e.name for e in m.held(Tier.RAM)} == {"b", "c"}
    assert host.pinned.used == 10 * K + 40 * K  # c pinned in full: a's 40 KiB came back
    assert host.pinned.peak <= 60 * K
    assert m.snapshot()["ram"]["pinned"] == host.pinned.used
    for e in m.entries():
        m.unload(e.name, Tier.DISK)
    assert host.pinned.used == 0 and host.used == 0
