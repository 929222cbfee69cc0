from __future__ import annotations

import pytest
import torch

from modelzoo.residency.devices import (
    CudaDevice,
    HostMemory,
    SimulatedDevice,
    SimulatedOutOfMemoryError,
    _meminfo,
    parse_size,
    probe_devices,
)


def test_parse_size() -> None:
    assert parse_size("8GiB") == 8 << 30
    assert parse_size("512 MiB") == 512 << 20
    assert parse_size("1.5G") == int(1.5 * (1 << 30))
    assert parse_size("1000") == 1000
    assert parse_size("2GB") == 2 * 10**9
    with pytest.raises(ValueError):
        parse_size("lots")


def test_simulated_device_ledger() -> None:
    d = SimulatedDevice("sim:0", 100)
    d.allocate(60)
    d.set_external(30)
    assert d.memory().free == 10 and d.memory().total == 100
    with pytest.raises(SimulatedOutOfMemoryError):
        d.allocate(11)
    d.release(60)
    d.fail_next = 1
    with pytest.raises(SimulatedOutOfMemoryError, match="injected"):
        d.allocate(1)
    d.allocate(70)
    assert d.peak == 100
    with pytest.raises(AssertionError):
        d.release(1000)


def test_host_memory_matches_proc_meminfo() -> None:
    r = HostMemory().memory()
    m = _meminfo()
    assert 0 < r.free <= r.total
    assert m.total == r.total
    assert abs(m.free - r.free) < r.total // 10


def test_cuda_probe_adds_reserved_but_unused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA formula, with torch.cuda's two calls answering as a busy 24 GiB card would."""
    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (3 * gib, 24 * gib))
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda i: {
        "reserved_bytes.all.current": 10 * gib, "active_bytes.all.current": 8 * gib})
    r = CudaDevice(1).memory()
    assert (r.free, r.total) == (5 * gib, 24 * gib)
    assert CudaDevice(1).torch_device == "cuda:1"


def test_probe_devices() -> None:
    devs = probe_devices("sim:1GiB,sim:2GiB")
    assert [(d.name, d.memory().total) for d in devs] == [("sim:0", 1 << 30), ("sim:1", 2 << 30)]
    auto = probe_devices("auto", cpu_capacity=123)  # no CUDA here
    assert [(d.name, d.kind, d.memory().total) for d in auto] == [("cpu", "cpu", 123)]
    assert [d.name for d in probe_devices("cuda:0,cuda:3")] == ["cuda:0", "cuda:3"]
    for bad in ("tpu:0", "cuda:0,cuda:0"):
        with pytest.raises(ValueError):
            probe_devices(bad)
