"""Refuse bodies that are not what was asked for.

A validator sees the response's Content-Type first, then the first bytes of the body as
soon as they arrive (the probe's bytes: an HTML login page fails in one round trip,
before a file exists), and finally the finished file.

What is expected decides what is refused. By default the name tells (``validator_for``):

    .safetensors .sft        Safetensors  a model, plus the header checked against the size
    .json                    JsonFile     JSON, not an HTML page; the file must parse
    .txt .md .yaml .py ...   TextFile     text, not an HTML document
    .html .htm .xml .svg     (nothing)    asked for by name, so a page is what is wanted
    anything else            ModelFile    binary: no HTML, XML or JSON page, no page
                                          Content-Type. This includes names without an
                                          extension: Civitai's ``/api/download/models/1002``
                                          saved as ``1002``

A caller that knows better passes the kind: ``"model"``, ``"safetensors"``, ``"json"``,
``"text"`` or ``"any"`` (a whole Hugging Face repo has config JSON beside its weights).

A page is recognised by its bytes, not only by its Content-Type (storage often says
``application/octet-stream`` for everything): text (valid UTF-8 without control bytes)
whose first non-blank character opens markup (``<``) or JSON (``{``, ``[``). Model files
are binary within their first bytes: safetensors' 8-byte header length has zero bytes
even when its low byte happens to be ``{``; pickles start with 0x80, torch zips with
``PK\x03\x04``, GGUF with ``GGUF\x03\x00``, ONNX with a protobuf tag byte.

The safetensors check is O(1) in the file size: 8-byte little-endian header length N,
N bytes of JSON, tensor offsets contiguous from 0 with ``end - begin == prod(shape) *
bits / 8``, and ``8 + N + last_end == file size`` (safetensors' own reader rules:
HeaderTooLarge, InvalidOffset, MetadataIncompleteBuffer).
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
TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".yaml", ".yml", ".py", ".toml", ".cfg",
                 ".ini", ".csv", ".tsv", ".jsonl", ".jinja", ".j2", ".gitattributes",
                 ".gitignore"}
PAGE_SUFFIXES = {".html", ".htm", ".xhtml", ".xml", ".svg"}
KINDS = ("model", "safetensors", "json", "text", "any")
MAX_HEADER = 100_000_000
MAX_JSON_CHECK = 256 * 1024 * 1024  # bigger .json files are taken as they come
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_PAGE_TYPES = (*_HTML_TYPES, "application/json", "text/json", "application/problem+json",
               "application/xml", "text/xml")
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")


class Validator(Protocol):
    def check_content_type(self, content_type: str, name: str, head: bytes = b"") -> None:
        """``head``: the body's first bytes when already known, to quote what it says."""
        ...

    def check_start(self, head: bytes, name: str, size: int | None) -> None: ...
    def check_file(self, path: Path, name: str) -> None: ...


def _text_start(head: bytes) -> str | None:
    """The first bytes as text without leading blanks, or None when they are binary."""
    sample = head[:1024]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(sample) - 3:  # not just a character cut at the sample's end
            return None
        text = sample[:e.start].decode("utf-8")
    if any(c < " " and c not in "\t\n\r\f" for c in text):
        return None
    return text.lstrip("\ufeff \t\r\n\f")


def page_kind(head: bytes) -> str | None:
    """"an HTML page", "an XML document" or "a JSON document" when ``head`` opens one."""
    text = _text_start(head)
    if not text:
        return None
    low = text[:64].lower().encode()
    if low.startswith(_HTML_STARTS):
        return "an HTML page"
    if low.startswith(b"<?xml") or (low.startswith(b"<") and len(low) > 1
                                     and (low[1:2].isalpha() or low[1:2] in b"!?")):
        return "an HTML page" if b"<html" in text[:2048].lower().encode() else \
            "an XML document"
    if text[0] in "{[":
        rest = text[1:].lstrip()
        if not rest or rest[0] in '"{[}]' or rest[0].isdigit() or rest[:4] in (
                "true", "null") or rest[:5] == "false":
            return "a JSON document"
    return None


def _refuse(name: str, what: str, head: bytes, expected: str, ctype: str = "",
            ) -> NotAModel:
    from .transport import page_excerpt

    says = page_excerpt(head, ctype) if head else ""
    detail = ", ".join(x for x in (ctype, f'"{says}"' if says else "") if x)
    said = f" ({detail})" if detail else ""
    return NotAModel(f"{name}: the server sent {what}{said} instead of {expected}, probably "
                     f"a login or error page (check the token, or whether the file needs a "
                     f"login)")


def _kind_of_type(ctype: str) -> str:
    if "html" in ctype:
        return "an HTML page"
    return "a JSON document" if "json" in ctype else "an XML document"


class ModelFile:
    """Binary weights (or any binary file): no page of any kind."""

    expected = "a model file"

    def check_content_type(self, content_type: str, name: str, head: bytes = b"") -> None:
        ctype = content_type.split(";")[0].strip().lower()
        if ctype in _PAGE_TYPES:
            raise _refuse(name, _kind_of_type(ctype), head, self.expected, ctype)

    def check_start(self, head: bytes, name: str, size: int | None) -> None:
        kind = page_kind(head)
        if kind:
            raise _refuse(name, kind, head, self.expected)

    def check_file(self, path: Path, name: str) -> None:
        pass


class Safetensors(ModelFile):
    expected = "a safetensors file"

    def check_start(self, head: bytes, name: str, size: int | None) -> None:
        super().check_start(head, name, size)
        if len(head) >= 8:
            (n,) = struct.unpack("<Q", head[:8])
            if n > MAX_HEADER or (size is not None and 8 + n > size):
                raise NotAModel(f"{name}: not a safetensors file (header length {n} is "
                                f"impossible for {size} bytes; starts with {head[:16]!r})")

    def check_file(self, path: Path, name: str) -> None:
        check_safetensors(path, name)


class TextFile:
    """Text asked for by name (a README, a YAML config): only an HTML document is wrong."""

    expected = "a text file"

    def check_content_type(self, content_type: str, name: str, head: bytes = b"") -> None:
        ctype = content_type.split(";")[0].strip().lower()
        if ctype in _HTML_TYPES:
            raise _refuse(name, "an HTML page", head, self.expected, ctype)

    def check_start(self, head: bytes, name: str, size: int | None) -> None:
        text = _text_start(head)
        if text and text[:64].lower().encode().startswith((b"<!doctype html", b"<html")):
            raise _refuse(name, "an HTML page", head, self.expected)

    def check_file(self, path: Path, name: str) -> None:
        pass


class JsonFile(TextFile):
    """A JSON file asked for (``config.json``): it must be JSON, not a page."""

    expected = "a JSON file"

    def check_start(self, head: bytes, name: str, size: int | None) -> None:
        kind = page_kind(head)
        if kind and kind != "a JSON document":
            raise _refuse(name, kind, head, self.expected)

    def check_file(self, path: Path, name: str) -> None:
        if path.stat().st_size > MAX_JSON_CHECK:
            return
        try:
            with open(path, "rb") as f:
                json.load(f)
        except (UnicodeDecodeError, ValueError):
            raise NotAModel(f"{name}: the body is not valid JSON (cut short, or not the "
                            f"file asked for)") from None


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


def validator_for(name: str, expect: str | None = None) -> Validator | None:
    """The validator for a file called ``name``, or for the kind the caller ``expect``\s."""
    if expect is not None:
        if expect not in KINDS:
            raise ValueError(f"validator: expected one of {', '.join(KINDS)}, got {expect!r}")
        kinds: dict[str, type[ModelFile] | type[TextFile]] = {
            "model": ModelFile, "safetensors": Safetensors, "json": JsonFile,
            "text": TextFile}
        return kinds[expect]() if expect in kinds else None
    base = Path(name).name.lower()
    suffix = Path(base).suffix or (base if base.startswith(".") else "")
    if suffix in (".safetensors", ".sft"):
        return Safetensors()
    if suffix == ".json":
        return JsonFile()
    if suffix in TEXT_SUFFIXES:
        return TextFile()
    if suffix in PAGE_SUFFIXES:
        return None
    return ModelFile()
