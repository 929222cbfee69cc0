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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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
        port = free_port()
        env = {**os.environ, "ATELIER_ROOT": str(root), "ATELIER_STATE_DIR": f"{tmp}/state",
               "ATELIER_ADMIN_PASSWORD": "bench-pass-123"}
        proc = subprocess.Popen([sys.executable, "-m", "atelier", "serve", "--port", str(port),
                                 "--log-level", "warning"], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    requests.get(f"{url}/api/health", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            token = requests.post(f"{url}/api/tokens", auth=("admin", "bench-pass-123"),
                                  json={}).json()["token"]
            s = requests.Session()
            s.headers["Authorization"] = f"Bearer {token}"
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
            print(f"server peak memory (VmHWM): {peak_rss_mb(proc.pid):.0f} MB")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
