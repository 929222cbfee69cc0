"""Device probes: how much memory is free, measured now.

Three kinds, one small interface (:class:`Device`)::

    CudaDevice("cuda:1")   torch.cuda.mem_get_info + torch-reserved-but-unused   (the GPU tier)
    HostMemory()           psutil.virtual_memory().available, /proc/meminfo     (the RAM tier)
    SimulatedDevice(...)   a fixed capacity with an allocation ledger           (tests, CPU boxes)

``mem_get_info`` is device-global: other processes sharing the GPU count against us,
which is why budgets are re-measured at every decision rather than configured. Memory
the torch caching allocator reserved but is not using is free *for us* (ComfyUI's
``get_free_memory`` and Forge do the same), so it is added back.

A simulated device has no memory of its own: tensors "on" it live on the CPU, and the
backends call :meth:`Device.allocate` / :meth:`Device.release` around every move so the
ledger mirrors what a GPU would hold. Going over capacity raises
:class:`SimulatedOutOfMemoryError`, which :func:`is_oom` treats like a CUDA OOM.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True)
class MemoryReading:
    free: int
    total: int


@runtime_checkable
class Device(Protocol):
    name: str  # "cuda:0", "sim:0", "ram"
    kind: str  # "cuda" | "sim" | "cpu" | "ram"
    torch_device: str  # where tensors really go: "cuda:0" or "cpu"

    def memory(self) -> MemoryReading: ...

    def allocate(self, nbytes: int) -> None: ...

    def release(self, nbytes: int) -> None: ...

    def empty_cache(self) -> None: ...


class SimulatedOutOfMemoryError(RuntimeError):
    """What a simulated device raises where CUDA would raise ``OutOfMemoryError``."""


def is_oom(exc: BaseException) -> bool:
    """True for CUDA's OutOfMemoryError (and its older RuntimeError form) and the simulated one."""
    if isinstance(exc, SimulatedOutOfMemoryError | MemoryError):
        return True
    import sys

    torch = sys.modules.get("torch")  # never import torch just to classify an error
    if torch is not None:
        oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
        if isinstance(oom, type) and isinstance(exc, oom):
            return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class CudaDevice:
    """One CUDA device, probed through torch (imported on first use)."""

    kind = "cuda"

    def __init__(self, index: int) -> None:
        self.index = index
        self.name = f"cuda:{index}"
        self.torch_device = self.name

    def memory(self) -> MemoryReading:
        import torch

        free, total = torch.cuda.mem_get_info(self.index)
        stats = torch.cuda.memory_stats(self.index)
        reserved = int(stats.get("reserved_bytes.all.current", 0))
        active = int(stats.get("active_bytes.all.current", 0))
        return MemoryReading(free=int(free) + max(0, reserved - active), total=int(total))

    # torch's allocator does the accounting on a real device
    def allocate(self, nbytes: int) -> None:
        return None

    def release(self, nbytes: int) -> None:
        return None

    def empty_cache(self) -> None:
        import torch

        with torch.cuda.device(self.index):
            torch.cuda.empty_cache()
            torch.cuda.ipc_collect()

    def __repr__(self) -> str:
        return f"CudaDevice({self.index})"


def _meminfo() -> MemoryReading:
    """Host memory without psutil (the WebUI process may not have it)."""
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
    except OSError:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return MemoryReading(free=os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
                             total=pages)
    return MemoryReading(free=values.get("MemAvailable", values.get("MemFree", 0)),
                         total=values.get("MemTotal", 0))


class HostMemory:
    """CPU RAM: the middle tier. ``available`` (not ``free``) counts reclaimable page cache."""

    kind = "ram"
    torch_device = "cpu"

    def __init__(self, name: str = "ram") -> None:
        self.name = name

    def memory(self) -> MemoryReading:
        try:
            import psutil
        except ImportError:
            return _meminfo()
        vm = psutil.virtual_memory()
        return MemoryReading(free=int(vm.available), total=int(vm.total))

    def allocate(self, nbytes: int) -> None:
        return None

    def release(self, nbytes: int) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def __repr__(self) -> str:
        return "HostMemory()"


class SimulatedDevice:
    """A device with a fixed ``capacity``; tensors stay on the CPU, bytes go through a ledger.

    ``external`` stands for other processes on the same GPU; tests raise it between
    decisions. ``peak`` is the most that was ever allocated (ours + external).
    """

    def __init__(self, name: str, capacity: int, *, kind: str = "sim",
                 torch_device: str = "cpu") -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.name = name
        self.kind = kind
        self.torch_device = torch_device
        self.capacity = capacity
        self._lock = threading.Lock()
        self._used = 0
        self._external = 0
        self.peak = 0
        self.fail_next = 0  # force this many allocations to fail (a racing process)

    @property
    def used(self) -> int:
        return self._used

    @property
    def external(self) -> int:
        return self._external

    def set_external(self, nbytes: int) -> None:
        with self._lock:
            self._external = max(0, nbytes)
            self.peak = max(self.peak, self._used + self._external)

    def memory(self) -> MemoryReading:
        with self._lock:
            return MemoryReading(free=max(0, self.capacity - self._used - self._external),
                                 total=self.capacity)

    def allocate(self, nbytes: int) -> None:
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                raise SimulatedOutOfMemoryError(f"{self.name}: out of memory (injected)")
            if self._used + self._external + nbytes > self.capacity:
                raise SimulatedOutOfMemoryError(
                    f"{self.name}: out of memory: tried to allocate {nbytes} bytes with "
                    f"{self.capacity - self._used - self._external} free")
            self._used += nbytes
            self.peak = max(self.peak, self._used + self._external)

    def release(self, nbytes: int) -> None:
        with self._lock:
            if nbytes > self._used:
                raise AssertionError(f"{self.name}: released {nbytes} > used {self._used}")
            self._used -= nbytes

    def empty_cache(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"SimulatedDevice({self.name!r}, {self.capacity})"


def parse_size(text: str) -> int:
    """``"8GiB"``, ``"512MiB"``, ``"1.5G"``, ``"1000"`` -> bytes."""
    units = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 1000, "m": MIB, "mib": MIB,
             "mb": 1000**2, "g": GIB, "gib": GIB, "gb": 1000**3, "t": 1 << 40, "tib": 1 << 40}
    s = text.strip().lower().replace(" ", "")
    i = len(s)
    while i and not (s[i - 1].isdigit() or s[i - 1] == "."):
        i -= 1
    number, unit = s[:i], s[i:]
    if not number or unit not in units:
        raise ValueError(f"not a size: {text!r} (try 8GiB, 512MiB)")
    return int(float(number) * units[unit])


def _nvidia_driver_present() -> bool:
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        return gpus.is_dir() and any(gpus.iterdir())
    except OSError:
        return False


def probe_devices(spec: str = "auto", *, cpu_capacity: int = 4 * GIB) -> list[Device]:
    """Compute devices from a spec: ``auto``, ``cuda:0,cuda:1``, ``sim:8GiB,sim:8GiB``, ``cpu``.

    ``auto`` is every visible CUDA device, or else one ``cpu`` compute device: a simulated
    device over the CPU whose capacity is ``cpu_capacity`` (there is no VRAM to measure).
    """
    devices: list[Device] = []
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if parts == ["auto"]:
        count = 0
        # Without the NVIDIA driver there is nothing to count: do not pay for importing
        # torch (about 200 MB) when the service starts on a machine with no GPU.
        if _nvidia_driver_present():
            try:
                import torch

                count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            except ImportError:
                count = 0
        if count:
            return [CudaDevice(i) for i in range(count)]
        return [SimulatedDevice("cpu", cpu_capacity, kind="cpu")]
    sims = 0
    for part in parts:
        if part.startswith("cuda"):
            _, _, idx = part.partition(":")
            devices.append(CudaDevice(int(idx or 0)))
        elif part.startswith("sim:"):
            devices.append(SimulatedDevice(f"sim:{sims}", parse_size(part[4:])))
            sims += 1
        elif part == "cpu":
            devices.append(SimulatedDevice("cpu", cpu_capacity, kind="cpu"))
        else:
            raise ValueError(f"unknown device {part!r} (auto, cpu, cuda:N, sim:SIZE)")
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate devices in {spec!r}")
    return devices
