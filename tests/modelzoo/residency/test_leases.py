"""Leases and transitions: a copy in use is never moved or dropped; GPUs load in parallel.

Interleavings are forced with events inside a real backend (a TensorsBackend whose disk
read waits on a gate), never with sleeps.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from modelzoo.errors import ModelBusy
from modelzoo.residency.backends.base import ModelSpec
from modelzoo.residency.backends.tensors import TensorsBackend
from modelzoo.residency.devices import Device
from modelzoo.residency.plan import Tier

K = 1024


def _intact(handle: dict[str, torch.Tensor], fill: int) -> bool:
    """The weights hold the bytes the test wrote (every byte ``fill``)."""
    expected = torch.tensor([fill * 257], dtype=torch.int16).view(torch.float16)
    return bool(handle) and all(bool((t == expected).all()) for t in handle.values())


class GatedBackend(TensorsBackend):
    """Reads of the models in ``gates`` wait until their event is set; ``reading`` is set
    once such a read has started."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[str, threading.Event] = {}
        self.reading: dict[str, threading.Event] = {}

    def gate(self, name: str) -> threading.Event:
        self.gates[name] = threading.Event()
        self.reading[name] = threading.Event()
        return self.gates[name]

    def load(self, spec: ModelSpec, host: Device) -> Any:
        if spec.name in self.gates:
            self.reading[spec.name].set()
            assert self.gates[spec.name].wait(30), "gate never opened"
        return super().load(spec, host)


def _gated(w: Any) -> GatedBackend:
    b = GatedBackend()
    w.manager.backend = b
    return b


def test_an_unload_planned_before_a_lease_is_refused(world, make_model) -> None:
    """The API previews an unload; a job leases the model; the unload then runs. It must
    not empty the weights under the job (today's fast path took the lease unseen)."""
    make_model("a", 40 * K, seed=3)
    w = world([100 * K], 1000 * K)
    w.manager.acquire("a", "sim:0").release()
    plan = w.manager.plan_unload("a", Tier.DISK)
    lease = w.manager.acquire("a", "sim:0")
    with pytest.raises(ModelBusy):
        plan.execute()
    assert _intact(lease.handle, 3)
    assert w.tiers() == {"a": ("gpu", "sim:0")}
    lease.release()
    w.manager.unload("a", Tier.DISK)  # free again: now it goes
    assert w.tiers() == {}
    w.check_ledgers()


def test_a_move_planned_before_a_lease_leaves_the_leased_copy(world, make_model) -> None:
    """A plan to bring "a" to sim:1, made while it sat idle on sim:0, runs after a job
    leased it on sim:0: the job's weights stay where they are."""
    make_model("a", 40 * K, seed=5)
    w = world([100 * K, 100 * K], 1000 * K)
    w.manager.acquire("a", "sim:0").release()
    plan = w.manager.plan_load("a", "sim:1")
    lease = w.manager.acquire("a", "sim:0")
    plan.execute()
    assert _intact(lease.handle, 5)
    assert w.gpus[0].used == 40 * K  # still there, for the job
    with w.manager.acquire("a", "sim:1") as other:
        assert _intact(other.handle, 5)
    lease.release()
    w.check_ledgers()


def test_a_planned_victim_leased_before_execution_is_not_evicted(world, make_model) -> None:
    for n, seed in (("a", 1), ("b", 2), ("c", 3)):
        make_model(n, 40 * K, seed=seed)
    w = world([100 * K], 1000 * K)
    w.manager.acquire("a", "sim:0").release()
    w.manager.acquire("b", "sim:0").release()
    plan = w.manager.plan_load("c", "sim:0")
    victim = plan.evictions[0].model
    lease = w.manager.acquire(victim, "sim:0")
    done = plan.execute()
    assert [m.model for m in done.evictions] == [{"a": "b", "b": "a"}[victim]]
    assert _intact(lease.handle, {"a": 1, "b": 2}[victim])
    lease.release()
    w.check_ledgers()


def test_loads_on_two_gpus_run_in_parallel(world, make_model) -> None:
    """GPU 1's load completes while GPU 0's disk read is held (one lock held for the
    whole read made every GPU wait for the others' cold loads)."""
    for n in "ab":
        make_model(n, 40 * K)
    w = world([100 * K, 100 * K], 1000 * K)
    backend = _gated(w)
    gate = backend.gate("a")
    errors: list[BaseException] = []

    def load_a() -> None:
        try:
            w.manager.acquire("a", "sim:0").release()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    slow = threading.Thread(target=load_a)
    slow.start()
    try:
        assert backend.reading["a"].wait(30)
        done = threading.Event()
        fast = threading.Thread(target=lambda: (w.manager.acquire("b", "sim:1").release(),
                                                done.set()))
        fast.start()
        finished = done.wait(30)  # a deadlock guard, not a timing assertion
        assert finished, "GPU 1 waited for GPU 0's disk read"
        assert backend.reading["a"].is_set() and not gate.is_set()
        assert w.tiers()["b"] == ("gpu", "sim:1") and "a" not in w.tiers()
    finally:
        gate.set()
        slow.join(30)
    assert not errors
    assert w.tiers() == {"a": ("gpu", "sim:0"), "b": ("gpu", "sim:1")}
    w.check_ledgers()


def test_a_prefetch_runs_beside_a_gpu_load(world, make_model) -> None:
    for n in "ab":
        make_model(n, 40 * K)
    w = world([100 * K], 1000 * K)
    backend = _gated(w)
    gate = backend.gate("a")
    slow = threading.Thread(target=lambda: w.manager.acquire("a", "sim:0").release())
    slow.start()
    try:
        assert backend.reading["a"].wait(30)
        assert w.manager.prefetch("b") is not None  # not behind a's read
        assert w.tiers() == {"b": ("ram", None)}
    finally:
        gate.set()
        slow.join(30)
    w.check_ledgers()


def test_the_same_gpu_loads_one_model_at_a_time(world, make_model) -> None:
    """Loads onto one GPU are serialised: the second plan sees the first one's result
    (here: a hit), so the device is never planned twice for the same free memory."""
    make_model("a", 60 * K)
    w = world([100 * K], 1000 * K)
    backend = _gated(w)
    gate = backend.gate("a")
    results: list[Tier] = []

    def take() -> None:
        with w.manager.acquire("a", "sim:0") as lease:
            results.append(lease.switch.source)

    first = threading.Thread(target=take)
    first.start()
    assert backend.reading["a"].wait(30)
    second = threading.Thread(target=take)
    second.start()
    gate.set()
    first.join(30)
    second.join(30)
    assert sorted(results) == [Tier.DISK, Tier.GPU]
    assert w.gpus[0].peak == 60 * K
    w.check_ledgers()


def test_a_gpu_load_waits_for_the_prefetch_of_its_model(world, make_model) -> None:
    """The model is being warmed into RAM: the GPU load takes that copy instead of
    reading the file a second time."""
    make_model("a", 40 * K)
    w = world([100 * K], 1000 * K)
    backend = _gated(w)
    gate = backend.gate("a")
    warm = threading.Thread(target=lambda: w.manager.prefetch("a"))
    warm.start()
    assert backend.reading["a"].wait(30)
    sources: list[Tier] = []
    load = threading.Thread(
        target=lambda: sources.append(w.manager.acquire("a", "sim:0").switch.source))
    load.start()
    gate.set()
    warm.join(30)
    load.join(30)
    assert sources == [Tier.RAM]


def test_an_unload_of_a_model_being_loaded_is_refused(world, make_model) -> None:
    make_model("a", 40 * K)
    w = world([100 * K], 1000 * K)
    backend = _gated(w)
    gate = backend.gate("a")
    load = threading.Thread(target=lambda: w.manager.acquire("a", "sim:0").release())
    load.start()
    try:
        assert backend.reading["a"].wait(30)
        with pytest.raises(ModelBusy):
            w.manager.unload("a", Tier.DISK)
    finally:
        gate.set()
        load.join(30)
    assert w.tiers() == {"a": ("gpu", "sim:0")}
    w.check_ledgers()
