"""Indexing speed, search latency and warm thumbnail serving, against floors measured
in the same run.

    python bench/index.py [--images 20000] [--mix mixed|a1111] [--folders 40] [--px 64]
                          [--runs 2] [--data DIR] [--skip-thumbs]

1. Makes N small images (kept in ``--data`` if given, so reruns skip this), each
   written the way its generator writes it (tests/filebrowser/images/generators.py).
   ``mixed``: A1111 PNG/JPEG/WebP and Forge, ComfyUI (SD and the Flux default graph),
   NovelAI v3/v4, InvokeAI 3/4, SwarmUI PNG/JPEG, Fooocus (JSON and A1111 schemes, and
   log.html only); ``a1111``: A1111 PNGs only (the measure before issue 16).
2. Floor: a bare Pillow loop getting each file's metadata text, what IIB's measure calls
   the floor (../shared/research/iib-measure.md): ``Image.open`` and its ``info`` (the
   PNG text chunks), and for JPEG/WebP the EXIF UserComment (``getexif``, the Exif IFD),
   where those generators put their parameters. Wall and CPU time.
3. Index: a fresh SQLite database, ``Index.scan()`` over the tree, in a child process
   (its peak RSS is the indexer's), ``--runs`` times, alternated with the floor.
   Target: within 2x the floor. Then one more run with a second thread that searches
   for a word every 5 ms from the start and reports when it first gets a hit (its
   polls and their lock handoffs cost the indexer 30 to 60 ms of CPU, so that run is
   reported on its own line, not in the ratio).
4. Search: the median of a word that matches about half the images (the page of 300
   the Images page asks for, with its total), a filtered page, a random page, the facets
   of everything and of that word.
5. Thumbnails: ``atelier serve`` as a real process; 100 generated 512 px images, their
   256 px thumbnails made once (warm), then a grid page of 100 thumbnail GETs against
   100 GETs of raw files of the same sizes via /api/fs/download. Target: <= 2x.

On a shared machine, compare the ratios of one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from common import Service
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from filebrowser import db  # noqa: E402
from filebrowser.access.jail import Scope  # noqa: E402
from filebrowser.images.facets import facets  # noqa: E402
from filebrowser.images.index import PARALLEL_AFTER, Index, SearchQuery, search  # noqa: E402
from tests.filebrowser.images import generators as gen  # noqa: E402

WORDS = ("masterpiece best quality 1girl 1boy solo red hair blue eyes long hair smile "
         "forest night city sky cat dog armor dress sword castle ocean sunset rain snow "
         "portrait landscape cinematic lighting detailed intricate watercolor anime").split()
MODELS = ("anything-v5", "juggernautXL_v9", "dreamshaper_8", "ponyDiffusionV6XL",
          "realisticVision_v60", "sd_xl_base_1.0", "animagineXL_v31")
SAMPLERS = ("Euler a", "DPM++ 2M", "DPM++ SDE", "DDIM", "UniPC")
SIZES = ((64, 64), (64, 96), (96, 64))
WORD = "masterpiece"  # in about half of the prompts: the "common word" search
# (kind, share of the images): what "mixed" is made of
MIX = (("a1111-png", 0.27), ("a1111-jpeg", 0.08), ("a1111-webp", 0.07), ("forge-png", 0.05),
       ("comfy-sd", 0.08), ("comfy-flux", 0.07), ("novelai-v3", 0.04), ("novelai-v4", 0.04),
       ("invokeai-3", 0.03), ("invokeai-4", 0.04), ("swarm-png", 0.05), ("swarm-jpeg", 0.03),
       ("fooocus-json", 0.04), ("fooocus-a1111", 0.03), ("fooocus-log", 0.08))


def prompt(i: int, rnd: random.Random) -> str:
    words = rnd.sample(WORDS, 12)
    if i % 2 == 0 and WORD not in words:
        words[0] = WORD
    elif i % 2 and WORD in words:
        words.remove(WORD)
    text = ", ".join(words)
    if i == 0:
        text += ", zebracorn"  # the word the searcher waits for: in the very first file
    return text


def infotext(i: int, rnd: random.Random, version: str = "v1.10.1") -> str:
    w, h = SIZES[i % 3]
    return (f"{prompt(i, rnd)}, <lora:style{i % 17}:0.{i % 9 + 1}>\n"
            f"Negative prompt: lowres, bad anatomy, bad hands, worst quality\n"
            f"Steps: {20 + i % 10}, Sampler: {SAMPLERS[i % 5]}, Schedule type: Karras, "
            f"CFG scale: 7, Seed: {1000 + i}, Size: {w * 8}x{h * 8}, "
            f"Model hash: 45dee52b{i % 7}, Model: {MODELS[i % 7]}, Version: {version}")


def _comfy(i: int, rnd: random.Random, flux: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    import copy

    if flux:
        p, w = copy.deepcopy(gen.FLUX_PROMPT), copy.deepcopy(gen.FLUX_WORKFLOW)
        p["6"]["inputs"]["text"] = prompt(i, rnd)
        p["25"]["inputs"]["noise_seed"] = 1000 + i
        w["nodes"][0]["widgets_values"] = [p["6"]["inputs"]["text"]]
    else:
        from tests.filebrowser.images.conftest import COMFY_PROMPT, COMFY_WORKFLOW

        p, w = copy.deepcopy(COMFY_PROMPT), copy.deepcopy(COMFY_WORKFLOW)
        p["6"]["inputs"]["text"] = prompt(i, rnd)
        p["3"]["inputs"]["seed"] = 1000 + i
        p["4"]["inputs"]["ckpt_name"] = MODELS[i % 7] + ".safetensors"
    return p, w


def make_one(kind: str, path: Path, i: int, rnd: random.Random) -> Path:
    size = SIZES[i % 3]
    if kind == "a1111-png":
        return gen.a1111_png(path.with_suffix(".png"), infotext(i, rnd), size=size)
    if kind == "forge-png":
        return gen.a1111_png(path.with_suffix(".png"),
                             infotext(i, rnd, "f2.0.1v1.10.1-previous-313-g8a042934"), size=size)
    if kind in ("a1111-jpeg", "a1111-webp"):
        ext, fmt = (".jpg", "JPEG") if kind == "a1111-jpeg" else (".webp", "WEBP")
        return gen.a1111_exif(path.with_suffix(ext), infotext(i, rnd), fmt, size=size)
    if kind in ("comfy-sd", "comfy-flux"):
        p, w = _comfy(i, rnd, kind == "comfy-flux")
        return gen.comfy_png(path.with_suffix(".png"), p, w, size=size)
    if kind.startswith("novelai"):
        c = dict(gen.NAI_V4_COMMENT if kind == "novelai-v4" else gen.NAI_V3_COMMENT)
        c["prompt"], c["seed"] = prompt(i, rnd), 1000 + i
        if kind == "novelai-v4":
            c["v4_prompt"] = {**c["v4_prompt"], "caption": {
                **c["v4_prompt"]["caption"], "base_caption": c["prompt"]}}
        return gen.novelai_png(path.with_suffix(".png"), c, size=size)
    if kind.startswith("invokeai"):
        m = dict(gen.INVOKE4_META if kind == "invokeai-4" else gen.INVOKE3_META)
        m["positive_prompt"], m["seed"] = prompt(i, rnd), 1000 + i
        return gen.invokeai_png(path.with_suffix(".png"), m, size=size)
    if kind.startswith("swarm"):
        d = {**gen.SWARM_DOC, "sui_image_params": {**gen.SWARM_DOC["sui_image_params"],
                                                   "prompt": prompt(i, rnd), "seed": 1000 + i}}
        if kind == "swarm-png":
            return gen.swarm_png(path.with_suffix(".png"), d, size=size)
        return gen.swarm_jpeg(path.with_suffix(".jpg"), d, size=size)
    if kind == "fooocus-json":
        return gen.fooocus_png(path.with_suffix(".png"), "fooocus", size=size)
    if kind == "fooocus-a1111":
        return gen.fooocus_png(path.with_suffix(".png"), "a1111", size=size)
    raise ValueError(kind)


def make_images(root: Path, n: int, folders: int, px: int, mix: str) -> dict[str, int]:
    marker = root / f".complete-{mix}-{n}-{folders}-{px}"
    kinds = [k for k, share in MIX for _ in range(round(share * 1000))] if mix == "mixed" \
        else ["a1111-png"]
    counts: dict[str, int] = {}
    plan = [kinds[i * 7919 % len(kinds)] for i in range(n)]  # spread over the folders
    for k in plan:
        counts[k] = counts.get(k, 0) + 1
    if marker.exists():
        return counts
    shutil.rmtree(root, ignore_errors=True)
    rnd = random.Random(1)
    logs: dict[Path, list[tuple[str, list[tuple[str, str, Any]]]]] = {}
    for i, kind in enumerate(plan):
        d = root / f"batch{i % folders:03d}"
        stem = d / f"{i:06d}-{1000 + i}"
        if kind == "fooocus-log":
            p = stem.with_suffix(".png")
            d.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", SIZES[i % 3], (90, 30, 120)).save(p, compress_level=1)
            fields = [(lab, key, prompt(i, rnd) if key == "prompt" else
                       str(1000 + i) if key == "seed" else v)
                      for lab, key, v in gen.FOOOCUS_FIELDS]
            logs.setdefault(d, []).append((p.name, fields))
        else:
            make_one(kind, stem, i, rnd)
    for d, entries in logs.items():
        gen.fooocus_log(d, entries, "2.5")
    marker.touch()
    return counts


def files_of(root: Path) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        out += [os.path.join(dirpath, f) for f in files
                if f.endswith((".png", ".jpg", ".webp"))]
    return out


def floor(paths: list[str]) -> tuple[float, float]:
    """(wall, cpu) of a bare Pillow loop getting every file's metadata text."""
    t, c = time.perf_counter(), time.process_time()
    n = 0
    for p in paths:
        with Image.open(p) as im:
            info = im.info
            if "exif" in info:
                exif = im.getexif()
                info = {"UserComment": exif.get_ifd(0x8769).get(0x9286) or exif.get(0x9286)}
            n += bool(info)
    return time.perf_counter() - t, time.process_time() - c


def _index_child(root: str, state: str, probe: bool, workers: int | None) -> dict[str, Any]:
    engine = db.connect(f"sqlite:///{state}/atelier.db")
    index = Index(engine, Path(root), workers=workers)
    first_hit: list[float] = []
    done = threading.Event()
    t0, c0 = time.perf_counter(), time.process_time()

    def searcher() -> None:
        probe = Index(engine, Path(root))
        everyone = Scope(read=("",), write=())
        while not done.is_set():
            if search(probe, everyone, SearchQuery(q="zebracorn", limit=1))["total"]:
                first_hit.append(time.perf_counter() - t0)
                return
            time.sleep(0.005)

    th = threading.Thread(target=searcher)
    if probe:
        th.start()
    written = index.scan()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0  # with the probe: includes the searcher's polls
    done.set()
    if probe:
        th.join()
    engine.dispose()
    # The parsing workers are children of multiprocessing's fork server, which reaps
    # them: once it is stopped (private API), their CPU time and peak RSS are in
    # RUSAGE_CHILDREN. (The pool is shut down when scan() returns.)
    from multiprocessing import forkserver
    time.sleep(0.1)  # (its loop reaps the workers on SIGCHLD)
    forkserver._forkserver._stop()  # type: ignore[attr-defined]
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"written": written, "wall": wall, "cpu": cpu, "hit": first_hit[0] if first_hit
            else None, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "workers_cpu": kids.ru_utime + kids.ru_stime, "workers_peak": kids.ru_maxrss * 1024,
            "workers": index.workers}


def index_once(root: Path, state: Path, n: int, probe: bool = False,
               workers: int | None = None) -> dict[str, Any]:
    """A fresh index in a child process: wall, cpu (the indexer's), workers_cpu (the
    parsing workers' and their fork server's), hit (first search hit; None without
    ``probe``, the searcher thread), peak and workers_peak (RSS, bytes).

    The child is ``python -c``, as ``python -m atelier`` or the ``atelier`` script is
    light: multiprocessing imports the parent's main script into each worker, and this
    one's imports would add a third of a second to the workers' start."""
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    code = ("import json, sys; sys.path[:0] = [sys.argv[1]]; import index; "
            "print(json.dumps(index._index_child(sys.argv[2], sys.argv[3], sys.argv[4] == '1', "
            "None if sys.argv[5] == 'auto' else int(sys.argv[5]))))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(root),
                          str(state), "1" if probe else "0",
                          "auto" if workers is None else str(workers)],
                         check=True, capture_output=True, text=True).stdout
    r: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert r["written"] == n, (r["written"], n)
    return r


def median_ms(fn: Any, runs: int = 15) -> tuple[float, Any]:
    out, times = None, []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


def search_bench(root: Path, state: Path) -> list[tuple[str, float, str]]:
    engine = db.connect(f"sqlite:///{state / 'atelier.db'}")
    index = Index(engine, root)
    everyone = Scope(read=("",), write=())
    rows = []
    cases: list[tuple[str, Any]] = [
        (f"q={WORD} (page of 300 + total)",
         lambda: search(index, everyone, SearchQuery(q=WORD, limit=300))),
        (f"q={WORD}, exact total", lambda: search(index, everyone, SearchQuery(
            q=WORD, limit=300, exact_total=True))),
        ("model=juggernautXL_v9 (page of 300)",
         lambda: search(index, everyone, SearchQuery(model=MODELS[1], limit=300))),
        ("sort=random (page of 300)",
         lambda: search(index, everyone, SearchQuery(sort="random", seed=7, limit=300))),
        ("facets, everything (7 fields)", lambda: facets(index, everyone, SearchQuery())),
        (f"facets, q={WORD}", lambda: facets(index, everyone, SearchQuery(q=WORD))),
        ("facets, model=a OR b (disjunctive)", lambda: facets(
            index, everyone, SearchQuery(model=[f'"{MODELS[0]}"', f'"{MODELS[1]}"']))),
    ]
    for label, fn in cases:
        ms, out = median_ms(fn)
        if "results" in out:
            note = f"total {out['total']:,}{'' if out['total_exact'] else '+'}"
        else:
            note = f"{out['scanned']:,} looked at, exact={out['exact']}"
        rows.append((label, ms, note))
    engine.dispose()
    return rows


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
    ap.add_argument("--mix", choices=("mixed", "a1111"), default="mixed")
    ap.add_argument("--folders", type=int, default=40)
    ap.add_argument("--px", type=int, default=64, help="(kept for old --data folders)")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--data", type=Path, help="keep the generated images here")
    ap.add_argument("--skip-thumbs", action="store_true")
    ap.add_argument("--workers", type=int, default=None,
                    help="parsing processes (default: as the service, one per CPU, <= 4)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        data = args.data or tmp / "images"
        t = time.perf_counter()
        counts = make_images(data, args.images, args.folders, args.px, args.mix)
        print(f"images: {args.images:,} ({args.mix}) in {args.folders} folders "
              f"({time.perf_counter() - t:.1f} s to make)")
        if args.mix == "mixed":
            print("  " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        paths = files_of(data)
        floor(paths)  # page cache warm, as in the IIB measure
        floors, runs, solo = [], [], []
        for i in range(args.runs):  # alternated, so that a busy spell hits all alike
            floors.append(floor(paths))
            runs.append(index_once(data, tmp / f"state{i}", len(paths), workers=args.workers))
            solo.append(index_once(data, tmp / "state-solo", len(paths), workers=0))
        floors.append(floor(paths))
        probed = index_once(data, tmp / "state-probe", len(paths), probe=True,
                            workers=args.workers)
        f_wall = min(w for w, _ in floors)
        f_cpu = min(c for _, c in floors)
        best = min(runs, key=lambda r: r["wall"])
        wall, cpu = best["wall"], best["cpu"] + best["workers_cpu"]
        print(f"floor (bare Pillow loop reading the metadata, one thread): {f_wall:.3f} s "
              f"wall, {f_cpu:.3f} s CPU ({len(paths) / f_wall:,.0f} images/s)")
        print(f"index (fresh SQLite + FTS5, {best['workers']} parsing processes): "
              f"{wall:.3f} s wall, {cpu:.3f} s CPU in all ({len(paths) / wall:,.0f} images/s);"
              f" runs: {', '.join(format(r['wall'], '.3f') for r in runs)} s wall")
        print(f"  vs floor: {wall / f_wall:.2f}x wall (target <= 2x), {cpu / f_cpu:.2f}x CPU; "
              f"CPU of the indexer {best['cpu']:.3f} s, of the workers and their fork server "
              f"{best['workers_cpu']:.3f} s")
        print(f"  peak RSS: the indexer {max(r['peak'] for r in runs) / 1e6:.0f} MB, the "
              f"largest worker {max(r['workers_peak'] for r in runs) / 1e6:.0f} MB")
        one = min(solo, key=lambda r: r["wall"])
        print(f"index in one thread (--workers 0, as a scan of under {PARALLEL_AFTER} new "
              f"files runs): {one['wall']:.3f} s wall, {one['cpu']:.3f} s CPU = "
              f"{one['wall'] / f_wall:.2f}x wall, {one['cpu'] / f_cpu:.2f}x CPU; peak RSS "
              f"{max(r['peak'] for r in solo) / 1e6:.0f} MB")
        if probed["hit"] is not None:
            print(f"  first search result during indexing (a run with a searcher polling "
                  f"every 5 ms): {probed['hit'] * 1000:.0f} ms after the start (that run "
                  f"complete at {probed['wall'] * 1000:.0f} ms)")
        else:
            print("  first search result: none during indexing")
        print("search (median of 15, warm):")
        for label, ms, note in search_bench(data, tmp / "state0"):
            print(f"  {label:40s} {ms:7.1f} ms  ({note})")
        if not args.skip_thumbs:
            th, raw = thumbs_bench(tmp / "thumbs", args.runs)
            print(f"grid page, 100 warm 256 px thumbnails: {th * 1000:.0f} ms; 100 raw files "
                  f"of the same sizes: {raw * 1000:.0f} ms; ratio {th / raw:.2f}x "
                  f"(target <= 2x)")


if __name__ == "__main__":
    main()
