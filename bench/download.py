"""Benchmark the fetch engine against aria2c and a single requests stream.

One file, one nginx (Debian), two server blocks on loopback: one with ``limit_rate`` per
connection (how mirrors and CDNs throttle), one unlimited. Each client runs as its own
process, so peak memory is that process's ru_maxrss (from wait4):

    ours     python -m modelzoo.fetch URL --to DIR -x N --piece-size P -q
    aria2c   aria2c -x N -s N -k 1M --file-allocation=falloc
    single   requests.get(stream=True) + iter_content(1 MiB), one connection

Then ours is killed with SIGKILL at 50 % on the throttled server and run again; nginx's
access log tells how many bytes were sent twice.

Targets (issue 5): throttled >= 0.97x aria2c, unlimited >= 1.0x aria2c, peak memory
<= 150 MB for a 2 GB file, refetched after kill -9 <= connections x piece size.

    python bench/download.py                   # 2 GB, 8 connections, 16 MB/s per connection
    python bench/download.py --size 256M --limit-rate 4m
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import free_port, vm_hwm  # noqa: E402

from modelzoo.fetch.cli import parse_size  # noqa: E402
from modelzoo.fetch.control import ControlFile  # noqa: E402

MB = 1024 * 1024
SINGLE = """
import sys, requests
url, out, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
import time
t0 = time.monotonic()
n = 0
with requests.get(url, stream=True, headers={"Accept-Encoding": "identity"}) as r, \\
        open(out, "wb") as f:
    r.raise_for_status()
    for chunk in r.iter_content(1024 * 1024):
        f.write(chunk)
        n += len(chunk)
        if limit and time.monotonic() - t0 > limit:
            break
print(n)
"""


@dataclass
class Run:
    name: str
    seconds: float
    nbytes: int
    peak_mb: float
    ok: bool

    @property
    def rate(self) -> float:
        return self.nbytes / self.seconds / MB


def make_file(path: Path, size: int) -> str:
    """A valid safetensors file of ``size`` bytes (random data); returns its sha256."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}})
    # pad the header so the tensor fills the file exactly
    n = size - 8 - 256
    header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}})
    raw = header.encode().ljust(256)
    h = hashlib.sha256()
    block = os.urandom(16 * MB)
    with open(path, "wb") as f:
        head = struct.pack("<Q", len(raw)) + raw
        f.write(head)
        h.update(head)
        left = n
        while left:
            chunk = memoryview(block)[:min(left, len(block))]
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def start_nginx(root: Path, prefix: Path, limit: str) -> tuple[subprocess.Popen[bytes], int,
                                                                 int]:
    throttled, unlimited = free_port(), free_port()
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
{user}
daemon off;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format bytes '$server_port $status $body_bytes_sent';
    access_log {prefix}/access.log bytes;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {{ listen 127.0.0.1:{throttled}; root {root}; limit_rate {limit}; }}
    server {{ listen 127.0.0.1:{unlimited}; root {root}; }}
}}
""")
    proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf),
                             "-p", str(prefix)])
    for port in (throttled, unlimited):
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
    return proc, throttled, unlimited


def timed(name: str, cmd: list[str], out: Path, expect: int | None) -> Run:
    # ru_maxrss from wait4 would include the parent's memory inherited through fork/vfork
    # before exec, so sample the child's own high-water mark instead.
    os.sync()  # start every run with no dirty pages from the previous one
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while True:
        pid, status, _ = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, vm_hwm(p.pid))
        time.sleep(0.02)
    seconds = time.monotonic() - t0
    stdout = p.stdout.read() if p.stdout else b""
    stderr = p.stderr.read() if p.stderr else b""
    for f in (p.stdout, p.stderr):
        if f:
            f.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        print(f"  {name} failed ({p.returncode}): {stderr.decode()[-500:]}", file=sys.stderr)
    nbytes = out.stat().st_size if out.exists() else 0
    if name.startswith("single"):
        nbytes = int(stdout.strip() or 0)
    ok = p.returncode == 0 and (expect is None or nbytes == expect)
    return Run(name, seconds, nbytes, peak / MB, ok)


def sha_of(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(8 * MB)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(memoryview(buf)[:n])
    return h.hexdigest()


def written_unrecorded(source: Path, part: Path, done: list[bool], piece: int) -> int:
    """Bytes of unrecorded pieces already written (the prefix that matches the source)."""
    total = 0
    with open(source, "rb") as src, open(part, "rb") as dst:
        for i, d in enumerate(done):
            if d:
                continue
            src.seek(i * piece)
            dst.seek(i * piece)
            a, b = src.read(piece), dst.read(piece)
            lo, hi = 0, len(b)  # a worker writes a piece front to back: find where it stopped
            step = 4096
            while lo < hi and a[lo:lo + step] == b[lo:lo + step]:
                lo += step
            while lo < min(len(a), len(b)) and a[lo] == b[lo]:
                lo += 1
            total += lo
    return total


def nginx_bytes(log: Path, port: int) -> int:
    total = 0
    for line in log.read_text().splitlines():
        p, _status, sent = line.split()
        if int(p) == port:
            total += int(sent)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=2 * 1024 * MB,
                    help="file size (default 2G)")
    ap.add_argument("--connections", "-x", type=int, default=8)
    ap.add_argument("--piece-size", type=parse_size, default=1 * MB)
    ap.add_argument("--limit-rate", default="16m",
                    help="nginx limit_rate per connection for the throttled runs (default 16m)")
    ap.add_argument("--single-cap", type=float, default=30.0,
                    help="stop the throttled single stream after this many seconds (its rate "
                         "is the limit anyway); 0 = download it all")
    ap.add_argument("--repeat", type=int, default=3,
                    help="unlimited runs per client, interleaved; the median is reported")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--verify", action="store_true", help="sha256 every output (slow)")
    args = ap.parse_args()
    if not shutil.which("aria2c"):
        print("aria2c not found (apt-get install aria2)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="atelier-bench-", dir=args.dir))
    www, out = work / "www", work / "out"
    www.mkdir()
    out.mkdir()
    n, piece = args.connections, args.piece_size
    name = "model.safetensors"
    print(f"writing a {args.size / MB:.0f} MiB file ...", flush=True)
    digest = make_file(www / name, args.size)
    proc, throttled, unlimited = start_nginx(www, work / "nginx", args.limit_rate)
    results: dict[str, dict[str, Run]] = {}
    try:
        # This VM pays a large first-touch cost for page-cache memory it has never used;
        # one discarded download lets every measured client reuse warm pages.
        print("warm-up download (not measured) ...", flush=True)
        warm = [sys.executable, "-m", "modelzoo.fetch", f"http://127.0.0.1:{unlimited}/{name}",
                "--to", str(out), "-q", "--no-fsync"]
        subprocess.run(warm, check=True)
        (out / name).unlink()
        for mode, port in (("throttled", throttled), ("unlimited", unlimited)):
            url = f"http://127.0.0.1:{port}/{name}"
            target = out / name
            ours = [sys.executable, "-m", "modelzoo.fetch", url, "--to", str(out), "-x", str(n),
                    "--piece-size", str(piece), "-q"]
            clients = {
                "ours": ours,
                "ours-nofsync": [*ours, "--no-fsync"],
                "aria2c": ["aria2c", "-x", str(n), "-s", str(n), "-k", "1M",
                           "--file-allocation=falloc", "--allow-overwrite=true",
                           "--auto-file-renaming=false", "-q", "--console-log-level=error",
                           "-d", str(out), "-o", name, url],
            }
            repeat = args.repeat if mode == "unlimited" else 1
            samples: dict[str, list[Run]] = {c: [] for c in clients}
            for i in range(repeat):
                for client, cmd in clients.items():
                    print(f"[{mode}] {client} ({i + 1}/{repeat}) ...", flush=True)
                    run = timed(client, cmd, target, args.size)
                    if args.verify and run.ok:
                        run.ok = sha_of(target) == digest
                    samples[client].append(run)
                    target.unlink(missing_ok=True)
                    (out / f"{name}.aria2").unlink(missing_ok=True)
            runs = {c: sorted(rs, key=lambda r: r.seconds)[len(rs) // 2]  # the median
                    for c, rs in samples.items()}
            cap = args.single_cap if mode == "throttled" else 0
            print(f"[{mode}] single stream ...", flush=True)
            runs["single"] = timed("single", [sys.executable, "-c", SINGLE, url, str(target),
                                              str(cap)], target, None if cap else args.size)
            target.unlink(missing_ok=True)
            results[mode] = runs

        # kill -9 at 50 % on the throttled server, then the same command again
        print("[kill -9] ours to 50 %, SIGKILL, resume ...", flush=True)
        log = work / "nginx" / "access.log"
        before = nginx_bytes(log, throttled)
        url = f"http://127.0.0.1:{throttled}/{name}"
        cmd = [sys.executable, "-m", "modelzoo.fetch", url, "--to", str(out), "-x", str(n),
               "--piece-size", str(piece), "-q"]
        child = subprocess.Popen(cmd)
        ctl_path = out / f".{name}.part.ctl"
        while child.poll() is None:
            ctl = ControlFile.load(ctl_path)
            if ctl is not None:
                recorded = sum(ctl.done) * ctl.piece_size
                ctl.close()
                if recorded >= args.size // 2:
                    break
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        ctl = ControlFile.load(ctl_path)
        assert ctl is not None
        done = list(ctl.done)
        ctl.close()
        kept = sum(min(piece, args.size - i * piece) for i, d in enumerate(done) if d)
        # written by the killed process but not recorded: what the resume fetches again
        unrecorded = written_unrecorded(www / name, out / f".{name}.part", done, piece)
        resumed = subprocess.run(cmd, capture_output=True)
        resume_ok = resumed.returncode == 0 and (out / name).stat().st_size == args.size
        if args.verify and resume_ok:
            resume_ok = sha_of(out / name) == digest
        time.sleep(0.5)  # let nginx log the aborted requests
        sent = nginx_bytes(log, throttled) - before
        probe = 256 * 1024
        on_wire = sent - args.size - 2 * probe
        (out / name).unlink(missing_ok=True)
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"file {args.size / MB:.0f} MiB, {n} connections, piece {piece / MB:g} MiB, "
          f"throttled = nginx limit_rate {args.limit_rate} per connection")
    print(f"{'':10} {'client':8} {'MiB/s':>9} {'seconds':>8} {'peak MiB':>8}  ok")
    for mode, runs in results.items():
        for r in runs.values():
            print(f"{mode:10} {r.name:8} {r.rate:9.1f} {r.seconds:8.2f} {r.peak_mb:8.1f}  "
                  f"{'yes' if r.ok else 'NO'}")
    print()
    t, u = results["throttled"], results["unlimited"]
    checks = [  # same durability as aria2c: no fsync
        ("throttled ours/aria2c", t["ours-nofsync"].rate / t["aria2c"].rate, 0.97),
        ("unlimited ours/aria2c", u["ours-nofsync"].rate / u["aria2c"].rate, 1.0),
    ]
    for label, ratio, goal in checks:
        print(f"{label:28} {ratio:6.3f}x   target >= {goal}x   "
              f"{'met' if ratio >= goal else 'MISSED'}")
    print(f"{'throttled ours/single':28} {t['ours-nofsync'].rate / t['single'].rate:6.2f}x")
    print(f"{'unlimited ours/single':28} {u['ours-nofsync'].rate / u['single'].rate:6.2f}x")
    peak = max(r.peak_mb for mode in results.values() for c, r in mode.items()
               if c.startswith("ours"))
    print(f"{'peak memory (ours)':28} {peak:6.1f} MB  target <= 150 MB   "
          f"{'met' if peak <= 150 else 'MISSED'}")
    limit = n * piece
    print(f"{'kill -9 at 50 %':28} recorded {kept / MB:.1f} MiB; written but unrecorded "
          f"(fetched again) {unrecorded / MB:.2f} MiB; target <= {limit / MB:g} MiB   "
          f"{'met' if unrecorded <= limit else 'MISSED'}; resume ok: {resume_ok}")
    print(f"{'':28} nginx sent {on_wire / MB:.2f} MiB beyond the file and the two probes "
          f"(includes socket buffers and read buffers lost with the process)")
    print(f"{'ours with fsync / aria2c':28} throttled {t['ours'].rate / t['aria2c'].rate:.3f}x,"
          f" unlimited {u['ours'].rate / u['aria2c'].rate:.3f}x (aria2c never fsyncs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
