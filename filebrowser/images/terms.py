"""The words of an image the search box finds besides its prompts.

One text per image, indexed as the ``terms`` column of the full-text index: the
generator, model and its hash, VAE, sampler and schedule, seed, steps, CFG, the size
asked for and the size of the file, LoRA and embedding names, and every other parameter
as "key value" (``Hires upscaler 4x-UltraSharp``, ``ADetailer model face_yolov8n.pt``),
so a word from any of them finds the image. The file's path is a column of its own.
"""

from __future__ import annotations

from .infotext import GenParams

MAX_TERMS = 8192  # characters; a parameter block beyond it is not words anyone types


def _num(v: float | int) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def terms_of(g: GenParams, width: int | None = None, height: int | None = None) -> str:
    """The searchable parameter text of ``g`` (the file is ``width`` x ``height``)."""
    parts: list[str] = [g.source] if g.source != "none" else []
    add = parts.append
    if g.params_text:  # A1111's parameter line: every parameter, keys and values
        add(g.params_text)
        if g.loras:
            parts += [lo.name for lo in g.loras]
        if g.embeddings:
            parts += g.embeddings
        if width and height:
            add(f"{width}x{height}")
        return " ".join(parts)[:MAX_TERMS]
    for v in (g.model, g.model_hash, g.vae, g.sampler, g.scheduler, g.version):
        if v:
            add(v)
    if g.seed is not None:
        add(str(g.seed))
    if g.steps is not None:
        add(f"Steps {g.steps}")
    if g.cfg_scale is not None:
        add(f"CFG {_num(g.cfg_scale)}")
    if g.width and g.height:
        add(f"{g.width}x{g.height}")
    if width and height and (width, height) != (g.width, g.height):
        add(f"{width}x{height}")
    if g.loras:
        parts += [lo.name for lo in g.loras]
    parts += g.embeddings
    if g.hires:
        parts += [f"Hires {k} {v}" for k, v in g.hires.items()]
    if g.adetailer:
        parts += [f"ADetailer {k} {v}" for k, v in g.adetailer.items()]
    if g.extra:
        parts += [f"{k} {v}" for k, v in g.extra.items()]
    text = " ".join(parts)
    return text[:MAX_TERMS]
