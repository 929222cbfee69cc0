"""The tensors backend: per-tensor accounting, buffer reuse, rollback and pinned memory."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from modelzoo.residency.backends.tensors import TensorsBackend, Weights
from modelzoo.residency.devices import SimulatedDevice, SimulatedOutOfMemoryError


def _host_weights(host: SimulatedDevice, **tensors: torch.Tensor) -> Weights:
    w = Weights(tensors)
    w.device, w.host = host, True
    host.allocate(sum(t.numel() * t.element_size() for t in tensors.values()))
    return w


def test_an_evicted_models_buffers_serve_the_next_model_on_a_full_device() -> None:
    """Eviction happens when the device is full: the departing buffers must be kept for
    the incoming model (bench/switch.py found them let go, so every switch page-faulted)."""
    backend = TensorsBackend()
    host = SimulatedDevice("ram", 1 << 24, kind="ram")
    a = _host_weights(host, w=torch.ones(256, 256), b=torch.ones(256))
    nbytes = sum(t.numel() * t.element_size() for t in a.values())
    gpu = SimulatedDevice("sim:0", nbytes)  # room for exactly one model
    on_gpu = backend.to_device(a, gpu)
    assert gpu.used == nbytes  # charged by the backend, tensor by tensor
    kept = {id(t) for t in on_gpu.values()}
    backend.drop(on_gpu)  # evicted
    assert gpu.used == 0
    b = _host_weights(host, w=torch.full((256, 256), 2.0), b=torch.full((256,), 2.0))
    on_gpu_b = backend.to_device(b, gpu)
    assert {id(t) for t in on_gpu_b.values()} == kept  # the same buffers, refilled
    assert torch.equal(on_gpu_b["w"], b["w"]) and torch.equal(on_gpu_b["b"], b["b"])


def test_the_pool_never_holds_more_than_the_device() -> None:
    backend = TensorsBackend()
    host = SimulatedDevice("ram", 1 << 24, kind="ram")
    t = _host_weights(host, w=torch.ones(1024))
    nbytes = t["w"].numel() * t["w"].element_size()
    gpu = SimulatedDevice("sim:0", nbytes * 2)
    first, second = backend.to_device(t, gpu), backend.to_device(t, gpu)
    gpu.set_external(nbytes)  # another process took memory meanwhile: capacity is passed
    backend.drop(first)
    backend.drop(second)
    pooled = sum(x.numel() * x.element_size() for xs in backend._devices["sim:0"].free.values()
                 for x in xs)
    assert pooled + gpu.used + gpu.external <= gpu.capacity


def test_a_move_that_fails_half_way_frees_what_it_placed() -> None:
    """Out of memory after half the tensors (a racing process): the half already on the
    device is released and freed, the cache emptied, the source untouched."""
    backend = TensorsBackend()
    host = SimulatedDevice("ram", 1 << 24, kind="ram")
    src = _host_weights(host, **{f"t{i}": torch.full((1024,), float(i)) for i in range(8)})
    one = 1024 * 4
    gpu = SimulatedDevice("sim:0", 4 * one)  # half fits
    before = gpu.empty_caches
    with pytest.raises(SimulatedOutOfMemoryError):
        backend.to_device(src, gpu)
    assert gpu.used == 0 and gpu.peak == 4 * one  # half was placed, then released
    assert gpu.empty_caches == before + 1
    assert len(src) == 8 and all(torch.equal(src[f"t{i}"], torch.full((1024,), float(i)))
                                 for i in range(8))
    # nothing of the failed copy is referenced beyond the pool (reserved memory)
    pooled = backend._devices["sim:0"].nbytes
    assert pooled <= gpu.capacity - gpu.used


def test_a_failed_copy_to_cuda_leaves_no_reference() -> None:
    """On CUDA the freed half must be unreferenced so empty_cache can hand it back."""
    backend = TensorsBackend()
    host = SimulatedDevice("ram", 1 << 24, kind="ram")
    src = _host_weights(host, **{f"t{i}": torch.ones(256) for i in range(4)})
    gpu = SimulatedDevice("sim:0", 2 * 256 * 4, torch_device="meta")  # a non-CPU device
    refs: list[weakref.ref[torch.Tensor]] = []
    original = torch.Tensor.copy_

    def copy_(self: torch.Tensor, other: torch.Tensor, non_blocking: bool = False
              ) -> torch.Tensor:
        refs.append(weakref.ref(self))
        return original(self, other, non_blocking=non_blocking)

    torch.Tensor.copy_ = copy_  # type: ignore[method-assign]
    try:
        with pytest.raises(SimulatedOutOfMemoryError):
            backend.to_device(src, gpu)
    finally:
        torch.Tensor.copy_ = original  # type: ignore[method-assign]
    gc.collect()
    assert len(refs) == 2 and all(r() is None for r in refs)
    assert gpu.used == 0


def test_pinned_host_memory_is_counted_capped_and_released(tmp_path, write_ckpt) -> None:
    from modelzoo.residency.catalog import ModelCatalog

    for i in range(3):
        write_ckpt(tmp_path / f"m{i}.safetensors", {"unet": 4096, "vae": 4096}, seed=i)
    catalog = ModelCatalog(tmp_path)
    host = SimulatedDevice("ram", 1 << 20, kind="ram", pinned_max=12 * 1024)
    assert host.pinned is not None
    backend = TensorsBackend()
    a = backend.load(catalog.get("m0"), host)
    b = backend.load(catalog.get("m1"), host)  # only one of its two tensors fits the cap
    assert (a.pinned, b.pinned) == (8192, 4096) and host.pinned.used == 12 * 1024
    assert host.pinned.refused == 4096 and host.used == 16 * 1024
    backend.drop(a)
    assert host.pinned.used == 4096 and host.used == 8192
    c = backend.load(catalog.get("m2"), host)
    assert c.pinned == 8192 and host.pinned.used == 12 * 1024
    backend.drop(b)
    backend.drop(c)
    assert host.pinned.used == 0 and host.used == 0
