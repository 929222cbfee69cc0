"""The tensors backend's buffer reuse on a simulated device."""

from __future__ import annotations

import torch

from modelzoo.residency.backends.tensors import TensorsBackend, Weights
from modelzoo.residency.devices import SimulatedDevice


def test_an_evicted_models_buffers_serve_the_next_model_on_a_full_device() -> None:
    """Eviction happens when the device is full: the departing buffers must be kept for
    the incoming model (bench/switch.py found them let go, so every switch page-faulted)."""
    backend = TensorsBackend()
    a = Weights({"w": torch.ones(256, 256), "b": torch.ones(256)})
    nbytes = sum(t.numel() * t.element_size() for t in a.values())
    gpu = SimulatedDevice("sim:0", nbytes)  # room for exactly one model
    on_gpu = backend.to_device(a, gpu)
    gpu.allocate(nbytes)  # the manager's ledger: the device is now full
    kept = {id(t) for t in on_gpu.values()}
    backend.drop(on_gpu)  # evicted; the manager releases the bytes afterwards
    gpu.release(nbytes)
    b = Weights({"w": torch.full((256, 256), 2.0), "b": torch.full((256,), 2.0)})
    on_gpu_b = backend.to_device(b, gpu)
    assert {id(t) for t in on_gpu_b.values()} == kept  # the same buffers, refilled
    assert torch.equal(on_gpu_b["w"], b["w"]) and torch.equal(on_gpu_b["b"], b["b"])


def test_the_pool_never_holds_more_than_the_device() -> None:
    backend = TensorsBackend()
    t = Weights({"w": torch.ones(1024)})
    nbytes = t["w"].numel() * t["w"].element_size()
    gpu = SimulatedDevice("sim:0", nbytes * 2)
    first, second = backend.to_device(t, gpu), backend.to_device(t, gpu)
    gpu.allocate(nbytes * 2)
    gpu.set_external(nbytes)  # another process took memory meanwhile
    backend.drop(first)
    gpu.release(nbytes)
    backend.drop(second)
    gpu.release(nbytes)
    pooled = sum(x.numel() * x.element_size() for xs in backend._devices["sim:0"].free.values()
                 for x in xs)
    assert pooled + gpu.used + gpu.external <= gpu.capacity
