"""Model kinds told apart by their safetensors headers alone (synthetic files with the
key names and shapes of the real kinds)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from modelzoo.sniff import parse_header, sniff, sniff_bytes

from .standins import files

CASES: list[tuple[str, Callable[[], bytes], str, str | None]] = [
    ("sd15 checkpoint", files.sd15_checkpoint, "Checkpoint", "SD 1.5"),
    ("sdxl checkpoint", files.sdxl_checkpoint, "Checkpoint", "SDXL 1.0"),
    ("flux dev", files.flux_checkpoint, "Checkpoint", "Flux.1 D"),
    ("flux schnell", lambda: files.flux_checkpoint(dev=False), "Checkpoint", "Flux.1 S"),
    ("kohya lora sd15", files.lora_kohya_sd15, "LORA", "SD 1.5"),
    ("kohya lora sdxl", files.lora_kohya_sdxl, "LORA", "SDXL 1.0"),
    ("peft lora sdxl", files.lora_peft_sdxl, "LORA", "SDXL 1.0"),
    ("flux lora", files.lora_flux, "LORA", "Flux.1 D"),
    ("locon", files.locon, "LoCon", "SD 1.5"),
    ("loha", files.loha, "LoCon", "SDXL 1.0"),
    ("lokr", files.lokr, "LoCon", None),
    ("dora", files.dora, "DoRA", "SDXL 1.0"),
    ("ti sd15", files.ti_sd15, "TextualInversion", "SD 1.5"),
    ("ti sdxl", files.ti_sdxl, "TextualInversion", "SDXL 1.0"),
    ("vae", files.vae, "VAE", None),
    ("flux vae", files.vae_flux, "VAE", "Flux.1 D"),
    ("controlnet sd15", files.controlnet_sd15, "Controlnet", "SD 1.5"),
    ("controlnet sdxl diffusers", files.controlnet_sdxl_diffusers, "Controlnet", "SDXL 1.0"),
    ("esrgan", files.upscaler, "Upscaler", None),
]


@pytest.mark.parametrize(("label", "make", "kind", "base"), CASES, ids=[c[0] for c in CASES])
def test_kinds(label: str, make: Callable[[], bytes], kind: str, base: str | None) -> None:
    got = sniff_bytes(make())
    assert got is not None
    assert (got.type, got.base_model) == (kind, base), got.why


def test_metadata_decides_the_base_when_keys_do_not() -> None:
    data = files.safetensors({"lora_unet_x.lora_down.weight": ("F16", [4, 8])},
                             {"ss_base_model_version": "sd_v1"})
    got = sniff_bytes(data)
    assert got is not None and (got.type, got.base_model) == ("LORA", "SD 1.5")
    data = files.safetensors({"w": ("F16", [2])}, {"modelspec.architecture":
                                                   "stable-diffusion-xl-v1-base"})
    got = sniff_bytes(data)
    assert got is not None and (got.type, got.base_model) == ("Checkpoint", "SDXL 1.0")


def test_unknown_and_broken_headers() -> None:
    got = sniff_bytes(files.safetensors({"some.tensor": ("F32", [3])}))
    assert got is not None and got.type == "Other"
    assert sniff_bytes(b"<!DOCTYPE html><html>login</html>") is None
    assert sniff_bytes(b"\x00" * 4) is None
    assert sniff_bytes(struct.pack("<Q", 10) + b"{}") is None  # cut short
    assert sniff_bytes(struct.pack("<Q", 4) + b"[1] ") is None  # not an object
    assert parse_header(files.vae())["decoder.conv_in.weight"]["shape"] == [8, 4, 3, 3]
    assert sniff({"__metadata__": {}}).type == "Other"
