"""Benchmark: model switching on a mixed-size NAS trace: ours, plain LRU and A1111, same memory.

    python bench/switch.py                               # about 10 min on a quiet 2-core VM
    python bench/switch.py --requests 120 --rounds 1     # a quick look

The trace design (fixed before any work on the policy; change it for a reason about real
use, never to favour a policy):

- The NAS: 12 checkpoints, as a shared models folder holds them: 6 SD1.5-class (2 GiB at
  fp16), 4 SDXL-class (6.5 GiB), 2 Flux-class (12 GiB): 62 GiB. Every size is divided by
  ``--scale`` (32), so the ratios hold and the files fit this VM's page cache.
- The machine: a 24 GiB GPU of which 20 GiB hold weights (the rest is for activations at
  1024x1024), and a 30 GiB container of which 16 GiB may hold a RAM tier (an A10 instance
  of that shape is a common SD WebUI host). Every policy gets exactly these two budgets.
- The requests: ``--requests`` (300), one after the other. A request repeats the previous
  model with probability 0.3 (a user iterating on a prompt); otherwise it draws a model
  by Zipf popularity (weight 1/rank) over the 12, ranked in a seeded random order, so
  popularity does not follow size. Seeded (``--seed``, 7).
- Page cache: warm and the same for every policy, as on a NAS client after the first
  read: each policy's process reads every file once before it starts; the share that is
  cached is measured (fincore) and printed.

What runs, each policy in a fresh process, in an order rotated every round:

- ours (``policy=cost``) and plain LRU (``policy=lru``): the residency manager behind the
  per-GPU worker, as the API runs them (Placement.submit -> GpuWorker -> manager.run ->
  acquire), with the tensors backend. The tiny diffusers pipelines of the tests hold 8 MB
  and cannot show 2-12 GiB sizes, so the weights are real safetensors state dicts at
  the sizes above (8 MiB tensors, fp16); the load path (plan, claim, read, copy to the
  device, eviction) is the manager code the API calls.
- A1111, modelled on ``modules/sd_models.py`` (``reuse_model_from_already_loaded`` and
  ``reload_model_weights``) over the same backend's moves: ``sd_checkpoints_limit`` 1
  (its default), and 3 with ``sd_checkpoints_keep_in_cpu`` on (its default) and off. A
  switch sends the current model to the CPU (keep_in_cpu); a model among the ``limit``
  loaded goes back to the GPU; otherwise, below the limit a new model is read, at the
  limit the least recently used one is reused: sent to the CPU, and the file read into
  it (or dropped when the architecture differs) and moved to the GPU. A1111 counts
  models, not bytes: where it holds more than the budgets, the peak says so (in a
  container of that size it would swap or be killed).

The GPU is simulated over the CPU: RAM->GPU is a memcpy, as is a read from the warm page
cache, so here a switch from disk costs about twice one from RAM (on a real GPU with a
NAS the gap is far larger). Copies land in pooled buffers that stand in for CUDA's
caching allocators, faulted in by an untimed warm-up on the first third of the trace.

Before the timed rounds, the same replays run once more in-process with a backend that
moves nothing, pricing the bytes each policy reads and copies at part 1's measured costs:
a noise-free figure (this VM is shared, and wall clock swings with its load), and
ablations that show what each part of the cost policy contributes (LRU's order with the
cost policy's tiers, and the reverse) and the cost policy as it was before issue 15.

Printed per policy: total switch seconds (best and median round, every round listed), GiB
read from disk, GiB copied between RAM and GPU, requests served from GPU / RAM / disk,
p50/p95 request latency (submit to result), peak GPU and RAM against the budgets and
peak RSS; then each policy's total over ours, and the goals, on the best rounds: ours
>= 1.15x faster than LRU and >= 2x faster than A1111's default.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelzoo.residency.backends.tensors import TensorsBackend
from modelzoo.residency.catalog import ModelCatalog
from modelzoo.residency.devices import SimulatedDevice
from modelzoo.residency.footprint import ReserveRule
from modelzoo.residency.manager import ResidencyManager, Switch
from modelzoo.residency.placement import Placement
from modelzoo.residency.plan import Tier
from modelzoo.residency.policy import Policy, Speeds

GIB = 1 << 30
MIB = 1 << 20
BLOCK = 8 * MIB
FAMILIES = {"sd15": 2.0, "sdxl": 6.5, "flux": 12.0}  # GiB at fp16
NAS = ["sd15"] * 6 + ["sdxl"] * 4 + ["flux"] * 2
GPU_GIB, RAM_GIB = 20.0, 16.0
REPEAT, ZIPF = 0.3, 1.0
POLICIES = {"cost": "ours (cost)", "lru": "plain LRU",
            "a1111-1": "A1111 limit 1", "a1111-3": "A1111 limit 3, keep_in_cpu",
            "a1111-3gpu": "A1111 limit 3, on GPU"}


# ---- the NAS and the trace -------------------------------------------------------------
def model_names() -> list[str]:
    return [f"{fam}-{i:02d}" for i, fam in enumerate(NAS)]


def family(name: str) -> str:
    return name.split("-")[0]


def write_checkpoint(path: Path, nbytes: int) -> None:
    """fp16 tensors in 8 MiB blocks, split like an SD checkpoint (UNet 80 %, text encoder
    12 %, VAE 8 %): equal blocks let pooled buffers serve any model, as CUDA's caching
    allocator reuses blocks by size."""
    header: dict[str, Any] = {}
    offset = 0
    for prefix, share in (("model.diffusion_model.", 0.80), ("cond_stage_model.", 0.12),
                          ("first_stage_model.", 0.08)):
        left = int(nbytes * share) // 2 * 2
        i = 0
        while left > 0:
            n = min(BLOCK, left)
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


def make_trace(n: int, seed: int, names: list[str] | None = None) -> list[str]:
    """A seeded request trace over ``names`` (default: this NAS's models): Zipf
    popularity independent of size, and runs of the same model (REPEAT)."""
    rnd = random.Random(seed)
    order = list(names if names is not None else model_names())
    rnd.shuffle(order)  # popularity rank independent of size
    weights = [1 / (i + 1) ** ZIPF for i in range(len(order))]
    trace: list[str] = []
    for _ in range(n):
        if trace and rnd.random() < REPEAT:
            trace.append(trace[-1])
        else:
            trace.append(rnd.choices(order, weights)[0])
    return trace


def warm_page_cache(root: Path) -> tuple[int, int]:
    """Read every file once; return (bytes cached, bytes on disk) as fincore sees them."""
    total = cached = 0
    for p in sorted(root.glob("*.safetensors")):
        with open(p, "rb", buffering=0) as f:
            while f.read(16 * MIB):
                pass
        size = p.stat().st_size
        total += size
        try:
            out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES",
                                  str(p)], capture_output=True, text=True, check=True)
            cached += int(out.stdout.split()[0])
        except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
            cached = -1 if cached <= 0 else cached
    return cached, total


# ---- one policy in one process ---------------------------------------------------------
@dataclass
class Tally:
    seconds: list[float] = field(default_factory=list)  # switch time per request
    latency: list[float] = field(default_factory=list)  # submit to result per request
    cpu: float = 0.0  # process CPU seconds over all requests (less hit by other jobs)
    sources: dict[str, int] = field(default_factory=lambda: {"gpu": 0, "ram": 0, "disk": 0})
    read: int = 0
    copied: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"seconds": sum(self.seconds), "latency": self.latency, "cpu": self.cpu,
                "sources": self.sources, "read": self.read, "copied": self.copied}


def touch(handle: Any, device: Any) -> float:
    """The job: read one value of every tensor (the weights must be there)."""
    return float(sum(float(t[0]) for t in handle.values()))


def replay_ours(catalog: ModelCatalog, backend: Any, gpu: SimulatedDevice,
                host: SimulatedDevice, policy: str, trace: list[str],
                knobs: dict[str, Any] | None = None) -> Tally:
    m = ResidencyManager(backend, [gpu], host, catalog, reserve=ReserveRule(0, 0, 0),
                         policy=policy)
    for k, v in (knobs or {}).items():  # the priced replays' speeds and ablated policies
        setattr(m, k, v)
    placement = Placement(m)
    tally = Tally()
    try:
        for name in trace:
            c0, t0 = time.process_time(), time.perf_counter()
            _, switch = placement.submit(name, touch).result()
            tally.latency.append(time.perf_counter() - t0)
            tally.cpu += time.process_time() - c0
            _count(tally, switch, catalog)
    finally:
        placement.close()
        for e in m.entries():  # hand every buffer back to the pools for the next pass
            if e.tier is not Tier.DISK:
                m.unload(e.name, Tier.DISK)
    return tally


def _count(tally: Tally, switch: Switch, catalog: ModelCatalog) -> None:
    tally.seconds.append(switch.seconds)
    tally.sources[switch.source.value] += 1
    for mv in switch.plan.moves if switch.plan else []:
        if mv.src is Tier.DISK:
            tally.read += catalog.get(mv.model).disk_bytes
        elif Tier.GPU in (mv.src, mv.dst) and mv.dst is not Tier.DISK:
            tally.copied += mv.nbytes


@dataclass
class Slot:
    name: str
    handle: Any
    on_gpu: bool


class A1111:
    """A1111's checkpoint cache (``modules/sd_models.py``) over the backend's moves."""

    def __init__(self, backend: Any, catalog: ModelCatalog, gpu: SimulatedDevice,
                 host: SimulatedDevice, limit: int, keep_in_cpu: bool, tally: Tally) -> None:
        self.b, self.catalog, self.gpu, self.host = backend, catalog, gpu, host
        self.limit, self.keep_in_cpu, self.tally = limit, keep_in_cpu, tally
        self.loaded: list[Slot] = []  # model_data.loaded_sd_models: most recent first

    def _to_cpu(self, s: Slot) -> None:  # send_model_to_cpu
        if s.on_gpu:
            h = self.b.to_host(s.handle, self.gpu, self.host)
            self.b.drop(s.handle)
            self.tally.copied += self.catalog.get(s.name).nbytes
            s.handle, s.on_gpu = h, False

    def _to_gpu(self, s: Slot) -> None:  # send_model_to_device
        if not s.on_gpu:
            g = self.b.to_device(s.handle, self.gpu)
            self.b.drop(s.handle)
            self.tally.copied += self.catalog.get(s.name).nbytes
            s.handle, s.on_gpu = g, True

    def _trash(self, s: Slot) -> None:  # send_model_to_trash: to "meta", memory freed
        self.b.drop(s.handle)

    def _read(self, name: str) -> Slot:  # read the state dict into a model on the CPU
        spec = self.catalog.get(name)
        self.tally.read += spec.disk_bytes
        return Slot(name, self.b.load(spec, self.host), False)

    def switch(self, name: str) -> str:
        """``reload_model_weights(info=name)``; returns where the weights came from."""
        current = self.loaded[0] if self.loaded else None
        if current is not None and current.name == name:
            return "gpu"
        # reuse_model_from_already_loaded
        if self.keep_in_cpu and current is not None:
            self._to_cpu(current)
        match = None
        for s in list(reversed(self.loaded)):
            if s.name == name:
                match = s
                continue
            if len(self.loaded) > self.limit:
                self.loaded.remove(s)
                self._trash(s)
        if match is not None:
            source = "gpu" if match.on_gpu else "ram"
            self._to_gpu(match)
            self.loaded.remove(match)
            self.loaded.insert(0, match)
            return source
        if self.limit > 1 and len(self.loaded) < self.limit:
            slot = self._read(name)  # load_model: a new model; the current one stays
        else:
            reuse = self.loaded.pop() if self.loaded else None
            if reuse is not None:  # reload_model_weights on the popped model
                self._to_cpu(reuse)
                self._trash(reuse)  # its weights are overwritten (or the model trashed)
            slot = self._read(name)
        self._to_gpu(slot)
        self.loaded.insert(0, slot)
        return "disk"

    def close(self) -> None:
        for s in self.loaded:
            self._trash(s)
        self.loaded.clear()


def replay_a1111(catalog: ModelCatalog, backend: Any, gpu: SimulatedDevice,
                 host: SimulatedDevice, policy: str, trace: list[str],
                 knobs: dict[str, Any] | None = None) -> Tally:
    limit = 1 if policy == "a1111-1" else 3
    tally = Tally()
    webui = A1111(backend, catalog, gpu, host, limit, policy != "a1111-3gpu", tally)
    try:
        for name in trace:  # one request at a time: A1111 holds its queue lock
            c0, t0 = time.process_time(), time.perf_counter()
            source = webui.switch(name)
            switched = time.perf_counter() - t0
            touch(webui.loaded[0].handle, gpu)
            tally.latency.append(time.perf_counter() - t0)
            tally.cpu += time.process_time() - c0
            tally.seconds.append(switched)
            tally.sources[source] += 1
    finally:
        webui.close()
    return tally


# ---- the same replays, priced instead of timed -------------------------------------------
class Priced:
    """A backend that moves nothing: the replays then only count bytes, which part 1's
    measured costs price. Noise-free, seconds to run, and it isolates what each part of
    the cost policy contributes (the ablations below)."""

    charges_devices = False

    def load(self, spec: Any, host: Any) -> dict[str, Any]:
        return {}

    def to_device(self, handle: Any, device: Any) -> dict[str, Any]:
        return {}

    def to_host(self, handle: Any, device: Any, host: Any) -> dict[str, Any]:
        return {}

    def drop(self, handle: Any) -> None:
        return None


class LruOrderCostTiers(Policy):
    """Ablation: LRU's eviction order with the cost policy's tier decisions."""

    def rank(self, e: Any) -> tuple[float, int]:
        return (float(e.last_used), 0)


class CostOrderLruTiers(Policy):
    """Ablation: the cost policy's order with LRU's tiers (exclusive, always copy down)."""

    def worth_copying_down(self, e: Any) -> bool:
        return True

    def keeps_ram_copies(self) -> bool:
        return False


class FirstCost(CostOrderLruTiers):
    """The cost policy before issue 15 (attempt 0): ``L + uses * reload seconds``, which
    keeps large models, with LRU's tiers."""

    def priority(self, e: Any, uses: int) -> float:
        return self.inflation + uses * self.speeds.reload_seconds(e.spec)


def priced(root: Path, trace: list[str], gpu_b: int, ram_b: int,
           rates: dict[str, float]) -> None:
    catalog = ModelCatalog(root)
    # the manager decides with part 1's speeds (nothing is timed here)
    speeds = Speeds()
    speeds.bps = {"disk": GIB / rates["read"], "h2d": GIB / rates["copy"],
                  "d2h": GIB / rates["copy"]}
    speeds.measured = set(speeds.bps)
    speeds.observe = lambda *a: None  # type: ignore[method-assign]
    rows: dict[str, Tally] = {}
    for key, cls in (("cost", Policy), ("lru", Policy),
                     ("lru order, cost tiers", LruOrderCostTiers),
                     ("cost order, lru tiers", CostOrderLruTiers),
                     ("first cost policy", FirstCost)):
        rules = cls("lru" if key == "lru" else "cost", speeds)
        gpu, host = SimulatedDevice("sim:0", gpu_b), SimulatedDevice("ram", ram_b, kind="ram")
        rows[key] = replay_ours(catalog, Priced(), gpu, host, rules.name, trace,
                                {"speeds": speeds, "rules": rules})
    for key in ("a1111-1", "a1111-3", "a1111-3gpu"):
        gpu = SimulatedDevice("sim:0", 64 * gpu_b)
        host = SimulatedDevice("ram", 64 * ram_b, kind="ram")
        rows[key] = replay_a1111(catalog, Priced(), gpu, host, key, trace)
    cost = {k: t.read / GIB * rates["read"] + t.copied / GIB * rates["copy"]
            for k, t in rows.items()}
    print("   priced (the same replays with a backend that moves nothing; bytes x part 1's "
          "costs; no noise):")
    for key, t in rows.items():
        s = t.sources
        print(f"   {POLICIES.get(key, key):<27}{cost[key]:>8.1f} s  LRU/it "
              f"{cost['lru'] / cost[key]:.2f}x  it/ours {cost[key] / cost['cost']:.2f}x  "
              f"gpu/ram/disk {s['gpu']}/{s['ram']}/{s['disk']}")


def tiers(job: dict[str, Any]) -> dict[str, Any]:
    """Switch time of one SDXL-class model from disk (warm page cache), RAM, resident."""
    root = Path(job["root"])
    warm_page_cache(root)
    catalog = ModelCatalog(root)
    name = next(n for n in model_names() if family(n) == "sdxl")
    size = catalog.get(name).nbytes
    gpu = SimulatedDevice("sim:0", 2 * size)
    host = SimulatedDevice("ram", 2 * size, kind="ram")
    m = ResidencyManager(TensorsBackend("fp16", host_pool_bytes=2 * size), [gpu], host,
                         catalog, reserve=ReserveRule(0, 0, 0), policy="lru")
    out: dict[str, list[float]] = {"disk": [], "ram": [], "gpu": []}
    for i in range(job["repeat"] + 1):  # the first cycle faults the pools in, untimed
        for want, before in (("disk", Tier.DISK), ("gpu", None), ("ram", Tier.RAM)):
            if before is not None and m.where(name)[0] is not before:
                m.unload(name, before)
            with m.acquire(name, "sim:0") as lease:
                assert lease.switch.source.value == want, (lease.switch.source, want)
                if i:
                    out[want].append(lease.switch.seconds)
    return {"bytes": size, **{k: statistics.median(v) for k, v in out.items()}}


def worker(job: dict[str, Any]) -> int:
    """One policy in a fresh process: warm page cache, untimed warm-up, timed pass."""
    if job.get("kind") == "tiers":
        print("RESULT " + json.dumps(tiers(job)), flush=True)
        return 0
    root = Path(job["root"])
    cached, total = warm_page_cache(root)
    catalog = ModelCatalog(root)
    policy, trace, gpu_b, ram_b = job["policy"], job["trace"], job["gpu"], job["ram"]
    ours = not policy.startswith("a1111")
    # A1111 counts models, not bytes: its devices are as large as it needs, and the
    # peaks are compared with the budgets afterwards
    gpu = SimulatedDevice("sim:0", gpu_b if ours else 64 * gpu_b)
    host = SimulatedDevice("ram", ram_b if ours else 64 * ram_b, kind="ram")
    # host buffers are pooled up to what each policy holds in RAM at most (A1111: as much
    # as it takes), so nobody pays page faults on fresh memory in the timed pass
    backend = TensorsBackend("fp16", host_pool_bytes=ram_b if ours else 64 * ram_b)
    replay = replay_ours if ours else replay_a1111
    replay(catalog, backend, gpu, host, policy, trace[: len(trace) // 3])  # untimed
    gpu.peak = host.peak = 0
    backend.fresh_bytes = 0
    tally = replay(catalog, backend, gpu, host, policy, trace)
    res = {**tally.to_json(), "gpu_peak": gpu.peak, "ram_peak": host.peak,
           "fresh": backend.fresh_bytes,
           "gpu_budget": gpu_b, "ram_budget": ram_b, "cached": cached, "on_disk": total,
           "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    print("RESULT " + json.dumps(res), flush=True)
    return 0


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{job['policy']} worker failed ({proc.returncode}):\n"
                           f"{proc.stdout}{proc.stderr}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result


# ---- output ------------------------------------------------------------------------------
def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def report_tiers(t: dict[str, Any]) -> dict[str, float]:
    gib = t["bytes"] / GIB
    print(f"1. switch time of one SDXL-class model ({gib:.3f} GiB), median: from disk "
          f"(warm page cache) {t['disk']:.3f} s, from RAM {t['ram']:.3f} s "
          f"({t['disk'] / t['ram']:.1f}x faster), resident {t['gpu'] * 1e3:.2f} ms")
    # a switch from disk is a read plus the copy a switch from RAM makes
    return {"read": max(0.0, t["disk"] - t["ram"]) / gib, "copy": t["ram"] / gib}


def report(results: dict[str, list[dict[str, Any]]], orders: list[list[str]],
           rates: dict[str, float]) -> bool:
    print("   rounds (each policy a fresh process): "
          + "; ".join(" -> ".join(o) for o in orders))
    r0 = next(iter(results.values()))[0]
    cached = min(r["cached"] for rs in results.values() for r in rs)
    print(f"   page cache before each pass: {cached / GIB:.2f} of {r0['on_disk'] / GIB:.2f} GiB "
          "cached (fincore; the lowest of all runs)")
    head = (f"   {'policy':<27}{'best s':>8}{'median':>8}{'CPU s':>7}{'model s':>8}"
            f"{'read GiB':>9}{'copy GiB':>9}{'gpu/ram/disk':>13}{'p50 ms':>7}{'p95 ms':>7}"
            f"{'GPU peak/budget':>16}{'RAM peak/budget':>16}{'RSS':>6}")
    print(head)
    medians: dict[str, float] = {}
    best: dict[str, float] = {}
    over: dict[str, bool] = {}
    modelled: dict[str, float] = {}
    for key, runs in results.items():
        secs = [r["seconds"] for r in runs]
        medians[key] = statistics.median(secs)
        best[key] = min(secs)
        cpu = min(r["cpu"] for r in runs)
        modelled[key] = (runs[0]["read"] / GIB * rates["read"]
                         + runs[0]["copied"] / GIB * rates["copy"])
        lat = [x for r in runs for x in r["latency"]]
        r = runs[0]
        s = r["sources"]
        gp = max(x["gpu_peak"] for x in runs)
        rp = max(x["ram_peak"] for x in runs)
        over[key] = gp > r["gpu_budget"] or rp > r["ram_budget"]
        rss = max(x["rss"] for x in runs) / GIB
        hits = f"{s['gpu']}/{s['ram']}/{s['disk']}"
        gpu_peak = f"{gp / GIB:.2f}/{r['gpu_budget'] / GIB:.2f}"
        ram_peak = f"{rp / GIB:.2f}/{r['ram_budget'] / GIB:.2f}"
        print(f"   {POLICIES[key]:<27}{best[key]:>8.2f}{medians[key]:>8.2f}{cpu:>7.1f}"
              f"{modelled[key]:>8.1f}{r['read'] / GIB:>9.2f}{r['copied'] / GIB:>9.2f}{hits:>13}"
              f"{_pct(lat, 0.5) * 1e3:>7.0f}{_pct(lat, 0.95) * 1e3:>7.0f}"
              f"{gpu_peak:>16}{ram_peak:>16}{rss:>5.1f}G"
              + ("  OVER BUDGET" if over[key] else ""))
        same = all((x["sources"], x["read"], x["copied"]) == (s, r["read"], r["copied"])
                   for x in runs)
        if not same:
            print(f"   note: {POLICIES[key]} did not make the same moves in every round")
    for key, runs in results.items():
        print(f"   {POLICIES[key]:<27} switch s per round: "
              + " ".join(f"{r['seconds']:.2f}" for r in runs))
    print("   best s / median = wall clock of all switches, best and median round (other "
          "jobs on a shared machine only ever add time: the best round is the least "
          "disturbed, as timeit takes the minimum); CPU s = process CPU time of the "
          "requests, best round; model s = read GiB x part 1's read cost + copy GiB x its "
          "copy cost (no noise); read = bytes read from disk (warm page cache); copy = bytes "
          "between RAM and GPU; gpu/ram/disk = requests whose model came from there; "
          "latency (submit to result) over all rounds")
    for key in medians:
        if key != "cost":
            note = " (holds more than the budgets)" if over[key] else ""
            print(f"   total switch time, {POLICIES[key]} / ours: best "
                  f"{best[key] / best['cost']:.2f}x, median {medians[key] / medians['cost']:.2f}x"
                  f", modelled {modelled[key] / modelled['cost']:.2f}x{note}")
    goals = []
    for key, want in (("lru", 1.15), ("a1111-1", 2.0)):
        if key in best:
            got = best[key] / best["cost"]
            goals.append(f">= {want:g}x {POLICIES[key]} (best rounds): "
                         f"{'met' if got >= want else 'NOT met'}")
    goals.append(f"ours within budget: {'yes' if not over['cost'] else 'NO'}")
    print("   goals: " + "; ".join(goals))
    return not over["cost"] and not over.get("lru", False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=300, help="length of the trace")
    p.add_argument("--seed", type=int, default=7, help="seed of the trace")
    p.add_argument("--scale", type=float, default=32.0,
                   help="every size (models, GPU, RAM) divided by this")
    p.add_argument("--rounds", type=int, default=5,
                   help="rounds; each runs every policy once, order rotated")
    p.add_argument("--policies", default=",".join(POLICIES),
                   help="comma-separated subset of " + ", ".join(POLICIES))
    p.add_argument("--repeat", type=int, default=5, help="repetitions of part 1's timings")
    p.add_argument("--dir", type=Path, default=None, help="where to write the checkpoints")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    keys = [k.strip() for k in args.policies.split(",") if k.strip()]
    for k in keys:
        if k not in POLICIES:
            p.error(f"unknown policy {k!r}")
    if "cost" not in keys:
        p.error("the policies must include cost (ours): ratios are to it")

    def terminated(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally: temp files go

    signal.signal(signal.SIGTERM, terminated)
    root = Path(tempfile.mkdtemp(prefix="atelier-bench-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        for name in model_names():
            write_checkpoint(root / f"{name}.safetensors",
                             int(FAMILIES[family(name)] * GIB / args.scale))
        on_disk = sum(f.stat().st_size for f in root.iterdir())
        kinds = ", ".join(f"{NAS.count(f)} {f}" for f in FAMILIES)
        print(f"wrote {len(NAS)} checkpoints ({kinds}), "
              f"{on_disk / GIB:.2f} GiB at 1/{args.scale:g} scale, in "
              f"{time.perf_counter() - t0:.1f} s ({root}); load average "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        rates = report_tiers(run_child({"kind": "tiers", "root": str(root), "policy": "tiers",
                                        "repeat": args.repeat}))
        trace = make_trace(args.requests, args.seed)
        gpu, ram = int(GPU_GIB * GIB / args.scale), int(RAM_GIB * GIB / args.scale)
        counts = {n: trace.count(n) for n in model_names()}
        print(f"trace: {len(trace)} requests (seed {args.seed}), per model: "
              + ", ".join(f"{n} {c}" for n, c in sorted(counts.items(), key=lambda x: -x[1])))
        print(f"budgets for every policy: GPU {gpu / GIB:.3f} GiB (20 GiB), RAM "
              f"{ram / GIB:.3f} GiB (16 GiB); {args.rounds} round(s)")
        print("2. the trace")
        priced(root, trace, gpu, ram, rates)
        results: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
        orders = []
        for i in range(args.rounds):
            order = keys[i % len(keys):] + keys[:i % len(keys)]
            orders.append(order)
            for key in order:
                job = {"root": str(root), "trace": trace, "gpu": gpu, "ram": ram,
                       "policy": key}
                results[key].append(run_child(job))
                last = results[key][-1]
                print(f"   round {i + 1}: {POLICIES[key]:<27} {last['seconds']:.2f} s "
                      f"(fresh buffers {last['fresh'] / GIB:.2f} GiB)", flush=True)
        ok = report(results, orders, rates)
        return 0 if ok else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
