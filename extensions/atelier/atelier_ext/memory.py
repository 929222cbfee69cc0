"""Measured memory, from inside the WebUI process: standard library and torch only.

- RAM: ``MemAvailable`` of ``/proc/meminfo``, capped by the container's cgroup (v2
  ``memory.max`` / ``memory.current``, v1 ``memory.limit_in_bytes`` /
  ``memory.usage_in_bytes``; the page cache it could drop, ``inactive_file``, counts as
  free). A container sees the host's meminfo, so without the cap it would plan for RAM it
  can never have.
- GPUs: ``torch.cuda.mem_get_info(i)`` per device (device-wide: other processes count)
  plus what this process's caching allocator reserved but does not use (ComfyUI's and
  Forge's formula), since torch hands that back to us first.
- Checkpoint sizes: parameter and buffer bytes of loaded models, by device; for a file
  not loaded yet, the element count from its safetensors header at the dtype the WebUI
  will hold it in (fp16, or fp32 under ``--no-half``).
"""

from __future__ import annotations

import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1 << 30
_UNLIMITED = 1 << 60  # cgroup v1 writes a huge number for "no limit"
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2,
                "BF16": 2, "I16": 2, "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1,
                "BOOL": 1}


@dataclass(frozen=True)
class Reading:
    name: str  # "cuda:0", "ram"
    free: int
    total: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "free": self.free, "total": self.total}


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def meminfo(root: Path = Path("/")) -> tuple[int, int]:
    """(available, total) bytes from /proc/meminfo."""
    values: dict[str, int] = {}
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024
    total = values.get("MemTotal", 0)
    return values.get("MemAvailable", values.get("MemFree", 0)), total


def _stat_value(text: str | None, key: str) -> int:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def cgroup_memory(root: Path = Path("/")) -> tuple[int, int] | None:
    """(free, limit) of this process's memory cgroup, or None without a limit."""
    own = _read(root / "proc/self/cgroup") or ""
    v2 = [line.split("::", 1)[1] for line in own.splitlines() if line.startswith("0::")]
    base = root / "sys/fs/cgroup"
    for folder in ([base / v2[0].lstrip("/")] if v2 else []) + [base]:
        limit = _read(folder / "memory.max")
        if limit is None:
            continue
        if not limit.isdigit():
            return None  # "max"
        used = int(_read(folder / "memory.current") or 0)
        cache = _stat_value(_read(folder / "memory.stat"), "inactive_file")
        return max(0, int(limit) - used + cache), int(limit)
    v1 = base / "memory"
    limit_text = _read(v1 / "memory.limit_in_bytes")
    if limit_text is None or not limit_text.isdigit() or int(limit_text) >= _UNLIMITED:
        return None
    used = int(_read(v1 / "memory.usage_in_bytes") or 0)
    cache = _stat_value(_read(v1 / "memory.stat"), "total_inactive_file")
    return max(0, int(limit_text) - used + cache), int(limit_text)


def ram(root: Path = Path("/")) -> Reading:
    available, total = meminfo(root)
    group = cgroup_memory(root)
    if group is not None:
        available, total = min(available, group[0]), min(total, group[1])
    return Reading("ram", available, total)


def cuda() -> list[Reading]:
    """Every CUDA device torch sees; empty without CUDA (or before torch is imported:
    the WebUI imports it long before extensions run, and we never import it first)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        stats = torch.cuda.memory_stats(i)
        spare = stats.get("reserved_bytes.all.current", 0) - stats.get("active_bytes.all.current",
                                                                        0)
        out.append(Reading(f"cuda:{i}", int(free) + max(0, int(spare)), int(total)))
    return out


def module_bytes(model: Any) -> dict[str, int]:
    """Bytes of a loaded model's parameters and buffers per device type ("cuda:0",
    "cpu"; "meta" for weights A1111 already sent to the trash)."""
    out: dict[str, int] = {}
    seen: set[int] = set()
    tensors = list(getattr(model, "parameters", lambda: [])())
    tensors += list(getattr(model, "buffers", lambda: [])())
    for t in tensors:
        if id(t) in seen:
            continue
        seen.add(id(t))
        dev = t.device
        name = dev.type if dev.index is None else f"{dev.type}:{dev.index}"
        out[name] = out.get(name, 0) + t.numel() * t.element_size()
    return out


def safetensors_elements(path: str | os.PathLike[str]) -> dict[str, int] | None:
    """Element counts by stored dtype, from the header alone (a few KB read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                return None
            (n,) = struct.unpack("<Q", head)
            if n > 100 << 20:
                return None
            header = json.loads(f.read(n))
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    counts: dict[str, int] = {}
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        elements = 1
        for d in info.get("shape", []):
            elements *= int(d)
        dtype = str(info.get("dtype"))
        counts[dtype] = counts.get(dtype, 0) + elements
    return counts


def checkpoint_bytes(path: str | os.PathLike[str], *, full_precision: bool) -> int | None:
    """Bytes a checkpoint takes once loaded: floats become fp16 (fp32 under --no-half),
    so an fp32 file halves and an fp16 one doubles under --no-half. Other files (.ckpt)
    count at their size on disk."""
    counts = safetensors_elements(path) if str(path).endswith(".safetensors") else None
    if counts is None:
        try:
            return os.path.getsize(path)
        except OSError:
            return None
    float_bytes = 4 if full_precision else 2
    total = 0
    for dtype, n in counts.items():
        total += n * (float_bytes if dtype in ("F64", "F32", "F16", "BF16") else
                      _DTYPE_BYTES.get(dtype, 4))
    return total
