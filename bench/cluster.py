"""Benchmark: routing model requests across GPU replicas on Ray Serve: ours, Ray's default
multiplexed routing and round-robin, same replicas and memory.

    python bench/cluster.py            # 3 rounds, about 3 min on a 2-core VM
    python bench/cluster.py --quick    # a smoke run (under a minute)

The setting (fixed before any work on the router; change it for a reason about real use,
never to favour a router):

- The NAS: 6 checkpoints of mixed sizes: 3 SD1.5-class (2 GiB at fp16), 2 SDXL-class
  (6.5 GiB), 1 Flux-class (12 GiB): 31 GiB, every size divided by ``--scale`` (64).
- The machines: 3 replicas, each a 16 GB-class GPU of which 12 GiB hold weights, and a RAM
  tier of 16 GiB (every load passes through RAM, so it must hold the largest model):
  36 GiB of GPU for 31 GiB of models, so where each model goes decides how often they
  are switched. Every router gets the same three replicas (fresh for each
  router): the residency manager (cost policy) with the tensors backend over simulated
  devices, as bench/switch.py runs it; each replica loads every model once before the
  run (untimed: page cache and buffer pools warm, as after a first day).
- The requests: ``--requests`` (240), drawn as bench/switch.py draws them (repeat the
  previous model with probability 0.3, else Zipf popularity over the 6 in a seeded
  random order), sent by 3 concurrent clients (each waits for its answer); each request
  holds its GPU for ``--infer`` (0.05 s, a stand-in for sampling). Seeded (``--seed``).
- The routers: ours (``MemoryAwareRouter``: model on the GPU > in RAM > most free GPU
  memory > shortest queue, from the replicas' periodic reports); Ray Serve's default
  (``PowerOfTwoChoicesRequestRouter`` with multiplexing: replicas that recently served
  the model, by its ``@serve.multiplexed`` LRU of 3 ids, Ray's default size; else those
  with the fewest ids; two sampled by queue length); round-robin.

Each round runs every router on fresh replicas, in an order rotated every round (routing
depends on timing: when a report arrives, which request comes first), and the median
round counts. Printed per router: total switch seconds (the time requests waited for their model to
become resident), requests served from GPU / RAM / disk, GiB read from disk, p50/p95
latency (submit to answer, at the client), peak GPU and RAM of the busiest replica
against the budgets and the largest replica process's peak RSS; then the ratios to ours
and the goal: >= 1.5x lower total switch time than Ray's default. The machine may be
shared: wall-clock figures are noisy, the GPU/RAM/disk counts are not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# Ray's workers inherit the environment: they import this tree's packages too
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])

from switch import GIB, warm_page_cache, write_checkpoint  # noqa: E402
from switch import make_trace as switch_trace  # noqa: E402

FAMILIES = {"sd15": 2.0, "sdxl": 6.5, "flux": 12.0}  # GiB at fp16
NAS = ["sd15"] * 3 + ["sdxl"] * 2 + ["flux"]
REPLICAS, GPU_GIB, RAM_GIB = 3, 12.0, 16.0
ROUTERS = {"memory": "ours (memory-aware)", "ray": "Ray Serve default",
           "round-robin": "round-robin"}


def model_names() -> list[str]:
    return [f"{fam}-{i:02d}" for i, fam in enumerate(NAS)]


def make_trace(n: int, seed: int) -> list[str]:
    return switch_trace(n, seed, model_names())


def replica_class() -> type:
    """A GPU replica as the cluster runs one, with the tensors backend (defined here so
    that Ray ships it by value: the workers do not have this folder on their path)."""
    from ray import serve

    from atelier.cluster.replica import residency_stats

    class BenchReplica:
        def __init__(self, root: str, gpu_bytes: int, ram_bytes: int) -> None:
            from types import SimpleNamespace

            from modelzoo.residency.backends.tensors import TensorsBackend
            from modelzoo.residency.catalog import ModelCatalog
            from modelzoo.residency.devices import SimulatedDevice
            from modelzoo.residency.footprint import ReserveRule
            from modelzoo.residency.manager import ResidencyManager
            from modelzoo.residency.placement import Placement
            from modelzoo.residency.plan import Tier

            self.rank = serve.get_replica_context().rank.rank
            self.catalog = ModelCatalog(root)
            self.gpu = SimulatedDevice("sim:0", gpu_bytes)
            self.host = SimulatedDevice("ram", ram_bytes, kind="ram")
            backend = TensorsBackend("fp16", host_pool_bytes=ram_bytes)
            self.manager = ResidencyManager(backend, [self.gpu], self.host, self.catalog,
                                            reserve=ReserveRule(0, 0, 0), policy="cost")
            for name in self.catalog.names():  # untimed: pools and page cache warm
                self.manager.load(name, "sim:0")
                self.manager.unload(name, Tier.DISK)
            self.gpu.peak = self.host.peak = 0
            self.placement = Placement(self.manager)
            self.service = SimpleNamespace(manager=self.manager, placement=self.placement,
                                           catalog=self.catalog)
            self._sizes: dict[str, int] = {}

        @serve.multiplexed  # Ray's default LRU size (3)
        async def model(self, model_id: str) -> str:
            return model_id

        async def record_routing_stats(self) -> dict[str, Any]:
            return await asyncio.to_thread(residency_stats, self.service, self._sizes)

        async def run(self, infer: float) -> dict[str, Any]:
            from modelzoo.residency.plan import Tier

            name = serve.get_multiplexed_model_id()
            await self.model(name)

            def job(handle: Any, device: Any) -> None:
                sum(float(t[0]) for t in handle.values())  # the weights must be there
                time.sleep(infer)

            fut = self.placement.submit(name, job)
            _, switch = await asyncio.wrap_future(fut)
            read = sum(self.catalog.get(mv.model).disk_bytes
                       for mv in (switch.plan.moves if switch.plan else [])
                       if mv.src is Tier.DISK)
            import resource

            return {"rank": self.rank, "seconds": switch.seconds,
                    "source": switch.source.value, "read": read,
                    "gpu_peak": self.gpu.peak, "ram_peak": self.host.peak,
                    "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}

    return BenchReplica


async def replay(handle: Any, trace: list[str], clients: int, infer: float
                 ) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = [{} for _ in trace]
    nxt = iter(range(len(trace)))

    async def client() -> None:
        for i in nxt:
            t0 = time.perf_counter()
            r = await handle.options(multiplexed_model_id=trace[i]).run.remote(infer)
            results[i] = {**r, "latency": time.perf_counter() - t0}

    await asyncio.gather(*(client() for _ in range(clients)))
    return results


def run_router(router: str, root: Path, trace: list[str], args: argparse.Namespace,
               gpu: int, ram: int) -> list[dict[str, Any]]:
    from ray import serve

    from atelier.cluster.router import router_config

    deploy: Any = serve.deployment
    app = deploy(replica_class()).options(
        name="BenchReplica", num_replicas=REPLICAS, max_ongoing_requests=16,
        ray_actor_options={"num_cpus": 0},
        request_router_config=router_config(router, stats_period=args.stats_period,
                                            spread_queue=args.spread_queue),
    ).bind(str(root), gpu, ram)
    handle = serve.run(app, name=f"bench-{router}", route_prefix=None)
    time.sleep(3 * args.stats_period + 1)  # the first reports reach the router
    try:
        return asyncio.run(replay(handle, trace, args.clients, args.infer))
    finally:
        serve.delete(f"bench-{router}")


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def report(results: dict[str, list[list[dict[str, Any]]]], gpu: int, ram: int
           ) -> dict[str, float]:
    """The table; returns each router's median total switch seconds over the rounds."""
    print(f"   {'router':<22}{'switch s':>9}{'gpu/ram/disk':>14}{'read GiB':>9}{'p50 ms':>8}"
          f"{'p95 ms':>8}{'GPU peak/budget':>17}{'RAM peak/budget':>17}{'per replica':>14}"
          f"{'RSS':>7}")
    medians: dict[str, float] = {}
    for key, runs in results.items():
        totals = [sum(r["seconds"] for r in rs) for rs in runs]
        medians[key] = statistics.median(totals)
        rs = runs[totals.index(sorted(totals)[(len(totals) - 1) // 2])]  # the median round
        src = {s: sum(1 for r in rs if r["source"] == s) for s in ("gpu", "ram", "disk")}
        hits = f"{src['gpu']}/{src['ram']}/{src['disk']}"
        lat = [r["latency"] for rs_ in runs for r in rs_]
        gp = max(r["gpu_peak"] for rs_ in runs for r in rs_)
        rp = max(r["ram_peak"] for rs_ in runs for r in rs_)
        per = "/".join(str(sum(1 for r in rs if r["rank"] == k)) for k in range(REPLICAS))
        rss = max(r["rss"] for rs_ in runs for r in rs_)
        print(f"   {ROUTERS[key]:<22}{medians[key]:>9.2f}{hits:>14}"
              f"{sum(r['read'] for r in rs) / GIB:>9.2f}{_pct(lat, 0.5) * 1e3:>8.0f}"
              f"{_pct(lat, 0.95) * 1e3:>8.0f}{f'{gp / GIB:.2f}/{gpu / GIB:.2f}':>17}"
              f"{f'{rp / GIB:.2f}/{ram / GIB:.2f}':>17}{per:>14}{rss / GIB:>6.2f}G")
    for key, runs in results.items():
        print(f"   {ROUTERS[key]:<22} switch s per round: "
              + " ".join(f"{sum(r['seconds'] for r in rs):.2f}" for rs in runs))
    print("   switch s = seconds requests waited for their model to become resident, summed "
          "(median round); gpu/ram/disk, read GiB, per replica = of the median round: "
          "requests whose model came from there, bytes read from disk (warm page cache), "
          "requests each replica served; latency = submit to answer at the client, all "
          "rounds; peaks = the busiest replica; RSS = the largest replica process's peak")
    return medians


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=240, help="length of the trace")
    p.add_argument("--seed", type=int, default=7, help="seed of the trace")
    p.add_argument("--scale", type=float, default=64.0,
                   help="every size (models, GPU, RAM) divided by this")
    p.add_argument("--clients", type=int, default=3, help="concurrent clients")
    p.add_argument("--infer", type=float, default=0.05, help="GPU seconds per request")
    p.add_argument("--stats-period", type=float, default=0.2,
                   help="seconds between the replicas' reports (ATELIER_CLUSTER_STATS_PERIOD)")
    p.add_argument("--spread-queue", type=int, default=3,
                   help="ours: a holder this many jobs behind the shortest queue loses its "
                   "preference (ATELIER_CLUSTER_SPREAD_QUEUE)")
    p.add_argument("--routers", default=",".join(ROUTERS),
                   help="comma-separated subset of " + ", ".join(ROUTERS))
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds; each runs every router once (fresh replicas), order rotated")
    p.add_argument("--quick", action="store_true", help="a smoke run: 60 requests, 1 round")
    p.add_argument("--dir", type=Path, default=None, help="where to write the checkpoints")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = min(args.requests, 60), 1
    keys = [k.strip() for k in args.routers.split(",") if k.strip()]
    if any(k not in ROUTERS for k in keys) or "memory" not in keys:
        p.error(f"routers: a subset of {', '.join(ROUTERS)} that includes memory (ours)")

    def terminated(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally: Ray and files go

    signal.signal(signal.SIGTERM, terminated)
    import ray

    root = Path(tempfile.mkdtemp(prefix="atelier-bench-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        for name in model_names():
            write_checkpoint(root / f"{name}.safetensors",
                             int(FAMILIES[name.split("-")[0]] * GIB / args.scale))
        cached, on_disk = warm_page_cache(root)
        kinds = ", ".join(f"{NAS.count(f)} {f}" for f in FAMILIES)
        print(f"wrote {len(NAS)} checkpoints ({kinds}), {on_disk / GIB:.3f} GiB at "
              f"1/{args.scale:g} scale, in {time.perf_counter() - t0:.1f} s; page cache "
              f"{cached / GIB:.3f} GiB; load average {os.getloadavg()[0]:.2f} on "
              f"{os.cpu_count()} CPUs")
        trace = make_trace(args.requests, args.seed)
        gpu, ram = int(GPU_GIB * GIB / args.scale), int(RAM_GIB * GIB / args.scale)
        counts = {n: trace.count(n) for n in model_names()}
        print(f"trace: {len(trace)} requests (seed {args.seed}), {args.clients} clients, "
              f"{args.infer * 1e3:.0f} ms per request on the GPU; per model: "
              + ", ".join(f"{n} {c}" for n, c in sorted(counts.items(), key=lambda x: -x[1])))
        print(f"{REPLICAS} replicas, each: GPU {gpu / GIB:.3f} GiB ({GPU_GIB:g} GiB), RAM "
              f"{ram / GIB:.3f} GiB ({RAM_GIB:g} GiB)")
        ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False,
                 log_to_driver=False)
        results: dict[str, list[list[dict[str, Any]]]] = {k: [] for k in keys}
        for i in range(args.rounds):
            for key in keys[i % len(keys):] + keys[:i % len(keys)]:
                t1 = time.perf_counter()
                results[key].append(run_router(key, root, trace, args, gpu, ram))
                total = sum(r["seconds"] for r in results[key][-1])
                print(f"   round {i + 1}: {ROUTERS[key]:<22} {total:.2f} s "
                      f"({time.perf_counter() - t1:.1f} s)", flush=True)
        totals = report(results, gpu, ram)
        for key in keys:
            if key != "memory":
                ratio = totals[key] / max(totals["memory"], 1e-9)
                print(f"   total switch time (median rounds), {ROUTERS[key]} / ours: "
                      f"{ratio:.2f}x")
        if "ray" in totals:
            got = totals["ray"] / max(totals["memory"], 1e-9)
            print(f"   goal: >= 1.5x lower total switch time than Ray's default: "
                  f"{'met' if got >= 1.5 else 'NOT met'} ({got:.2f}x)")
        p50 = {k: statistics.median(r["latency"] for rs in v for r in rs)
               for k, v in results.items()}
        print("   p50 latency, others / ours: " + ", ".join(
            f"{ROUTERS[k]} {p50[k] / max(p50['memory'], 1e-9):.2f}x" for k in keys
            if k != "memory"))
        return 0
    finally:
        if ray.is_initialized():
            from ray import serve

            serve.shutdown()
            ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
