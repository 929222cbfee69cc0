"""Fixtures for the residency tests: synthetic safetensors files, simulated devices.

No download ever: HF_HUB_OFFLINE is forced, and every model is written by the test.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelzoo.residency.backends.tensors import TensorsBackend
from modelzoo.residency.catalog import ModelCatalog
from modelzoo.residency.devices import SimulatedDevice
from modelzoo.residency.footprint import ReserveRule
from modelzoo.residency.manager import ResidencyManager

KIB = 1024

# Sizes are bytes of fp16 weights per component.
Layout = dict[str, int]
PREFIX = {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
          "text_encoder": "cond_stage_model.", "text_encoder_2": "conditioner.embedders.1.",
          "other": "", "ema": "model_ema."}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for key in [k for k in __import__("os").environ if k.startswith("ATELIER_GPU_")]:
        monkeypatch.delenv(key)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]],
                      metadata: dict[str, str] | None = None, fill: int = 1) -> Path:
    """Write a real safetensors file: name -> (dtype, shape); data is a byte pattern."""
    from modelzoo.residency.footprint import ITEMSIZE

    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = ITEMSIZE[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.write(bytes([fill % 256]) * offset)
    return path


def write_checkpoint(path: Path, layout: Layout, dtype: str = "F16", seed: int = 1) -> Path:
    """An A1111-style checkpoint whose components hold ``layout`` bytes at fp16."""
    tensors: dict[str, tuple[str, list[int]]] = {}
    for comp, nbytes in layout.items():
        tensors[f"{PREFIX[comp]}weight"] = (dtype, [nbytes // 2])  # fp16 elements at run
    return write_safetensors(path, tensors, fill=seed)


@pytest.fixture(scope="session")
def write_ckpt() -> Callable[..., Path]:
    return write_checkpoint


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    d = tmp_path / "models" / "Stable-diffusion"
    d.mkdir(parents=True)
    return d


@pytest.fixture
def make_model(models_dir: Path) -> Callable[..., Path]:
    def make(name: str, nbytes: int = 64 * KIB, *, layout: Layout | None = None,
             seed: int = 1) -> Path:
        layout = layout or {"unet": nbytes * 3 // 4, "vae": nbytes // 8,
                            "text_encoder": nbytes - nbytes * 3 // 4 - nbytes // 8}
        return write_checkpoint(models_dir / f"{name}.safetensors", layout, seed=seed)

    return make


class World:
    """A manager over simulated GPUs and a simulated RAM tier, with real CPU tensors."""

    def __init__(self, models_dir: Path, gpus: list[int], ram: int, *, reserve: int = 0,
                 policy: str = "cost") -> None:
        self.gpus = [SimulatedDevice(f"sim:{i}", cap) for i, cap in enumerate(gpus)]
        self.ram = SimulatedDevice("ram", ram, kind="ram")
        self.reserve = reserve
        self.catalog = ModelCatalog(models_dir)
        self.manager = ResidencyManager(
            TensorsBackend(), self.gpus, self.ram, self.catalog,
            reserve=ReserveRule(base=reserve, extra=0, per_megapixel=0), policy=policy)

    def tiers(self) -> dict[str, tuple[str, str | None]]:
        return {e.name: (e.tier.value, e.device) for e in self.manager.entries()
                if e.tier.value != "disk"}

    def check_ledgers(self) -> None:
        """Every simulated byte is a model the manager says is there, and no more."""
        for g in self.gpus:
            assert g.used == self.manager.ours(g.name), g.name
            assert g.peak <= g.capacity
        assert self.ram.used == self.manager.ours("ram")


@pytest.fixture
def world(models_dir: Path) -> Iterator[Callable[..., World]]:
    yield lambda gpus, ram, **kw: World(models_dir, gpus, ram, **kw)


TINY_VOCAB = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>",
              "t</w>", "low</w>", "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>",
              "<|startoftext|>", "<|endoftext|>"]


def build_tiny_pipeline(folder: Path, seed: int = 0) -> Path:
    """A 2 M-parameter StableDiffusionPipeline from configs (diffusers' dummy components,
    with transformers' 23-token CLIP vocab instead of a download), saved to ``folder``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok_dir = folder.parent / f".tok-{folder.name}"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(TINY_VOCAB)}))
    (tok_dir / "merges.txt").write_text("#version: 0.2\nl o\nlo w</w>\ne r</w>\n")
    tok = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                        unk_token="<unk>", model_max_length=77)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=32,
                                in_channels=4, out_channels=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=32)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4)
    te = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=32,
                                      intermediate_size=37, layer_norm_eps=1e-5,
                                      num_attention_heads=4, num_hidden_layers=5,
                                      pad_token_id=1, vocab_size=1000))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=te, tokenizer=tok,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny pipeline saved once per session; tests copy it where they need it."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "tiny")


def outputs_opener(outputs: Path, *sub: str) -> Callable[[object], int]:
    """What the service edge passes as ``open_outputs``: a directory descriptor of the
    user's outputs folder (here ``outputs/<name>/<sub...>``, made if missing)."""
    import os

    def open_outputs(user: object) -> int:
        folder = outputs.joinpath(user.name, *sub)
        folder.mkdir(parents=True, exist_ok=True)
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    return open_outputs
