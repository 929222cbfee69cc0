from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from modelzoo.errors import InvalidCheckpoint
from modelzoo.residency.footprint import (
    ReserveRule,
    file_footprint,
    folder_footprint,
    footprint,
    read_header,
)


def test_sizes_per_component_at_run_dtype(tmp_path: Path, write_ckpt) -> None:
    from .conftest import write_safetensors  # type: ignore[import-not-found]

    p = write_safetensors(tmp_path / "m.safetensors", {
        "model.diffusion_model.w": ("F32", [10, 10]),
        "first_stage_model.w": ("F16", [8]),
        "cond_stage_model.w": ("BF16", [6]),
        "conditioner.embedders.1.w": ("F32", [4]),
        "alphas_cumprod": ("F64", [5]),
        "position_ids": ("I64", [3]),
        "model_ema.w": ("F32", [1000]),
    })
    fp = file_footprint(p, dtype="fp16")
    assert fp.components == {"unet": 200, "vae": 16, "text_encoder": 12, "text_encoder_2": 8,
                             "other": 10 + 24}  # ints keep their size; EMA is left out
    assert fp.tensors == 7 and fp.file_bytes == p.stat().st_size
    assert file_footprint(p, dtype="fp32").components["unet"] == 400
    assert file_footprint(p, overrides={"vae": "fp32"}).components["vae"] == 32
    with pytest.raises(ValueError):
        file_footprint(p, dtype="int4")


def test_metadata_is_read(tmp_path: Path) -> None:
    from .conftest import write_safetensors  # type: ignore[import-not-found]

    p = write_safetensors(tmp_path / "m.safetensors", {"a": ("F16", [2])},
                          metadata={"ss_base_model": "sdxl"})
    tensors, meta, size = read_header(p)
    assert meta == {"ss_base_model": "sdxl"} and tensors[0].shape == (2,)


def _bad(tmp_path: Path, data: bytes) -> str:
    p = tmp_path / "bad.safetensors"
    p.write_bytes(data)
    with pytest.raises(InvalidCheckpoint) as info:
        read_header(p)
    assert info.value.status == 422 and isinstance(info.value, ValueError)
    return info.value.message


def test_html_posing_as_safetensors(tmp_path: Path) -> None:
    msg = _bad(tmp_path, b"<!DOCTYPE html>\n<html><head><title>Sign in - Civitai</title>")
    assert "HTML page" in msg and "not a model" in msg
    assert "text file" in _bad(tmp_path, b'{"error": "Unauthorized", "status": 401}')


def test_truncated_download(tmp_path: Path, write_ckpt) -> None:
    good = write_ckpt(tmp_path / "g.safetensors", {"unet": 4096})
    data = good.read_bytes()
    assert "truncated" in _bad(tmp_path, data[:-100])
    assert "truncated" in _bad(tmp_path, data[:20])
    assert "too short" in _bad(tmp_path, data[:5])


def test_other_garbage(tmp_path: Path) -> None:
    assert "100 MiB" in _bad(tmp_path, struct.pack("<Q", 1 << 40) + b"\x00" * 64)
    raw = b"[1, 2]  "
    assert "not a JSON object" in _bad(tmp_path, struct.pack("<Q", len(raw)) + raw)
    raw = b"\xff\xfe garbage"
    assert "not JSON" in _bad(tmp_path, struct.pack("<Q", len(raw)) + raw)
    raw = json.dumps({"w": {"dtype": "F16", "shape": [4], "data_offsets": [0, 2]}}).encode()
    assert "do not match" in _bad(tmp_path, struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    raw = json.dumps({"w": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 2]}}).encode()
    assert "unknown dtype" in _bad(tmp_path, struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    raw = json.dumps({"__metadata__": {}}).encode()
    assert "no tensors" in _bad(tmp_path, struct.pack("<Q", len(raw)) + raw)


def test_diffusers_folder(tmp_path: Path, write_ckpt) -> None:
    from .conftest import write_safetensors  # type: ignore[import-not-found]

    root = tmp_path / "pipe"
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text("{}")
    write_safetensors(root / "unet" / "diffusion_pytorch_model.safetensors",
                      {"conv.w": ("F32", [100])})
    write_safetensors(root / "unet" / "diffusion_pytorch_model.fp16.safetensors",
                      {"conv.w": ("F16", [100])})
    (root / "vae").mkdir()
    write_safetensors(root / "vae" / "diffusion_pytorch_model.safetensors",
                      {"w": ("F32", [10])})
    (root / "scheduler").mkdir()
    fp = footprint(root, dtype="fp16")
    assert fp.components == {"unet": 200, "vae": 20}  # the fp16 variant is not counted twice
    with pytest.raises(InvalidCheckpoint):
        folder_footprint(tmp_path)


def test_reserve_grows_with_resolution_and_batch() -> None:
    rule = ReserveRule()
    assert rule.bytes_for(512, 512) > int(1.2 * (1 << 30))
    assert rule.bytes_for(1024, 1024) > rule.bytes_for(512, 512)
    assert rule.bytes_for(512, 512, batch=4) > rule.bytes_for(512, 512, batch=2)
    assert ReserveRule(1, 2, 0).bytes_for(4096, 4096, 8) == 3
