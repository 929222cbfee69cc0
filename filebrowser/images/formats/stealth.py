"""Stealth PNG info: parameters hidden in the low bits of the pixels.

The layout of A1111's stealth_pnginfo extension (also written by reForge, SwarmUI's
``StealthMetadata`` and NovelAI, which hides its chunks as JSON this way)::

    bits, most significant first, taken pixel by pixel in column order (x outer, y inner):
        alpha mode   the alpha channel's lowest bit, one bit per pixel
        RGB mode     the lowest bits of R, G and B, three bits per pixel
    signature    15 bytes: "stealth_pnginfo" | "stealth_pngcomp"  (alpha)
                           "stealth_rgbinfo" | "stealth_rgbcomp"  (RGB)
                 ("comp": the payload is gzip)
    length       32 bits: the payload's length in bits
    payload      UTF-8 text (A1111 infotext, or NovelAI's JSON)

Finding it means decoding every pixel, so it is opt-in
(``ATELIER_IMAGES_STEALTH_PNGINFO``) and only tried on lossless images (PNG, WebP
lossless) that carry no other parameters. Pillow does the bit work: the channel's
LUT keeps bit 0, a transpose turns columns into rows, and the bit string becomes bytes
through ``int(..., 2)``; no per-pixel Python loop.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import BinaryIO

from PIL import Image

SIGNATURES = {b"stealth_pnginfo": ("alpha", False), b"stealth_pngcomp": ("alpha", True),
              b"stealth_rgbinfo": ("rgb", False), b"stealth_rgbcomp": ("rgb", True)}
SIG_BITS = 15 * 8
MAX_PAYLOAD = 16 << 20  # bytes, after decompression too
MAX_PIXELS = 89_478_485  # Pillow's own bomb limit
_BIT0 = [v & 1 for v in range(256)]
_ASCII_BITS = bytes.maketrans(b"\x00\x01", b"01")


def _bits(im: Image.Image, mode: str, count: int) -> str:
    """The first ``count`` hidden bits as a '0'/'1' string (fewer if the image ends)."""
    w, h = im.size
    per_col = h * (1 if mode == "alpha" else 3)
    cols = min(w, -(-count // per_col))
    part = im.crop((0, 0, cols, h))
    if mode == "alpha":
        band = part.getchannel("A").point(_BIT0)
    else:
        band = part.convert("RGB").point(_BIT0 * 3)
    data = band.transpose(Image.Transpose.TRANSPOSE).tobytes()
    return data[:count].translate(_ASCII_BITS).decode("ascii")


def _to_bytes(bits: str) -> bytes:
    n = len(bits) // 8
    return int(bits[: n * 8], 2).to_bytes(n, "big") if n else b""


def read_stealth(path: Path | str | BinaryIO) -> str | None:
    """The hidden text of an image (a path, or a file open for binary reading), or None
    if it holds none."""
    try:
        with Image.open(path) as src:
            w, h = src.size
            if w * h > MAX_PIXELS or w * h == 0:
                return None
            has_alpha = src.mode in ("RGBA", "LA", "PA") or "transparency" in src.info
            im: Image.Image = src
            if src.mode not in ("RGB", "RGBA"):
                im = src.convert("RGBA" if has_alpha else "RGB")
            else:
                src.load()
            for mode in (("alpha", "rgb") if has_alpha else ("rgb",)):
                text = _read(im, mode)
                if text is not None:
                    return text
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, zlib.error):
        return None
    return None


def _read(im: Image.Image, mode: str) -> str | None:
    head = _bits(im, mode, SIG_BITS + 32)
    if len(head) < SIG_BITS + 32:
        return None
    found = SIGNATURES.get(_to_bytes(head[:SIG_BITS]))
    if found is None or found[0] != mode:
        return None
    compressed = found[1]
    length = int(head[SIG_BITS:], 2)
    if length <= 0 or length > MAX_PAYLOAD * 8:
        return None
    bits = _bits(im, mode, SIG_BITS + 32 + length)[SIG_BITS + 32:]
    if len(bits) < length:
        return None
    payload = _to_bytes(bits)
    if compressed:
        d = zlib.decompressobj(wbits=31)  # gzip
        payload = d.decompress(payload, MAX_PAYLOAD)
    return payload.decode("utf-8", "replace").strip("\0") or None
