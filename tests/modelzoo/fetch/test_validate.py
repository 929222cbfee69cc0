"""Bodies that are not what they claim: the safetensors header check."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from safetensors import SafetensorError, safe_open

from modelzoo.errors import NotAModel
from modelzoo.fetch.validate import ModelFile, Safetensors, check_safetensors, validator_for


def test_valid_file_passes_and_agrees_with_the_safetensors_library(tmp_path: Path,
                                                                   tools) -> None:
    p = tmp_path / "ok.safetensors"
    p.write_bytes(tools.make_safetensors(10_000))
    header = check_safetensors(p)
    assert "w" in header
    with safe_open(str(p), framework="numpy") as f:  # the real reader accepts it too
        assert list(f.keys()) == ["w"]


def test_truncated_file_is_refused_like_the_library_does(tmp_path: Path, tools) -> None:
    p = tmp_path / "cut.safetensors"
    p.write_bytes(tools.make_safetensors(10_000)[:-100])
    with pytest.raises(NotAModel, match="incomplete download"):
        check_safetensors(p)
    with pytest.raises(SafetensorError):
        safe_open(str(p), framework="numpy")


def test_html_page_named_safetensors_is_refused(tmp_path: Path, tools) -> None:
    p = tmp_path / "login.safetensors"
    p.write_bytes(tools.login_page)
    with pytest.raises(NotAModel, match="does not fit"):
        check_safetensors(p)
    with pytest.raises(NotAModel, match="HTML page"):
        Safetensors().check_start(tools.login_page, "m.safetensors", len(tools.login_page))
    with pytest.raises(NotAModel, match="JSON document"):
        ModelFile().check_start(b'{"error": "Unauthorized"}', "m.ckpt", 25)


def test_content_type_of_a_page_is_refused() -> None:
    with pytest.raises(NotAModel, match="text/html"):
        ModelFile().check_content_type("text/html; charset=utf-8", "m.safetensors")
    ModelFile().check_content_type("application/octet-stream", "m.safetensors")
    ModelFile().check_content_type("binary/octet-stream", "m.safetensors")


def test_tensor_size_must_match_its_shape(tmp_path: Path) -> None:
    header = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}'
    header += b" " * (-len(header) % 8)
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    with pytest.raises(NotAModel, match="shape needs 16"):
        check_safetensors(p)


def test_validator_by_extension() -> None:
    assert isinstance(validator_for("a.safetensors"), Safetensors)
    assert type(validator_for("a.ckpt")) is ModelFile
    assert validator_for("readme.txt") is None
