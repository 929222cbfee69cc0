"""Benchmark the fetch engine against aria2c and hf_transfer on a per-connection-capped CDN.

One nginx (Debian) on loopback, four server blocks over the same folder:

    capped     limit_rate per connection (16m): how mirrors and CDNs throttle
    slow       a third of that: the slow mirror of the mirror row
    resolve    the Hugging Face resolve shape: /org/model/resolve/main/NAME answers 302 to
               `capped` with X-Repo-Commit, X-Linked-Etag (the sha256), X-Linked-Size
    unlimited  no limit (only with --unlimited)

Each client is its own process; peak memory is its own VmHWM, sampled while it runs.
The packages are compiled to bytecode first, as an installed copy has them: with
PYTHONDONTWRITEBYTECODE set, each ``atelier fetch`` would otherwise spend 30-40 ms of its
start compiling its modules again.

    ours          python -m modelzoo.fetch URL --to DIR -x N --piece-size P -q   (fsync on)
    ours-nofsync  the same with --no-fsync (aria2c never fsyncs)
    ours-auto     python -m modelzoo.fetch RESOLVE-URL --to DIR -q: connections automatic
    aria2c        aria2c -x N -s N -k P --file-allocation=falloc   (no fsync)
    hf_transfer   huggingface_hub 0.36 (the last release that uses hf_transfer) with
                  HF_HUB_ENABLE_HF_TRANSFER=1 and HF_ENDPOINT at `resolve`: 100 connections
                  of 10 MB requests, no fsync. It lives in its own venv, made on first use
                  under ~/.cache/atelier-bench/hf036 with pip, so the project's
                  huggingface_hub stays as it is.

Rows and targets (issues 5, 11, 12):
  - 128 MiB (a LoRA: start-up and probing count) and 2 GiB, N and P the same for ours and
    aria2c: ours with fsync >= 0.95x aria2c at 128 MiB, >= 1.0x at 2 GiB
  - the same file through the HF resolve shape: ours-auto >= 1.0x hf_transfer at a tenth of
    its peak memory; ours -x N for the reference
  - mirrors: the capped server plus a 3x slower mirror >= 0.95x the capped server alone
  - peak memory of ours <= 150 MB; kill -9 at 50 % refetches <= N x P

    python bench/download.py                       # 128M and 2G, -x 8, 1M pieces, 16m
    python bench/download.py --sizes 256M --repeat 1 --no-hf
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

from common import compile_packages, free_port, vm_hwm  # noqa: E402

from modelzoo.fetch.cli import parse_size  # noqa: E402
from modelzoo.fetch.control import ControlFile  # noqa: E402

MB = 1024 * 1024
HF_VENV = Path.home() / ".cache" / "atelier-bench" / "hf036"
REPO, COMMIT = "bench-org/bench-model", "0123456789abcdef0123456789abcdef01234567"
HF_SCRIPT = """
import sys
from huggingface_hub import hf_hub_download
hf_hub_download(sys.argv[1], sys.argv[2], local_dir=sys.argv[3])
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


class Nginx:
    def __init__(self, root: Path, prefix: Path, limit: str, files: dict[str, tuple[int, str]],
                 ) -> None:
        self.ports = {k: free_port() for k in ("capped", "slow", "resolve", "unlimited")}
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.log = prefix / "access.log"
        user = "user root;" if os.geteuid() == 0 else ""
        slow = _third(limit)
        resolve = "\n".join(
            f"        location = /{REPO}/resolve/main/{name} {{\n"
            f"            add_header X-Repo-Commit {COMMIT} always;\n"
            f"            add_header X-Linked-Etag '\"{digest}\"' always;\n"
            f"            add_header X-Linked-Size {size} always;\n"
            f"            return 302 http://127.0.0.1:{self.ports['capped']}/{name};\n"
            f"        }}" for name, (size, digest) in files.items())
        p = self.ports
        conf = prefix / "nginx.conf"
        conf.write_text(f"""
{user}
daemon off;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format bytes '$server_port $status $body_bytes_sent';
    access_log {self.log} bytes;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {{ listen 127.0.0.1:{p['capped']}; root {root}; limit_rate {limit}; }}
    server {{ listen 127.0.0.1:{p['slow']}; root {root}; limit_rate {slow}; }}
    server {{ listen 127.0.0.1:{p['unlimited']}; root {root}; }}
    server {{
        listen 127.0.0.1:{p['resolve']};
{resolve}
        location / {{ return 404; }}
    }}
}}
""")
        self.proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c",
                                      str(conf), "-p", str(prefix)])
        for port in self.ports.values():
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    time.sleep(0.05)

    def url(self, block: str, name: str) -> str:
        if block == "resolve":
            return f"http://127.0.0.1:{self.ports['resolve']}/{REPO}/resolve/main/{name}"
        return f"http://127.0.0.1:{self.ports[block]}/{name}"

    def sent(self, block: str) -> int:
        port = str(self.ports[block])
        total = 0
        for line in self.log.read_text().splitlines():
            p, _status, sent = line.split()
            if p == port:
                total += int(sent)
        return total

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait()


def _third(limit: str) -> str:
    n = parse_size(limit)
    return f"{max(1, n // 3 // 1024)}k"


def hf_python() -> Path | None:
    """The benchmark's own venv with huggingface_hub 0.36 and hf_transfer."""
    py = HF_VENV / "bin" / "python"
    if not py.exists():
        print(f"making {HF_VENV} (huggingface_hub 0.36 + hf_transfer, from PyPI) ...",
              flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(HF_VENV)], check=True)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q",
                            "huggingface_hub>=0.36,<0.37", "hf_transfer"])
        if r.returncode != 0:
            return None
    check = subprocess.run([str(py), "-c", "import hf_transfer, huggingface_hub as h; "
                            "assert h.__version__.startswith('0.36')"])
    return py if check.returncode == 0 else None


def timed(name: str, cmd: list[str], out: Path, expect: int,
          env: dict[str, str] | None = None) -> Run:
    # ru_maxrss from wait4 would include the parent's memory inherited through fork/vfork
    # before exec, so sample the child's own high-water mark instead.
    os.sync()  # start every run with no dirty pages from the previous one
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak = 0
    while True:
        pid, status, _ = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, vm_hwm(p.pid))
        time.sleep(0.01)
    seconds = time.monotonic() - t0
    stderr = p.stderr.read() if p.stderr else b""
    for f in (p.stdout, p.stderr):
        if f:
            f.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"  {name} failed ({code}): {stderr.decode()[-500:]}", file=sys.stderr)
    nbytes = out.stat().st_size if out.exists() else 0
    return Run(name, seconds, nbytes, peak / MB, code == 0 and nbytes == expect)


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
            lo, step = 0, 4096  # a worker writes a piece front to back: find where it stopped
            while lo < len(b) and a[lo:lo + step] == b[lo:lo + step]:
                lo += step
            while lo < min(len(a), len(b)) and a[lo] == b[lo]:
                lo += 1
            total += lo
    return total


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.out = work / "out"
        self.out.mkdir()
        self.n, self.piece = args.connections, args.piece_size
        self.hf = None if args.no_hf else hf_python()
        if not args.no_hf and self.hf is None:
            print("hf_transfer rows skipped: the venv could not be made", file=sys.stderr)

    def ours(self, url: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "modelzoo.fetch", url, "--to", str(self.out), "-q",
                *extra]

    def fixed(self) -> list[str]:
        return ["-x", str(self.n), "--piece-size", str(self.piece)]

    def aria2c(self, url: str, name: str) -> list[str]:
        return ["aria2c", "-x", str(self.n), "-s", str(self.n), "-k", str(self.piece),
                "--file-allocation=falloc", "--allow-overwrite=true",
                "--auto-file-renaming=false", "-q", "--console-log-level=error",
                "-d", str(self.out), "-o", name, url]

    def hf_transfer(self, name: str, endpoint: str) -> tuple[list[str], dict[str, str]]:
        assert self.hf is not None
        home = self.out.parent / "hf-home"
        env = {**os.environ, "HF_HUB_ENABLE_HF_TRANSFER": "1", "HF_ENDPOINT": endpoint,
               "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "HF_HOME": str(home), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        env.pop("PYTHONPATH", None)
        return [str(self.hf), "-c", HF_SCRIPT, REPO, name, str(self.out)], env

    def rounds(self, clients: dict[str, tuple[list[str], dict[str, str] | None]], name: str,
               size: int, digest: str, label: str) -> dict[str, Run]:
        """Each client ``repeat`` times, interleaved; the median run of each."""
        target = self.out / name
        samples: dict[str, list[Run]] = {c: [] for c in clients}
        for i in range(self.args.repeat):
            for client, (cmd, env) in clients.items():
                print(f"[{label}] {client} ({i + 1}/{self.args.repeat}) ...", flush=True)
                run = timed(client, cmd, target, size, env)
                if self.args.verify and run.ok:
                    run.ok = sha_of(target) == digest
                samples[client].append(run)
                target.unlink(missing_ok=True)
                (self.out / f"{name}.aria2").unlink(missing_ok=True)
                shutil.rmtree(self.out / ".cache", ignore_errors=True)
        return {c: sorted(rs, key=lambda r: r.seconds)[len(rs) // 2]
                for c, rs in samples.items()}

    def kill_9(self, srv: Nginx, name: str, size: int, source: Path) -> str:
        url = srv.url("capped", name)
        before = srv.sent("capped")
        cmd = self.ours(url, *self.fixed())
        child = subprocess.Popen(cmd)
        ctl_path = self.out / f".{name}.part.ctl"
        while child.poll() is None:
            ctl = ControlFile.load(ctl_path)
            if ctl is not None:
                recorded = sum(ctl.done) * ctl.piece_size
                ctl.close()
                if recorded >= size // 2:
                    break
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        ctl = ControlFile.load(ctl_path)
        assert ctl is not None
        done = list(ctl.done)
        ctl.close()
        piece = self.piece
        kept = sum(min(piece, size - i * piece) for i, d in enumerate(done) if d)
        unrecorded = written_unrecorded(source, self.out / f".{name}.part", done, piece)
        resumed = subprocess.run(cmd, capture_output=True)
        ok = resumed.returncode == 0 and (self.out / name).stat().st_size == size
        time.sleep(0.5)  # let nginx log the aborted requests
        on_wire = srv.sent("capped") - before - size - 2 * 256 * 1024
        (self.out / name).unlink(missing_ok=True)
        limit = self.n * piece
        return (f"recorded {kept / MB:.1f} MiB; written but unrecorded (fetched again) "
                f"{unrecorded / MB:.2f} MiB; target <= {limit / MB:g} MiB "
                f"{'met' if unrecorded <= limit else 'MISSED'}; resume ok: {ok}; nginx sent "
                f"{on_wire / MB:.2f} MiB beyond the file and the two probes")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="128M,2G", help="file sizes (default 128M,2G)")
    ap.add_argument("--connections", "-x", type=int, default=8)
    ap.add_argument("--piece-size", type=parse_size, default=1 * MB)
    ap.add_argument("--limit-rate", default="16m",
                    help="nginx limit_rate per connection of the capped server (default 16m)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per client and size, interleaved; the median is reported")
    ap.add_argument("--no-hf", action="store_true", help="skip the hf_transfer rows")
    ap.add_argument("--unlimited", action="store_true",
                    help="also ours vs aria2c against nginx without a limit")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--verify", action="store_true", help="sha256 every output (slow)")
    args = ap.parse_args()
    if not shutil.which("aria2c"):
        print("aria2c not found (apt-get install aria2)", file=sys.stderr)
        return 2
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    compile_packages()  # an installed copy's start, not one compiling its modules each run

    work = Path(tempfile.mkdtemp(prefix="atelier-bench-", dir=args.dir))
    www = work / "www"
    www.mkdir()
    files: dict[str, tuple[int, str]] = {}
    for size in sizes:
        name = f"model-{size // MB}M.safetensors"
        print(f"writing a {size / MB:.0f} MiB file ...", flush=True)
        files[name] = (size, make_file(www / name, size))
    bench = Bench(args, work)
    srv = Nginx(www, work / "nginx", args.limit_rate, files)
    table: list[tuple[str, Run]] = []
    ratios: list[tuple[str, float, float | None]] = []
    kill_note = ""
    try:
        # This VM pays a large first-touch cost for page-cache memory it has never used;
        # one discarded download lets every measured client reuse warm pages.
        print("warm-up download (not measured) ...", flush=True)
        biggest = max(files, key=lambda n: files[n][0])
        subprocess.run(bench.ours(srv.url("unlimited", biggest), "--no-fsync"), check=True,
                       stdout=subprocess.DEVNULL)
        (bench.out / biggest).unlink()
        for name, (size, digest) in files.items():
            mb = f"{size // MB}M"
            url = srv.url("capped", name)
            clients: dict[str, tuple[list[str], dict[str, str] | None]] = {
                "ours": (bench.ours(url, *bench.fixed()), None),
                "ours-nofsync": (bench.ours(url, *bench.fixed(), "--no-fsync"), None),
                "aria2c": (bench.aria2c(url, name), None),
            }
            runs = bench.rounds(clients, name, size, digest, f"capped {mb}")
            table += [(f"capped {mb}", r) for r in runs.values()]
            goal = 0.95 if size < 1024 * MB else 1.0
            ratios.append((f"{mb} ours (fsync) / aria2c", runs["ours"].rate
                           / runs["aria2c"].rate, goal))
            ratios.append((f"{mb} ours-nofsync / aria2c", runs["ours-nofsync"].rate
                           / runs["aria2c"].rate, None))
            if args.unlimited:
                url = srv.url("unlimited", name)
                runs = bench.rounds({
                    "ours-nofsync": (bench.ours(url, *bench.fixed(), "--no-fsync"), None),
                    "aria2c": (bench.aria2c(url, name), None)}, name, size, digest,
                    f"unlimited {mb}")
                table += [(f"unlimited {mb}", r) for r in runs.values()]
                ratios.append((f"{mb} unlimited ours-nofsync / aria2c",
                               runs["ours-nofsync"].rate / runs["aria2c"].rate, None))
        # the biggest file through the HF resolve shape, against hf_transfer
        size, digest = files[biggest]
        mb = f"{size // MB}M"
        resolve = srv.url("resolve", biggest)
        clients = {"ours-auto": (bench.ours(resolve), None),
                   "ours-auto-nofsync": (bench.ours(resolve, "--no-fsync"), None),
                   f"ours -x{bench.n}": (bench.ours(resolve, *bench.fixed()), None)}
        if bench.hf is not None:
            cmd, env = bench.hf_transfer(biggest, f"http://127.0.0.1:{srv.ports['resolve']}")
            clients["hf_transfer"] = (cmd, env)
        runs = bench.rounds(clients, biggest, size, digest, f"hf-shape {mb}")
        table += [(f"hf-shape {mb}", r) for r in runs.values()]
        if "hf_transfer" in runs:
            hf = runs["hf_transfer"]
            ratios.append((f"{mb} ours-auto (fsync) / hf_transfer",
                           runs["ours-auto"].rate / hf.rate, 1.0))
            ratios.append((f"{mb} ours-auto-nofsync / hf_transfer",
                           runs["ours-auto-nofsync"].rate / hf.rate, None))
            ratios.append((f"{mb} ours -x{bench.n} / hf_transfer",
                           runs[f"ours -x{bench.n}"].rate / hf.rate, None))
            ratios.append((f"{mb} hf_transfer peak / ours-auto peak",
                           hf.peak_mb / max(runs["ours-auto"].peak_mb, 1), 10.0))
        # mirrors: the capped server plus one a third as fast, against the capped one alone
        url, slow = srv.url("capped", biggest), srv.url("slow", biggest)
        runs = bench.rounds({
            "ours alone": (bench.ours(url, *bench.fixed()), None),
            "ours +slow": (bench.ours(url, *bench.fixed(), "--mirror", slow), None)},
            biggest, size, digest, f"mirrors {mb}")
        table += [(f"mirrors {mb}", r) for r in runs.values()]
        ratios.append((f"{mb} with a 3x slower mirror / alone",
                       runs["ours +slow"].rate / runs["ours alone"].rate, 0.95))
        print("[kill -9] ours to 50 %, SIGKILL, resume ...", flush=True)
        smallest = min(files, key=lambda n: files[n][0])
        kill_note = bench.kill_9(srv, smallest, files[smallest][0], www / smallest)
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"{bench.n} connections and {args.piece_size / MB:g} MiB pieces for ours and aria2c; "
          f"capped = nginx limit_rate {args.limit_rate} per connection, slow = a third; "
          f"ours fsyncs unless -nofsync, aria2c and hf_transfer never do; median of "
          f"{args.repeat}")
    print(f"{'':16} {'client':18} {'MiB/s':>8} {'seconds':>8} {'peak MiB':>9}  ok")
    for label, r in table:
        print(f"{label:16} {r.name:18} {r.rate:8.1f} {r.seconds:8.2f} {r.peak_mb:9.1f}  "
              f"{'yes' if r.ok else 'NO'}")
    print()
    for label, ratio, goal in ratios:
        verdict = f"   target >= {goal}x  {'met' if ratio >= goal else 'MISSED'}" \
            if goal is not None else ""
        print(f"{label:40} {ratio:7.3f}x{verdict}")
    peak = max(r.peak_mb for _, r in table if r.name.startswith("ours"))
    print(f"{'peak memory (ours)':40} {peak:7.1f} MB   target <= 150 MB  "
          f"{'met' if peak <= 150 else 'MISSED'}")
    print(f"{'kill -9 at 50 %':40} {kill_note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
