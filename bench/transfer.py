"""Transfer benchmark: tus, WebDAV, zip and pull against dd and curl, as ratios.

    .venv/bin/python bench/transfer.py [--upload-gb 2] [--zip-gb 1] [--download-gb 1]
                                       [--rounds 3] [--dir DIR]

Every measurement starts a fresh ``atelier serve`` process (uvicorn, httptools, uvloop)
on loopback; its peak RSS is the kernel's VmHWM read at the end. Files live in a
temporary folder under ``--dir`` (default: the current disk), deleted afterwards.
Uploads are timed until the last answer, which includes the server's fsync and
atomic rename; dd writes the same bytes to the same disk with ``conv=fsync``. A second
floor, dd with ``oflag=direct``, is the disk without the page cache: what the server's
O_DIRECT upload path (``upload_direct_io``, on for big bodies on local disks) can reach;
each upload's ratio to it is printed too.

Writing into fresh page-cache pages is erratic on this VM (dd of 2 GB: 200 to 1100 MB/s),
so the uploads run ``--rounds`` rounds, each of dd, tus with curl, ``atelier push``,
tuspy and WebDAV PUT in an order rotated per round, each from a settled page cache. A
method's ratio is the median over rounds of its rate / dd's rate in the same round, with
the per-round range in brackets; MB/s is the median, server peak RSS the max over rounds.
The cpu column is CPU seconds per GB transferred (median over rounds): the server
process's (utime + stime from /proc) and the client's (rusage of the curl, dd or
``atelier push`` child; of this process for tuspy).
The quota rows push 0.5 GB as a user whose home holds --quota-files files, with the
home walked for every PATCH's quota check and with the walk reused, against no quota.
The download section ends with ``atelier pull``'s fixed cost: the median wall time of
5 pulls of a 1-byte file, beside curl's.

The desktop client against curl on the same server: ``atelier push`` / curl's streaming
PATCH is the median over rounds of the two rates in the same round (range in
brackets), ``atelier pull`` / curl GET the ratio of the medians; each client's peak
RSS (VmHWM, read from /proc while it runs) is printed beside it. After each cache
drop, curl and the CLI are loaded once with 1-byte transfers (``warm_clients``): the
timed run measures the transfer, not reading the programs back from disk. Before anything is
timed the packages are compiled to bytecode, as ``pip install`` does: with
``PYTHONDONTWRITEBYTECODE`` set and no ``__pycache__``, every run of the CLI would
compile its modules again (about 30 ms here), which no installed copy does.

Targets (issue 3): tus and WebDAV PUT >= 0.5x dd, server peak <= 200 MB, zip peak
<= 200 MB. Issue 11: ``atelier push`` >= 0.8x curl, ``atelier pull`` >= 1.0x curl, each
client's peak RSS < 150 MB. ``--sections`` runs a part (e.g. ``upload,download``).
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from common import Service, compile_packages, proc_status

MB = 1_000_000
GB = 1_000_000_000
MiB = 1024 * 1024
# After drop_caches the guest reports the freed pages to the host (free page reporting)
# about 2 s later; a writer that starts before that meets a different host memory state
# than one that starts after (dd of 2 GB: 200 to 1100 MB/s), so settle() waits it out.
SETTLE_SECONDS = 3.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
UPLOAD_TARGET = "0.5"
PUSH_TARGET, PULL_TARGET, CLIENT_PEAK_MB = "0.8", "1.0", 150
SECTIONS = ("upload", "quota", "zip", "download")


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
    VM the second of two back-to-back 2 GB uploads spent 3x the kernel time of the first);
    then wait until the host has taken back the freed pages (SETTLE_SECONDS)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
    except OSError:
        pass
    time.sleep(SETTLE_SECONDS)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used: /proc/PID/stat fields 14
    and 15, counted after the command name, which may hold spaces."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rusage_cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


@dataclass
class Usage:
    """Wall time and CPU seconds of one transfer (and the client's peak RSS, if a child)."""

    seconds: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    client_peak_mb: float = 0.0


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Run ``cmd`` to completion (it must succeed); its peak RSS in MB.

    Read as VmHWM from /proc while it runs (every 10 ms; the mark only grows, so the
    last read misses at most the final 10 ms): the ``ru_maxrss`` that wait4 reports
    carries the parent's peak across the vfork + exec that starts the child.
    """
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc_status(proc.pid, "VmHWM:"))
            stop.wait(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        _, err = proc.communicate()
    finally:
        stop.set()
        watcher.join()
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, stderr=err)
    return peak / MB


def warm_clients(svc: Service, home: Path, work: Path) -> None:
    """Load curl and the ``atelier`` CLI (push and pull) once after a cache drop, with
    1-byte transfers, so that the timed run measures the transfer and not reading the
    programs back from disk: after settle() a cold Python start read ~150 files and took
    60-100 ms here, curl's 10-20. The served file is warmed the same way (``cat``)."""
    env = client_env(svc, home)
    one = work / "warm.bin"
    one.write_bytes(b"x")
    subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-H",
                    f"Authorization: Bearer {svc.token}",
                    f"{svc.url}/api/fs/download?path=outputs/one.bin"],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "atelier", "push", str(one), "bench/warm",
                    "--conflict", "overwrite"], check=True, capture_output=True, env=env)
    subprocess.run([sys.executable, "-m", "atelier", "pull", "outputs/one.bin",
                    str(work / "warm.out")], check=True, capture_output=True, env=env)
    (work / "warm.out").unlink()


@contextmanager
def metered(usage: Usage, client: int, server_pid: int | None = None) -> Iterator[None]:
    """Time the block and charge it the CPU of ``client`` (RUSAGE_CHILDREN for clients run
    to completion as subprocesses, RUSAGE_SELF for one in this process) and of the server."""
    server0 = proc_cpu(server_pid) if server_pid is not None else 0.0
    client0 = rusage_cpu(client)
    t = time.perf_counter()
    yield
    usage.seconds = time.perf_counter() - t
    usage.client_cpu = rusage_cpu(client) - client0
    if server_pid is not None:
        usage.server_cpu = proc_cpu(server_pid) - server0


def dd(src: Path, dst: Path, usage: Usage, flags: list[str]) -> None:
    with metered(usage, resource.RUSAGE_CHILDREN):
        subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=8M", "conv=fsync", *flags],
                       check=True, capture_output=True)
    dst.unlink()


def tus_headers(svc: Service) -> dict[str, str]:
    return {"Authorization": f"Bearer {svc.token}", "Tus-Resumable": "1.0.0"}


def create_upload(svc: Service, name: str, size: int) -> str:
    meta = f"filename {base64.b64encode(name.encode()).decode()}," \
           f"folder {base64.b64encode(b'bench').decode()}"
    r = requests.post(f"{svc.url}/api/tus/", headers={
        **tus_headers(svc), "Upload-Length": str(size), "Upload-Metadata": meta}, timeout=60)
    r.raise_for_status()
    return svc.url + r.headers["Location"]


def run_tus_curl(svc: Service, src: Path, size: int, usage: Usage) -> None:
    url = create_upload(svc, "curl.bin", size)
    with metered(usage, resource.RUSAGE_CHILDREN, svc.proc.pid):
        usage.client_peak_mb = run_child(
            ["curl", "-sS", "-f", "-X", "PATCH", "-T", str(src), "-H", "Expect:",
             "-H", f"Authorization: Bearer {svc.token}", "-H", "Tus-Resumable: 1.0.0",
             "-H", "Upload-Offset: 0", "-H", "Content-Type: application/offset+octet-stream",
             url])


def run_tus_tuspy(svc: Service, src: Path, chunk: int, usage: Usage) -> None:
    from tusclient import client

    c = client.TusClient(f"{svc.url}/api/tus/",
                         headers={"Authorization": f"Bearer {svc.token}"})
    with metered(usage, resource.RUSAGE_SELF, svc.proc.pid):
        c.uploader(str(src), chunk_size=chunk,
                   metadata={"filename": "tuspy.bin", "folder": "bench"}).upload()


def client_env(svc: Service, home: Path) -> dict[str, str]:
    return {**os.environ, "ATELIER_URL": svc.url, "ATELIER_TOKEN": svc.token,
            "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}


def run_push(svc: Service, src: Path, home: Path, usage: Usage) -> None:
    env = client_env(svc, home)
    with metered(usage, resource.RUSAGE_CHILDREN, svc.proc.pid):
        usage.client_peak_mb = run_child(
            [sys.executable, "-m", "atelier", "push", str(src), "bench/push"], env)


def quota_push(root: Path, state: Path, src: Path, home: Path, files: int,
               recheck: str | None) -> float:
    """MB/s of ``atelier push`` by a user whose home holds ``files`` small files, with a
    quota (recheck: ``ATELIER_QUOTA_RECHECK_SECONDS``) or, if ``recheck`` is None, none."""
    env = {"ATELIER_QUOTA_RECHECK_SECONDS": recheck} if recheck is not None else {}
    svc = Service(root, state, env=env)
    try:
        quota = None if recheck is None else 1 << 50
        r = requests.post(f"{svc.url}/api/users", headers={"Authorization": f"Bearer {svc.token}"},
                          json={"name": "ann", "password": "ann-pass-123", "role": "user",
                                "quota_bytes": quota}, timeout=30)
        if r.status_code == 409:
            requests.patch(f"{svc.url}/api/users/ann", json={"quota_bytes": quota}, timeout=30,
                           headers={"Authorization": f"Bearer {svc.token}"}).raise_for_status()
        else:
            r.raise_for_status()
        outputs = root / "users" / "ann" / "outputs" / "many"
        if not outputs.exists():
            outputs.mkdir(parents=True)
            for i in range(files):
                sub = outputs / f"{i // 1000:03d}"
                sub.mkdir(exist_ok=True)
                (sub / f"{i:06d}.png").write_bytes(b"x" * 1000)
        token = requests.post(f"{svc.url}/api/tokens", auth=("ann", "ann-pass-123"),
                              json={"name": "bench"}, timeout=30).json()["token"]
        env = {**client_env(svc, home), "ATELIER_TOKEN": token}
        settle()
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "atelier", "push", str(src), "users/ann",
                        "--conflict", "overwrite"], check=True, capture_output=True, env=env)
        return rate(src.stat().st_size, time.perf_counter() - t)
    finally:
        svc.stop()
        svc.proc.wait()


def run_dav_put(svc: Service, src: Path, usage: Usage) -> None:
    with metered(usage, resource.RUSAGE_CHILDREN, svc.proc.pid):
        subprocess.run(["curl", "-sS", "-f", "-T", str(src), "-H", "Expect:",
                        "-u", f"admin:{svc.token}", f"{svc.url}/dav/bench/dav.bin"],
                       check=True, capture_output=True)


def run_zip(svc: Service, folder: str) -> tuple[float, int]:
    t = time.perf_counter()
    out = subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download}",
                          "-H", f"Authorization: Bearer {svc.token}",
                          f"{svc.url}/api/fs/zip?path={folder}"], check=True,
                         capture_output=True, text=True)
    n = int(out.stdout)
    return rate(n, time.perf_counter() - t), n


def curl_get_seconds(svc: Service, remote: str, dst: Path, size: int) -> tuple[float, float]:
    """(seconds, client peak MB) of one curl download."""
    t = time.perf_counter()
    peak = run_child(["curl", "-sS", "-f", "-o", str(dst), "-H",
                      f"Authorization: Bearer {svc.token}",
                      f"{svc.url}/api/fs/download?path={remote}"])
    seconds = time.perf_counter() - t
    assert dst.stat().st_size == size
    dst.unlink()
    return seconds, peak


def pull_seconds(svc: Service, remote: str, dst: Path, size: int,
                 home: Path) -> tuple[float, float]:
    """(seconds, client peak MB) of one ``atelier pull``."""
    env = client_env(svc, home)
    t = time.perf_counter()
    peak = run_child([sys.executable, "-m", "atelier", "pull", remote, str(dst)], env)
    seconds = time.perf_counter() - t
    assert dst.stat().st_size == size
    dst.unlink()
    return seconds, peak


@dataclass
class Sample:
    """One upload measurement: its rate, CPU seconds, and (server methods) peak RSS."""

    mbps: float
    server_cpu: float
    client_cpu: float
    peak_mb: float = 0.0
    peak_text: str = "-"
    client_peak_mb: float = 0.0


@dataclass
class Method:
    label: str
    run: Callable[[Service, Usage], None] | None  # None: dd, no server
    dd_flags: list[str] | None = None


def upload_rows(args: argparse.Namespace, root: Path, home: Path, work: Path, up: int,
                quota: bool) -> list[tuple[str, str, str, str, str]]:
    """dd, tus with curl, ``atelier push``, tuspy and WebDAV PUT in rotated rounds; then
    (``quota``) push into a quota'd home."""
    rows: list[tuple[str, str, str, str, str]] = []
    # The source lives in RAM (tmpfs) so that every writer, dd included, reads it at
    # memory speed and only the write to this disk is measured.
    src = Path(tempfile.mkdtemp(prefix="atelier-src-", dir=args.src_dir)) / "src.bin"
    try:
        make_file(src, up)

        def measure(method: Method, state: Path) -> Sample:
            """One timed write from a settled page cache (each server a fresh process)."""
            usage = Usage()
            if method.run is None:
                settle()
                dd(src, root / "bench" / "dd.bin", usage, method.dd_flags or [])
                return Sample(rate(up, usage.seconds), 0.0, usage.client_cpu)
            svc = Service(root, state)
            try:
                settle()
                warm_clients(svc, home, work)
                method.run(svc, usage)
                peak_mb = proc_status(svc.proc.pid, "VmHWM:") / MB
                peak_text = svc.peak_mb()
            finally:
                svc.stop()
                # stop() may kill without waiting: reap the server now, or its CPU time
                # lands in the RUSAGE_CHILDREN of whichever client runs when it is reaped
                svc.proc.wait()
            for f in (root / "bench").rglob("*.bin"):
                f.unlink()
            shutil.rmtree(state, ignore_errors=True)
            return Sample(rate(up, usage.seconds), usage.server_cpu, usage.client_cpu,
                          peak_mb, peak_text, usage.client_peak_mb)

        chunk = args.tuspy_chunk_mib * MiB
        methods = [
            Method(f"dd bs=8M conv=fsync, {up / 1e9:.1f} GB", None, []),
            # the disk without the page cache: what an O_DIRECT writer can reach
            Method(f"dd bs=8M oflag=direct conv=fsync, {up / 1e9:.1f} GB", None,
                   ["oflag=direct"]),
            Method("tus, curl: one streaming PATCH",
                   lambda s, u: run_tus_curl(s, src, up, u)),
            Method("tus, atelier push (streamed, xxh128 of the file)",
                   lambda s, u: run_push(s, src, home, u)),
            Method(f"tus, tuspy ({args.tuspy_chunk_mib} MiB chunks)",
                   lambda s, u: run_tus_tuspy(s, src, chunk, u)),
            Method("WebDAV PUT, curl -T", lambda s, u: run_dav_put(s, src, u)),
        ]
        curl_i, push_i = 2, 3
        # Every method once per round, starting one later each round, so that no method
        # always follows the same one; samples[i][r] is method i in round r.
        samples: list[list[Sample]] = [[] for _ in methods]
        for r in range(args.rounds):
            for k in range(len(methods)):
                i = (r + k) % len(methods)
                samples[i].append(measure(methods[i], work / f"state-{r}-{i}"))

        quota_rows = []
        if quota:
            # Quota checks per PATCH: a home of many files walked for each one (recheck 0,
            # as before the walk was reused), reused for 30 s (the default), and no quota.
            qsrc = src.with_name("quota.bin")
            make_file(qsrc, min(up, 512 * MiB))
            qstate = work / "state-quota"
            qrates = {label: quota_push(root, qstate, qsrc, home, args.quota_files, recheck)
                      for label, recheck in (("none", None), ("walk", "0"), ("reuse", "30"))}
            quota_rows.append((f"push {qsrc.stat().st_size / 1e9:.1f} GB into a quota'd home "
                               f"of {args.quota_files} files, walk per PATCH",
                               f"{qrates['walk']:.0f}",
                               f"{qrates['walk'] / qrates['none']:.2f}x no quota", "-", "-"))
            quota_rows.append(("  the same, walk reused for 30 s (default)",
                               f"{qrates['reuse']:.0f}",
                               f"{qrates['reuse'] / qrates['none']:.2f}x no quota", "-", "-"))
            shutil.rmtree(root / "users" / "ann", ignore_errors=True)
    finally:
        shutil.rmtree(src.parent)

    floors = [s.mbps for s in samples[0]]
    direct_floors = [s.mbps for s in samples[1]]
    per_gb = up / GB
    for method, runs in zip(methods, samples, strict=True):
        mbps = statistics.median(s.mbps for s in runs)
        client = statistics.median(s.client_cpu for s in runs) / per_gb
        ratios = [s.mbps / floor for s, floor in zip(runs, floors, strict=True)]
        if method.run is None:
            rows.append((f"{method.label} (median of {args.rounds} rounds)",
                         f"{mbps:.0f}", f"{statistics.median(ratios):.2f}x",
                         f"cpu s/GB dd {client:.2f}", "-"))
            continue
        direct = statistics.median(
            s.mbps / floor for s, floor in zip(runs, direct_floors, strict=True))
        server = statistics.median(s.server_cpu for s in runs) / per_gb
        peak = max(runs, key=lambda s: s.peak_mb)
        client_peak = max(s.client_peak_mb for s in runs)
        rows.append((method.label, f"{mbps:.0f}",
                     f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-"
                     f"{max(ratios):.2f}] (>= {UPLOAD_TARGET}); "
                     f"{direct:.2f}x direct dd",
                     f"cpu s/GB server {server:.2f} client {client:.2f}"
                     + (f"; client peak {client_peak:.0f} MB" if client_peak else ""),
                     peak.peak_text))
    # the client's own target: push against curl's streaming PATCH, round by round
    vs_curl = [p.mbps / c.mbps for p, c in zip(samples[push_i], samples[curl_i], strict=True)]
    push_peak = max(s.client_peak_mb for s in samples[push_i])
    rows.append(("  atelier push / curl PATCH, same round", "-",
                 f"{statistics.median(vs_curl):.2f}x [{min(vs_curl):.2f}-{max(vs_curl):.2f}]"
                 f" (>= {PUSH_TARGET})",
                 f"client peak {push_peak:.0f} MB (< {CLIENT_PEAK_MB})", "-"))
    return rows + quota_rows


def zip_rows(root: Path, work: Path, zsize: int) -> list[tuple[str, str, str, str, str]]:
    """A folder of checkpoints and images (stored, as they would be) as a zip stream."""
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
    shutil.rmtree(folder)
    return [(f"zip stream of {zbytes / 1e9:.2f} GB folder ({n} files), curl",
             f"{zrate:.0f}", "-", "-", zpeak)]


def download_rows(args: argparse.Namespace, root: Path, home: Path, work: Path,
                  down: int) -> list[tuple[str, str, str, str, str]]:
    """curl against ``atelier pull`` of one big file, then of a 1-byte file."""
    big = root / "outputs" / "download.bin"
    make_file(big, down)
    dsvc = Service(root, work / "state-dl")
    try:
        subprocess.run(["cat", str(big)], stdout=subprocess.DEVNULL, check=True)
        # Both write 1 GB to the same disk, so the one that runs second meets the
        # first one's writeback: alternate the order, sync before each, take medians.
        runs: dict[str, list[tuple[float, float]]] = {"curl": [], "pull": []}
        for i in range(args.download_runs):
            for name in ("curl", "pull") if i % 2 == 0 else ("pull", "curl"):
                settle()  # then warm the served file again: only the copy is measured
                subprocess.run(["cat", str(big)], stdout=subprocess.DEVNULL, check=True)
                warm_clients(dsvc, home, work)
                if name == "curl":
                    runs[name].append(curl_get_seconds(dsvc, "outputs/download.bin",
                                                       work / "curl.out", down))
                else:
                    runs[name].append(pull_seconds(dsvc, "outputs/download.bin",
                                                   work / "pull.out", down, home))
        curl_rate = statistics.median(rate(down, t) for t, _ in runs["curl"])
        pull_rate = statistics.median(rate(down, t) for t, _ in runs["pull"])
        pull_peak = max(peak for _, peak in runs["pull"])
        curl_peak = max(peak for _, peak in runs["curl"])
        # pull's fixed cost: interpreter start-up, the GET and the final HEAD
        curl_tiny, pull_tiny = [], []
        for _ in range(5):
            curl_tiny.append(curl_get_seconds(dsvc, "outputs/one.bin", work / "curl.out", 1)[0])
            pull_tiny.append(pull_seconds(dsvc, "outputs/one.bin", work / "pull.out", 1,
                                          home)[0])
        dpeak = dsvc.peak_mb()
    finally:
        dsvc.stop()
    return [
        (f"download {down / 1e9:.1f} GB, curl (median of {args.download_runs})",
         f"{curl_rate:.0f}", "1.00x", f"client peak {curl_peak:.0f} MB", "-"),
        ("download, atelier pull (Range-resumable)", f"{pull_rate:.0f}",
         f"{pull_rate / curl_rate:.2f}x curl (>= {PULL_TARGET}); rounds "
         + " ".join(f"{c / p:.2f}" for (c, _), (p, _) in zip(runs["curl"], runs["pull"],
                                                             strict=True)),
         f"client peak {pull_peak:.0f} MB (< {CLIENT_PEAK_MB})", dpeak),
        ("atelier pull of a 1-byte file (start-up + 2 requests)",
         f"{statistics.median(pull_tiny):.2f} s",
         f"curl: {statistics.median(curl_tiny):.3f} s (median of 5)", "-", "-"),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upload-gb", type=float, default=2.0, help="tus and WebDAV size (GB)")
    ap.add_argument("--zip-gb", type=float, default=1.0, help="zipped folder size (GB)")
    ap.add_argument("--download-gb", type=float, default=1.0, help="download size (GB)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="upload rounds: dd and each method once per round, order rotated "
                         "per round (medians)")
    ap.add_argument("--tuspy-chunk-mib", type=int, default=64)
    ap.add_argument("--quota-files", type=int, default=50_000,
                    help="files in the home of the quota'd user (quota rows)")
    ap.add_argument("--download-runs", type=int, default=4,
                    help="curl and pull runs each, alternating which goes first (medians)")
    ap.add_argument("--dir", default=".", help="where the temporary files go (same disk)")
    ap.add_argument("--src-dir", default="/dev/shm",
                    help="where the upload source is made (tmpfs: read at memory speed)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="which parts to run, comma-separated (default: all of "
                         f"{','.join(SECTIONS)}); the quota rows need the upload section")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    sections = set(args.sections.split(","))
    if not sections <= set(SECTIONS):
        ap.error(f"--sections takes {', '.join(SECTIONS)}")
    compile_packages()
    up = int(args.upload_gb * 1e9)
    zsize = int(args.zip_gb * 1e9)
    down = int(args.download_gb * 1e9)

    work = Path(tempfile.mkdtemp(prefix="atelier-bench-", dir=args.dir))
    rows: list[tuple[str, str, str, str, str]] = []
    root, home = work / "nas", work / "home"
    (root / "bench").mkdir(parents=True)
    (root / "outputs").mkdir(parents=True)
    (root / "outputs" / "one.bin").write_bytes(b"x")  # warm-ups and the 1-byte pulls
    try:
        if "upload" in sections:
            rows += upload_rows(args, root, home, work, up, "quota" in sections)
        if "zip" in sections:
            rows += zip_rows(root, work, zsize)
        if "download" in sections:
            rows += download_rows(args, root, home, work, down)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    header = ("measurement", "MB/s", f"ratio [range over {args.rounds} rounds]",
              "cpu (median)", "server RSS MB: peak (max over rounds)")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(4)]
    for row in [header, *rows]:
        print(f"{row[0]:{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}  "
              f"{row[3]:<{widths[3]}}  {row[4]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
