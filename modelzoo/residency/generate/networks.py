"""LoRAs, textual-inversion embeddings and VAEs from the NAS folders, on a pipeline for
one job and gone after it.

    models/Lora/**/name.safetensors        <lora:name:0.8> in a prompt (the file stem, or
                                           the path below the folder: <lora:style/ink:1>)
    models/embeddings/**/name.safetensors  any word of the prompt equal to a file stem
    (or .pt, read with torch's weights_only loader)
    models/VAE/name.safetensors            sd_vae = "name" or "name.safetensors" (an A1111
    models/VAE/name/config.json            single file, or a diffusers AutoencoderKL folder)

Every name is resolved inside its folder (``realpath`` + ``commonpath``, as the model
catalog does), so ``../`` and symlinks out of the folder are unknown names (404).

A job sees a pristine pipeline and leaves one: :func:`applied` loads the job's LoRAs
(diffusers ``load_lora_weights`` + ``set_adapters``; kohya and diffusers key formats),
embeddings (``load_textual_inversion``; SDXL files carry ``clip_l`` and ``clip_g``) and
VAE, and in ``finally`` unloads the LoRAs (``unload_lora_weights``), removes the tokens it
added and puts the model's own VAE back, whatever happened in between. An embedding that
does not fit the model (an SDXL one on SD 1.5) is skipped, as the WebUI skips it; a LoRA
that does not fit fails the job (422) rather than giving a silently different image.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InvalidNetwork, UnknownNetwork
from .prompts import NetworkRef

log = logging.getLogger(__name__)
LISTING_TTL = 5.0  # seconds a folder listing is reused (a LoRA folder can hold thousands)


class Folder:
    """One NAS folder of add-ons, listed with a short cache, names jailed inside it."""

    def __init__(self, root: Path | None, kind: str, suffixes: tuple[str, ...],
                 dirs_with: str | None = None) -> None:
        self.root = Path(os.path.realpath(root)) if root is not None else None
        self.kind = kind
        self.suffixes = suffixes
        self.dirs_with = dirs_with  # a sub-folder holding this file is an entry (diffusers)
        self._lock = threading.Lock()
        self._cache: tuple[float, dict[str, Path]] | None = None

    def _inside(self, p: Path) -> bool:
        assert self.root is not None
        real = os.path.realpath(p)
        return os.path.commonpath([real, self.root]) == str(self.root)

    def entries(self) -> dict[str, Path]:
        """name -> path, for both the stem and the relative path without suffix."""
        if self.root is None or not self.root.is_dir():
            return {}
        with self._lock:
            if self._cache and time.monotonic() - self._cache[0] < LISTING_TTL:
                return self._cache[1]
        out: dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            here = Path(dirpath)
            if self.dirs_with and self.dirs_with in filenames and here != self.root:
                rel = here.relative_to(self.root).as_posix()
                out.setdefault(rel, here)
                out.setdefault(here.name, here)
                dirnames[:] = []
                continue
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                p = here / f
                if f.startswith(".") or p.suffix.lower() not in self.suffixes:
                    continue
                if not self._inside(p) or not p.is_file():
                    continue
                rel = p.relative_to(self.root).with_suffix("").as_posix()
                out.setdefault(rel, p)
                out.setdefault(p.stem, p)
        with self._lock:
            self._cache = (time.monotonic(), out)
        return out

    def find(self, name: str) -> Path:
        clean = name.strip()
        for suf in self.suffixes:
            if clean.lower().endswith(suf):
                clean = clean[: -len(suf)]
        hit = self.entries().get(clean)
        if hit is None or "\0" in clean or not self._inside(hit):
            where = self.root if self.root is not None else "(no folder configured)"
            raise UnknownNetwork(f"no {self.kind} {name!r} in {where}", kind=self.kind,
                                 name=name)
        return hit

    def names(self) -> list[str]:
        if self.root is None:
            return []
        return sorted({p.relative_to(self.root).with_suffix("").as_posix()
                       for p in self.entries().values()})


@dataclass
class Networks:
    """What one job adds to the pipeline, resolved at submit (so a typo is a 404 then)."""

    loras: list[tuple[NetworkRef, Path]] = field(default_factory=list)
    embeddings: list[tuple[str, Path]] = field(default_factory=list)
    vae: tuple[str, Path] | None = None


def embeddings_in(text: str, folder: Folder) -> list[tuple[str, Path]]:
    """Embeddings whose file stem appears as a word of the prompt (case-sensitive)."""
    out = []
    for name, path in folder.entries().items():
        if "/" in name or not name:
            continue
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text):
            out.append((name, path))
    return sorted(out)


def _read(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    import torch

    # the WebUI's .pt embeddings are pickles: only tensors and plain types may load
    data = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(data, dict):
        return data
    return {"emb_params": data}


def _vectors(sd: dict[str, Any], key: str | None) -> Any | None:
    """The embedding's vectors: SDXL ``clip_l``/``clip_g``, A1111 ``string_to_param``,
    or a file holding a single tensor (``emb_params``)."""
    import torch

    if key is not None:
        return sd.get(key)
    if "string_to_param" in sd and isinstance(sd["string_to_param"], dict):
        vals = list(sd["string_to_param"].values())
        return vals[0] if vals else None
    tensors = [v for v in sd.values() if isinstance(v, torch.Tensor)]
    return tensors[0] if len(tensors) == 1 else sd.get("emb_params")


def _load_embedding(pipe: Any, name: str, path: Path, style: str) -> list[tuple[Any, Any, str]]:
    """Returns (tokenizer, encoder, token) triples it added, for unloading."""
    sd = _read(path)
    targets = [(pipe.tokenizer, pipe.text_encoder, "clip_l" if style == "sdxl" else None)]
    if style == "sdxl":
        targets.append((pipe.tokenizer_2, pipe.text_encoder_2, "clip_g"))
    added: list[tuple[Any, Any, str]] = []
    try:
        for tok, enc, key in targets:
            vec = _vectors(sd, key)
            if vec is None:
                raise ValueError(f"no {key or 'embedding'} vectors")
            if vec.ndim == 1:
                vec = vec.unsqueeze(0)
            width = enc.get_input_embeddings().weight.shape[1]
            if vec.shape[-1] != width:
                raise ValueError(f"vectors of width {vec.shape[-1]}, the model's are {width}")
            before = set(tok.get_added_vocab())
            pipe.load_textual_inversion(vec.to(enc.dtype), token=name, tokenizer=tok,
                                        text_encoder=enc)
            added += [(tok, enc, t) for t in set(tok.get_added_vocab()) - before]
    except (ValueError, KeyError, RuntimeError) as exc:
        _unload_tokens(pipe, added)
        log.info("embedding %s skipped: %s", name, exc)
        return []
    return added


def _unload_tokens(pipe: Any, added: list[tuple[Any, Any, str]]) -> None:
    by: dict[int, tuple[Any, Any, list[str]]] = {}
    for tok, enc, t in added:
        by.setdefault(id(tok), (tok, enc, []))[2].append(t)
    for tok, enc, tokens in by.values():
        try:
            pipe.unload_textual_inversion(tokens=tokens, tokenizer=tok, text_encoder=enc)
        except ValueError:
            pass  # already gone


def load_vae(path: Path, current: Any) -> Any:
    """An AutoencoderKL shaped like the model's own, with the file's weights."""
    import diffusers

    try:
        if path.is_dir():
            vae = diffusers.AutoencoderKL.from_pretrained(str(path), local_files_only=True)
        else:
            from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

            sd = _read(path)
            if any(k.startswith(("encoder.down.", "first_stage_model.", "decoder.up."))
                   for k in sd):
                sd = convert_ldm_vae_checkpoint(sd, dict(current.config))
            vae = diffusers.AutoencoderKL.from_config(current.config)
            vae.load_state_dict(sd, strict=True)
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        raise InvalidNetwork(f"VAE {path.name} does not fit this model: {exc}",
                             kind="vae", name=path.name) from exc
    return vae.to(device=current.device, dtype=current.dtype).eval()


@contextmanager
def applied(pipe: Any, nets: Networks, style: str) -> Iterator[dict[str, Any]]:
    """Load the job's networks; yield what was used (for infotext); restore in finally."""
    added: list[tuple[Any, Any, str]] = []
    lora_names: list[str] = []
    lora_tried = False  # a load that fails half way may have patched some layers
    own_vae = None
    used: dict[str, Any] = {"embeddings": [], "loras": [], "vae": None}
    try:
        for name, path in nets.embeddings:
            got = _load_embedding(pipe, name, path, style)
            if got:
                added += got
                used["embeddings"].append((name, path))
        for i, (ref, path) in enumerate(nets.loras):
            adapter = f"atelier_{i}"
            lora_tried = True
            try:
                pipe.load_lora_weights(str(path), adapter_name=adapter)
            except (ValueError, RuntimeError, KeyError) as exc:
                raise InvalidNetwork(f"LoRA {ref.name} does not fit this model: {exc}",
                                     kind="lora", name=ref.name) from exc
            lora_names.append(adapter)
            used["loras"].append((ref, path))
        if lora_names:
            weights = [{"unet": r.unet, "transformer": r.unet, "text_encoder": r.te,
                        "text_encoder_2": r.te} for r, _ in nets.loras]
            components = set(getattr(pipe, "components", {}))
            weights = [{k: v for k, v in w.items() if k in components} for w in weights]
            pipe.set_adapters(lora_names, adapter_weights=weights)
        if nets.vae is not None:
            own_vae = pipe.vae
            pipe.vae = load_vae(nets.vae[1], own_vae)
            used["vae"] = nets.vae
        yield used
    finally:
        if own_vae is not None:
            pipe.vae = own_vae
        if lora_tried:
            pipe.unload_lora_weights()
        _unload_tokens(pipe, added)
