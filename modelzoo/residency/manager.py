"""The residency manager: which model sits where (GPU, CPU RAM, disk), decided by measure.

    request(M, gpu) ──► hit? (M on gpu, not moving) ──► lease      (no lock held for I/O)
                   └─► plan: measure free memory now, choose victims ─► execute ─► lease

Budgets come from the probe at every decision: ``limit = free + ours - reserve`` (capped
by configuration), where ``ours`` is what our models already hold on that tier and
``reserve`` the inference memory for this request (:class:`~.footprint.ReserveRule`).
Other processes sharing the GPU therefore shrink our budget on the next decision.

Eviction order. ``policy="cost"`` is GreedyDual with frequency: on each use a model's
value becomes ``L + uses * reload_seconds`` where ``reload_seconds`` grows with its size,
and ``L`` rises to the value of each model evicted, so idle models age out. Evicted first:
small, rarely used, long idle; kept: large, often used. ``policy="lru"`` is plain LRU (the
benchmark's baseline). Pinned models and models running a job are never evicted.

Locks. ``_state`` (short) guards the tables; ``_transition`` (long) serialises moves, so
one plan executes at a time and measurements taken while planning stay true while it
runs. Hits take only ``_state``. A model in a running plan is marked ``moving`` so a hit
cannot lease it half-moved; a victim leased between planning and execution makes the
plan stale and it is re-planned.

CUDA out-of-memory (a racing process, fragmentation): while moving a model in, or while
running a job, one eviction and one retry, then :class:`~modelzoo.errors.OutOfDeviceMemory`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import ModelBusy, ModelTooLarge, OutOfDeviceMemory, UnknownDevice
from .backends.base import Backend, ModelSpec
from .devices import GIB, Device, is_oom
from .footprint import ReserveRule
from .metrics import ResidencyMetrics
from .plan import Budget, Move, Plan, Tier

T = TypeVar("T")

DEFAULT_BPS = {"disk": 1.0 * GIB, "h2d": 10.0 * GIB, "d2h": 10.0 * GIB}


@dataclass
class Entry:
    spec: ModelSpec
    tier: Tier = Tier.DISK
    device: str | None = None
    handle: Any = None
    pinned: bool = False
    in_use: int = 0
    moving: bool = False
    uses: int = 0
    last_used: int = 0
    value: float = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def nbytes(self) -> int:
        return self.spec.nbytes

    def to_json(self) -> dict[str, Any]:
        return {"model": self.name, "tier": self.tier.value, "device": self.device,
                "bytes": self.nbytes, "components": dict(self.spec.footprint.components),
                "pinned": self.pinned, "in_use": self.in_use, "uses": self.uses}


@dataclass(frozen=True)
class Switch:
    """What an acquisition did: where the model came from and how long it took."""

    model: str
    device: str
    source: Tier
    seconds: float
    plan: Plan | None = None


class Lease:
    """A model held on a device for one job; release it (or use ``with``) when done."""

    def __init__(self, manager: ResidencyManager, entry: Entry, device: Device,
                 switch: Switch) -> None:
        self._manager = manager
        self._entry = entry
        self.device = device
        self.switch = switch
        self.handle = entry.handle
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._manager._release(self._entry)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ResidencyManager:
    def __init__(self, backend: Backend, devices: Sequence[Device], host: Device,
                 resolve: Callable[[str], ModelSpec], *,
                 reserve: ReserveRule | None = None, ram_reserve: int = 0,
                 vram_cap: int | None = None, ram_cap: int | None = None,
                 policy: str = "cost", metrics: ResidencyMetrics | None = None) -> None:
        if not devices:
            raise ValueError("at least one compute device is needed")
        if policy not in ("cost", "lru"):
            raise ValueError("policy must be 'cost' or 'lru'")
        if host.name in {d.name for d in devices}:
            raise ValueError(f"the host tier and a device are both named {host.name!r}")
        self.backend = backend
        self.devices = {d.name: d for d in devices}
        self.host = host
        self.resolve = resolve
        self.reserve = reserve or ReserveRule()
        self.ram_reserve = ram_reserve
        self.vram_cap = vram_cap
        self.ram_cap = ram_cap
        self.policy = policy
        self.metrics = metrics or ResidencyMetrics()
        self._entries: dict[str, Entry] = {}
        self._state = threading.RLock()
        self._transition = threading.RLock()
        self._released = threading.Condition(self._state)
        self._generation = 0
        self._clock = 0
        self._inflation = 0.0  # GreedyDual's L
        self._bps = dict(DEFAULT_BPS)

    # ---- lookups -------------------------------------------------------------------
    def device(self, name: str | None = None) -> Device:
        if name is None:
            return next(iter(self.devices.values()))
        try:
            return self.devices[name]
        except KeyError:
            raise UnknownDevice(f"no device {name!r}; have {sorted(self.devices)}",
                                device=name) from None

    def _entry(self, name: str) -> Entry:
        e = self._entries.get(name)
        if e is None:
            spec = self.resolve(name)  # raises UnknownModel / InvalidCheckpoint
            e = self._entries.setdefault(spec.name, Entry(spec))
            self._entries.setdefault(name, e)
        return e

    def spec(self, name: str) -> ModelSpec:
        """Resolve a model name (raises UnknownModel / InvalidCheckpoint)."""
        with self._state:
            return self._entry(name).spec

    def entries(self) -> list[Entry]:
        with self._state:
            return list({id(e): e for e in self._entries.values()}.values())

    def where(self, name: str) -> tuple[Tier, str | None]:
        with self._state:
            e = self._entries.get(name)
            return (e.tier, e.device) if e else (Tier.DISK, None)

    def held(self, tier: Tier, device: str | None = None) -> list[Entry]:
        return [e for e in self.entries() if e.tier is tier
                and (device is None or e.device == device)]

    def ours(self, device: str) -> int:
        """Bytes our models hold on a device (``"ram"`` for the host tier)."""
        with self._state:
            if device == self.host.name:
                return sum(e.nbytes for e in self.entries() if e.tier is Tier.RAM)
            return sum(e.nbytes for e in self.entries()
                       if e.tier is Tier.GPU and e.device == device)

    def budget(self, device: str, reserve: int | None = None) -> Budget:
        """Measure now. ``reserve`` defaults to the inference reserve of a 512x512 image."""
        if device == self.host.name:
            r = self.host.memory()
            return Budget(device, r.free, r.total, self.ours(device), self.ram_reserve,
                          self.ram_cap)
        r = self.device(device).memory()
        res = self.reserve.bytes_for() if reserve is None else reserve
        return Budget(device, r.free, r.total, self.ours(device), res, self.vram_cap)

    def reserve_for(self, width: int = 512, height: int = 512, batch: int = 1) -> int:
        return self.reserve.bytes_for(width, height, batch)

    # ---- ranking -------------------------------------------------------------------
    def _reload_seconds(self, e: Entry) -> float:
        return e.nbytes / self._bps["disk"]

    def _rank(self, e: Entry) -> tuple[float, int]:
        """Ascending: evicted first."""
        if self.policy == "lru":
            return (float(e.last_used), 0)
        return (e.value, e.last_used)

    def _touch(self, e: Entry) -> None:
        self._clock += 1
        e.last_used = self._clock
        e.uses += 1
        e.value = self._inflation + e.uses * self._reload_seconds(e)

    def _evictable(self, e: Entry) -> bool:
        return not (e.pinned or e.in_use or e.moving)

    def _seconds(self, path: str, nbytes: int) -> float:
        return nbytes / self._bps[path]

    # ---- planning ------------------------------------------------------------------
    def plan_load(self, name: str, device: str | None = None, *, tier: Tier = Tier.GPU,
                  reserve: int | None = None) -> Plan:
        """What it takes to bring ``name`` to ``tier`` (on ``device``), without doing it."""
        with self._state:
            e = self._entry(name)
            if tier is Tier.GPU:
                dev = self.device(device)
                res = self.reserve_for() if reserve is None else reserve
                return self._plan_gpu(e, dev, res)
            if tier is Tier.RAM:
                plan = self._plan_ram(e, strict=True)
                assert plan is not None
                return plan
            raise ValueError("load to gpu or ram; use unload for disk")

    def _bind(self, plan: Plan) -> Plan:
        plan.executor = self._execute
        return plan

    def _too_large(self, e: Entry, b: Budget, blocked: Iterable[Entry], where: str,
                   need: int) -> ModelTooLarge:
        blocked = list(blocked)
        held = sum(x.nbytes for x in blocked)
        why = (f"{e.name} needs {need} bytes on {where} (weights {e.nbytes} + reserve "
               f"{b.reserve}); {b.free} free of {b.total}, our models hold {b.ours}")
        if blocked:
            why += (f", of which {held} in pinned or running models "
                    f"({', '.join(x.name for x in blocked)})")
        if b.cap is not None:
            why += f"; configured cap {b.cap}"
        return ModelTooLarge(why, model=e.name, device=where, needed_bytes=need,
                             weights_bytes=e.nbytes, reserve_bytes=b.reserve,
                             free_bytes=b.free, total_bytes=b.total, ours_bytes=b.ours,
                             blocked_bytes=held, limit_bytes=b.limit)

    def _plan_gpu(self, e: Entry, dev: Device, reserve: int) -> Plan:
        here = e.tier is Tier.GPU and e.device == dev.name
        if e.tier is Tier.GPU and not here and not self._evictable(e):
            raise ModelBusy(f"{e.name} is pinned or running on {e.device}; it cannot move to "
                            f"{dev.name}", model=e.name, device=e.device)
        b = self.budget(dev.name, reserve)
        budgets = {dev.name: b}
        s = e.nbytes
        if s > b.limit:  # even alone (with the reserve) it does not fit
            raise self._too_large(e, b, [], dev.name, s + reserve)
        # already here: only the reserve may need room (a larger image than last time)
        need = b.ours + (0 if here else s) - b.limit
        victims: list[Entry] = []
        if need > 0:
            on_dev = [x for x in self.entries()
                      if x.tier is Tier.GPU and x.device == dev.name and x is not e]
            cands = sorted((x for x in on_dev if self._evictable(x)), key=self._rank)
            freed = _take_until(cands, need, victims)
            if freed < need:
                blocked = [x for x in on_dev if not self._evictable(x)]
                raise self._too_large(e, b, blocked, dev.name, s + reserve)
            for x in sorted(victims, key=self._rank, reverse=True):  # keep what is not needed
                if freed - x.nbytes >= need:
                    victims.remove(x)
                    freed -= x.nbytes
        hb = self.budget(self.host.name)
        budgets[self.host.name] = hb
        in_ram = [x for x in self.entries() if x.tier is Tier.RAM and x is not e]
        fixed = sum(x.nbytes for x in in_ram if not self._evictable(x))
        must = (0 if here else s) + fixed
        if must > hb.limit:
            blocked = [x for x in in_ram if not self._evictable(x)]
            raise self._too_large(e, hb, blocked, "ram", must)
        room = hb.limit - must
        keep: set[int] = set()
        for x in sorted([x for x in in_ram if self._evictable(x)] + victims, key=self._rank,
                        reverse=True):
            if x.nbytes <= room:
                keep.add(id(x))
                room -= x.nbytes
        moves: list[Move] = []
        for x in sorted(in_ram, key=self._rank):
            if self._evictable(x) and id(x) not in keep:
                moves.append(Move(x.name, Tier.RAM, Tier.DISK, x.nbytes, 0.0,
                                  reason="make room in RAM"))
        for x in victims:
            if id(x) in keep:
                moves.append(Move(x.name, Tier.GPU, Tier.RAM, x.nbytes,
                                  self._seconds("d2h", x.nbytes), dev.name,
                                  reason=f"make room on {dev.name}"))
            else:
                moves.append(Move(x.name, Tier.GPU, Tier.DISK, x.nbytes, 0.0, dev.name,
                                  reason=f"make room on {dev.name}; no room in RAM"))
        if e.tier is Tier.DISK:
            moves.append(Move(e.name, Tier.DISK, Tier.RAM, s, self._seconds("disk", s),
                              reason="read from disk"))
        elif e.tier is Tier.GPU and not here:
            moves.append(Move(e.name, Tier.GPU, Tier.RAM, s, self._seconds("d2h", s),
                              e.device, reason="move between GPUs through RAM"))
        if not here:
            moves.append(Move(e.name, Tier.RAM, Tier.GPU, s, self._seconds("h2d", s),
                              dst_device=dev.name, reason="requested"))
        return self._bind(Plan(e.name, Tier.GPU, dev.name, moves, budgets, self._generation,
                               reserve=reserve))

    def _plan_ram(self, e: Entry, *, strict: bool,
                  protect: frozenset[str] = frozenset()) -> Plan | None:
        """Bring ``e`` into RAM. Not strict (prefetch): evict only models worth less than
        ``e`` and not in ``protect``, else return None."""
        if e.tier is not Tier.DISK:
            return self._bind(Plan(e.name, Tier.RAM, None, [], {}, self._generation))
        hb = self.budget(self.host.name)
        s = e.nbytes
        in_ram = [x for x in self.entries() if x.tier is Tier.RAM]
        fixed = [x for x in in_ram if not self._evictable(x)
                 or (not strict and x.name in protect)]
        if s + sum(x.nbytes for x in fixed) > hb.limit:
            if not strict:
                return None
            raise self._too_large(e, hb, fixed, "ram", s)
        need = hb.ours + s - hb.limit
        victims: list[Entry] = []
        if need > 0:
            cands = sorted((x for x in in_ram if x not in fixed), key=self._rank)
            _take_until(cands, need, victims)
            if not strict:
                mine = (self._inflation + (e.uses + 1) * self._reload_seconds(e), self._clock + 1)
                if self.policy == "lru":
                    mine = (float(self._clock + 1), 0)
                if any(self._rank(x) >= mine for x in victims):
                    return None
        moves = [Move(x.name, Tier.RAM, Tier.DISK, x.nbytes, 0.0, reason="make room in RAM")
                 for x in victims]
        moves.append(Move(e.name, Tier.DISK, Tier.RAM, s, self._seconds("disk", s),
                          reason="prefetch" if not strict else "requested"))
        return self._bind(Plan(e.name, Tier.RAM, None, moves, {self.host.name: hb},
                               self._generation))

    def plan_unload(self, name: str, to: Tier = Tier.RAM) -> Plan:
        with self._state:
            e = self._entry(name)
            if e.in_use:
                raise ModelBusy(f"{name} is running a job", model=name)
            if e.pinned:
                raise ModelBusy(f"{name} is pinned; unpin it first", model=name)
            moves: list[Move] = []
            budgets: dict[str, Budget] = {}
            if e.tier is Tier.GPU and to is Tier.RAM:
                hb = self.budget(self.host.name)
                budgets[self.host.name] = hb
                need = hb.ours + e.nbytes - hb.limit
                if need > 0:
                    cands = sorted((x for x in self.held(Tier.RAM) if self._evictable(x)),
                                   key=self._rank)
                    freed = 0
                    for x in cands:
                        if freed >= need:
                            break
                        moves.append(Move(x.name, Tier.RAM, Tier.DISK, x.nbytes, 0.0,
                                          reason="make room in RAM"))
                        freed += x.nbytes
                    if freed < need:
                        raise self._too_large(e, hb, [], "ram", e.nbytes)
                moves.append(Move(e.name, Tier.GPU, Tier.RAM, e.nbytes,
                                  self._seconds("d2h", e.nbytes), e.device, reason="requested"))
            elif e.tier is not Tier.DISK and (to is Tier.DISK or e.tier is Tier.RAM):
                moves.append(Move(e.name, e.tier, Tier.DISK, e.nbytes, 0.0, e.device,
                                  reason="requested"))
            return self._bind(Plan(e.name, to, None, moves, budgets, self._generation))

    # ---- execution -----------------------------------------------------------------
    def _stale(self, plan: Plan) -> bool:
        if plan.generation != self._generation:
            return True
        for m in plan.evictions:
            if not self._evictable(self._entries[m.model]):
                return True
        for key, b in plan.budgets.items():
            if self.budget(key, b.reserve if key != self.host.name else None).limit < b.limit:
                return True  # someone else took memory since
        return False

    def _replan(self, plan: Plan) -> Plan:
        if plan.tier is Tier.GPU and plan.device is not None:
            return self._plan_gpu(self._entries[plan.target], self.device(plan.device),
                                  plan.reserve)
        if plan.tier is Tier.RAM and plan.device is None and any(
                m.dst is Tier.RAM and m.model == plan.target and m.src is Tier.DISK
                for m in plan.moves):
            again = self._plan_ram(self._entries[plan.target], strict=True)
            assert again is not None
            return again
        return self.plan_unload(plan.target, plan.tier)

    def _execute(self, plan: Plan) -> Plan:
        with self._transition:
            with self._state:
                if plan.executed:
                    raise RuntimeError("plan already executed")
                if not plan.noop and self._stale(plan):
                    plan = self._replan(plan)
                marked = [self._entries[m.model] for m in plan.moves]
                for x in marked:
                    x.moving = True
            try:
                for m in plan.moves:
                    self._move(m, protect=plan.target)
            finally:
                with self._state:
                    for x in marked:
                        x.moving = False
                    self._generation += 1
            plan.executed = True
            return plan

    def _observe(self, path: str, nbytes: int, seconds: float) -> None:
        if nbytes >= (1 << 20) and seconds > 0:
            self._bps[path] = 0.7 * self._bps[path] + 0.3 * (nbytes / seconds)

    def _move(self, m: Move, *, protect: str) -> None:
        e = self._entries[m.model]
        n = e.nbytes
        host = self.host
        t0 = time.perf_counter()
        if m.dst is Tier.DISK:
            src = host if m.src is Tier.RAM else self.device(e.device)
            self.backend.drop(e.handle)
            with self._state:
                e.handle, e.tier, e.device = None, Tier.DISK, None
                if m.model != protect:
                    self._inflation = max(self._inflation, e.value)
            src.release(n)
            if m.src is Tier.GPU:
                src.empty_cache()
            if m.model != protect:
                self.metrics.record_eviction(m.src.value, "disk")
            return
        if m.dst is Tier.RAM:
            host.allocate(n)
            try:
                if m.src is Tier.DISK:
                    handle = self.backend.load(e.spec, host)
                else:
                    dev = self.device(e.device)
                    handle = self.backend.to_host(e.handle, dev, host)
            except BaseException:
                host.release(n)
                raise
            if m.src is Tier.GPU:
                if handle is not e.handle:
                    self.backend.drop(e.handle)
                dev.release(n)
                dev.empty_cache()
                self._observe("d2h", n, time.perf_counter() - t0)
                if m.model != protect:
                    self.metrics.record_eviction("gpu", "ram")
                    with self._state:
                        self._inflation = max(self._inflation, e.value)
            else:
                self._observe("disk", n, time.perf_counter() - t0)
            with self._state:
                e.handle, e.tier, e.device = handle, Tier.RAM, None
            return
        dev = self.device(m.dst_device)
        try:
            handle = self._to_device(e, dev)
        except BaseException as exc:
            if not is_oom(exc):
                raise
            self.metrics.record_oom()
            self._evict_one(dev, exclude={protect, e.name})
            try:
                handle = self._to_device(e, dev)
            except BaseException as again:
                if is_oom(again):
                    b = self.budget(dev.name, 0)
                    raise OutOfDeviceMemory(
                        f"{dev.name} ran out of memory moving {e.name} ({n} bytes) in, again "
                        f"after one eviction; {b.free} bytes free of {b.total}",
                        model=e.name, device=dev.name, needed_bytes=n, free_bytes=b.free,
                        total_bytes=b.total) from again
                raise
        if handle is not e.handle:
            self.backend.drop(e.handle)
        host.release(n)
        self._observe("h2d", n, time.perf_counter() - t0)
        with self._state:
            e.handle, e.tier, e.device = handle, Tier.GPU, dev.name

    def _to_device(self, e: Entry, dev: Device) -> Any:
        dev.allocate(e.nbytes)
        try:
            return self.backend.to_device(e.handle, dev)
        except BaseException:
            dev.release(e.nbytes)
            raise

    def _evict_one(self, dev: Device, exclude: set[str]) -> Move | None:
        """The OOM answer: push the least valuable evictable model off ``dev``."""
        with self._transition:
            with self._state:
                cands = sorted((x for x in self.held(Tier.GPU, dev.name)
                                if self._evictable(x) and x.name not in exclude),
                               key=self._rank)
                if not cands:
                    dev.empty_cache()
                    return None
                x = cands[0]
                hb = self.budget(self.host.name)
                dst = Tier.RAM if hb.ours + x.nbytes <= hb.limit else Tier.DISK
                m = Move(x.name, Tier.GPU, dst, x.nbytes, 0.0, dev.name,
                         reason="out of memory")
                x.moving = True
            try:
                self._move(m, protect="")
            finally:
                with self._state:
                    x.moving = False
                    self._generation += 1
            dev.empty_cache()
            return m

    # ---- entry points --------------------------------------------------------------
    def load(self, name: str, device: str | None = None, *, tier: Tier = Tier.GPU,
             reserve: int | None = None) -> Plan:
        return self.plan_load(name, device, tier=tier, reserve=reserve).execute()

    def unload(self, name: str, to: Tier = Tier.RAM) -> Plan:
        with self._transition:
            return self.plan_unload(name, to).execute()

    def prefetch(self, name: str, protect: Iterable[str] = ()) -> Plan | None:
        """Warm ``name`` into RAM if that evicts nothing worth more (or in ``protect``)."""
        with self._transition:
            with self._state:
                plan = self._plan_ram(self._entry(name), strict=False,
                                      protect=frozenset(protect))
            if plan is None or plan.noop:
                return None
            return plan.execute()

    def pin(self, name: str, pinned: bool = True) -> Entry:
        with self._state:
            e = self._entry(name)
            e.pinned = pinned
            self._generation += 1
            return e

    def acquire(self, name: str, device: str | None = None, *, width: int = 512,
                height: int = 512, batch: int = 1) -> Lease:
        """Make ``name`` resident on ``device`` and hold it there until the lease ends."""
        dev = self.device(device)
        reserve = self.reserve_for(width, height, batch)
        with self._state:
            e = self._entry(name)
            if (e.tier is Tier.GPU and e.device == dev.name and not e.moving
                    and dev.memory().free >= reserve):
                return self._lease(e, dev, Tier.GPU, 0.0, None)
        with self._transition:
            t0 = time.perf_counter()
            with self._state:
                plan = self._plan_gpu(e, dev, reserve)
            plan = plan.execute()
            own = [m.src for m in plan.moves if m.model == e.name]
            with self._state:
                return self._lease(e, dev, own[0] if own else Tier.GPU,
                                   time.perf_counter() - t0, plan)

    def _lease(self, e: Entry, dev: Device, source: Tier, seconds: float,
               plan: Plan | None) -> Lease:
        e.in_use += 1
        self._touch(e)
        self.metrics.record_switch(dev.name, source.value, seconds)
        return Lease(self, e, dev, Switch(e.name, dev.name, source, seconds, plan))

    def _release(self, e: Entry) -> None:
        with self._state:
            e.in_use -= 1
            self._released.notify_all()

    def run(self, name: str, fn: Callable[[Any, Device], T], device: str | None = None, *,
            width: int = 512, height: int = 512, batch: int = 1) -> tuple[T, Switch]:
        """Acquire, call ``fn(handle, device)``; on out-of-memory evict one model, retry once."""
        with self.acquire(name, device, width=width, height=height, batch=batch) as lease:
            try:
                return fn(lease.handle, lease.device), lease.switch
            except Exception as exc:
                if not is_oom(exc):
                    raise
            self.metrics.record_oom()
            self._evict_one(lease.device, exclude={name})
            try:
                return fn(lease.handle, lease.device), lease.switch
            except Exception as exc:
                if is_oom(exc):
                    b = self.budget(lease.device.name, 0)
                    raise OutOfDeviceMemory(
                        f"{lease.device.name} ran out of memory running {name}, again after "
                        f"one eviction; {b.free} bytes free of {b.total}", model=name,
                        device=lease.device.name, free_bytes=b.free,
                        total_bytes=b.total) from exc
                raise

    def snapshot(self) -> dict[str, Any]:
        devices = []
        for name in self.devices:
            b = self.budget(name)
            devices.append({**b.to_json(), "kind": self.devices[name].kind,
                            "models": [e.name for e in self.held(Tier.GPU, name)]})
        hb = self.budget(self.host.name)
        return {"devices": devices,
                "ram": {**hb.to_json(), "models": [e.name for e in self.held(Tier.RAM)]},
                "models": [e.to_json() for e in sorted(self.entries(), key=lambda x: x.name)
                           if e.tier is not Tier.DISK or e.pinned],
                "policy": self.policy}


def _take_until(cands: list[Entry], need: int, victims: list[Entry]) -> int:
    """Append candidates, best victim first, to ``victims`` until ``need`` bytes are
    freed (or none are left); return the bytes freed."""
    freed = 0
    for x in cands:
        if freed >= need:
            break
        victims.append(x)
        freed += x.nbytes
    return freed
