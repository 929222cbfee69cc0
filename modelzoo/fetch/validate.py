"""Refuse bodies that are not what they claim to be.

A validator sees the response's Content-Type first, then the first bytes of the file as
soon as they arrive (so an HTML login page fails in one round trip, not after 6 GB), and
finally the finished file. The safetensors check is O(1) in the file size: 8-byte
little-endian header length N, N bytes of JSON, tensor offsets contiguous from 0 with
``end - begin == prod(shape) * bits / 8``, and ``8 + N + last_end == file size``
(safetensors' own reader rules: HeaderTooLarge, InvalidOffset, MetadataIncompleteBuffer).
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Protocol

from ..errors import NotAModel

MODEL_SUFFIXES = {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".sft"}
MAX_HEADER = 100_000_000
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


class Validator(Protocol):
    def check_content_type(self, content_type: str, name: str) -> None: ...
    def check_start(self, head: bytes, name: str, size: int | None) -> None: ...
    def check_file(self, path: Path, name: str) -> None: ...


def _looks_like_page(head: bytes) -> str | None:
    text = head[:512].lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")):
        return "an HTML page"
    if text.startswith((b"{", b"[")) and b'"' in text[:64]:
        return "a JSON document"
    return None


class ModelFile:
    """For model weights: no HTML/JSON bodies posing as a model."""

    def check_content_type(self, content_type: str, name: str) -> None:
        ctype = content_type.split(";")[0].strip().lower()
        if ctype in ("text/html", "application/xhtml+xml", "application/json"):
            raise NotAModel(
                f"{name}: the server sent {ctype} instead of a model file, probably a login "
                f"or error page (check the token, or whether the model needs a login)")

    def check_start(self, head: bytes, name: str, size: int | None) -> None:
        kind = _looks_like_page(head)
        if kind:
            raise NotAModel(f"{name}: the body is {kind}, not a model file "
                            f"(starts with {head[:40]!r})")

    def check_file(self, path: Path, name: str) -> None:
        pass


class Safetensors(ModelFile):
    def check_start(self, head: bytes, name: str, size: int | None) -> None:
        super().check_start(head, name, size)
        if len(head) >= 8:
            (n,) = struct.unpack("<Q", head[:8])
            if n > MAX_HEADER or (size is not None and 8 + n > size):
                raise NotAModel(f"{name}: not a safetensors file (header length {n} is "
                                f"impossible for {size} bytes; starts with {head[:16]!r})")

    def check_file(self, path: Path, name: str) -> None:
        check_safetensors(path, name)


def check_safetensors(path: Path, name: str | None = None) -> dict[str, object]:
    """Validate a safetensors file's header against its size; returns the header."""
    name = name or path.name
    size = os.stat(path).st_size
    if size < 8:
        raise NotAModel(f"{name}: {size} bytes is too small for a safetensors file")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER or 8 + n > size:
            raise NotAModel(f"{name}: safetensors header length {n} does not fit in a "
                            f"{size}-byte file (truncated, or not a safetensors file)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise NotAModel(f"{name}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise NotAModel(f"{name}: safetensors header is not a JSON object")
    spans = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            bits = DTYPE_BITS[info["dtype"]]
            count = math.prod(int(d) for d in info["shape"])
        except (KeyError, TypeError, ValueError):
            raise NotAModel(f"{name}: tensor {key!r} has a malformed entry") from None
        if end - begin != count * bits // 8:
            raise NotAModel(f"{name}: tensor {key!r} spans {end - begin} bytes, "
                            f"its shape needs {count * bits // 8}")
        spans.append((begin, end))
    spans.sort()
    at = 0
    for begin, end in spans:
        if begin != at:
            raise NotAModel(f"{name}: tensor data is not contiguous at offset {at}")
        at = end
    if 8 + n + at != size:
        raise NotAModel(f"{name}: header describes {8 + n + at} bytes but the file has {size} "
                        f"(incomplete download?)")
    return header


def validator_for(name: str) -> Validator | None:
    suffix = Path(name).suffix.lower()
    if suffix in (".safetensors", ".sft"):
        return Safetensors()
    if suffix in MODEL_SUFFIXES:
        return ModelFile()
    return None
