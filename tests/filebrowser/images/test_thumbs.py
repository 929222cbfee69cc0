"""Thumbnails: formats, the disk cache, never stale, bombs and broken files, HTTP caching."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from filebrowser.images.thumbs import Thumbnailer, version_of

from ...conftest import Server
from .conftest import bump_mtime, exif_bytes, png_bomb, write_exif_image, write_png


@pytest.fixture
def thumbs(tmp_path: Path) -> Iterator[Thumbnailer]:
    t = Thumbnailer(tmp_path / "cache", workers=2)
    yield t
    t.close()


def _open(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.mark.parametrize("name,make", [
    ("a.png", lambda p: write_png(p, size=(600, 300))),
    ("a.jpg", lambda p: Image.new("RGB", (600, 300), (1, 2, 3)).save(p, quality=80)),
    ("a.webp", lambda p: Image.new("RGBA", (600, 300), (1, 2, 3, 100)).save(p)),
    ("a.avif", lambda p: Image.new("RGB", (600, 300), (9, 9, 9)).save(p)),
])
def test_formats_and_sizes(thumbs: Thumbnailer, tmp_path: Path, name: str,
                           make: Callable[[Path], object]) -> None:
    p = tmp_path / name
    make(p)
    small = thumbs.get(p, 256)
    assert not small.placeholder
    im = _open(small.data)
    assert im.format == "WEBP" and im.size == (256, 128)
    big = _open(thumbs.get(p, 1024).data)
    assert big.size == (600, 300)  # never upscaled


def test_gif_first_frame(thumbs: Thumbnailer, tmp_path: Path) -> None:
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    im = _open(thumbs.get(tmp_path / "a.gif", 256).data).convert("RGB")
    r, g, b = im.getpixel((20, 20))  # type: ignore[misc]
    assert r > 200 and b < 50


def test_exif_orientation_applied(thumbs: Thumbnailer, tmp_path: Path) -> None:
    ex = Image.Exif()
    ex[0x0112] = 6  # rotate 90° clockwise on display
    Image.new("RGB", (400, 200)).save(tmp_path / "o.jpg", exif=ex.tobytes())
    assert _open(thumbs.get(tmp_path / "o.jpg", 256).data).size == (128, 256)


def test_cached_on_disk_and_reused(thumbs: Thumbnailer, tmp_path: Path) -> None:
    p = write_png(tmp_path / "c.png")
    first = thumbs.get(p, 256)
    files = list((tmp_path / "cache").rglob("*.webp"))
    assert len(files) == 1 and files[0].read_bytes() == first.data
    os.utime(files[0], (1, 1))  # mark the cached file; a re-render would replace it
    again = thumbs.get(p, 256)
    assert again.etag == first.etag and files[0].stat().st_mtime == 1


def test_never_stale_after_change(thumbs: Thumbnailer, tmp_path: Path) -> None:
    p = write_png(tmp_path / "s.png", color=(255, 0, 0), size=(64, 64))
    red = thumbs.get(p, 256)
    st = p.stat()
    # rewrite in place with another picture, same size and even the same mtime
    write_png(p, color=(0, 0, 255), size=(64, 64))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    if p.stat().st_size == st.st_size and p.stat().st_ino == st.st_ino:
        bump_mtime(p, 0.001)  # same bytes count and inode: only mtime_ns can tell
    blue = thumbs.get(p, 256)
    assert blue.etag != red.etag
    b = _open(blue.data).convert("RGB").getpixel((32, 32))
    assert b[2] > 200 and b[0] < 50  # type: ignore[index]


def test_bomb_gets_placeholder(thumbs: Thumbnailer, tmp_path: Path) -> None:
    p = png_bomb(tmp_path / "bomb.png")
    t = thumbs.get(p, 256)
    assert t.placeholder and _open(t.data).size == (256, 256)
    assert list((tmp_path / "cache").rglob("*.bad"))  # not attempted again for this version
    assert thumbs.get(p, 256).placeholder


def test_pixel_limit_setting(tmp_path: Path) -> None:
    t = Thumbnailer(tmp_path / "c2", max_pixels=100 * 100)
    try:
        write_png(tmp_path / "big.png", size=(200, 200))
        write_png(tmp_path / "ok.png", size=(100, 100))
        assert t.get(tmp_path / "big.png", 256).placeholder
        assert not t.get(tmp_path / "ok.png", 256).placeholder
    finally:
        t.close()


def test_broken_images_get_placeholder(thumbs: Thumbnailer, tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    (tmp_path / "empty.jpg").write_bytes(b"")
    good = write_png(tmp_path / "g.png", size=(200, 100))
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:120])
    for name in ("junk.png", "empty.jpg", "trunc.png"):
        assert thumbs.get(tmp_path / name, 256).placeholder, name
    # the pool is still healthy afterwards
    assert not thumbs.get(good, 256).placeholder


def test_fixed_image_gets_real_thumbnail(thumbs: Thumbnailer, tmp_path: Path) -> None:
    p = tmp_path / "f.png"
    p.write_bytes(b"garbage")
    assert thumbs.get(p, 256).placeholder
    write_png(p)
    bump_mtime(p)
    assert not thumbs.get(p, 256).placeholder


def test_concurrent_requests_share_one_render(thumbs: Thumbnailer, tmp_path: Path) -> None:
    p = write_png(tmp_path / "big.png", size=(1500, 1500))
    results: list[bytes] = []
    barrier = threading.Barrier(6)

    def one() -> None:
        barrier.wait()
        results.append(thumbs.get(p, 1024).data)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 6 and len(set(results)) == 1
    assert len(list((tmp_path / "cache").rglob("*.webp"))) == 1


def test_prune_keeps_cache_bounded(tmp_path: Path) -> None:
    limit = 200_000
    t = Thumbnailer(tmp_path / "c3", max_bytes=limit)
    try:
        for i in range(8):  # noise does not compress: each thumbnail is tens of KB
            Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3)).save(
                tmp_path / f"{i}.png")
            t.get(tmp_path / f"{i}.png", 256)
        t.prune()  # the background prune may have run too; either way the bound holds
        files = list((tmp_path / "c3").rglob("*.webp"))
        assert 0 < len(files) < 8
        assert sum(f.stat().st_size for f in files) <= limit
    finally:
        t.close()


# -- over HTTP ---------------------------------------------------------------------


def test_thumb_route_caching_headers(server: Server) -> None:
    s = server.session()
    p = write_png(server.root / "outputs" / "h.png", size=(512, 512))
    url = f"{server.url}/api/fs/thumb"
    r = s.get(url, params={"path": "outputs/h.png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    assert r.headers["cache-control"] == "private, no-cache"  # no version in the URL
    assert r.headers["x-content-type-options"] == "nosniff"
    etag = r.headers["etag"]
    v = version_of(p.stat())
    r2 = s.get(url, params={"path": "outputs/h.png", "v": v, "size": "1024"})
    assert "max-age=31536000" in r2.headers["cache-control"]
    assert _open(r2.content).size == (512, 512)
    r3 = s.get(url, params={"path": "outputs/h.png"}, headers={"If-None-Match": etag})
    assert r3.status_code == 304
    # after a change the old ETag no longer matches and the old v is not cacheable
    write_png(p, color=(0, 255, 0), size=(512, 512))
    bump_mtime(p)
    r4 = s.get(url, params={"path": "outputs/h.png", "v": v}, headers={"If-None-Match": etag})
    assert r4.status_code == 200 and r4.headers["etag"] != etag
    assert r4.headers["cache-control"] == "private, no-cache"
    # the cache lives in state_dir, never on the NAS
    assert list((server.state / "thumbs").rglob("*.webp"))
    assert not [f for f in server.root.rglob("*.webp")]


def test_thumb_route_scope_and_errors(server: Server) -> None:
    ann = server.add_user("ann")
    server.add_user("bob")
    write_png(server.root / "users" / "bob" / "outputs" / "b.png")
    write_png(server.root / "users" / "ann" / "outputs" / "a.png")
    url = f"{server.url}/api/fs/thumb"
    assert ann.get(url, params={"path": "users/bob/outputs/b.png"}).status_code == 404
    assert ann.get(url, params={"path": "users/ann/outputs/a.png"}).status_code == 200
    assert ann.get(url, params={"path": "users/ann/outputs/a.png", "size": "77"}
                   ).status_code == 422
    assert ann.get(url, params={"path": "users/ann/outputs"}).status_code == 400
    assert ann.get(url, params={"path": "users/ann/../bob/outputs/b.png"}).status_code == 400
    assert requests.get(url, params={"path": "users/ann/outputs/a.png"}).status_code == 401


def test_thumb_route_placeholder_for_bomb(server: Server) -> None:
    png_bomb(server.root / "outputs" / "bomb.png")
    r = server.session().get(f"{server.url}/api/fs/thumb", params={"path": "outputs/bomb.png"})
    assert r.status_code == 200 and r.headers["x-thumbnail"] == "placeholder"
    assert r.headers["cache-control"] == "private, no-cache"


def test_info_route(server: Server) -> None:
    write_exif_image(server.root / "outputs" / "i.jpg", "a fox\nSteps: 9, Sampler: Euler, "
                     "CFG scale: 3, Seed: 77, Size: 64x48, Model: m1")
    r = server.session().get(f"{server.url}/api/fs/info", params={"path": "outputs/i.jpg"})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["kind"] == "image" and j["meta"]["width"] == 64
    assert j["meta"]["params"]["seed"] == 77 and j["meta"]["params_from"] == "exif:UserComment"
    assert j["thumb"].startswith("/api/fs/thumb?path=outputs%2Fi.jpg&size=256&v=")
    assert exif_bytes  # the helper module is what wrote it
