from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelzoo.residency.devices import (
    CudaDevice,
    HostMemory,
    MemoryReading,
    PinnedLedger,
    SimulatedDevice,
    SimulatedOutOfMemoryError,
    _meminfo,
    cgroup_memory,
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


def test_host_memory_matches_proc_meminfo(tmp_path: Path) -> None:
    r = HostMemory(cgroup_root=tmp_path).memory()  # no cgroup limit in the way
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


def _v2(root: Path, levels: dict[str, tuple[str, int, int]], path: str) -> Path:
    """A cgroup v2 tree: for each level (relative path) its memory.max, memory.current
    and inactive_file; returns the /proc/self/cgroup file naming ``path``."""
    (root / "cgroup.controllers").parent.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    for rel, (limit, current, inactive) in levels.items():
        d = root / rel if rel else root
        d.mkdir(parents=True, exist_ok=True)
        (d / "memory.max").write_text(f"{limit}\n")
        (d / "memory.current").write_text(f"{current}\n")
        (d / "memory.stat").write_text(f"anon 1\nfile 2\ninactive_file {inactive}\n")
    proc = root.parent / "proc-self-cgroup"
    proc.write_text(f"0::/{path}\n")
    return proc


def test_cgroup_v2_limit_and_usage(tmp_path: Path) -> None:
    gib = 1 << 30
    root = tmp_path / "cg"
    proc = _v2(root, {"": ("max", 50 * gib, 0),
                      "kubepods/pod1": (str(8 * gib), 5 * gib, gib),
                      "kubepods/pod1/ctr": ("max", 5 * gib, gib)}, "kubepods/pod1/ctr")
    r = cgroup_memory(root, proc)
    assert r == MemoryReading(free=8 * gib - (5 * gib - gib), total=8 * gib)
    host = HostMemory(cgroup_root=root, proc_cgroup=proc)
    assert host.memory().total == 8 * gib  # the container's limit, not the host's RAM
    assert host.memory().free <= 4 * gib


def test_cgroup_v2_tightest_level_wins(tmp_path: Path) -> None:
    gib = 1 << 30
    root = tmp_path / "cg"
    proc = _v2(root, {"outer": (str(6 * gib), 5 * gib, 0),
                      "outer/inner": (str(10 * gib), 2 * gib, 0)}, "outer/inner")
    assert cgroup_memory(root, proc) == MemoryReading(free=gib, total=6 * gib)


def test_cgroup_inside_a_namespace_reads_the_mount_root(tmp_path: Path) -> None:
    """With a cgroup namespace /proc says "/" or a path that is not mounted: the mount
    root is the container's own cgroup."""
    gib = 1 << 30
    root = tmp_path / "cg"
    proc = _v2(root, {"": (str(2 * gib), gib // 2, 0)}, "docker/abc")
    assert cgroup_memory(root, proc) == MemoryReading(free=gib + gib // 2, total=2 * gib)


def test_cgroup_v1(tmp_path: Path) -> None:
    gib = 1 << 30
    mem = tmp_path / "cg" / "memory"
    ctr = mem / "docker" / "abc"
    ctr.mkdir(parents=True)
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # unlimited
    (mem / "memory.usage_in_bytes").write_text(f"{40 * gib}\n")
    (ctr / "memory.limit_in_bytes").write_text(f"{3 * gib}\n")
    (ctr / "memory.usage_in_bytes").write_text(f"{2 * gib}\n")
    (ctr / "memory.stat").write_text(f"cache 5\ninactive_file 7\ntotal_inactive_file {gib}\n")
    proc = tmp_path / "proc"
    proc.write_text("12:pids:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    assert cgroup_memory(tmp_path / "cg", proc) == MemoryReading(free=2 * gib, total=3 * gib)
    (ctr / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_memory(tmp_path / "cg", proc) is None  # no limit anywhere


def test_a_cgroup_limit_above_the_host_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = _v2(root, {"": (str(1 << 50), 1 << 30, 0)}, "")
    host = HostMemory(cgroup_root=root, proc_cgroup=proc)
    assert host.memory().total == _meminfo().total
    assert HostMemory(cgroup_root=tmp_path / "none").memory().total == _meminfo().total


def test_pinned_ledger_caps() -> None:
    ledger = PinnedLedger(100, simulated=True)
    assert ledger.active
    assert ledger.take(60) and not ledger.take(50) and ledger.take(40)
    assert (ledger.used, ledger.refused, ledger.peak) == (100, 50, 100)
    ledger.give(60)
    assert ledger.used == 40
    with pytest.raises(AssertionError):
        ledger.give(41)
    assert not PinnedLedger(100).active  # a real host without CUDA pins nothing
    assert not PinnedLedger(0, simulated=True).active
