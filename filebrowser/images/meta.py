"""Image metadata without decoding pixels: dimensions, text chunks, EXIF, sidecar .txt.

Where generators put their parameters (which layout is whose: :mod:`.formats`)::

    PNG   tEXt/zTXt/iTXt "parameters"     A1111/Forge (iTXt, UTF-8, once not latin-1),
                                          SwarmUI and Fooocus (JSON)
          tEXt "prompt", "workflow"       ComfyUI API graph and editor graph (JSON)
          tEXt "Comment", "Software"...   NovelAI
          tEXt "invokeai_metadata"...     InvokeAI
          eXIf                            rare; read like JPEG's
    JPEG  APP1 "Exif\\0\\0" -> ExifIFD UserComment (0x9286); Fooocus (through Pillow's
          ``Image.Exif``) puts UserComment and MakerNote (0x927C) in IFD0
    WebP  RIFF chunk "EXIF" (after the image data in the VP8X layout), same TIFF inside
          UserComment = 8-byte charset + text: b"UNICODE\\0" + UTF-16 (piexif writes BE,
          .NET's ImageSharp the TIFF's order, LE), b"ASCII\\0\\0\\0", or 8 NULs;
          ComfyUI WebP puts "prompt:{json}" in IFD0 Model
    any   <stem>.txt beside the image     A1111 "save_txt"
          log.html in the folder          Fooocus
          the pixels' low bits            stealth info (opt-in: decodes the pixels)

PNG, JPEG and WebP are walked chunk by chunk with ``struct``: the pixel data is
skipped (PNG stops at the first IDAT, as Pillow's ``open`` does; WebP seeks over it),
so the cost is one open and a few small reads. Other formats (GIF, AVIF, BMP, TIFF)
go through Pillow's ``Image.open``, which also reads headers only. Compressed text
is inflated with a bound (a zTXt bomb stops at :data:`MAX_TEXT_BYTES`).
"""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .formats import FolderLog, detect, detect_text, from_log, read_stealth
from .formats.comfyui import load_json
from .infotext import GenParams

MAX_TEXT_BYTES = 16 << 20  # one text chunk or inflated zTXt/iTXt
MAX_SIDECAR_BYTES = 1 << 20
PNG_SIG = b"\x89PNG\r\n\x1a\n"
_BUF = 65536

# TIFF field type -> bytes per value
_TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
TAG_EXIF_IFD = 0x8769
TAG_USER_COMMENT = 0x9286
TAG_IMAGE_DESCRIPTION = 0x010E
TAG_MAKE = 0x010F
TAG_MODEL = 0x0110
TAG_SOFTWARE = 0x0131
TAG_XP_COMMENT = 0x9C9C
TAG_MAKER_NOTE = 0x927C
FOLDER_LOG = "log.html"  # Fooocus
_RAW_KEYS = frozenset({"prompt", "workflow", "parameters", "invokeai_metadata", "invokeai_graph",
                       "invokeai_workflow", "sd-metadata"})


@dataclass
class ImageMeta:
    format: str | None = None
    width: int | None = None
    height: int | None = None
    texts: dict[str, str] = field(default_factory=dict)
    params: GenParams = field(default_factory=GenParams)
    params_from: str | None = None  # "png:parameters", "exif:UserComment", "sidecar", ...
    error: str | None = None
    lossless: bool = False  # PNG, or WebP in its lossless (VP8L) form
    stat: os.stat_result | None = None  # of the file read, when read_meta(stat=True)

    @property
    def comfyui(self) -> dict[str, Any] | None:
        """ComfyUI's graphs as JSON (parsed when asked: indexing never needs them)."""
        t = self.texts
        p, w = t.get("prompt"), t.get("workflow")
        if not p and t.get("Model", "").startswith("prompt:"):
            p = t["Model"][7:]
        if not w and t.get("Make", "").startswith("workflow:"):
            w = t["Make"][9:]
        if not (p or w) or self.params.source != "comfyui":
            return None
        return {"prompt": load_json(p), "workflow": load_json(w)}

    def to_json(self, *, texts: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": self.format, "width": self.width, "height": self.height,
            "params": self.params.to_json(), "params_from": self.params_from,
            "comfyui": self.comfyui, "error": self.error,
        }
        if texts:  # what params.raw or "comfyui" already hold is not repeated
            held = _RAW_KEYS | {(self.params_from or "").partition(":")[2]}
            out["texts"] = {k: v for k, v in self.texts.items() if k not in held}
        return out


class _Bad(Exception):
    """The bytes are not the format they claim; report, never crash."""


class _More(Exception):
    """The bytes in hand end before the image data: read on from the file."""


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, MAX_TEXT_BYTES)
    except zlib.error as exc:
        raise _Bad(f"bad compressed text: {exc}") from None
    return out


def _text(raw: bytes) -> str:
    # tEXt is latin-1 by the spec, but some writers put UTF-8 there; strict UTF-8 that
    # decodes is almost never accidental latin-1.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


_CHUNK_HEAD = struct.Struct(">I4s")
_II = struct.Struct(">II")


def read_png(f: BinaryIO, meta: ImageMeta) -> bytes | None:
    """Walk PNG chunks up to the first IDAT; return an eXIf payload if any."""
    if f.read(8) != PNG_SIG:
        raise _Bad("not a PNG")
    meta.format = "png"
    meta.lossless = True
    exif = None
    while True:
        head = f.read(8)
        if len(head) < 8:
            break
        length, ctype = _CHUNK_HEAD.unpack(head)
        if ctype in (b"IDAT", b"IEND"):
            break
        if length > MAX_TEXT_BYTES:
            f.seek(length + 4, os.SEEK_CUR)
            continue
        data = f.read(length)
        f.read(4)  # CRC: not checked, a bad one is the writer's problem, not ours
        if len(data) < length:
            raise _Bad("truncated PNG")
        if ctype == b"eXIf":
            exif = data
        else:
            _png_chunk(meta, ctype, data)
    return exif


def read_png_bytes(buf: bytes, meta: ImageMeta, *, whole: bool = True) -> bytes | None:
    """:func:`read_png` over bytes in hand: the file whole, or (``whole`` False) its
    start, where generators put their text chunks; :class:`_More` if that start ends
    before the image data. The same walk, without a file object's calls per chunk."""
    if not buf.startswith(PNG_SIG):
        raise _Bad("not a PNG")
    meta.format = "png"
    meta.lossless = True
    exif = None
    pos, end = 8, len(buf)
    unpack = _CHUNK_HEAD.unpack_from
    while pos + 8 <= end:
        length, ctype = unpack(buf, pos)
        pos += 8
        if ctype in (b"IDAT", b"IEND"):
            return exif
        if length > MAX_TEXT_BYTES:
            pos += length + 4
            continue
        data = buf[pos:pos + length]
        pos += length + 4  # CRC: not checked
        if len(data) < length:
            if not whole:
                raise _More
            raise _Bad("truncated PNG")
        if ctype == b"tEXt":  # the commonest, inline (a call per chunk of every PNG)
            key, _, value = data.partition(b"\0")
            try:
                meta.texts[key.decode("latin-1")] = value.decode("utf-8")
            except UnicodeDecodeError:
                meta.texts[key.decode("latin-1")] = value.decode("latin-1")  # as _text()
        elif ctype == b"IHDR" and length >= 8:
            meta.width, meta.height = _II.unpack_from(data)
        elif ctype == b"eXIf":
            exif = data
        else:
            _png_chunk(meta, ctype, data)
    if not whole:
        raise _More
    return exif


def _png_chunk(meta: ImageMeta, ctype: bytes, data: bytes) -> None:
    """One PNG chunk before IDAT (other than eXIf) into ``meta``."""
    if ctype == b"IHDR" and len(data) >= 8:
        meta.width, meta.height = struct.unpack(">II", data[:8])
    elif ctype == b"tEXt":
        key, _, value = data.partition(b"\0")
        meta.texts[key.decode("latin-1")] = _text(value)
    elif ctype == b"zTXt":
        key, _, rest = data.partition(b"\0")
        meta.texts[key.decode("latin-1")] = _text(_inflate(rest[1:]))
    elif ctype == b"iTXt":
        key, _, rest = data.partition(b"\0")
        if len(rest) < 2:
            return
        compressed = rest[0] == 1
        _lang, _, rest = rest[2:].partition(b"\0")
        _tkey, _, value = rest.partition(b"\0")
        if compressed:
            value = _inflate(value)
        meta.texts[key.decode("latin-1")] = value.decode("utf-8", "replace")


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def read_jpeg(f: BinaryIO, meta: ImageMeta) -> bytes | None:
    """Walk JPEG markers up to the scan; return the APP1 Exif payload if any."""
    if f.read(2) != b"\xff\xd8":
        raise _Bad("not a JPEG")
    meta.format = "jpeg"
    exif = None
    while True:
        b = f.read(1)
        if not b:
            break
        if b != b"\xff":
            raise _Bad("bad JPEG marker")
        m = f.read(1)
        while m == b"\xff":  # fill bytes
            m = f.read(1)
        if not m:
            break
        marker = m[0]
        if marker == 0xD8 or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan
            break
        raw = f.read(2)
        if len(raw) < 2:
            break
        (length,) = struct.unpack(">H", raw)
        data = f.read(max(0, length - 2))
        if marker == 0xE1 and data.startswith(b"Exif\0\0") and exif is None:
            exif = data[6:]
        elif marker == 0xFE:
            meta.texts.setdefault("comment", _text(data).rstrip("\0"))
        elif marker in _SOF and len(data) >= 5:
            meta.height, meta.width = struct.unpack(">HH", data[1:5])
    return exif


def read_webp(f: BinaryIO, meta: ImageMeta) -> bytes | None:
    """Walk WebP RIFF chunks, seeking over image data; return the EXIF payload if any."""
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        raise _Bad("not a WebP")
    meta.format = "webp"
    exif = None
    while True:
        ch = f.read(8)
        if len(ch) < 8:
            break
        fourcc, size = ch[:4], struct.unpack("<I", ch[4:])[0]
        padded = size + (size & 1)
        if fourcc in (b"VP8 ", b"VP8L", b"VP8X"):
            data = f.read(min(size, 32))
            f.seek(padded - len(data), os.SEEK_CUR)
            if fourcc == b"VP8L":
                meta.lossless = True
            if fourcc == b"VP8X" and len(data) >= 10:
                meta.width = 1 + int.from_bytes(data[4:7], "little")
                meta.height = 1 + int.from_bytes(data[7:10], "little")
            elif fourcc == b"VP8 " and len(data) >= 10 and meta.width is None:
                w, h = struct.unpack("<HH", data[6:10])
                meta.width, meta.height = w & 0x3FFF, h & 0x3FFF
            elif fourcc == b"VP8L" and len(data) >= 5 and meta.width is None:
                bits = struct.unpack("<I", data[1:5])[0]
                meta.width, meta.height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        elif fourcc == b"EXIF" and size <= MAX_TEXT_BYTES:
            exif = f.read(size)
            f.seek(padded - size, os.SEEK_CUR)
        elif fourcc == b"XMP " and size <= MAX_TEXT_BYTES:
            meta.texts["xmp"] = f.read(size).decode("utf-8", "replace")
            f.seek(padded - size, os.SEEK_CUR)
        else:
            f.seek(padded, os.SEEK_CUR)
    return exif


# -- EXIF ------------------------------------------------------------------------------


def _ifd(data: bytes, offset: int, e: str) -> dict[int, tuple[int, bytes]]:
    """One TIFF IFD: tag -> (type, raw value bytes). Out-of-range entries are dropped."""
    out: dict[int, tuple[int, bytes]] = {}
    if offset < 8 or offset + 2 > len(data):
        return out
    (n,) = struct.unpack(e + "H", data[offset:offset + 2])
    for i in range(min(n, 1000)):
        pos = offset + 2 + 12 * i
        entry = data[pos:pos + 12]
        if len(entry) < 12:
            break
        tag, typ, count = struct.unpack(e + "HHI", entry[:8])
        size = _TIFF_SIZES.get(typ, 1) * count
        if size <= 4:
            value = entry[8:8 + size]
        else:
            (voff,) = struct.unpack(e + "I", entry[8:12])
            if voff + size > len(data):
                continue
            value = data[voff:voff + size]
        out[tag] = (typ, value)
    return out


def decode_user_comment(raw: bytes, big_endian: bool = True) -> str:
    """EXIF UserComment: 8-byte charset code, then the text."""
    code, body = raw[:8], raw[8:]
    if code == b"UNICODE\0":
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            text = body.decode("utf-16")
        else:
            # piexif (A1111) writes UTF-16BE whatever the TIFF order; others follow the
            # TIFF order. For mostly-ASCII text the NUL bytes tell; else trust the TIFF.
            even, odd = body[0::2].count(0), body[1::2].count(0)
            be = even > odd if even != odd else big_endian
            text = body[: len(body) & ~1].decode("utf-16-be" if be else "utf-16-le", "replace")
    elif code == b"JIS\0\0\0\0\0":
        text = body.decode("shift_jis", "replace")
    elif code in (b"ASCII\0\0\0", b"\0" * 8):
        text = body.decode("utf-8", "replace")
    else:
        text = raw.decode("utf-8", "replace")
    return text.rstrip("\0")


def _ascii(value: bytes) -> str:
    return value.rstrip(b"\0").decode("utf-8", "replace")


def parse_exif(data: bytes) -> dict[str, str]:
    """The text fields of an EXIF block that generators use."""
    if data.startswith(b"Exif\0\0"):
        data = data[6:]
    if len(data) < 8:
        return {}
    if data[:4] == b"II*\0":
        e = "<"
    elif data[:4] == b"MM\0*":
        e = ">"
    else:
        return {}
    out: dict[str, str] = {}
    ifd0 = _ifd(data, struct.unpack(e + "I", data[4:8])[0], e)
    for tag, name in ((TAG_IMAGE_DESCRIPTION, "ImageDescription"), (TAG_MAKE, "Make"),
                      (TAG_MODEL, "Model"), (TAG_SOFTWARE, "Software")):
        if tag in ifd0:
            out[name] = _ascii(ifd0[tag][1])
    if TAG_XP_COMMENT in ifd0:
        out["XPComment"] = ifd0[TAG_XP_COMMENT][1].decode("utf-16-le", "replace").rstrip("\0")
    ifds = [ifd0]
    if TAG_EXIF_IFD in ifd0 and len(ifd0[TAG_EXIF_IFD][1]) == 4:
        ifds.insert(0, _ifd(data, struct.unpack(e + "I", ifd0[TAG_EXIF_IFD][1])[0], e))
    for ifd in ifds:  # the Exif IFD where the standard puts them, then IFD0 (Fooocus)
        if TAG_USER_COMMENT in ifd and "UserComment" not in out:
            typ, raw = ifd[TAG_USER_COMMENT]
            out["UserComment"] = _ascii(raw) if typ == 2 else decode_user_comment(raw, e == ">")
        if TAG_MAKER_NOTE in ifd and "MakerNote" not in out:
            note = _maker_note(*ifd[TAG_MAKER_NOTE])
            if note:
                out["MakerNote"] = note
    return out


def _maker_note(typ: int, raw: bytes) -> str | None:
    """A MakerNote that is a short word (Fooocus' scheme); cameras' binary ones are not."""
    if len(raw) > 64:
        return None
    text = raw.rstrip(b"\0")
    return text.decode("ascii") if text.isascii() and text.isalnum() else None


def _from_pillow(f: BinaryIO, meta: ImageMeta) -> bytes | None:
    from PIL import Image

    f.seek(0)
    with Image.open(f) as im:  # header only: no load()
        meta.format = (im.format or "").lower() or None
        meta.width, meta.height = im.size
        exif = im.info.get("exif")
        for k, v in im.info.items():
            if isinstance(v, str):
                meta.texts[str(k)] = v
            elif k == "comment" and isinstance(v, bytes):
                meta.texts["comment"] = _text(v)
    return exif if isinstance(exif, bytes) else None


def read_sidecar(path: Path | str) -> str | None:
    """A sidecar's text; a symlink is not followed (it could lead out of the jail)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        raw = os.read(fd, MAX_SIDECAR_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    return _text(raw.removeprefix(b"\xef\xbb\xbf"))


def _stealth_of(path: Path | str, st: os.stat_result, follow_symlinks: bool) -> str | None:
    """Stealth text of the file ``st`` describes, opened again (None if it is another
    file now, or holds none)."""
    try:
        fd, again = _open_regular(path, follow_symlinks)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
            return None
        return read_stealth(f)


def sidecar_of(path: Path) -> Path:
    return path.with_suffix(".txt")


# What an ImageMeta holds until read_meta sets its params, which it always does: a
# fresh GenParams per image (and its five containers) would be thrown away unused.
_UNSET = GenParams()


def _new_meta() -> ImageMeta:
    return ImageMeta(params=_UNSET)


def _open_regular(path: Path | str, follow_symlinks: bool) -> tuple[int, os.stat_result]:
    """A descriptor of ``path`` and its fstat, checked after the open: a regular file
    (a FIFO swapped in would block a reader forever, a device never ends), and with
    ``follow_symlinks`` False not a symlink (one swapped in after a walk listed a file
    would have the indexer read what it points to)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (
        0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_meta(path: Path | str, *, sidecar: Path | str | None | bool = True,
              log: Path | str | FolderLog | None | bool = True, stealth: bool = False,
              name: str | None = None, follow_symlinks: bool = True) -> ImageMeta:
    """Metadata of one image file. Raises ``OSError`` only if the file cannot be opened
    or is not a regular file (``follow_symlinks`` False: nor a symlink); anything
    malformed inside is reported in ``error``. ``meta.stat`` is the fstat of the file
    read (an indexer's size and mtime, of the very bytes parsed).

    When the file's own fields hold no parameters, these are looked at in turn:
    ``sidecar`` (True: ``<stem>.txt``; a path: that file; False/None: skip), ``log``
    (Fooocus' log.html: True looks beside the image; a path, or a FolderLog a scan
    shares across a folder; False/None: skip; the image is looked up by ``name``,
    default the file's own) and, when ``stealth``, the low bits of a lossless image's
    pixels (decodes them, from the same file: a file swapped in since is not read).
    """
    meta = _new_meta()
    exif: bytes | None = None
    # One read covers a small file whole, and the start of a big one, where the text
    # chunks of a generated PNG are; anything else continues through a file object.
    fd, st = _open_regular(path, follow_symlinks)
    try:
        # (a file known to be small is read at its size: a 64 KiB buffer costs more)
        want = min(_BUF, st.st_size + 1)
        head = os.read(fd, want)
        whole = len(head) < want
        png_done = False
        if head.startswith(PNG_SIG) and not whole:
            try:
                exif, png_done = read_png_bytes(head, meta, whole=False), True
            except _More:
                meta = _new_meta()
            except (_Bad, struct.error, ValueError):
                meta = _new_meta()
        f: BinaryIO | None = None  # a PNG in hand whole needs no file object
        if whole and not head.startswith(PNG_SIG):
            f = io.BytesIO(head)
        elif not whole and not png_done:
            f = os.fdopen(os.dup(fd), "rb", buffering=_BUF)
            f.seek(0)  # the duplicate shares the offset moved by the read above
    finally:
        os.close(fd)
    try:
        magic = head[:12]
        try:
            if png_done:
                pass
            elif f is None:
                exif = read_png_bytes(head, meta)
            elif magic.startswith(PNG_SIG):
                exif = read_png(f, meta)
            elif magic.startswith(b"\xff\xd8"):
                exif = read_jpeg(f, meta)
            elif magic[:4] == b"RIFF" and magic[8:12] == b"WEBP":
                exif = read_webp(f, meta)
            elif not head:
                # an empty file (a placeholder, an upload that never started): Pillow
                # would try every format plugin on it, 5x the cost of a real PNG
                meta.error = "empty file"
            else:
                exif = _from_pillow(f, meta)
        except (_Bad, struct.error, ValueError) as exc:
            meta.error = str(exc) or type(exc).__name__
        except Exception as exc:  # Pillow's many ways of refusing a broken file
            meta.error = f"{type(exc).__name__}: {exc}"
    finally:
        if f is not None:
            f.close()
    meta.stat = st
    if exif:
        try:
            meta.texts.update(parse_exif(exif))
        except (struct.error, ValueError) as exc:
            meta.error = meta.error or f"bad EXIF: {exc}"
    sidecar_text = None
    if sidecar is True:
        sidecar_text = read_sidecar(os.path.splitext(path)[0] + ".txt")
    elif isinstance(sidecar, str | Path):
        sidecar_text = read_sidecar(sidecar)
    meta.params, meta.params_from = detect(meta.texts, sidecar_text)
    if meta.params_from is None and log:
        if log is True:
            log = os.path.join(os.path.dirname(path), FOLDER_LOG)
        g = from_log(log if isinstance(log, FolderLog) else str(log),
                     name or os.path.basename(path))
        if g is not None:
            meta.params, meta.params_from = g, "fooocus:log.html"
    if meta.params_from is None and stealth and meta.lossless and meta.error is None:
        text = _stealth_of(path, st, follow_symlinks)
        if text:
            meta.params, meta.params_from = detect_text(text), "stealth"
    return meta
