"""Reading metadata from real files: PNG chunks, JPEG/WebP EXIF, sidecars, ComfyUI."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from filebrowser.images.meta import MAX_TEXT_BYTES, decode_user_comment, parse_exif, read_meta

from .conftest import (
    A1111_TEXT,
    CHINESE_TEXT,
    comfy_png,
    exif_bytes,
    write_exif_image,
    write_png,
)


@pytest.mark.parametrize("chunk", ["auto", "itxt", "ztxt"])
def test_png_a1111(tmp_path: Path, chunk: str) -> None:
    p = write_png(tmp_path / "a.png", A1111_TEXT, chunk=chunk, size=(96, 40))
    m = read_meta(p)
    assert (m.format, m.width, m.height) == ("png", 96, 40)
    assert m.params_from == "png:parameters"
    assert m.params.raw == A1111_TEXT
    assert m.params.seed == 3141592653 and m.error is None


def test_png_chinese_is_itxt_and_survives(tmp_path: Path) -> None:
    p = write_png(tmp_path / "zh.png", CHINESE_TEXT)
    raw = p.read_bytes()
    assert b"iTXt" in raw and b"tEXt" not in raw  # Pillow chose iTXt, as for A1111
    m = read_meta(p)
    assert m.params.prompt.startswith("杰作, 一个红发女孩")
    assert m.params.negative_prompt == "低质量, 模糊"


def test_png_utf8_in_text_chunk(tmp_path: Path) -> None:
    # Some writers put UTF-8 into tEXt; decoding it as latin-1 would garble it.
    p = write_png(tmp_path / "u.png", None)
    data = p.read_bytes()
    body = b"parameters\0" + "红发, Steps: 1".encode()
    chunk = (len(body).to_bytes(4, "big") + b"tEXt" + body
             + zlib.crc32(b"tEXt" + body).to_bytes(4, "big"))
    p.write_bytes(data[:33] + chunk + data[33:])
    assert read_meta(p).texts["parameters"] == "红发, Steps: 1"


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
@pytest.mark.parametrize("endian", [">", "<"])
def test_exif_user_comment_unicode(tmp_path: Path, fmt: str, endian: str) -> None:
    p = write_exif_image(tmp_path / f"a.{fmt.lower()}", CHINESE_TEXT, fmt, endian=endian)
    m = read_meta(p)
    assert m.format == fmt.lower() and (m.width, m.height) == (64, 48)
    assert m.params_from == "exif:UserComment"
    assert m.params.raw == CHINESE_TEXT
    assert m.params.model == "国风模型"


def test_exif_user_comment_le_and_ascii(tmp_path: Path) -> None:
    p = write_exif_image(tmp_path / "le.jpg", A1111_TEXT, endian="<", encoding="unicode-le")
    assert read_meta(p).params.raw == A1111_TEXT
    p = write_exif_image(tmp_path / "ascii.jpg", "a cat\nSteps: 3, Sampler: Euler, CFG scale: 2",
                         encoding="ascii")
    assert read_meta(p).params.steps == 3


def test_user_comment_decoding() -> None:
    assert decode_user_comment(b"UNICODE\0" + "ab红".encode("utf-16-be")) == "ab红"
    assert decode_user_comment(b"UNICODE\0" + "ab红".encode("utf-16-le")) == "ab红"
    assert decode_user_comment(b"UNICODE\0" + "红发".encode("utf-16-le"), False) == "红发"
    assert decode_user_comment(b"UNICODE\0" + "\ufeffok".encode("utf-16-le")) == "ok"
    assert decode_user_comment(b"\0" * 8 + b"plain\0\0") == "plain"
    assert decode_user_comment(b"odd") == "odd"


def test_exif_garbage_never_raises() -> None:
    good = exif_bytes("hello")
    for cut in range(0, len(good), 3):
        parse_exif(good[:cut])
    assert parse_exif(good)["UserComment"] == "hello"
    assert parse_exif(b"II*\0\xff\xff\xff\xff") == {}


def test_sidecar_txt(tmp_path: Path) -> None:
    p = write_png(tmp_path / "s.png", None)
    (tmp_path / "s.txt").write_text("\ufeffsidecar prompt\nNegative prompt: nope\n"
                                    "Steps: 12, Sampler: Euler, CFG scale: 4", "utf-8")
    m = read_meta(p)
    assert m.params_from == "sidecar"
    assert (m.params.prompt, m.params.steps) == ("sidecar prompt", 12)
    assert read_meta(p, sidecar=False).params_from is None


def test_embedded_parameters_win_over_sidecar(tmp_path: Path) -> None:
    p = write_png(tmp_path / "w.png", A1111_TEXT)
    (tmp_path / "w.txt").write_text("other\nSteps: 1, Sampler: x, CFG scale: 1")
    assert read_meta(p).params_from == "png:parameters"


def test_symlinked_sidecar_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET\nSteps: 1, Sampler: x, CFG scale: 1")
    p = write_png(tmp_path / "img" / "x.png", None)
    os.symlink(secret, tmp_path / "img" / "x.txt")
    m = read_meta(p)
    assert m.params_from is None and "SECRET" not in json.dumps(m.to_json())


def test_comfyui_png(tmp_path: Path) -> None:
    m = read_meta(comfy_png(tmp_path / "c.png"))
    assert m.params_from == "png:prompt" and m.params.source == "comfyui"
    assert m.params.negative_prompt == "text, watermark"
    assert m.comfyui is not None and m.comfyui["prompt"]["3"]["class_type"] == "KSampler"
    assert m.comfyui["workflow"]["last_node_id"] == 10
    out = m.to_json()
    assert "prompt" not in out["texts"]  # the graph is under "comfyui", not twice


def test_comfyui_webp_exif(tmp_path: Path) -> None:
    from .conftest import COMFY_PROMPT

    ex = Image.Exif()
    ex[0x0110] = "prompt:" + json.dumps(COMFY_PROMPT)
    p = tmp_path / "c.webp"
    Image.new("RGB", (8, 8)).save(p, "WEBP", exif=ex.tobytes())
    m = read_meta(p)
    assert m.params.source == "comfyui" and m.params.steps == 20


def test_pixels_are_not_decoded(tmp_path: Path) -> None:
    # The pixel data is garbage; a decoder would fail, the metadata reader must not care.
    p = write_png(tmp_path / "broken.png", A1111_TEXT, size=(300, 200))
    data = bytearray(p.read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 4: idat + 40] = b"\x00" * 36
    p.write_bytes(bytes(data))
    with pytest.raises(Exception), Image.open(p) as im:  # noqa: B017 - Pillow's choice of error
        im.load()
    m = read_meta(p)
    assert (m.width, m.height) == (300, 200) and m.params.seed == 3141592653


def test_truncated_and_not_images(tmp_path: Path) -> None:
    p = write_png(tmp_path / "t.png", A1111_TEXT)
    (tmp_path / "half.png").write_bytes(p.read_bytes()[:60])
    m = read_meta(tmp_path / "half.png")
    assert m.error and m.format == "png"
    (tmp_path / "text.png").write_text("not a png at all")
    assert read_meta(tmp_path / "text.png").error
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert read_meta(tmp_path / "empty.jpg").error
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe1\x00\x02" + b"\x00" * 10)
    read_meta(tmp_path / "bad.jpg")


def test_ztxt_bomb_is_bounded(tmp_path: Path) -> None:
    p = tmp_path / "z.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x")
    Image.new("RGB", (4, 4)).save(p, pnginfo=info)
    data = p.read_bytes()
    bomb = zlib.compress(b"A" * (MAX_TEXT_BYTES * 4), 9)  # 64 MiB inflated, ~64 KiB stored
    body = b"parameters\0\0" + bomb
    chunk = (len(body).to_bytes(4, "big") + b"zTXt" + body
             + zlib.crc32(b"zTXt" + body).to_bytes(4, "big"))
    p.write_bytes(data[:33] + chunk + data[33:])
    m = read_meta(p)
    assert len(m.texts["parameters"]) == MAX_TEXT_BYTES


def test_gif_and_avif_via_pillow(tmp_path: Path) -> None:
    frames = [Image.new("P", (30, 20), i) for i in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:],
                   comment=b"a gif comment")
    m = read_meta(tmp_path / "a.gif")
    assert (m.format, m.width, m.height) == ("gif", 30, 20)
    assert m.texts.get("comment") == "a gif comment"
    Image.new("RGB", (24, 16)).save(tmp_path / "a.avif", exif=exif_bytes(
        "avif prompt\nSteps: 3, Sampler: Euler, CFG scale: 2"))
    m = read_meta(tmp_path / "a.avif")
    assert (m.format, m.width, m.height) == ("avif", 24, 16)
    assert m.params.prompt == "avif prompt"


def test_empty_file_is_reported_without_trying_every_decoder(tmp_path: Path) -> None:
    p = tmp_path / "placeholder.png"
    p.touch()
    meta = read_meta(p, sidecar=False)
    assert meta.error == "empty file" and meta.width is None and not meta.texts


def test_what_the_indexer_opens_is_checked_after_the_open(tmp_path: Path) -> None:
    """A walk lists a regular file; by the time it is read it may be a symlink to a file
    it must not read, or a FIFO that would block the reader for ever."""
    import threading

    from filebrowser.images.index import make_row

    secret = write_png(tmp_path / "outside" / "secret.png", "TOP SECRET prompt\nSteps: 1")
    tree = tmp_path / "tree"
    tree.mkdir()
    link = tree / "a.png"
    os.symlink(secret, link)
    with pytest.raises(OSError):
        read_meta(link, follow_symlinks=False)
    assert "TOP SECRET" in read_meta(link).params.prompt  # a caller's own choice
    assert make_row(link, "a.png", "", "a.png", "image", None, None, None) is None
    assert make_row(link, "a.png", "", "a.png", "image", 10, 1, None) is None
    fifo = tree / "b.png"
    os.mkfifo(fifo)
    done: list[object] = []

    def read() -> None:
        try:
            read_meta(fifo)
        except OSError as exc:
            done.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive() and done, "reading a FIFO blocked or did not refuse"
    assert make_row(fifo, "b.png", "", "b.png", "image", None, None, None) is None


def test_stealth_is_read_from_the_file_that_was_checked(tmp_path: Path) -> None:
    from .generators import stealth_png

    p = stealth_png(tmp_path / "s.png", "hidden words\nSteps: 3, Sampler: Euler, Seed: 5")
    m = read_meta(p, stealth=True, follow_symlinks=False)
    assert m.params_from == "stealth" and m.params.prompt == "hidden words"
