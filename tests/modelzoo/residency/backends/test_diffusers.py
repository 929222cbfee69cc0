from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from modelzoo.errors import InvalidCheckpoint, InvalidGenerateRequest
from modelzoo.residency.backends.diffusers import (
    SAMPLERS,
    DiffusersBackend,
    Txt2Img,
    infotext,
    short_hash,
)
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


def test_generate_is_deterministic_per_seed_and_follows_sampler(pipes: Path) -> None:
    m = _manager(pipes, 1 << 30, 1 << 30)
    backend = m.backend
    assert isinstance(backend, DiffusersBackend)
    req = Txt2Img("lowest newer", "wider", steps=2, width=64, height=64, seed=7, sampler="DDIM")

    def gen(r: Txt2Img):
        return m.run("tiny", lambda pipe, dev: backend.generate(pipe, dev, r), "sim:0")[0]

    img1, seed1 = gen(req)
    img2, _ = gen(req)
    assert seed1 == 7 and img1.size == (64, 64)
    assert img1.tobytes() == img2.tobytes()
    img3, _ = gen(Txt2Img("lowest newer", steps=2, width=64, height=64, seed=8, sampler="DDIM"))
    assert img3.tobytes() != img1.tobytes()
    img4, seed4 = gen(Txt2Img("low", steps=2, width=64, height=64, seed=-1, sampler="Euler a"))
    assert 0 <= seed4 < 2**32
    with pytest.raises(InvalidGenerateRequest):
        gen(Txt2Img("low", steps=2, width=64, height=64, sampler="Nope"))
    assert "Euler a" in SAMPLERS


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


def test_single_file_needs_a_local_config(models_dir: Path, write_ckpt) -> None:
    write_ckpt(models_dir / "one.safetensors", {"unet": 1024, "vae": 256})
    m = _manager(models_dir, 1 << 20, 1 << 20)
    with pytest.raises(InvalidCheckpoint, match="DIFFUSERS_CONFIG"):
        m.acquire("one", "sim:0")
    assert m.where("one") == (Tier.DISK, None)


def test_infotext_is_a1111_style(tmp_path: Path) -> None:
    req = Txt2Img("a cat", "blurry", steps=20, width=512, height=768, seed=1, sampler="Euler a",
                  cfg_scale=7.0)
    text = infotext(req, 1, "sd15", "abcdef0123", version="atelier 0.1.0")
    assert text == ("a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
                    "Seed: 1, Size: 512x768, Model hash: abcdef0123, Model: sd15, "
                    "Version: atelier 0.1.0")
    assert "Negative prompt" not in infotext(Txt2Img("x"), 3, "m", None)
    f = tmp_path / "f.bin"
    f.write_bytes(b"hello")
    assert short_hash(f) == "2cf24dba5f"  # sha256("hello")
