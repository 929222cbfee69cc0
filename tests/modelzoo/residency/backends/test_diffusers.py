from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from modelzoo.errors import ModelConfigMissing
from modelzoo.residency.backends.diffusers import DiffusersBackend
from modelzoo.residency.catalog import ModelCatalog
from modelzoo.residency.devices import SimulatedDevice
from modelzoo.residency.footprint import ReserveRule
from modelzoo.residency.manager import ResidencyManager
from modelzoo.residency.plan import Tier


@pytest.fixture
def pipes(tiny_pipeline_dir: Path, models_dir: Path) -> Path:
    shutil.copytree(tiny_pipeline_dir, models_dir / "tiny")
    shutil.copytree(tiny_pipeline_dir, models_dir / "sub" / "tiny2")
    return models_dir


def _manager(models_dir: Path, gpu: int, ram: int) -> ResidencyManager:
    return ResidencyManager(
        DiffusersBackend("fp32"), [SimulatedDevice("sim:0", gpu)],
        SimulatedDevice("ram", ram, kind="ram"), ModelCatalog(models_dir, dtype="fp32"),
        reserve=ReserveRule(0, 0, 0))


def test_footprint_of_a_diffusers_folder_matches_the_loaded_modules(pipes: Path) -> None:
    spec = ModelCatalog(pipes, dtype="fp32").get("tiny")
    assert set(spec.footprint.components) == {"unet", "vae", "text_encoder"}
    m = _manager(pipes, 1 << 30, 1 << 30)
    with m.acquire("tiny", "sim:0") as lease:
        pipe = lease.handle
        for comp in ("unet", "vae", "text_encoder"):
            module = getattr(pipe, comp)
            real = sum(p.numel() * p.element_size() for p in module.state_dict().values())
            assert spec.footprint.components[comp] == real, comp
    half = ModelCatalog(pipes, dtype="fp16").get("tiny").footprint
    assert half.weights * 2 == spec.footprint.weights


def test_pipelines_move_through_the_tiers(pipes: Path) -> None:
    size = ModelCatalog(pipes, dtype="fp32").get("tiny").nbytes
    m = _manager(pipes, size + size // 2, 4 * size)  # one pipeline on the "GPU"
    m.acquire("tiny", "sim:0").release()
    with m.acquire("sub/tiny2", "sim:0") as lease:
        assert lease.switch.source is Tier.DISK
        assert isinstance(lease.handle.unet, torch.nn.Module)
    assert m.where("tiny") == (Tier.RAM, None)
    with m.acquire("tiny", "sim:0") as lease:
        assert lease.switch.source is Tier.RAM


def test_single_file_needs_a_local_config(models_dir: Path) -> None:
    from ..checkpoints import write_family

    write_family(models_dir / "one.safetensors", "sdxl")
    m = _manager(models_dir, 1 << 30, 1 << 30)
    with pytest.raises(ModelConfigMissing, match="DIFFUSERS_CONFIG/sdxl") as exc:
        m.acquire("one", "sim:0")
    assert exc.value.extra["family"] == "sdxl"
    assert m.where("one") == (Tier.DISK, None)


@pytest.mark.parametrize("cap_share", [4.0, 0.5])
def test_host_weights_are_pinned_within_the_cap_and_given_back(pipes: Path,
                                                               cap_share: float) -> None:
    """The host's pinned-memory ledger (a simulated host counts what a CUDA host would
    pin) holds a loaded pipeline's weights up to ATELIER_GPU_PINNED_MAX, never more, and
    gets every byte back when the pipeline is dropped."""
    spec = ModelCatalog(pipes, dtype="fp32").get("tiny")
    cap = int(spec.nbytes * cap_share)
    host = SimulatedDevice("ram", 1 << 30, kind="ram", pinned_max=cap)
    backend = DiffusersBackend("fp32")
    pipe = backend.load(spec, host)
    assert host.pinned is not None
    held = host.pinned.used
    assert 0 < held <= cap
    if cap_share < 1:
        assert host.pinned.refused > 0  # the rest stayed pageable
    else:
        assert held == spec.footprint.weights
    backend.drop(pipe)
    assert host.pinned.used == 0
