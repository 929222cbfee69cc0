from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from modelzoo.errors import UnknownDevice, UnknownModel
from modelzoo.residency.devices import Device
from modelzoo.residency.placement import Placement
from modelzoo.residency.plan import Tier

K = 1024


@pytest.fixture
def placed(world, make_model) -> Iterator[Any]:
    made: list[Placement] = []

    def build(gpus: list[int], ram: int, *, prefetch: bool = True) -> Any:
        w = world(gpus, ram)
        w.placement = Placement(w.manager, prefetch=prefetch)
        made.append(w.placement)
        return w

    yield build
    for p in made:
        p.close()


def _gate() -> tuple[threading.Event, threading.Event, Any]:
    started, go = threading.Event(), threading.Event()

    def job(handle: Any, device: Device) -> str:
        started.set()
        assert go.wait(30)
        return device.name

    return started, go, job


def _name(handle: Any, device: Device) -> str:
    return device.name


def test_routes_to_the_gpu_holding_the_model(placed, make_model) -> None:
    for n in "ab":
        make_model(n, 40 * K)
    w = placed([100 * K, 200 * K], 1000 * K)
    w.manager.acquire("a", "sim:0").release()
    assert w.placement.choose("a") == "sim:0"  # though sim:1 has more free memory
    assert w.placement.choose("b") == "sim:1"  # nobody holds b: most free memory
    result, switch = w.placement.submit("a", _name).result(30)
    assert result == "sim:0" and switch.source is Tier.GPU


def test_most_free_memory_then_shorter_queue(placed, make_model) -> None:
    make_model("a", 40 * K)
    make_model("b", 40 * K)
    make_model("c", 70 * K)
    w = placed([100 * K, 100 * K], 1000 * K)
    started, go, job = _gate()
    fut = w.placement.submit("a", job, device="sim:0")  # sim:0 busy, 60K free
    assert started.wait(30)
    w.gpus[1].set_external(70 * K)  # sim:1 idle, 30K free
    assert w.placement.choose("b") == "sim:0"  # fits only there, despite the queue
    w.gpus[1].set_external(10 * K)  # 90K free: b fits on both
    assert w.placement.choose("b") == "sim:1"  # so the shorter queue wins
    w.gpus[1].set_external(50 * K)  # 50K free; c (70K) fits on neither
    assert w.placement.choose("c") == "sim:0"  # the most free memory wins over the queue
    go.set()
    assert fut.result(30)[0] == "sim:0"


def test_queued_model_sticks_to_its_gpu(placed, make_model) -> None:
    for n in "ab":
        make_model(n, 40 * K)
    w = placed([100 * K, 100 * K], 1000 * K)
    started, go, job = _gate()
    first = w.placement.submit("a", job, device="sim:0")
    assert started.wait(30)
    second = w.placement.submit("b", _name, device="sim:0")
    # b is waiting on sim:0; another request for b follows it rather than loading it twice
    assert w.placement.choose("b") == "sim:0"
    go.set()
    assert first.result(30)[0] == "sim:0" and second.result(30)[0] == "sim:0"


def test_prefetch_warms_the_next_queued_model_during_the_current_job(placed,
                                                                    make_model) -> None:
    for n in "ab":
        make_model(n, 40 * K)
    w = placed([100 * K], 1000 * K)
    started, go, job = _gate()
    first = w.placement.submit("a", job)
    assert started.wait(30)
    second = w.placement.submit("b", _name)
    w.placement.prefetcher.join()
    assert w.manager.where("b") == (Tier.RAM, None)  # warmed while "a" still runs
    assert not first.done()
    go.set()
    _, switch = second.result(30)
    assert switch.source is Tier.RAM  # not from disk
    assert w.placement.prefetcher.warmed == ["b"]


def test_no_prefetch_means_disk(placed, make_model) -> None:
    for n in "ab":
        make_model(n, 40 * K)
    w = placed([100 * K], 1000 * K, prefetch=False)
    started, go, job = _gate()
    w.placement.submit("a", job)
    assert started.wait(30)
    second = w.placement.submit("b", _name)
    go.set()
    assert second.result(30)[1].source is Tier.DISK


def test_errors_surface_through_the_future(placed, make_model) -> None:
    make_model("a", 40 * K)
    w = placed([100 * K], 1000 * K)
    with pytest.raises(UnknownModel):
        w.placement.submit("nope", _name)
    with pytest.raises(UnknownDevice):
        w.placement.submit("a", _name, device="sim:9")
    fut = w.placement.submit("a", lambda h, d: 1 // 0)
    with pytest.raises(ZeroDivisionError):
        fut.result(30)
    assert w.placement.submit("a", _name).result(30)[0] == "sim:0"  # the worker lives on


def test_many_threads_many_gpus(placed, make_model) -> None:
    names = [f"m{i}" for i in range(5)]
    for i, n in enumerate(names):
        make_model(n, 30 * K, seed=i)
    w = placed([70 * K, 70 * K, 70 * K], 200 * K)
    futures = []
    lock = threading.Lock()

    def client(k: int) -> None:
        for j in range(15):
            f = w.placement.submit(names[(k * 7 + j * 3) % 5], _name)
            with lock:
                futures.append(f)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = [f.result(60) for f in futures]
    assert len(results) == 60
    w.placement.prefetcher.join()
    w.check_ledgers()  # every copy (a popular model may have several) is accounted


def test_a_popular_model_spreads_to_a_gpu_with_room(placed, make_model) -> None:
    """sim:0 holds "a" with a long queue, sim:1 is idle with room: the next request for
    "a" loads a copy on sim:1 and runs there, while sim:0 still runs its own."""
    make_model("a", 40 * K, seed=4)
    make_model("b", 40 * K, seed=5)
    w = placed([100 * K, 100 * K], 1000 * K)
    w.manager.acquire("a", "sim:0").release()
    started, go, job = _gate()
    queued = [w.placement.submit("a", job)]
    assert started.wait(30)
    queued += [w.placement.submit("a", _name) for _ in range(2)]
    assert w.placement.queue_lengths() == {"sim:0": 3, "sim:1": 0}
    w.gpus[1].set_external(70 * K)  # no room on sim:1: "a" waits its turn on sim:0
    assert w.placement.choose("a") == "sim:0"
    w.gpus[1].set_external(0)
    ranked = w.placement.rank("a")
    assert ranked[0] == ((0, 0, 1), "sim:1")
    result, switch = w.placement.submit("a", _name).result(30)
    assert result == "sim:1"  # ran while sim:0 was busy
    assert switch.source is Tier.RAM  # from the RAM copy kept when "a" went to sim:0
    assert not queued[0].done()
    assert w.manager.locations("a") == ["sim:0", "sim:1"]
    go.set()
    assert [f.result(30)[0] for f in queued] == ["sim:0"] * 3
    w.check_ledgers()


def test_spreading_can_be_turned_off(placed, make_model, world) -> None:
    from modelzoo.residency.placement import Placement

    make_model("a", 40 * K)
    w = world([100 * K, 100 * K], 1000 * K)
    p = Placement(w.manager, prefetch=False, spread_queue=0)
    try:
        w.manager.acquire("a", "sim:0").release()
        started, go, job = _gate()
        futs = [p.submit("a", job)]
        assert started.wait(30)
        futs += [p.submit("a", _name) for _ in range(4)]
        assert p.choose("a") == "sim:0"
        go.set()
        assert all(f.result(30)[0] == "sim:0" for f in futs)
    finally:
        p.close()
