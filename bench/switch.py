"""Benchmark: model switch times by tier, and a request trace under three policies (CPU).

    .venv/bin/python bench/switch.py                 # full size: >= 1 GiB checkpoints
    .venv/bin/python bench/switch.py --size-gib 0.05 --requests 20   # a quick look

1. Synthetic fp16 safetensors checkpoints (A1111 key layout) are written to a temporary
   folder (deleted afterwards). Switch time is measured from disk (page cache dropped
   first: ``/proc/sys/vm/drop_caches`` when permitted, else ``posix_fadvise(DONTNEED)`` on
   the file; which one is printed), from RAM, and when already resident. The "GPU" is a
   simulated device over the CPU, so RAM->GPU is a real memory copy (``clone``), standing
   in for the PCIe copy. Target: from RAM >= 10x faster than from disk.
2. A seeded trace over 6 models (Zipf popularity, some repeats) with GPU memory for 2-3
   of them and as much RAM: our policy (cost-aware, GPU+RAM tiers) against A1111's
   default (one checkpoint, every switch reads the file) and plain LRU with the same
   memory. Every disk read starts cold. Prints hit rates, total switch time, and the peak
   memory on each tier against its budget (it must never be above).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelzoo.residency.backends.tensors import TensorsBackend
from modelzoo.residency.catalog import ModelCatalog
from modelzoo.residency.devices import SimulatedDevice
from modelzoo.residency.footprint import ReserveRule
from modelzoo.residency.manager import ResidencyManager
from modelzoo.residency.plan import Tier

GIB = 1 << 30
MIB = 1 << 20


def write_checkpoint(path: Path, nbytes: int) -> None:
    """fp16 tensors split like an SD checkpoint: UNet 80 %, text encoder 12 %, VAE 8 %."""
    parts = {"model.diffusion_model.": 0.80, "cond_stage_model.": 0.12,
             "first_stage_model.": 0.08}
    header: dict[str, Any] = {}
    offset = 0
    for prefix, share in parts.items():
        block = 64 * MIB
        left = int(nbytes * share) // 2 * 2
        i = 0
        while left > 0:
            n = min(block, left)
            header[f"{prefix}block{i}.weight"] = {"dtype": "F16", "shape": [n // 2],
                                                  "data_offsets": [offset, offset + n]}
            offset, left, i = offset + n, left - n, i + 1
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    chunk = os.urandom(16 * MIB)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        left = offset
        while left > 0:
            f.write(chunk[: min(len(chunk), left)])
            left -= len(chunk)
        f.flush()
        os.fsync(f.fileno())


class ColdCache:
    """Drops a file from the page cache before it is read.

    ``fadvise`` (the default) evicts just that file's clean pages. ``drop_caches`` empties
    the whole page cache (root only): torch's own shared libraries go too, and faulting
    them back in lands inside the timed switch, so it overstates disk times.
    """

    def __init__(self, method: str = "fadvise") -> None:
        self.method = "posix_fadvise(POSIX_FADV_DONTNEED) per file"
        if method == "drop_caches":
            try:
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("1")
                self.method = "echo 1 > /proc/sys/vm/drop_caches"
            except OSError as exc:
                self.method += f" (drop_caches refused: {exc.strerror})"

    def drop(self, path: Path) -> None:
        if self.method.startswith("echo"):
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1")
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    def read_speed(self, path: Path, cold: bool) -> float:
        """Plain sequential read throughput of a file, in GiB/s."""
        if cold:
            self.drop(path)
        t0 = time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            while f.read(16 * MIB):
                pass
        return path.stat().st_size / GIB / (time.perf_counter() - t0)


class ColdDiskBackend(TensorsBackend):
    """Reads start cold: ``cool(path)`` is called before a switch that will read the file,
    outside the timed region (dropping caches costs a sync)."""

    def __init__(self, cache: ColdCache, host_pool_bytes: int = 0) -> None:
        super().__init__("fp16", host_pool_bytes=host_pool_bytes)
        self.cache = cache

    def cool(self, m: ResidencyManager | None, catalog: ModelCatalog, name: str) -> None:
        if m is None or m.where(name)[0] is Tier.DISK:
            self.cache.drop(catalog.get(name).path)


def manager(catalog: ModelCatalog, backend: TensorsBackend, gpu: int, ram: int,
            policy: str) -> tuple[ResidencyManager, SimulatedDevice, SimulatedDevice]:
    g = SimulatedDevice("sim:0", gpu)
    r = SimulatedDevice("ram", ram, kind="ram")
    m = ResidencyManager(backend, [g], r, catalog, reserve=ReserveRule(0, 0, 0), policy=policy)
    return m, g, r


def tiers(args: argparse.Namespace, catalog: ModelCatalog, backend: ColdDiskBackend,
          names: list[str]) -> dict[str, float]:
    size = catalog.get(names[0]).nbytes
    m, _, _ = manager(catalog, backend, 3 * size, 3 * size, "cost")
    m.acquire(names[1], "sim:0").release()  # warm the code paths (imports, allocator)
    m.unload(names[1], Tier.DISK)
    disk, ram, hit = [], [], []
    for _ in range(args.repeat):
        m.unload(names[0], Tier.DISK) if m.where(names[0])[0] is not Tier.DISK else None
        backend.cool(m, catalog, names[0])
        with m.acquire(names[0], "sim:0") as lease:
            assert lease.switch.source is Tier.DISK
            disk.append(lease.switch.seconds)
        with m.acquire(names[0], "sim:0") as lease:
            assert lease.switch.source is Tier.GPU
            hit.append(lease.switch.seconds)
        m.unload(names[0], Tier.RAM)
        with m.acquire(names[0], "sim:0") as lease:
            assert lease.switch.source is Tier.RAM
            ram.append(lease.switch.seconds)
    return {"disk": statistics.median(disk), "ram": statistics.median(ram),
            "resident": statistics.median(hit)}


def make_trace(names: list[str], n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(names))]
    order = names[:]
    rnd.shuffle(order)  # popularity not tied to size
    trace: list[str] = []
    for _ in range(n):
        if trace and rnd.random() < 0.25:
            trace.append(trace[-1])
        else:
            trace.append(rnd.choices(order, weights)[0])
    return trace


def run_policy(catalog: ModelCatalog, cache: ColdCache, trace: list[str], gpu: int,
               ram: int, policy: str) -> dict[str, Any]:
    backend = ColdDiskBackend(cache, host_pool_bytes=ram)  # fresh pools for each policy
    m, g, r = manager(catalog, backend, gpu, ram, policy)
    sources: dict[str, int] = {"gpu": 0, "ram": 0, "disk": 0}
    total = 0.0
    read = copied = 0
    for name in trace:
        backend.cool(m, catalog, name)
        with m.acquire(name, "sim:0") as lease:
            sources[lease.switch.source.value] += 1
            total += lease.switch.seconds
            for mv in lease.switch.plan.moves if lease.switch.plan else []:
                if mv.src is Tier.DISK:
                    read += mv.nbytes
                elif mv.dst is not Tier.DISK:
                    copied += mv.nbytes
    return {"sources": sources, "seconds": total, "gpu_peak": g.peak, "gpu_budget": gpu,
            "ram_peak": r.peak, "ram_budget": ram, "read": read, "copied": copied}


def run_a1111(catalog: ModelCatalog, cache: ColdCache, trace: list[str], gpu: int, ram: int
              ) -> dict[str, Any]:
    """sd_checkpoints_limit=1: the current checkpoint only; any other is read from disk."""
    backend = ColdDiskBackend(cache, host_pool_bytes=ram)
    g = SimulatedDevice("sim:0", gpu)  # same GPU as the others; it uses one checkpoint
    host = SimulatedDevice("ram", 1 << 50, kind="ram")
    current: str | None = None
    handle: Any = None
    sources = {"gpu": 0, "ram": 0, "disk": 0}
    total = 0.0
    peak = read = 0
    for name in trace:
        if name == current:
            sources["gpu"] += 1
            continue
        spec = catalog.get(name)
        backend.cool(None, catalog, name)
        t0 = time.perf_counter()
        if handle is not None:
            backend.drop(handle)  # the old weights go (send_model_to_trash)
        loaded = backend.load(spec, host)
        handle = backend.to_device(loaded, g)
        backend.drop(loaded)
        total += time.perf_counter() - t0
        peak = max(peak, spec.nbytes)
        sources["disk"] += 1
        read += spec.nbytes
        current = name
    del handle
    return {"sources": sources, "seconds": total, "gpu_peak": peak, "gpu_budget": peak,
            "ram_peak": 0, "ram_budget": 0, "read": read, "copied": read}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-gib", type=float, default=1.0,
                   help="size of the smallest checkpoint (others are 1.25x, 1.5x, 2x)")
    p.add_argument("--requests", type=int, default=40, help="length of the request trace")
    p.add_argument("--seed", type=int, default=7, help="seed of the trace")
    p.add_argument("--gpu-slots", type=float, default=2.5,
                   help="GPU budget in units of the smallest checkpoint")
    p.add_argument("--ram-slots", type=float, default=2.5,
                   help="RAM budget (beyond staging) in units of the smallest checkpoint")
    p.add_argument("--repeat", type=int, default=3, help="repetitions of the tier timings")
    p.add_argument("--dir", type=Path, default=None, help="where to write the checkpoints")
    p.add_argument("--cold", choices=["fadvise", "drop_caches"], default="fadvise",
                   help="how to start disk reads cold (see ColdCache)")
    args = p.parse_args(argv)

    base = int(args.size_gib * GIB)
    factors = [1.0, 1.0, 1.0, 1.25, 1.5, 2.0]
    root = Path(tempfile.mkdtemp(prefix="atelier-bench-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        names = []
        for i, f in enumerate(factors):
            name = f"model{i}"
            write_checkpoint(root / f"{name}.safetensors", int(base * f))
            names.append(name)
        on_disk = sum((root / f"{n}.safetensors").stat().st_size for n in names)
        print(f"wrote {len(names)} checkpoints, {on_disk / GIB:.2f} GiB, in "
              f"{time.perf_counter() - t0:.1f} s  ({root})")
        catalog = ModelCatalog(root)
        cache = ColdCache(args.cold)
        backend = ColdDiskBackend(cache, host_pool_bytes=3 * base)
        probe = root / f"{names[0]}.safetensors"
        print(f"page cache dropped with: {cache.method}; plain read of {probe.name}: "
              f"cold {cache.read_speed(probe, True):.2f} GiB/s, "
              f"warm {cache.read_speed(probe, False):.2f} GiB/s")

        t = tiers(args, catalog, backend, names)
        print(f"\n1. switch time of a {catalog.get(names[0]).nbytes / GIB:.2f} GiB checkpoint "
              f"(median of {args.repeat})")
        print(f"   from disk   {t['disk']:8.3f} s")
        print(f"   from RAM    {t['ram']:8.3f} s   ({t['disk'] / t['ram']:.1f}x faster than "
              f"disk; target >= 10x)")
        print(f"   resident    {t['resident'] * 1e3:8.3f} ms")

        trace = make_trace(names, args.requests, args.seed)
        gpu = int(args.gpu_slots * base)
        largest = max(catalog.get(n).nbytes for n in names)
        ram = int(args.ram_slots * base) + largest  # staging room for the largest model
        print(f"\n2. trace: {len(trace)} requests over {len(names)} models "
              f"(seed {args.seed}); GPU budget {gpu / GIB:.2f} GiB, RAM budget "
              f"{ram / GIB:.2f} GiB")
        print(f"   {'policy':<22}{'GPU hits':>9}{'RAM':>6}{'disk':>6}{'hit rate':>10}"
              f"{'switch s':>10}{'read GiB':>10}{'copy GiB':>10}{'GPU peak/budget':>17}"
              f"{'RAM peak/budget':>17}")
        results = {
            "ours (cost, GPU+RAM)": run_policy(catalog, cache, trace, gpu, ram, "cost"),
            "plain LRU (GPU+RAM)": run_policy(catalog, cache, trace, gpu, ram, "lru"),
            "A1111 default (1 ckpt)": run_a1111(catalog, cache, trace, gpu, ram),
        }
        ok = True
        for label, r in results.items():
            s = r["sources"]
            hits = s["gpu"] / len(trace)
            warm = (s["gpu"] + s["ram"]) / len(trace)
            gp = f"{r['gpu_peak'] / GIB:.2f}/{r['gpu_budget'] / GIB:.2f}"
            rp = f"{r['ram_peak'] / GIB:.2f}/{r['ram_budget'] / GIB:.2f}"
            print(f"   {label:<22}{s['gpu']:>9}{s['ram']:>6}{s['disk']:>6}"
                  f"{hits:>6.0%}/{warm:<3.0%}{r['seconds']:>10.2f}{r['read'] / GIB:>10.2f}"
                  f"{r['copied'] / GIB:>10.2f}{gp:>17}{rp:>17}")
            ok &= r["gpu_peak"] <= r["gpu_budget"] and r["ram_peak"] <= r["ram_budget"]
        ours = results["ours (cost, GPU+RAM)"]["seconds"]
        for label in ("plain LRU (GPU+RAM)", "A1111 default (1 ckpt)"):
            print(f"   total switch time vs {label}: {results[label]['seconds'] / ours:.2f}x "
                  "(ours is faster when > 1)")
        print("   hit rate column: GPU hits / (GPU or RAM) hits; read = bytes read from disk, "
              "copy = bytes copied between RAM and GPU (A1111: its disk-to-GPU copy)")
        print(f"   peak memory never above budget: {'yes' if ok else 'NO'}")
        try:
            import resource

            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            print(f"   process peak RSS {rss / GIB:.2f} GiB (simulated GPU lives in RAM)")
        except ImportError:  # pragma: no cover
            pass
        return 0 if ok else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
