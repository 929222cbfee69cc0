"""Device probes: how much memory is free, measured now.

Three kinds, one small interface (:class:`Device`)::

    CudaDevice("cuda:1")   torch.cuda.mem_get_info + torch-reserved-but-unused   (the GPU tier)
    HostMemory()           MemAvailable, or the container's cgroup limit if lower (the RAM tier)
    SimulatedDevice(...)   a fixed capacity with an allocation ledger           (tests, CPU boxes)

Containers: ``/proc/meminfo`` shows the host's memory, not the container's, so
:class:`HostMemory` also reads the cgroup limit (:mod:`.cgroup`) and keeps the lower.

Pinned host memory (page-locked, for full-speed copies to the GPU) cannot be swapped or
reclaimed. It is counted in a :class:`PinnedLedger` on the host device, capped
(``ATELIER_GPU_PINNED_MAX``); copies beyond the cap stay pageable. torch's pinned-memory
allocator caches freed blocks, so after an eviction :meth:`HostMemory.empty_cache` hands
them back to the system, and until then they count as free for us (as on the GPU).

``mem_get_info`` is device-global: other processes sharing the GPU count against us,
which is why budgets are re-measured at every decision rather than configured. Memory
the torch caching allocator reserved but is not using is free *for us* (ComfyUI's
``get_free_memory`` and Forge do the same), so it is added back.

A simulated device has no memory of its own: tensors "on" it live on the CPU, and
:meth:`Device.allocate` / :meth:`Device.release` are called for every byte placed there
(by the backend tensor by tensor when it ``charges_devices``, else by the manager around
each move), so its ledger is what a GPU would hold. Going over capacity raises
:class:`SimulatedOutOfMemoryError`, which :func:`is_oom` treats like a CUDA OOM.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .cgroup import cgroup_memory
from .memory import MemoryReading

GIB = 1 << 30
MIB = 1 << 20


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


# RuntimeError texts of device allocators that predate torch.cuda.OutOfMemoryError (and
# of ROCm and MPS, which raise plain RuntimeErrors)
_DEVICE_OOM = ("cuda out of memory", "cuda error: out of memory", "hip out of memory",
               "hip error: out of memory", "mps backend out of memory")


def is_oom(exc: BaseException) -> bool:
    """True when a *device* ran out of memory: CUDA's OutOfMemoryError (or its older
    RuntimeError text) and the simulated one. Not a host ``MemoryError`` (evicting a GPU
    model frees no RAM), and not our own 507 errors, which are answers, not accidents."""
    from ..errors import ModelZooError

    if isinstance(exc, ModelZooError):
        return False
    if isinstance(exc, SimulatedOutOfMemoryError):
        return True
    torch = sys.modules.get("torch")  # never import torch just to classify an error
    if torch is not None:
        oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
        if isinstance(oom, type) and isinstance(exc, oom):
            return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(t in text for t in _DEVICE_OOM)


def _cuda() -> Any | None:
    """torch, if it is imported already and CUDA is usable; never imports it."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return torch if torch.cuda.is_available() else None
    except Exception:  # a broken driver install: treat as no CUDA
        return None


class PinnedLedger:
    """Bytes of page-locked host memory our copies hold, against a cap.

    ``simulated``: count without pinning (a simulated host on a machine without CUDA, so
    tests and the benchmark exercise the same accounting). A real host pins only when
    CUDA is there: :attr:`active` says whether pinning happens at all.
    """

    def __init__(self, cap: int, *, simulated: bool = False) -> None:
        if cap < 0:
            raise ValueError("the pinned-memory cap must be >= 0")
        self.cap = cap
        self.simulated = simulated
        self._lock = threading.Lock()
        self.used = 0
        self.peak = 0
        self.refused = 0  # bytes left pageable because the cap was reached

    @property
    def active(self) -> bool:
        return self.cap > 0 and (self.simulated or _cuda() is not None)

    def take(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` of pinned memory; False when the cap would be passed."""
        with self._lock:
            if self.used + nbytes > self.cap:
                self.refused += nbytes
                return False
            self.used += nbytes
            self.peak = max(self.peak, self.used)
            return True

    def give(self, nbytes: int) -> None:
        with self._lock:
            if nbytes > self.used:
                raise AssertionError(f"unpinned {nbytes} > pinned {self.used}")
            self.used -= nbytes

    def to_json(self) -> dict[str, int]:
        return {"pinned": self.used, "pinned_cap": self.cap, "pinned_peak": self.peak}


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

    def allocate(self, nbytes: int) -> None:
        return None

    def release(self, nbytes: int) -> None:
        return None

    def empty_cache(self) -> None:
        """Hand blocks torch cached but no tensor uses back to the driver, so that other
        processes on the GPU (and ``mem_get_info``) see them free again."""
        torch = _cuda()
        if torch is None:
            return
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
    """CPU RAM: the middle tier. ``available`` (not ``free``) counts reclaimable page cache;
    the container's cgroup limit applies when it is below the host's memory."""

    kind = "ram"
    torch_device = "cpu"

    def __init__(self, name: str = "ram", *, pinned_max: int | None = None,
                 cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup",
                 proc_cgroup: str | os.PathLike[str] = "/proc/self/cgroup") -> None:
        self.name = name
        self.cgroup_root = Path(cgroup_root)
        self.proc_cgroup = Path(proc_cgroup)
        if pinned_max is None:
            pinned_max = self.memory().total // 2
        self.pinned = PinnedLedger(pinned_max)

    def _host(self) -> MemoryReading:
        try:
            import psutil
        except ImportError:
            return _meminfo()
        vm = psutil.virtual_memory()
        return MemoryReading(free=int(vm.available), total=int(vm.total))

    def memory(self) -> MemoryReading:
        host = self._host()
        cg = cgroup_memory(self.cgroup_root, self.proc_cgroup)
        if cg is not None and cg.total < host.total:
            host = MemoryReading(free=min(host.free, cg.free), total=cg.total)
        return MemoryReading(free=host.free + _pinned_cached(), total=host.total)

    def allocate(self, nbytes: int) -> None:
        return None

    def release(self, nbytes: int) -> None:
        return None

    def empty_cache(self) -> None:
        """Give the pinned blocks torch's host allocator cached back to the system."""
        torch = _cuda()
        empty = getattr(getattr(torch, "_C", None), "_host_emptyCache", None)
        if empty is not None:
            empty()

    def __repr__(self) -> str:
        return "HostMemory()"


def _pinned_cached() -> int:
    """Pinned bytes torch's host allocator holds for reuse but no tensor uses: free for us."""
    torch = _cuda()
    stats = getattr(getattr(torch, "cuda", None), "host_memory_stats", None)
    if stats is None:
        return 0
    try:
        s = stats()
    except Exception:  # older torch: no host statistics
        return 0
    held = int(s.get("allocated_bytes.current", s.get("reserved_bytes.current", 0)))
    active = int(s.get("active_bytes.current", held))
    return max(0, held - active)


class SimulatedDevice:
    """A device with a fixed ``capacity``; tensors stay on the CPU, bytes go through a ledger.

    ``external`` stands for other processes on the same GPU; tests raise it between
    decisions. ``peak`` is the most that was ever allocated (ours + external).
    ``empty_caches`` counts :meth:`empty_cache` calls (a CUDA device returns its cached
    blocks to the driver there). As the RAM tier (``kind="ram"``) it can simulate
    pinned memory with ``pinned_max``.
    """


    def __init__(self, name: str, capacity: int, *, kind: str = "sim",
                 torch_device: str = "cpu", pinned_max: int | None = None) -> None:
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
        self.empty_caches = 0
        self.pinned = (PinnedLedger(pinned_max, simulated=True) if pinned_max is not None
                       else None)

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
        with self._lock:
            self.empty_caches += 1

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
