"""The models a service may load: a folder of A1111 checkpoints and diffusers folders.

    <models_dir>/                      (the WebUI's models/Stable-diffusion)
        sd15.safetensors               -> "sd15"
        xl/juggernaut.safetensors      -> "xl/juggernaut"
        tiny-pipe/model_index.json     -> "tiny-pipe"   (a diffusers folder)

Names are paths relative to the folder, without ``.safetensors``; an A1111 title with its
hash (``"sd15.safetensors [6ce0161689]"``) resolves too. Every name is resolved with
``realpath`` and checked against the folder before anything is opened, so ``../`` and
symlinks out of the folder are unknown models. ``.ckpt`` pickles are not offered: they
run code when loaded and carry no header to size them by.

Each model's family (SD 1.5, SDXL, Flux, ...; ``families.py``) is read from the same
header and cached beside its footprint.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from ..errors import UnknownModel
from .backends.base import ModelSpec
from .families import Family, detect, detect_folder
from .footprint import Footprint, footprint, read_header

_TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]$")


class ModelCatalog:
    def __init__(self, root: str | os.PathLike[str], *, dtype: str = "fp16",
                 overrides: dict[str, str] | None = None) -> None:
        self.root = Path(os.path.realpath(root))
        self.dtype = dtype
        self.overrides = overrides or {}
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple[int, int], Footprint]] = {}
        self._families: dict[Path, tuple[tuple[int, int], Family]] = {}

    def names(self) -> list[str]:
        out: list[str] = []
        if not self.root.is_dir():
            return out
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            here = Path(dirpath)
            if "model_index.json" in filenames and here != self.root:
                out.append(here.relative_to(self.root).as_posix())
                dirnames[:] = []  # a diffusers folder's sub-folders are its components
                continue
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in filenames:
                if f.endswith(".safetensors") and not f.startswith("."):
                    out.append((here / f).relative_to(self.root).as_posix()[:-12])
        return sorted(out)

    def path_of(self, name: str) -> Path:
        clean = _TITLE_HASH.sub("", name.strip())
        if clean.endswith(".safetensors"):
            clean = clean[:-12]
        if not clean or "\0" in clean or clean.startswith(("/", "\\")) or len(clean) > 1024 \
                or any(len(part.encode()) > 240 for part in clean.split("/")):
            # 240: with ".safetensors" still under NAME_MAX (255 bytes); stat() of a longer
            # name raises ENAMETOOLONG, which Path.is_file() does not swallow
            raise UnknownModel(f"no model {name!r}", model=name)
        for candidate in (self.root / (clean + ".safetensors"), self.root / clean):
            real = Path(os.path.realpath(candidate))
            if os.path.commonpath([real, self.root]) != str(self.root):
                continue
            if real.is_file() and real.suffix == ".safetensors":
                return real
            if real.is_dir() and (real / "model_index.json").is_file():
                return real
        raise UnknownModel(f"no model {name!r} in the models folder", model=name)

    def get(self, name: str) -> ModelSpec:
        """Resolve and size a model; the footprint is cached by (mtime, size)."""
        path = self.path_of(name)
        st = path.stat()
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(path)
        if hit is not None and hit[0] == key:
            fp = hit[1]
        else:
            fp = footprint(path, dtype=self.dtype, overrides=self.overrides)
            with self._lock:
                self._cache[path] = (key, fp)
        rel = path.relative_to(self.root).as_posix()
        canonical = rel[:-12] if rel.endswith(".safetensors") else rel
        return ModelSpec(canonical, path, fp)

    __call__ = get

    def family(self, name: str) -> Family:
        """The model's architecture; raises UnsupportedModel (422) for what cannot run."""
        path = self.path_of(name)
        st = path.stat()
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._families.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        if path.is_dir():
            fam = detect_folder(path)
        else:
            tensors, metadata, _ = read_header(path)
            fam = detect({t.name: t.shape for t in tensors}, metadata)
        with self._lock:
            self._families[path] = (key, fam)
        return fam
