"""How many bytes a model will take, known before loading it.

A safetensors file starts with its own table of contents::

    [8 bytes: N, little-endian u64][N bytes: JSON header][tensor data ...]
    header = {"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]},
              ..., "__metadata__": {...}}

so sizes come from the header alone (milliseconds, even on NFS), at the dtype the model
will *run* in: A1111 and diffusers half the float weights on a GPU, and keep integer
buffers as they are. The same read validates the file: a truncated download or an HTML
login page saved as ``model.safetensors`` is refused with a message saying which.

Components follow the A1111/LDM key prefixes (``model.diffusion_model.`` is the UNet,
``first_stage_model.`` the VAE, ``cond_stage_model.``/``conditioner.embedders.N`` the text
encoders) or, for a diffusers folder, the component sub-folders. ``model_ema.`` weights are
left out: the WebUI's configs load with ``use_ema: False``.

Stdlib only: the A1111 adapter imports this inside the WebUI process.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidCheckpoint

GIB = 1 << 30
MAX_HEADER = 100 * (1 << 20)  # the safetensors format's own limit

ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
            "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1,
            "BOOL": 1}
FLOATS = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
RUN_DTYPES = {"fp32": 4, "fp16": 2, "bf16": 2}

# (prefix, component); the first match wins, None drops the tensor
LDM_PREFIXES: tuple[tuple[str, str | None], ...] = (
    ("model.diffusion_model.", "unet"),
    ("first_stage_model.", "vae"),
    ("cond_stage_model.", "text_encoder"),
    ("conditioner.embedders.0.", "text_encoder"),
    ("conditioner.embedders.1.", "text_encoder_2"),
    ("model_ema.", None),
)
DIFFUSERS_COMPONENTS = ("unet", "transformer", "vae", "text_encoder", "text_encoder_2",
                        "text_encoder_3", "image_encoder", "controlnet", "prior")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class Footprint:
    """Bytes per component at the run dtype, and what the files hold on disk."""

    components: dict[str, int]
    file_bytes: int
    dtype: str = "fp16"
    tensors: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def weights(self) -> int:
        return sum(self.components.values())


def _refuse(path: Path, why: str) -> InvalidCheckpoint:
    return InvalidCheckpoint(f"{path.name}: {why}", path=path.name)


def read_header(path: str | os.PathLike[str]) -> tuple[list[TensorInfo], dict[str, str], int]:
    """Parse and check a safetensors header: (tensors, metadata, file size).

    Raises :class:`InvalidCheckpoint` for anything a loader would choke on later.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise _refuse(p, f"only {size} bytes: too short to be safetensors (truncated?)")
            if head[4:] != b"\0\0\0\0" and _looks_like_text(head + f.read(504)):
                # a real header length is below 100 MiB, so its high four bytes are zero
                f.seek(0)
                kind = "an HTML page" if b"<" in f.read(4096) else "a text file"
                raise _refuse(p, f"this is {kind}, not a model: the download probably saved a "
                                 "login or error page; fetch it again")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER:
                raise _refuse(p, f"header length {n} is over the 100 MiB safetensors limit: "
                                 "not a safetensors file")
            if n > size - 8:
                raise _refuse(p, f"header says {n} bytes but the file has {size - 8} after the "
                                 "length: truncated")
            raw = f.read(n)
    except OSError as exc:
        raise InvalidCheckpoint(f"{p.name}: cannot read: {exc.strerror or exc}",
                                path=p.name) from exc
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refuse(p, "the header is not JSON: not a safetensors file") from exc
    if not isinstance(header, dict):
        raise _refuse(p, "the header is not a JSON object: not a safetensors file")
    meta_raw = header.pop("__metadata__", None) or {}
    metadata = {str(k): str(v) for k, v in meta_raw.items()} if isinstance(meta_raw, dict) else {}
    data_len = size - 8 - n
    tensors: list[TensorInfo] = []
    end_max = 0
    for name, entry in header.items():
        try:
            dtype = entry["dtype"]
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise _refuse(p, f"tensor {name!r} has a malformed header entry") from exc
        if dtype not in ITEMSIZE:
            raise _refuse(p, f"tensor {name!r} has unknown dtype {dtype!r}")
        nbytes = math.prod(shape) * ITEMSIZE[dtype]
        if begin < 0 or end - begin != nbytes:
            raise _refuse(p, f"tensor {name!r}: offsets {begin}..{end} do not match its shape")
        end_max = max(end_max, end)
        tensors.append(TensorInfo(name, dtype, shape, nbytes))
    if not tensors:
        raise _refuse(p, "no tensors in the file")
    if end_max > data_len:
        raise _refuse(p, f"truncated: the header declares {end_max} bytes of tensor data, the "
                         f"file holds {data_len} ({size} bytes on disk); download it again")
    return tensors, metadata, size


def _looks_like_text(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of the sample is still text
        text = data[:-4].decode("utf-8", errors="replace")
    if not text:
        return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable / len(text) > 0.95


def component_of(key: str) -> str | None:
    for prefix, component in LDM_PREFIXES:
        if key.startswith(prefix):
            return component
    return "other"


def run_bytes(t: TensorInfo, run_itemsize: int) -> int:
    if t.dtype in FLOATS:
        return math.prod(t.shape) * run_itemsize
    return t.nbytes


def _itemsize(dtype: str) -> int:
    try:
        return RUN_DTYPES[dtype]
    except KeyError:
        raise ValueError(f"run dtype must be one of {sorted(RUN_DTYPES)}, not {dtype!r}") from None


def file_footprint(path: str | os.PathLike[str], *, dtype: str = "fp16",
                   overrides: dict[str, str] | None = None,
                   component: str | None = None) -> Footprint:
    """Footprint of one safetensors file; ``overrides`` maps a component to its own dtype
    (A1111's ``--no-half-vae`` keeps ``{"vae": "fp32"}``); ``component`` forces every tensor
    into one component (a diffusers sub-folder file)."""
    tensors, metadata, size = read_header(path)
    overrides = overrides or {}
    comps: dict[str, int] = {}
    for t in tensors:
        comp = component or component_of(t.name)
        if comp is None:
            continue
        comps[comp] = comps.get(comp, 0) + run_bytes(t, _itemsize(overrides.get(comp, dtype)))
    return Footprint(comps, size, dtype, len(tensors), metadata)


def folder_footprint(path: str | os.PathLike[str], *, dtype: str = "fp16",
                     overrides: dict[str, str] | None = None) -> Footprint:
    """Footprint of a diffusers folder (``model_index.json`` + one folder per component).

    A component folder may hold several variants (``model.fp16.safetensors`` beside
    ``model.safetensors``); only the plain one counts, as ``from_pretrained`` loads it.
    """
    root = Path(path)
    if not (root / "model_index.json").is_file():
        raise InvalidCheckpoint(f"{root.name}: a diffusers folder needs model_index.json",
                                path=root.name)
    comps: dict[str, int] = {}
    total = 0
    count = 0
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(sub.glob("*.safetensors"))
        plain = [f for f in files if f.name.count(".") == 1]
        for f in plain or files[:1]:
            fp = file_footprint(f, dtype=dtype, overrides=overrides, component=sub.name)
            for k, v in fp.components.items():
                comps[k] = comps.get(k, 0) + v
            total += fp.file_bytes
            count += fp.tensors
    if not comps:
        raise InvalidCheckpoint(f"{root.name}: no safetensors weights in the folder",
                                path=root.name)
    return Footprint(comps, total, dtype, count)


def footprint(path: str | os.PathLike[str], *, dtype: str = "fp16",
              overrides: dict[str, str] | None = None) -> Footprint:
    p = Path(path)
    if p.is_dir():
        return folder_footprint(p, dtype=dtype, overrides=overrides)
    return file_footprint(p, dtype=dtype, overrides=overrides)


@dataclass(frozen=True)
class ReserveRule:
    """Memory kept free for activations: ``base + extra + per_megapixel * MP * batch``.

    The defaults follow ComfyUI: ``minimum_inference_memory`` is 0.8 GiB plus the 0.4 GiB
    ``EXTRA_RESERVED_VRAM``; activations then grow with the latent area and batch size
    (about 1 GiB per megapixel-image at fp16 for an SD UNet with attention slicing off [U]).
    """

    base: int = int(0.8 * GIB)
    extra: int = int(0.4 * GIB)
    per_megapixel: int = GIB

    def bytes_for(self, width: int = 512, height: int = 512, batch: int = 1) -> int:
        megapixels = width * height / 1_000_000
        return self.base + self.extra + int(self.per_megapixel * megapixels * max(1, batch))
