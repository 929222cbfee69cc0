"""The weights-only backend: a safetensors state dict as CPU (or CUDA) tensors.

This is what a checkpoint switch moves in every WebUI, without the model code around it:
the benchmark and the manager's tests use it. Loading reads every byte (``load_file``
only maps the file; the copy into our own buffers is what pays the disk), at the run
dtype. Host copies are pinned when CUDA is present, so the copy to the GPU runs at full
PCIe speed.

Buffer reuse. On CUDA, torch's caching allocators keep freed device blocks (and pinned
host blocks) for the next allocation, so a switch copies into memory that is already
mapped. A simulated device lives in plain CPU memory, where every fresh allocation
page-faults (measured here: a 1 GiB copy into fresh pages 0.6-0.8 s, into reused
buffers 0.1 s). To stand in honestly for those allocators, buffers freed on a simulated
device go to a per-device pool (never more than the device's capacity), and, when
``host_pool_bytes`` is set, freed host buffers to a host pool of at most that size.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ...errors import BackendUnavailable
from ..devices import Device
from .base import ModelSpec

_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
Key = tuple[tuple[int, ...], Any]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is in the gpu extra
        raise BackendUnavailable("torch is not installed (pip install atelier[gpu])") from exc
    return torch


class Weights(dict[str, Any]):
    """A state dict that remembers where its buffers live (``None``: the host)."""

    device: Device | None = None


class _Pool:
    def __init__(self) -> None:
        self.free: dict[Key, list[Any]] = defaultdict(list)
        self.nbytes = 0

    def take(self, shape: tuple[int, ...], dtype: Any) -> Any | None:
        bucket = self.free.get((shape, dtype))
        if not bucket:
            return None
        t = bucket.pop()
        self.nbytes -= t.numel() * t.element_size()
        return t

    def give(self, tensors: list[Any], cap: int) -> None:
        for t in tensors:
            n = t.numel() * t.element_size()
            if self.nbytes + n > cap:
                continue  # let it go back to the system
            self.free[(tuple(t.shape), t.dtype)].append(t)
            self.nbytes += n


class TensorsBackend:
    def __init__(self, dtype: str = "fp16", *, host_pool_bytes: int = 0) -> None:
        self.dtype = dtype
        self.host_pool_bytes = host_pool_bytes
        self._host = _Pool()
        self._devices: dict[str, _Pool] = defaultdict(_Pool)

    def _copy(self, t: Any, pool: _Pool | None, pin: bool = False) -> Any:
        buf = pool.take(tuple(t.shape), t.dtype) if pool is not None else None
        if buf is None:
            buf = _torch().empty(t.shape, dtype=t.dtype, pin_memory=pin)
        buf.copy_(t)
        return buf

    def load(self, spec: ModelSpec, host: Device) -> Weights:
        torch = _torch()
        from safetensors.torch import load_file

        run = getattr(torch, _DTYPES[self.dtype])
        pin = torch.cuda.is_available()
        pool = self._host if self.host_pool_bytes else None
        out = Weights()
        for key, t in load_file(str(spec.path), device="cpu").items():
            if key.startswith("model_ema."):
                continue
            if t.is_floating_point() and t.dtype != run:
                t = t.to(run)
            out[key] = self._copy(t, pool, pin)  # the read from disk happens here
        return out

    def to_device(self, handle: Weights, device: Device) -> Weights:
        out = Weights()
        out.device = device
        if device.torch_device == "cpu":
            pool = self._devices[device.name]
            for k, t in handle.items():
                out[k] = self._copy(t, pool)
        else:
            for k, t in handle.items():
                out[k] = t.to(device.torch_device, non_blocking=True)
        return out

    def to_host(self, handle: Weights, device: Device, host: Device) -> Weights:
        torch = _torch()
        pin = torch.cuda.is_available()
        pool = self._host if self.host_pool_bytes else None
        out = Weights()
        for k, t in handle.items():
            out[k] = self._copy(t, pool, pin) if device.torch_device == "cpu" else (
                t.to("cpu").pin_memory() if pin else t.to("cpu"))
        return out

    def drop(self, handle: Any) -> None:
        if not isinstance(handle, dict):
            return
        device = getattr(handle, "device", None)
        tensors = list(handle.values())
        handle.clear()
        if device is None:
            if self.host_pool_bytes:
                self._host.give(tensors, self.host_pool_bytes)
        elif device.torch_device == "cpu":
            # Called before the manager releases these bytes, so they still count as used:
            # the room for the pool is what is free now plus what this handle gives back.
            # Pooled + used then stays within the device after the release, like CUDA's
            # reserved-but-unused blocks, and an evicted model's buffers are there for the
            # model that replaces it (with ``free`` alone they were let go whenever the
            # device was full, and the incoming copy page-faulted fresh memory).
            r = device.memory()
            back = sum(t.numel() * t.element_size() for t in tensors)
            self._devices[device.name].give(tensors, min(r.total, r.free + back))
