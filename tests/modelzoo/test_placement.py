"""Folders by type (every Civitai type), base-model sub-folders, destination checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelzoo.errors import NotAllowed
from modelzoo.placement import clean, folder_for, real_path

TYPES = {
    "Checkpoint": "models/Stable-diffusion", "LORA": "models/Lora", "LoCon": "models/Lora",
    "DoRA": "models/Lora", "TextualInversion": "models/embeddings", "VAE": "models/VAE",
    "Controlnet": "models/ControlNet", "Upscaler": "models/ESRGAN",
    "Hypernetwork": "models/hypernetworks", "Diffusers": "models/diffusers",
    "Other": "models/Other", "Wildcards": "models/Other",
}


@pytest.mark.parametrize(("kind", "folder"), TYPES.items())
def test_every_type_has_its_webui_folder(kind: str, folder: str) -> None:
    assert folder_for(kind, "SDXL 1.0") == folder


def test_base_model_subfolder_and_user_models_root() -> None:
    assert folder_for("LORA", "SDXL 1.0", base_subfolder=True) == "models/Lora/SDXL 1.0"
    assert folder_for("LORA", None, base_subfolder=True) == "models/Lora"
    assert folder_for("Checkpoint", "Flux.1 D", "users/ann/models", True) == \
        "users/ann/models/Stable-diffusion/Flux.1 D"
    assert folder_for("Diffusers", "SDXL 1.0", base_subfolder=True) == "models/diffusers"


@pytest.mark.parametrize("bad", ["../x", "models/../../etc", "models/.atelier", "/abs/../x",
                                 "a/\x00b", "models/.hidden/x"])
def test_clean_refuses_traversal_and_hidden(bad: str) -> None:
    with pytest.raises(NotAllowed):
        clean(bad)


def test_clean_normalises() -> None:
    assert clean("/models//Lora/./sub/") == "models/Lora/sub"
    assert clean("") == ""


def test_real_path_refuses_symlinks_out_of_the_allowed_folder(tmp_path: Path) -> None:
    root = tmp_path / "nas"
    (root / "users/ann/models").mkdir(parents=True)
    (root / "models/Lora").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, root / "users/ann/models/escape")
    os.symlink(root / "models", root / "users/ann/models/shared")
    assert real_path(root, "users/ann/models/Lora/x", "users/ann/models") == \
        root.resolve() / "users/ann/models/Lora/x"
    for sneaky in ("users/ann/models/escape/x", "users/ann/models/shared/Lora/x"):
        with pytest.raises(NotAllowed):
            real_path(root, sneaky, "users/ann/models")
    with pytest.raises(NotAllowed):
        real_path(root, "models/Lora/x", "users/ann/models")
