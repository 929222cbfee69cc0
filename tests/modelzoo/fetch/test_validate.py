"""Bodies that are not what they claim: the safetensors header check."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from safetensors import SafetensorError, safe_open

from modelzoo.errors import NotAModel
from modelzoo.fetch.validate import (
    JsonFile,
    ModelFile,
    Safetensors,
    check_safetensors,
    validator_for,
)


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
    assert type(validator_for("1002")) is ModelFile  # no extension: still no pages


# ---- what "not a model" means, whatever the name ------------------------------------

SAFETENSORS_WITH_BRACE = struct.pack("<Q", 0x7B) + b'{"w":{"dtype":"U8"'  # length 123


@pytest.mark.parametrize("head", [
    b"PK\x03\x04\x14\x00\x00\x00\x08\x00archive/data.pkl",   # torch zip (.pt, .bin)
    b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.",              # pickle (.ckpt)
    b"GGUF\x03\x00\x00\x00\x22\x01\x00\x00",                  # gguf
    b"\x08\x07\x12\x07pytorch\x1a\x032.1:\xa4\x01",           # onnx protobuf
    SAFETENSORS_WITH_BRACE,  # a header length whose low byte is "{"
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",                   # an image in a repo
])
def test_binary_files_pass_whatever_their_name(head: bytes) -> None:
    for name in ("1002", "m.safetensors" if head is SAFETENSORS_WITH_BRACE else "m.bin",
                 "model.ckpt", "weights"):
        v = validator_for(name)
        assert v is not None
        v.check_start(head, name, None)


@pytest.mark.parametrize("ctype, body, says", [
    ("text/html; charset=utf-8", b"<!DOCTYPE html><title>Sign in</title>", "Sign in"),
    ("application/json", b'{"error": "Unauthorized", "message": "log in"}', "Unauthorized"),
    ("application/xml", b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>",
     "AccessDenied"),
])
def test_pages_are_refused_under_a_bare_name(ctype: str, body: bytes, says: str) -> None:
    v = validator_for("1002")  # Civitai's /api/download/models/1002 without a filename
    assert v is not None
    with pytest.raises(NotAModel, match=says):  # the page is quoted when its bytes are known
        v.check_content_type(ctype, "1002", body)
    with pytest.raises(NotAModel, match=ctype.split(";")[0]):
        v.check_content_type(ctype, "1002")
    with pytest.raises(NotAModel, match=says):  # the same body sent as octet-stream
        v.check_start(body, "1002", len(body))


def test_whitespace_or_a_bom_before_a_page_still_counts_as_a_page() -> None:
    v = validator_for("weights")
    assert v is not None
    with pytest.raises(NotAModel, match="HTML page"):
        v.check_start(b"\xef\xbb\xbf\r\n  <html><body>denied</body></html>", "weights", None)
    with pytest.raises(NotAModel, match="JSON"):
        v.check_start(b'\n[{"detail": "not found"}]', "weights", None)


def test_json_and_text_files_of_a_repo_are_accepted_when_asked_for(tmp_path: Path) -> None:
    cfg = validator_for("unet/config.json")
    assert cfg is not None
    cfg.check_content_type("application/json", "config.json")
    cfg.check_start(b'{"_class_name": "UNet2DConditionModel"}', "config.json", None)
    p = tmp_path / "config.json"
    p.write_text('{"_class_name": "UNet2DConditionModel"}')
    cfg.check_file(p, "config.json")
    with pytest.raises(NotAModel, match="HTML page"):  # a login page is still refused
        cfg.check_start(b"<!doctype html><title>Sign in</title>", "config.json", None)
    with pytest.raises(NotAModel, match="text/html"):
        cfg.check_content_type("text/html", "config.json")
    p.write_text('{"_class_name": "UNet2D')  # cut short
    with pytest.raises(NotAModel, match="not valid JSON"):
        cfg.check_file(p, "config.json")
    readme = validator_for("README.md")
    assert readme is not None
    readme.check_start(b'<p align="center"><img src="x.png"></p>\n# Model', "README.md", None)
    with pytest.raises(NotAModel, match="HTML page"):
        readme.check_start(b"<!DOCTYPE html><html>", "README.md", None)


def test_the_caller_chooses_what_is_expected() -> None:
    as_json = validator_for("1002", "json")
    assert isinstance(as_json, JsonFile)
    as_json.check_start(b'{"ok": true}', "1002", None)
    assert validator_for("page.html") is None  # an HTML file asked for by name
    assert validator_for("m.safetensors", "any") is None
    assert isinstance(validator_for("x", "safetensors"), Safetensors)
    with pytest.raises(ValueError, match="expected one of"):
        validator_for("x", "zip")
