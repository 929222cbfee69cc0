"""Indexing speed and warm thumbnail serving, against floors measured in the same run.

    python bench/index.py [--images 20000] [--folders 20] [--px 64] [--runs 2] [--data DIR]

1. Makes N small PNGs with A1111 infotext (``parameters`` chunk, as A1111 writes it)
   in F folders (kept in ``--data`` if given, so reruns skip this).
2. Floor: a bare Pillow loop reading each file's ``parameters`` (what IIB's measure
   calls the floor; ../shared/research/iib-measure.md: 0.74-0.99 s for 20,000).
3. Index: a fresh SQLite database, ``Index.scan()`` over the tree; a second thread
   searches for a word every 5 ms from the start and reports when it first gets a
   hit (the index is searchable during indexing). Targets: >= 8,700 images/s (3x
   IIB's 2,900 on this machine) and so within 3x of the floor.
4. Thumbnails: ``atelier serve`` as a real process; 100 generated 512 px images, their
   256 px thumbnails made once (warm), then a grid page of 100 thumbnail GETs against
   100 GETs of raw files of the same sizes via /api/fs/download. Target: <= 2x.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests
from common import Service
from PIL import Image, PngImagePlugin

from filebrowser import db
from filebrowser.access.jail import Scope
from filebrowser.images.index import Index, SearchQuery, search

WORDS = ("masterpiece best quality 1girl 1boy solo red hair blue eyes long hair smile "
         "forest night city sky cat dog armor dress sword castle ocean sunset rain snow "
         "portrait landscape cinematic lighting detailed intricate watercolor anime").split()


def infotext(i: int, rnd: random.Random) -> str:
    prompt = ", ".join(rnd.sample(WORDS, 12)) + f", <lora:style{i % 17}:0.{i % 9 + 1}>"
    if i == 0:
        prompt += ", zebracorn"  # the word the searcher waits for: in the very first file
    return (f"{prompt}\nNegative prompt: lowres, bad anatomy, bad hands, worst quality\n"
            f"Steps: {20 + i % 10}, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, "
            f"Seed: {1000 + i}, Size: 512x768, Model hash: 45dee52b{i % 7}, "
            f"Model: model{i % 7}, Version: v1.10.1")


def make_images(root: Path, n: int, folders: int, px: int) -> None:
    marker = root / f".complete-{n}-{folders}-{px}"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rnd = random.Random(1)
    base = Image.new("RGB", (px, px), (90, 30, 120))
    buf = io.BytesIO()
    for i in range(n):
        d = root / f"batch{i % folders:03d}"
        if i < folders:
            d.mkdir(parents=True, exist_ok=True)
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", infotext(i, rnd))
        buf.seek(0)
        buf.truncate()
        base.save(buf, "PNG", pnginfo=info, compress_level=1)
        (d / f"{i:06d}-{1000 + i}.png").write_bytes(buf.getvalue())
    marker.touch()


def files_of(root: Path) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        out += [os.path.join(dirpath, f) for f in files if f.endswith(".png")]
    return out


def floor(paths: list[str]) -> float:
    t = time.perf_counter()
    n = 0
    for p in paths:
        with Image.open(p) as im:
            if im.info.get("parameters"):
                n += 1
    dt = time.perf_counter() - t
    assert n == len(paths)
    return dt


def index_once(root: Path, state: Path, n: int) -> tuple[float, float | None]:
    shutil.rmtree(state, ignore_errors=True)
    engine = db.connect(f"sqlite:///{state / 'atelier.db'}")
    index = Index(engine, root)
    first_hit: list[float] = []
    done = threading.Event()
    t0 = time.perf_counter()

    def searcher() -> None:
        probe = Index(engine, root)
        everyone = Scope(read=("",), write=())
        while not done.is_set():
            if search(probe, everyone, SearchQuery(q="zebracorn", limit=1))["total"]:
                first_hit.append(time.perf_counter() - t0)
                return
            time.sleep(0.005)

    th = threading.Thread(target=searcher)
    th.start()
    written = index.scan()
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    engine.dispose()
    assert written == n, (written, n)
    return wall, (first_hit[0] if first_hit else None)


def thumbs_bench(tmp: Path, runs: int) -> tuple[float, float]:
    root, state = tmp / "nas", tmp / "state"
    grid = root / "outputs" / "grid"
    raw = root / "outputs" / "raw"
    grid.mkdir(parents=True)
    raw.mkdir(parents=True)
    rnd = random.Random(2)
    for i in range(100):
        im = Image.new("RGB", (512, 512), (rnd.randrange(256), rnd.randrange(256), 90))
        im.paste(Image.effect_noise((256, 256), 40).convert("RGB"), (128, 128))
        im.save(grid / f"{i:03d}.png", compress_level=1)
    svc = Service(root, state, env={"ATELIER_INDEX_ENABLED": "false"})
    url = svc.url
    try:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {svc.token}"
        thumb_params = []
        for i in range(100):  # warm the cache; raw files get the same byte sizes
            params = {"path": f"outputs/grid/{i:03d}.png", "size": "256"}
            r = s.get(f"{url}/api/fs/thumb", params=params)
            r.raise_for_status()
            (raw / f"{i:03d}.webp").write_bytes(r.content)
            thumb_params.append(params)
        raw_params = [{"path": f"outputs/raw/{i:03d}.webp", "inline": "true"}
                      for i in range(100)]

        def page(route: str, params: list[dict[str, str]]) -> float:
            t = time.perf_counter()
            for p in params:
                r = s.get(f"{url}{route}", params=p)
                assert r.status_code == 200 and r.content
            return time.perf_counter() - t

        page("/api/fs/download", raw_params)
        t_thumb, t_raw = [], []
        for _ in range(max(5, runs * 3)):
            t_thumb.append(page("/api/fs/thumb", thumb_params))
            t_raw.append(page("/api/fs/download", raw_params))
        return statistics.median(t_thumb), statistics.median(t_raw)
    finally:
        svc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--folders", type=int, default=20)
    ap.add_argument("--px", type=int, default=64, help="image width and height")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--data", type=Path, help="keep the generated images here")
    ap.add_argument("--skip-thumbs", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        data = args.data or tmp / "images"
        t = time.perf_counter()
        make_images(data, args.images, args.folders, args.px)
        print(f"images: {args.images} PNGs {args.px}x{args.px} in {args.folders} folders "
              f"({time.perf_counter() - t:.1f} s to make)")
        paths = files_of(data)
        floor(paths)  # page cache warm, as in the IIB measure
        floors = [floor(paths) for _ in range(args.runs)]
        runs = [index_once(data, tmp / f"state{i}", len(paths)) for i in range(args.runs)]
        f = min(floors)
        wall = min(w for w, _ in runs)
        hits = [h for _, h in runs if h is not None]
        rate = len(paths) / wall
        print(f"floor (bare Pillow loop reading 'parameters'): {f:.3f} s "
              f"({len(paths) / f:,.0f} images/s)")
        print(f"index (fresh SQLite + FTS5): {wall:.3f} s ({rate:,.0f} images/s); "
              f"runs: {', '.join(f'{w:.3f}' for w, _ in runs)} s")
        print(f"  vs floor: {wall / f:.2f}x (target <= 3x); vs IIB's 2,900 images/s: "
              f"{rate / 2900:.1f}x (target >= 3x, i.e. >= 8,700 images/s)")
        if hits:
            print(f"  first search result during indexing: {min(hits) * 1000:.0f} ms "
                  f"after the start (index complete at {wall * 1000:.0f} ms)")
        else:
            print("  first search result: none during indexing")
        if not args.skip_thumbs:
            th, raw = thumbs_bench(tmp / "thumbs", args.runs)
            print(f"grid page, 100 warm 256 px thumbnails: {th * 1000:.0f} ms; 100 raw files "
                  f"of the same sizes: {raw * 1000:.0f} ms; ratio {th / raw:.2f}x "
                  f"(target <= 2x)")


if __name__ == "__main__":
    main()
