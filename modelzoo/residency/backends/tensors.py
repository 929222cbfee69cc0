"""The weights-only backend: a safetensors state dict as CPU (or CUDA) tensors.

This is what a checkpoint switch moves in every WebUI, without the model code around it:
the benchmark and the manager's tests use it. Loading reads every byte (``load_file``
only maps the file; the copy into our own buffers is what pays the disk), at the run
dtype.

Accounting (``charges_devices``). Every buffer placed on a device is charged to it
before the copy (``Device.allocate``: a simulated device's ledger, nothing on CUDA) and
released when dropped, so a simulated device holds exactly the bytes of live copies.
A move that fails half way (out of memory after some tensors) frees what it placed,
releases their charge and empties the device's cache before re-raising: the source is
untouched, and no byte stays on the device that no copy accounts for.

Pinned host memory. Host copies are page-locked when the host's
:class:`~modelzoo.residency.devices.PinnedLedger` is active (CUDA present, or a
simulated host) and below its cap, so the copy to the GPU runs at full PCIe speed by
DMA; beyond the cap they stay pageable. The pinned bytes are given back when the copy
is dropped (the manager then empties torch's pinned cache).

Buffer reuse. On CUDA, torch's caching allocators keep freed device blocks (and pinned
host blocks) for the next allocation, so a switch copies into memory that is already
mapped. A simulated device lives in plain CPU memory, where every fresh allocation
page-faults (measured here: a 1 GiB copy into fresh pages 0.6-0.8 s, into reused
buffers 0.1 s). To stand in honestly for those allocators, buffers freed on a simulated
device go to a per-device pool (never more than the device's free memory, so pooled +
used stays within it, like CUDA's reserved-but-unused blocks), and, when
``host_pool_bytes`` is set, freed host buffers to a host pool of at most that size.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from ...errors import BackendUnavailable
from ..devices import Device, PinnedLedger
from .base import ModelSpec

_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
Key = tuple[tuple[int, ...], Any]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is in the gpu extra
        raise BackendUnavailable("torch is not installed (pip install atelier[gpu])") from exc
    return torch


def _nbytes(t: Any) -> int:
    return int(t.numel() * t.element_size())


def _pinned_block(nbytes: int, real: bool) -> int:
    """Bytes of pinned memory a tensor takes: torch's host allocator rounds each block up
    to a power of two; a simulated ledger counts the tensor itself."""
    return 1 << max(0, nbytes - 1).bit_length() if real and nbytes else nbytes


class Weights(dict[str, Any]):
    """A state dict that remembers where its buffers live and how much of it is pinned."""

    device: Device | None = None
    host: bool = False  # a RAM copy (``device`` is then the host)
    pinned: int = 0


class _Pool:
    """Freed buffers by (shape, dtype); shared by loads running in parallel, so locked."""

    def __init__(self) -> None:
        self.free: dict[Key, list[Any]] = defaultdict(list)
        self.nbytes = 0
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: Any) -> Any | None:
        with self._lock:
            bucket = self.free.get((shape, dtype))
            if not bucket:
                return None
            t = bucket.pop()
            self.nbytes -= _nbytes(t)
            return t

    def give(self, tensors: list[Any], cap: int) -> None:
        with self._lock:
            for t in tensors:
                n = _nbytes(t)
                if self.nbytes + n > cap:
                    continue  # let it go back to the system
                self.free[(tuple(t.shape), t.dtype)].append(t)
                self.nbytes += n


class TensorsBackend:
    charges_devices = True

    def __init__(self, dtype: str = "fp16", *, host_pool_bytes: int = 0) -> None:
        self.dtype = dtype
        self.host_pool_bytes = host_pool_bytes
        self._host = _Pool()
        self._devices: dict[str, _Pool] = {}
        self._lock = threading.Lock()
        self.fresh_bytes = 0  # bytes placed in new buffers rather than pooled ones

    # ---- placing buffers ----------------------------------------------------------------
    def _pool(self, device: Device, host: bool) -> _Pool | None:
        if device.torch_device != "cpu":
            return None  # CUDA: torch's caching allocator pools
        if host:
            return self._host if self.host_pool_bytes else None
        with self._lock:
            return self._devices.setdefault(device.name, _Pool())

    def _place(self, out: Weights, key: str, src: Any, device: Device, *, host: bool) -> None:
        """Copy ``src`` into a buffer on ``device``, charged to it, into ``out[key]``."""
        torch = _torch()
        n = _nbytes(src)
        device.allocate(n)  # a simulated device refuses here as CUDA would in empty()
        ledger: PinnedLedger | None = getattr(device, "pinned", None) if host else None
        real = device.torch_device == "cpu" and torch.cuda.is_available()
        block = _pinned_block(n, real)
        pinned = ledger is not None and ledger.active and ledger.take(block)
        try:
            pool = self._pool(device, host)
            buf = pool.take(tuple(src.shape), src.dtype) if pool is not None else None
            if buf is None:
                buf = torch.empty(src.shape, dtype=src.dtype, device=device.torch_device,
                                  pin_memory=pinned and real)
                self.fresh_bytes += n
            # from pinned memory (either way) the copy is a DMA the CPU does not wait for
            buf.copy_(src, non_blocking=real or device.torch_device != "cpu")
        except BaseException:
            device.release(n)
            if pinned and ledger is not None:
                ledger.give(block)
            raise
        out[key] = buf
        if pinned:
            out.pinned += block

    def _fill(self, out: Weights, items: Any, device: Device, *, host: bool) -> Weights:
        """Place every tensor or none: on failure what was placed is dropped again."""
        try:
            for key, t in items:
                self._place(out, key, t, device, host=host)
            torch = _torch()
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # copies to or from a GPU are asynchronous until here
        except BaseException:
            self.drop(out)
            device.empty_cache()
            raise
        return out

    # ---- the four moves -----------------------------------------------------------------
    def load(self, spec: ModelSpec, host: Device) -> Weights:
        torch = _torch()
        from safetensors.torch import load_file

        run = getattr(torch, _DTYPES[self.dtype])

        def tensors() -> Any:
            for key, t in load_file(str(spec.path), device="cpu").items():
                if key.startswith("model_ema."):
                    continue
                yield key, (t.to(run) if t.is_floating_point() and t.dtype != run else t)

        out = Weights()
        out.device, out.host = host, True
        return self._fill(out, tensors(), host, host=True)  # the read from disk happens here

    def to_device(self, handle: Weights, device: Device) -> Weights:
        out = Weights()
        out.device = device
        return self._fill(out, handle.items(), device, host=False)

    def to_host(self, handle: Weights, device: Device, host: Device) -> Weights:
        out = Weights()
        out.device, out.host = host, True
        return self._fill(out, handle.items(), host, host=True)

    def drop(self, handle: Any) -> None:
        if not isinstance(handle, Weights):
            return
        device = handle.device
        tensors = list(handle.values())
        handle.clear()
        if device is None:
            return
        nbytes = sum(_nbytes(t) for t in tensors)
        if handle.pinned:
            ledger: PinnedLedger | None = getattr(device, "pinned", None)
            if ledger is not None:
                ledger.give(handle.pinned)
            handle.pinned = 0
        device.release(nbytes)
        if device.torch_device != "cpu":
            return  # CUDA: the tensors go back to torch's allocator with the references
        if handle.host:
            if self.host_pool_bytes:
                self._host.give(tensors, self.host_pool_bytes)
            return
        # the pool is memory the device has reserved but no copy uses: keep it within
        # what is free now, as CUDA's reserved-but-unused blocks are
        pool = self._pool(device, host=False)
        assert pool is not None
        pool.give(tensors, device.memory().free)
