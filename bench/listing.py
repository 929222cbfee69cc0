"""Listing a huge folder: the first sorted page through the API against bare scandir.

    python bench/listing.py [--files 100000] [--runs 15]

Makes a folder of N empty files in a temporary NAS, starts ``atelier serve`` as a real
process, and times GET /api/fs/list (first page of 200, sorted by name) against the
floor of ``os.scandir`` + sort on the same folder in this process. Prints the median
latencies, their ratio (target: at most 3x) and the server's peak memory (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import requests
from common import Service


def floor_once(folder: Path) -> float:
    t = time.perf_counter()
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it)
    names[:200]
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent.parent) as tmp:
        root = Path(tmp) / "nas"
        folder = root / "outputs" / "huge"
        folder.mkdir(parents=True)
        for i in range(args.files):
            (folder / f"{i:08d}-image.png").touch()
        svc = Service(root, Path(tmp) / "state")
        url = svc.url
        try:
            s = requests.Session()
            s.headers["Authorization"] = f"Bearer {svc.token}"
            # The image index reads a new NAS once at start; measure the steady state
            # (the listing never waits for the index, but it shares the two cores).
            t0 = time.perf_counter()
            while True:
                st = s.get(f"{url}/api/search/status").json()
                if not st.get("enabled") or (st["last_scan"] and not st["scanning"]):
                    break
                time.sleep(0.2)
            print(f"initial index of {args.files} files: {time.perf_counter() - t0:.1f} s")
            params = {"path": "outputs/huge", "limit": 200, "sort": "name"}
            api_times, floor_times = [], []
            for i in range(args.runs + 2):
                t = time.perf_counter()
                r = s.get(f"{url}/api/fs/list", params=params)
                dt = time.perf_counter() - t
                assert r.status_code == 200 and len(r.json()["entries"]) == 200
                f = floor_once(folder)
                if i >= 2:  # warm-up
                    api_times.append(dt)
                    floor_times.append(f)
            api_ms = statistics.median(api_times) * 1000
            floor_ms = statistics.median(floor_times) * 1000
            print(f"files: {args.files}, runs: {args.runs} (median)")
            print(f"API first page of 200, sorted by name: {api_ms:8.1f} ms")
            print(f"floor os.scandir + sort:               {floor_ms:8.1f} ms")
            print(f"ratio API / floor: {api_ms / floor_ms:.2f}x (target <= 3x)")
            print(f"server memory, MB (VmHWM): {svc.peak_mb()}")
        finally:
            svc.stop()


if __name__ == "__main__":
    main()
