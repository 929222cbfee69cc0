"""Transfer benchmark: tus, WebDAV, zip and pull against dd and curl, as ratios.

    .venv/bin/python bench/transfer.py [--upload-gb 2] [--zip-gb 1] [--download-gb 1]
                                       [--dir DIR]

Every measurement starts a fresh ``atelier serve`` process (uvicorn, httptools, uvloop)
on loopback; its peak RSS is the kernel's VmHWM read at the end. Files live in a
temporary folder under ``--dir`` (default: the current disk), deleted afterwards.
Uploads are timed until the last answer, which includes the server's fsync and
atomic rename; dd writes the same bytes to the same disk with ``conv=fsync``.
Targets (issue 3): tus and WebDAV PUT >= 0.5x dd, server peak <= 200 MB, zip peak
<= 200 MB, ``atelier pull`` >= 0.8x curl.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from common import Service

MB = 1_000_000
MiB = 1024 * 1024


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n


def rate(size: int, seconds: float) -> float:
    return size / MB / seconds


def settle() -> None:
    """Start each timed run from the same state: nothing dirty, and (as root) the page
    cache dropped, so one run's writeback or reclaim does not land on the next (on this
    VM the second of two back-to-back 2 GB uploads spent 3x the kernel time of the first)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
    except OSError:
        pass


def dd(src: Path, dst: Path, size: int) -> float:
    t = time.perf_counter()
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=8M", "conv=fsync"], check=True,
                   capture_output=True)
    seconds = time.perf_counter() - t
    dst.unlink()
    return rate(size, seconds)


def tus_headers(svc: Service) -> dict[str, str]:
    return {"Authorization": f"Bearer {svc.token}", "Tus-Resumable": "1.0.0"}


def create_upload(svc: Service, name: str, size: int) -> str:
    import base64

    meta = f"filename {base64.b64encode(name.encode()).decode()}," \
           f"folder {base64.b64encode(b'bench').decode()}"
    r = requests.post(f"{svc.url}/api/tus/", headers={
        **tus_headers(svc), "Upload-Length": str(size), "Upload-Metadata": meta}, timeout=60)
    r.raise_for_status()
    return svc.url + r.headers["Location"]


def run_tus_curl(svc: Service, src: Path, size: int) -> float:
    url = create_upload(svc, "curl.bin", size)
    t = time.perf_counter()
    subprocess.run(["curl", "-sS", "-f", "-X", "PATCH", "-T", str(src), "-H", "Expect:",
                    "-H", f"Authorization: Bearer {svc.token}", "-H", "Tus-Resumable: 1.0.0",
                    "-H", "Upload-Offset: 0", "-H",
                    "Content-Type: application/offset+octet-stream", url], check=True,
                   capture_output=True)
    return rate(size, time.perf_counter() - t)


def run_tus_tuspy(svc: Service, src: Path, size: int, chunk: int) -> float:
    from tusclient import client

    c = client.TusClient(f"{svc.url}/api/tus/",
                         headers={"Authorization": f"Bearer {svc.token}"})
    t = time.perf_counter()
    c.uploader(str(src), chunk_size=chunk,
               metadata={"filename": "tuspy.bin", "folder": "bench"}).upload()
    return rate(size, time.perf_counter() - t)


def run_push(svc: Service, src: Path, size: int, home: Path) -> float:
    env = {**os.environ, "ATELIER_URL": svc.url, "ATELIER_TOKEN": svc.token,
           "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "atelier", "push", str(src), "bench/push"],
                   check=True, capture_output=True, env=env)
    return rate(size, time.perf_counter() - t)


def run_dav_put(svc: Service, src: Path, size: int) -> float:
    t = time.perf_counter()
    subprocess.run(["curl", "-sS", "-f", "-T", str(src), "-H", "Expect:",
                    "-u", f"admin:{svc.token}", f"{svc.url}/dav/bench/dav.bin"],
                   check=True, capture_output=True)
    return rate(size, time.perf_counter() - t)


def run_zip(svc: Service, folder: str) -> tuple[float, int]:
    t = time.perf_counter()
    out = subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download}",
                          "-H", f"Authorization: Bearer {svc.token}",
                          f"{svc.url}/api/fs/zip?path={folder}"], check=True,
                         capture_output=True, text=True)
    n = int(out.stdout)
    return rate(n, time.perf_counter() - t), n


def run_curl_get(svc: Service, remote: str, dst: Path, size: int) -> float:
    t = time.perf_counter()
    subprocess.run(["curl", "-sS", "-f", "-o", str(dst), "-H",
                    f"Authorization: Bearer {svc.token}",
                    f"{svc.url}/api/fs/download?path={remote}"], check=True,
                   capture_output=True)
    seconds = time.perf_counter() - t
    assert dst.stat().st_size == size
    dst.unlink()
    return rate(size, seconds)


def run_pull(svc: Service, remote: str, dst: Path, size: int, home: Path) -> float:
    env = {**os.environ, "ATELIER_URL": svc.url, "ATELIER_TOKEN": svc.token,
           "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "atelier", "pull", remote, str(dst)], check=True,
                   capture_output=True, env=env)
    seconds = time.perf_counter() - t
    assert dst.stat().st_size == size
    dst.unlink()
    return rate(size, seconds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upload-gb", type=float, default=2.0, help="tus and WebDAV size (GB)")
    ap.add_argument("--zip-gb", type=float, default=1.0, help="zipped folder size (GB)")
    ap.add_argument("--download-gb", type=float, default=1.0, help="download size (GB)")
    ap.add_argument("--tuspy-chunk-mib", type=int, default=64)
    ap.add_argument("--download-runs", type=int, default=4,
                    help="curl and pull runs each, alternating which goes first (medians)")
    ap.add_argument("--dir", default=".", help="where the temporary files go (same disk)")
    ap.add_argument("--src-dir", default="/dev/shm",
                    help="where the upload source is made (tmpfs: read at memory speed)")
    args = ap.parse_args()
    up = int(args.upload_gb * 1e9)
    zsize = int(args.zip_gb * 1e9)
    down = int(args.download_gb * 1e9)

    work = Path(tempfile.mkdtemp(prefix="atelier-bench-", dir=args.dir))
    rows: list[tuple[str, str, str, str]] = []
    try:
        # The source lives in RAM (tmpfs) so that every writer, dd included, reads it at
        # memory speed and only the write to this disk is measured.
        src = Path(tempfile.mkdtemp(prefix="atelier-src-", dir=args.src_dir)) / "src.bin"
        make_file(src, up)
        root, home = work / "nas", work / "home"
        (root / "bench").mkdir(parents=True)
        # Each timed write starts with nothing dirty (os.sync): otherwise the first one
        # shares the disk with the writeback of the source file just made.
        floors = []
        for _ in range(3):
            settle()
            floors.append(dd(src, root / "bench" / "dd.bin", up))
        floor = statistics.median(floors)
        rows.append((f"dd bs=8M conv=fsync, {up / 1e9:.1f} GB (median of 3)", f"{floor:.0f}",
                     "1.00x", "-"))

        def measure(label: str, fn, target: str) -> None:  # type: ignore[no-untyped-def]
            state = work / f"state-{len(rows)}"
            svc = Service(root, state)
            try:
                settle()
                mbps = fn(svc)
                peak = svc.peak_mb()
            finally:
                svc.stop()
            for f in (root / "bench").rglob("*.bin"):
                f.unlink()
            rows.append((label, f"{mbps:.0f}", f"{mbps / floor:.2f}x (>= {target})", peak))

        measure("tus, curl: one streaming PATCH", lambda s: run_tus_curl(s, src, up), "0.5")
        measure("tus, atelier push (32 MiB sha256 chunks)",
                lambda s: run_push(s, src, up, home), "0.5")
        measure(f"tus, tuspy ({args.tuspy_chunk_mib} MiB chunks)",
                lambda s: run_tus_tuspy(s, src, up, args.tuspy_chunk_mib * MiB), "0.5")
        measure("WebDAV PUT, curl -T", lambda s: run_dav_put(s, src, up), "0.5")
        shutil.rmtree(src.parent)

        # zip: a folder of checkpoints and images (stored, as they would be)
        folder = root / "outputs" / "zipme"
        folder.mkdir(parents=True)
        n = 16
        for i in range(n):
            ext = ".safetensors" if i % 2 else ".png"
            make_file(folder / f"f{i:02d}{ext}", zsize // n)
        zsvc = Service(root, work / "state-zip")
        try:
            zrate, zbytes = run_zip(zsvc, "outputs/zipme")
            zpeak = zsvc.peak_mb()
        finally:
            zsvc.stop()
        rows.append((f"zip stream of {zbytes / 1e9:.2f} GB folder ({n} files), curl",
                     f"{zrate:.0f}", "-", zpeak))
        shutil.rmtree(folder)

        big = root / "outputs" / "download.bin"
        make_file(big, down)
        dsvc = Service(root, work / "state-dl")
        try:
            subprocess.run(["cat", str(big)], stdout=subprocess.DEVNULL, check=True)
            # Both write 1 GB to the same disk, so the one that runs second meets the
            # first one's writeback: alternate the order, sync before each, take medians.
            curl_rates, pull_rates = [], []
            for i in range(args.download_runs):
                pair = [("curl", run_curl_get), ("pull", run_pull)]
                for name, fn in pair if i % 2 == 0 else pair[::-1]:
                    settle()  # then warm the served file again: only the copy is measured
                    subprocess.run(["cat", str(big)], stdout=subprocess.DEVNULL, check=True)
                    if name == "curl":
                        curl_rates.append(fn(dsvc, "outputs/download.bin", work / "curl.out",
                                             down))
                    else:
                        pull_rates.append(fn(dsvc, "outputs/download.bin", work / "pull.out",
                                             down, home))
            curl_rate = statistics.median(curl_rates)
            pull_rate = statistics.median(pull_rates)
            dpeak = dsvc.peak_mb()
        finally:
            dsvc.stop()
        rows.append((f"download {down / 1e9:.1f} GB, curl (median of {args.download_runs})",
                     f"{curl_rate:.0f}", "1.00x", "-"))
        rows.append(("download, atelier pull (Range-resumable)", f"{pull_rate:.0f}",
                     f"{pull_rate / curl_rate:.2f}x curl (>= 0.8)", dpeak))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':{width}}  {'MB/s':>6}  {'ratio':<22}  server RSS MB: peak")
    for label, mbps, ratio, peak in rows:
        print(f"{label:{width}}  {mbps:>6}  {ratio:<22}  {peak}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
