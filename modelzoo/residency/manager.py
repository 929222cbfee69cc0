"""The residency manager: which model sits where (GPU, CPU RAM, disk), decided by measure.

    acquire(M, gpu k)
      ├─ a copy of M ready on k ────────────────────────────────► lease  (state lock only)
      └─ k's lock ─► plan + claim (state lock) ─► moves (no global lock held for I/O)
                                                ─► lease, before k's lock is let go

Copies. A model has at most one copy in RAM and one per GPU: a popular model runs on
several GPUs at once when placement spreads it. There are no GPU-to-GPU moves; a model
wanted on another GPU gets a copy there from its RAM copy or from disk, so a copy in use
is never carried away. Whether a RAM copy stays when its model moves up is the policy's
choice (below).

Budgets come from the probe at every decision: ``limit = free + ours - reserve`` (capped
by configuration), where ``ours`` is what our copies hold on that tier and ``reserve`` the
inference memory for this request (:class:`~.footprint.ReserveRule`). Other processes
sharing the GPU shrink our budget on the next decision. Bytes of moves under way onto a
tier are booked there (``pending``) until they land.

Leases and transitions are one protocol, under one short state lock that is never held
for I/O:

- a lease is taken only on a copy no transition has claimed;
- a transition is planned, and claimed, under that lock against the leases and measures
  of that moment: it marks every copy it will move or read ``busy`` (no lease, no other
  plan touches it) and books the bytes it brings to each tier. A leased, pinned or busy
  copy is never a victim; an unload of a leased model is refused (ModelBusy); a plan
  made earlier (the API's preview) is planned again when executed;
- loads onto one GPU are serialised by that GPU's lock, so the free memory measured while
  planning stays true while the plan runs; loads onto different GPUs, and their disk
  reads, run in parallel. A plan that does not fit only because other transitions are
  under way (bytes booked, copies leaving) waits for them instead of failing.

Policies (:mod:`.policy`): ``cost``, memory-aware (GreedyDual-Size-Frequency order, an
inclusive RAM tier, victims copied down only when cheaper than a re-read), and ``lru``,
the classic exclusive two-tier LRU. Pinned models and models running a job are never
evicted.

CUDA out-of-memory (a racing process, fragmentation): while moving a model in, or while
running a job, one eviction and one retry, then :class:`~modelzoo.errors.OutOfDeviceMemory`.
A move that fails half way is rolled back: the parts already on the GPU are freed and
the device's cache emptied, and the weights stay whole in RAM.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import ModelBusy, ModelTooLarge, OutOfDeviceMemory, UnknownDevice
from .backends.base import Backend, ModelSpec
from .devices import Device, is_oom
from .entries import Copy, Entry
from .footprint import ReserveRule
from .metrics import ResidencyMetrics
from .plan import Budget, Move, Plan, Tier
from .policy import Policy, Speeds

T = TypeVar("T")
log = logging.getLogger("atelier.residency")


class _Wait(Exception):
    """Raised while planning when only transitions under way stand in the way."""


@dataclass
class _Claim:
    """What a running plan holds: busy copies and bytes booked per tier."""

    busy: list[Copy] = field(default_factory=list)
    booked: dict[str, int] = field(default_factory=dict)
    arriving: list[tuple[Entry, str]] = field(default_factory=list)


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

    def __init__(self, manager: ResidencyManager, copy: Copy, device: Device,
                 switch: Switch) -> None:
        self._manager = manager
        self._copy = copy
        self.device = device
        self.switch = switch
        self.handle = copy.handle
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._manager._release(self._copy)

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
        self.speeds = Speeds()
        self.rules = Policy(policy, self.speeds)  # raises ValueError for an unknown name
        self.metrics = metrics or ResidencyMetrics()
        self._entries: dict[str, Entry] = {}
        self._cond = threading.Condition(threading.RLock())
        # one lock per GPU for transitions onto it; reentrant: an out-of-memory retry
        # evicts on the device whose lock the failing move holds
        self._locks = {d.name: threading.RLock() for d in devices}
        self._booked: dict[str, int] = {}
        self._generation = 0
        self._charges = bool(getattr(backend, "charges_devices", False))
        # called with a model's name after each lease (the service keeps the recently
        # used list with it, to warm them again after a restart or a scale-up)
        self.on_use: Callable[[str], object] | None = None

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
        with self._cond:
            return self._entry(name).spec

    def entries(self) -> list[Entry]:
        with self._cond:
            return list({id(e): e for e in self._entries.values()}.values())

    def where(self, name: str) -> tuple[Tier, str | None]:
        """The highest tier holding ``name`` (and the first GPU holding it)."""
        with self._cond:
            e = self._entries.get(name)
            return (e.tier, e.device) if e else (Tier.DISK, None)

    def locations(self, name: str) -> list[str]:
        """The GPUs holding a copy of ``name``."""
        with self._cond:
            e = self._entries.get(name)
            return e.devices if e else []

    def held(self, tier: Tier, device: str | None = None) -> list[Entry]:
        """Entries with a copy on ``tier`` (on ``device`` for the GPU tier)."""
        if tier is Tier.RAM:
            return [e for e in self.entries() if e.ram is not None]
        if tier is Tier.GPU:
            return [e for e in self.entries() if e.gpus and (device is None or device in e.gpus)]
        return [e for e in self.entries() if e.tier is Tier.DISK]

    def ours(self, device: str) -> int:
        """Bytes our settled copies hold on a device (``"ram"`` for the host tier).

        A busy copy is on its way out (every transition that claims a copy takes it off
        its tier) and is not counted from the moment it is claimed: its bytes are then
        neither ours nor free, so ``free + ours`` never counts a byte twice while moves
        run, whatever order the memory is given back in (``pipe.to`` frees as it goes).
        """
        with self._cond:
            if device == self.host.name:
                return sum(e.nbytes for e in self.entries()
                           if e.ram is not None and not e.ram.busy)
            return sum(e.nbytes for e in self.entries()
                       if device in e.gpus and not e.gpus[device].busy)

    def budget(self, device: str, reserve: int | None = None) -> Budget:
        """Measure now. ``reserve`` defaults to the inference reserve of a 512x512 image."""
        with self._cond:
            pending = self._booked.get(device, 0)
            if device == self.host.name:
                r = self.host.memory()
                return Budget(device, r.free, r.total, self.ours(device), self.ram_reserve,
                              self.ram_cap, pending)
            r = self.device(device).memory()
            res = self.reserve.bytes_for() if reserve is None else reserve
            return Budget(device, r.free, r.total, self.ours(device), res, self.vram_cap,
                          pending)

    def reserve_for(self, width: int = 512, height: int = 512, batch: int = 1) -> int:
        return self.reserve.bytes_for(width, height, batch)

    # ---- policy --------------------------------------------------------------------
    @property
    def policy(self) -> str:
        return self.rules.name

    def reload_seconds(self, spec: ModelSpec) -> float:
        """Expected time to read a model from disk: its bytes on disk (not at run dtype)."""
        return self.speeds.reload_seconds(spec)

    def _rank(self, e: Entry) -> tuple[float, int]:
        return self.rules.rank(e)

    @staticmethod
    def _free_gpu(e: Entry, dev: str) -> bool:
        c = e.gpus.get(dev)
        return c is not None and not (e.pinned or c.leases or c.busy)

    @staticmethod
    def _free_ram(e: Entry) -> bool:
        return e.ram is not None and not (e.pinned or e.ram.busy)

    def _seconds(self, path: str, nbytes: int) -> float:
        return self.speeds.seconds(path, nbytes)

    def _leaving(self, where: str) -> int:
        """Bytes of busy copies on a tier: transitions under way take them away."""
        if where == self.host.name:
            return sum(e.nbytes for e in self.entries() if e.ram is not None and e.ram.busy)
        return sum(e.nbytes for e in self.entries()
                   if where in e.gpus and e.gpus[where].busy)

    def _transient(self, b: Budget) -> int:
        """How much of a shortfall on a tier may vanish when transitions under way end:
        bytes leaving, plus the booked bytes counted twice (as booked, and again in the
        measured free memory once a parallel load has allocated them)."""
        return self._leaving(b.device) + 2 * b.pending

    # ---- planning ------------------------------------------------------------------
    def _plan_when_possible(self, make: Callable[[], Plan]) -> Plan:
        """Call ``make`` under the state lock until it plans, waiting while only
        transitions under way prevent it."""
        while True:
            try:
                return make()
            except _Wait:
                self._cond.wait()

    def plan_load(self, name: str, device: str | None = None, *, tier: Tier = Tier.GPU,
                  reserve: int | None = None) -> Plan:
        """What it takes to bring ``name`` to ``tier`` (on ``device``), without doing it."""
        with self._cond:
            e = self._entry(name)
            if tier is Tier.GPU:
                dev = self.device(device)
                res = self.reserve_for() if reserve is None else reserve
                return self._plan_when_possible(lambda: self._plan_gpu(e, dev, res))
            if tier is Tier.RAM:
                return self._plan_when_possible(lambda: self._plan_ram_strict(e))
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
        here_copy = e.gpus.get(dev.name)
        if here_copy is not None and here_copy.busy:
            raise _Wait  # an unload of this very copy is under way
        if e.ram is None and self.host.name in e.arriving:
            raise _Wait  # a RAM copy is on its way (a prefetch): cheaper to wait for it
        here = here_copy is not None
        b = self.budget(dev.name, reserve)
        s = e.nbytes
        if s > b.limit and not self._leaving(dev.name) and not b.pending:
            raise self._too_large(e, b, [], dev.name, s + reserve)  # not even alone
        # already here: only the reserve may need room (a larger image than last time)
        need = b.used + (0 if here else s) - b.limit
        victims: list[Entry] = []
        if need > 0:
            on_dev = [x for x in self.entries() if dev.name in x.gpus and x is not e
                      and not x.gpus[dev.name].busy]
            cands = sorted((x for x in on_dev if self._free_gpu(x, dev.name)), key=self._rank)
            freed = _take_until(cands, need, victims)
            if freed < need:
                if need - freed <= self._transient(b):
                    raise _Wait
                blocked = [x for x in on_dev if not self._free_gpu(x, dev.name)]
                raise self._too_large(e, b, blocked, dev.name, s + reserve)
            for x in sorted(victims, key=self._rank, reverse=True):  # keep what is not needed
                if freed - x.nbytes >= need:
                    victims.remove(x)
                    freed -= x.nbytes
        from_ram = not here and e.ram is not None and not e.ram.busy
        stage = s if not here and not from_ram else 0
        hb = self.budget(self.host.name)
        # busy copies are not in ``ours`` any more (see ``ours``): only settled ones here
        in_ram = [x for x in self.entries()
                  if x.ram is not None and not x.ram.busy and x is not e]
        fixed = sum(x.nbytes for x in in_ram if not self._free_ram(x))
        mine = s if e.ram is not None and not e.ram.busy else 0
        must = stage + mine + fixed + hb.pending
        if must > hb.limit:
            if must - hb.limit <= self._transient(hb):
                raise _Wait
            blocked = [x for x in in_ram if not self._free_ram(x)]
            raise self._too_large(e, hb, blocked, "ram", must - hb.pending)
        room = hb.limit - must
        keep: set[int] = set()
        demotable = [x for x in victims if x.ram is None and self.host.name not in x.arriving
                     and self.rules.worth_copying_down(x)]
        for x in sorted([x for x in in_ram if self._free_ram(x)] + demotable, key=self._rank,
                        reverse=True):
            if x.nbytes <= room:
                keep.add(id(x))
                room -= x.nbytes
        moves: list[Move] = []
        for x in sorted(in_ram, key=self._rank):
            if self._free_ram(x) and id(x) not in keep:
                moves.append(Move(x.name, Tier.RAM, Tier.DISK, x.nbytes, 0.0,
                                  reason="make room in RAM"))
        for x in victims:
            if id(x) in keep and any(x is y for y in demotable):
                moves.append(Move(x.name, Tier.GPU, Tier.RAM, x.nbytes,
                                  self._seconds("d2h", x.nbytes), dev.name,
                                  reason=f"make room on {dev.name}"))
            else:
                why = "a copy stays in RAM" if x.ram is not None else "no room in RAM"
                moves.append(Move(x.name, Tier.GPU, Tier.DISK, x.nbytes, 0.0, dev.name,
                                  reason=f"make room on {dev.name}; {why}"))
        if stage:
            moves.append(Move(e.name, Tier.DISK, Tier.RAM, s, self.reload_seconds(e.spec),
                              reason="read from disk"))
        if not here:
            moves.append(Move(e.name, Tier.RAM, Tier.GPU, s, self._seconds("h2d", s),
                              dst_device=dev.name, reason="requested"))
        return self._bind(Plan(e.name, Tier.GPU, dev.name, moves, {dev.name: b,
                               self.host.name: hb}, self._generation, reserve=reserve))

    def _plan_ram_strict(self, e: Entry) -> Plan:
        plan = self._plan_ram(e, strict=True)
        assert plan is not None
        return plan

    def _plan_ram(self, e: Entry, *, strict: bool,
                  protect: frozenset[str] = frozenset()) -> Plan | None:
        """Bring ``e`` into RAM. Not strict (prefetch): evict only models worth less than
        ``e`` and not in ``protect``, else return None."""
        if e.ram is not None or e.gpus:
            return self._bind(Plan(e.name, Tier.RAM, None, [], {}, self._generation))
        if e.arriving:
            if not strict:
                return None
            raise _Wait  # being loaded already: wait and find it there
        hb = self.budget(self.host.name)
        s = e.nbytes
        in_ram = [x for x in self.entries() if x.ram is not None and not x.ram.busy]
        fixed = [x for x in in_ram if not self._free_ram(x)
                 or (not strict and x.name in protect)]
        over = s + sum(x.nbytes for x in fixed) + hb.pending - hb.limit
        if over > 0:
            if not strict:
                return None
            if over <= self._transient(hb):
                raise _Wait
            raise self._too_large(e, hb, fixed, "ram", s)
        need = hb.used + s - hb.limit
        victims: list[Entry] = []
        if need > 0:
            cands = sorted((x for x in in_ram if x not in fixed), key=self._rank)
            _take_until(cands, need, victims)
            if not strict:
                mine = self.rules.rank_if_used(e)
                if any(self._rank(x) >= mine for x in victims):
                    return None
        moves = [Move(x.name, Tier.RAM, Tier.DISK, x.nbytes, 0.0, reason="make room in RAM")
                 for x in victims]
        moves.append(Move(e.name, Tier.DISK, Tier.RAM, s, self.reload_seconds(e.spec),
                          reason="prefetch" if not strict else "requested"))
        return self._bind(Plan(e.name, Tier.RAM, None, moves, {self.host.name: hb},
                               self._generation))

    def plan_unload(self, name: str, to: Tier = Tier.RAM, device: str | None = None) -> Plan:
        """Take ``name`` off its GPUs (or only ``device``) down to ``to``. A copy in use,
        or one a transition is moving, cannot be unloaded: ModelBusy."""
        with self._cond:
            e = self._entry(name)
            if device is not None:
                self.device(device)
            return self._plan_when_possible(lambda: self._plan_unload(e, to, device))

    def _plan_unload(self, e: Entry, to: Tier, device: str | None, *,
                     release: bool = False) -> Plan:
        name = e.name
        if e.pinned and not release:
            raise ModelBusy(f"{name} is pinned; unpin it first", model=name)
        copies = sorted((d, c) for d, c in e.gpus.items() if device in (None, d))
        if any(c.leases for _, c in copies):
            raise ModelBusy(f"{name} is running a job", model=name)
        if e.arriving or any(c.busy for _, c in copies) or (
                to is Tier.DISK and device is None and e.ram is not None and e.ram.busy):
            raise ModelBusy(f"{name} is being moved; try again when the move is done",
                            model=name)
        moves: list[Move] = []
        budgets: dict[str, Budget] = {}
        demote = (to is Tier.RAM and copies and e.ram is None
                  and self.host.name not in e.arriving)
        if demote:
            hb = self.budget(self.host.name)
            budgets[self.host.name] = hb
            need = hb.used + e.nbytes - hb.limit
            if need > 0:
                cands = sorted((x for x in self.held(Tier.RAM) if self._free_ram(x)),
                               key=self._rank)
                freed = 0
                for x in cands:
                    if freed >= need:
                        break
                    moves.append(Move(x.name, Tier.RAM, Tier.DISK, x.nbytes, 0.0,
                                      reason="make room in RAM"))
                    freed += x.nbytes
                if freed < need:
                    if need - freed <= self._transient(hb):
                        raise _Wait
                    raise self._too_large(e, hb, [], "ram", e.nbytes)
        for i, (d, _) in enumerate(copies):
            if demote and i == 0:
                moves.append(Move(name, Tier.GPU, Tier.RAM, e.nbytes,
                                  self._seconds("d2h", e.nbytes), d, reason="requested"))
            else:
                moves.append(Move(name, Tier.GPU, Tier.DISK, e.nbytes, 0.0, d,
                                  reason="requested"))
        if to is Tier.DISK and device is None and e.ram is not None:
            moves.append(Move(name, Tier.RAM, Tier.DISK, e.nbytes, 0.0, reason="requested"))
        return self._bind(Plan(name, to, device, moves, budgets, self._generation,
                               action="release" if release else "unload"))

    # ---- execution -----------------------------------------------------------------
    def _plan_again(self, plan: Plan) -> Plan:
        e = self._entries[plan.target]
        if plan.action in ("unload", "release"):
            return self._plan_unload(e, plan.tier, plan.device,
                                     release=plan.action == "release")
        if plan.tier is Tier.GPU and plan.device is not None:
            return self._plan_gpu(e, self.device(plan.device), plan.reserve)
        return self._plan_ram_strict(e)

    def _lock_for(self, plan: Plan) -> contextlib.AbstractContextManager[Any]:
        if plan.action == "load" and plan.tier is Tier.GPU and plan.device in self._locks:
            return self._locks[plan.device]
        return contextlib.nullcontext()

    def _execute(self, plan: Plan) -> Plan:
        with self._lock_for(plan):
            with self._cond:
                if plan.executed:
                    raise RuntimeError("plan already executed")
                # the plan was made earlier: plan again against the leases of now
                fresh = self._plan_when_possible(lambda: self._plan_again(plan))
                claim = self._claim(fresh)
            self._run(fresh, claim)
        plan.executed = fresh.executed = True
        return fresh

    def _claim(self, plan: Plan) -> _Claim:
        """Mark the copies ``plan`` moves or reads busy and book the bytes it brings."""
        c = _Claim()
        staging = {m.model for m in plan.moves if m.src is Tier.DISK}
        for m in plan.moves:
            e = self._entries[m.model]
            if m.src is Tier.RAM and m.model in staging:
                src = None  # it goes up from the plan's own read, not from a RAM copy
            else:
                src = (e.ram if m.src is Tier.RAM else
                       e.gpus.get(m.src_device or "") if m.src is Tier.GPU else None)
            if src is not None and not any(src is x for x in c.busy):
                src.busy = True
                c.busy.append(src)
            key = (self.host.name if m.dst is Tier.RAM else
                   m.dst_device if m.dst is Tier.GPU else None)
            if key is None:
                continue
            self._book(c, key, m.nbytes)
            settles = m.dst is Tier.GPU or m.model != plan.target or plan.tier is Tier.RAM
            if settles:  # a copy will stay there (not the staging of a GPU load)
                e.arriving.add(key)
                c.arriving.append((e, key))
        return c

    def _book(self, c: _Claim, key: str, nbytes: int) -> None:
        c.booked[key] = c.booked.get(key, 0) + nbytes
        self._booked[key] = self._booked.get(key, 0) + nbytes

    def _unbook(self, c: _Claim, key: str, nbytes: int) -> None:
        c.booked[key] -= nbytes
        self._booked[key] -= nbytes

    def _unbusy(self, c: _Claim, copy: Copy) -> None:
        copy.busy = False
        c.busy = [x for x in c.busy if x is not copy]

    def _arrived(self, c: _Claim, e: Entry, key: str) -> None:
        e.arriving.discard(key)
        c.arriving = [(x, k) for x, k in c.arriving if not (x is e and k == key)]

    def _run(self, plan: Plan, c: _Claim) -> None:
        """Run the moves, holding no global lock for their I/O; each settles its part of
        the claim as it lands, and whatever is left is let go at the end."""
        staged: dict[str, Any] = {}
        try:
            for m in plan.moves:
                self._move(m, plan, c, staged)
        finally:
            for name, handle in staged.items():
                self._keep_staged(self._entries[name], handle, c)
            with self._cond:
                for copy in c.busy:
                    copy.busy = False
                for key, n in c.booked.items():
                    self._booked[key] -= n
                for e, key in c.arriving:
                    e.arriving.discard(key)
                self._generation += 1
                self._cond.notify_all()

    def _keep_staged(self, e: Entry, handle: Any, c: _Claim) -> None:
        """A load to the GPU failed after its read: keep the weights as the RAM copy
        (the next attempt starts from RAM), or drop them if RAM has one already."""
        with self._cond:
            if e.ram is None and self.host.name not in e.arriving:
                e.ram = Copy(self.host.name, handle)
                self._unbook(c, self.host.name, e.nbytes)
                return
        self._drop(handle, self.host, e.nbytes)
        with self._cond:
            self._unbook(c, self.host.name, e.nbytes)

    def _charge(self, dev: Device, n: int) -> None:
        if not self._charges:
            dev.allocate(n)

    def _uncharge(self, dev: Device, n: int) -> None:
        if not self._charges:
            dev.release(n)

    def _drop(self, handle: Any, where: Device, n: int) -> None:
        self.backend.drop(handle)
        self._uncharge(where, n)
        where.empty_cache()

    def _move(self, m: Move, plan: Plan, c: _Claim, staged: dict[str, Any]) -> None:
        e = self._entries[m.model]
        n = e.nbytes
        host = self.host
        evicted = m.model != plan.target
        t0 = time.perf_counter()
        if m.src is Tier.DISK:  # a read: the RAM copy, or the staging of a GPU load
            self._charge(host, n)
            try:
                handle = self.backend.load(e.spec, host)
            except BaseException:
                self._uncharge(host, n)
                raise
            self.speeds.observe("disk", e.spec.disk_bytes, time.perf_counter() - t0)
            if plan.tier is Tier.RAM:
                with self._cond:
                    e.ram = Copy(host.name, handle)
                    self._unbook(c, host.name, n)
                    self._arrived(c, e, host.name)
                    self._cond.notify_all()
            else:
                staged[e.name] = handle
            return
        if m.src is Tier.RAM and m.dst is Tier.DISK:
            copy = e.ram
            assert copy is not None
            self._drop(copy.handle, host, n)  # free first: until detached it counts as ours
            with self._cond:
                e.ram = None
                self._unbusy(c, copy)
                if evicted:
                    self.rules.evicted(e)
            if evicted:
                self.metrics.record_eviction("ram", "disk")
            return
        if m.src is Tier.GPU:
            dev = self.device(m.src_device)
            copy = e.gpus[dev.name]
            if m.dst is Tier.RAM:
                self._charge(host, n)
                try:
                    handle = self.backend.to_host(copy.handle, dev, host)
                except BaseException:
                    self._uncharge(host, n)
                    raise
                self.speeds.observe("d2h", n, time.perf_counter() - t0)
                with self._cond:
                    e.ram = Copy(host.name, handle)
                    self._unbook(c, host.name, n)
                    self._arrived(c, e, host.name)
                if handle is not copy.handle:
                    self.backend.drop(copy.handle)
                self._uncharge(dev, n)
                dev.empty_cache()
            else:
                self._drop(copy.handle, dev, n)
            with self._cond:
                del e.gpus[dev.name]
                self._unbusy(c, copy)
                if evicted:
                    self.rules.evicted(e)
                self._cond.notify_all()
            if evicted:
                self.metrics.record_eviction("gpu", m.dst.value)
            return
        # RAM -> GPU: the target, from its RAM copy or from the staged read
        dev = self.device(m.dst_device)
        source = staged.get(e.name)
        if source is None:
            assert e.ram is not None
            source = e.ram.handle
        handle = self._to_device_or_evict(e, source, dev, exclude={plan.target, e.name})
        self.speeds.observe("h2d", n, time.perf_counter() - t0)
        copied = handle is not source
        with self._cond:
            e.gpus[dev.name] = Copy(dev.name, handle)
            self._unbook(c, dev.name, n)
            self._arrived(c, e, dev.name)
            from_staged = staged.pop(e.name, None) is not None
            keep = copied and self.rules.keeps_ram_copies() and (
                not from_staged or (e.ram is None and host.name not in e.arriving))
            if keep and from_staged:
                e.ram = Copy(host.name, source)
                self._unbook(c, host.name, n)
            elif keep and e.ram is not None:
                self._unbusy(c, e.ram)
            self._cond.notify_all()
        if keep:
            return
        if copied:
            self.backend.drop(source)
        self._uncharge(host, n)
        host.empty_cache()  # pinned staging buffers go back to the system
        with self._cond:
            if from_staged:
                self._unbook(c, host.name, n)
            elif e.ram is not None and e.ram.handle is source:
                ram = e.ram
                e.ram = None
                self._unbusy(c, ram)
            self._cond.notify_all()

    def _to_device_or_evict(self, e: Entry, source: Any, dev: Device,
                            exclude: set[str]) -> Any:
        try:
            return self._to_device(e, source, dev)
        except BaseException as exc:
            if not is_oom(exc):
                raise
        self.metrics.record_oom()
        self._evict_one(dev, exclude=exclude)
        try:
            return self._to_device(e, source, dev)
        except BaseException as again:
            if is_oom(again):
                b = self.budget(dev.name, 0)
                raise OutOfDeviceMemory(
                    f"{dev.name} ran out of memory moving {e.name} ({e.nbytes} bytes) in, "
                    f"again after one eviction; {b.free} bytes free of {b.total}",
                    model=e.name, device=dev.name, needed_bytes=e.nbytes, free_bytes=b.free,
                    total_bytes=b.total) from again
            raise

    def _to_device(self, e: Entry, source: Any, dev: Device) -> Any:
        self._charge(dev, e.nbytes)
        try:
            return self.backend.to_device(source, dev)
        except BaseException:
            self._rollback(source, dev)
            self._uncharge(dev, e.nbytes)
            raise

    def _rollback(self, handle: Any, dev: Device) -> None:
        """Undo a move to ``dev`` that failed half way: the parts already there go back
        to the host (a pipeline moved in place by ``.to``) or were freed by the backend
        (a copying backend), and the device's cache is emptied so no memory stays
        reserved for tensors that no longer exist."""
        undo = getattr(self.backend, "rollback", None)
        if undo is not None:
            undo(handle, dev, self.host)
        elif not isinstance(handle, Mapping) and callable(getattr(handle, "to", None)):
            handle.to(self.host.torch_device)
        dev.empty_cache()

    def _evict_one(self, dev: Device, exclude: set[str]) -> Move | None:
        """The OOM answer: push the least valuable evictable model off ``dev``."""
        with self._locks[dev.name]:
            with self._cond:
                cands = sorted((x for x in self.held(Tier.GPU, dev.name)
                                if self._free_gpu(x, dev.name) and x.name not in exclude),
                               key=self._rank)
                if not cands:
                    dev.empty_cache()
                    return None
                x = cands[0]
                hb = self.budget(self.host.name)
                to_ram = (x.ram is None and self.host.name not in x.arriving
                          and hb.used + x.nbytes <= hb.limit)
                m = Move(x.name, Tier.GPU, Tier.RAM if to_ram else Tier.DISK, x.nbytes, 0.0,
                         dev.name, reason="out of memory")
                plan = Plan("", Tier.GPU, dev.name, [m], {}, self._generation,
                            action="evict")
                claim = self._claim(plan)
            self._run(plan, claim)
            dev.empty_cache()
            return m

    # ---- entry points --------------------------------------------------------------
    def load(self, name: str, device: str | None = None, *, tier: Tier = Tier.GPU,
             reserve: int | None = None) -> Plan:
        return self.plan_load(name, device, tier=tier, reserve=reserve).execute()

    def unload(self, name: str, to: Tier = Tier.RAM, device: str | None = None) -> Plan:
        return self.plan_unload(name, to, device).execute()

    def release_all(self) -> list[Plan]:
        """Drop every model no job holds to disk: GPU copies, RAM copies and the pinned
        host memory under them (an idle scale-down: the container may stop, or sit
        without paying for memory). Admin pins stay set but do not hold memory here;
        a model running a job, or being moved, is left alone (it was not idle)."""
        done: list[Plan] = []
        for e in self.entries():
            if e.tier is Tier.DISK:
                continue
            try:
                with self._cond:
                    plan = self._plan_unload(e, Tier.DISK, None, release=True)
                done.append(plan.execute())
            except ModelBusy:
                continue
        return done

    def prefetch(self, name: str, protect: Iterable[str] = ()) -> Plan | None:
        """Warm ``name`` into RAM if that evicts nothing worth more (or in ``protect``)."""
        with self._cond:
            plan = self._plan_ram(self._entry(name), strict=False, protect=frozenset(protect))
            if plan is None or plan.noop:
                return None
            claim = self._claim(plan)
        self._run(plan, claim)
        plan.executed = True
        return plan

    def pin(self, name: str, pinned: bool = True) -> Entry:
        with self._cond:
            e = self._entry(name)
            e.pinned = pinned
            self._generation += 1
            self._cond.notify_all()
            return e

    def acquire(self, name: str, device: str | None = None, *, width: int = 512,
                height: int = 512, batch: int = 1) -> Lease:
        """Make ``name`` resident on ``device`` and hold it there until the lease ends."""
        lease = self._acquire(name, device, width, height, batch)
        if self.on_use is not None:  # outside the state lock: it may write a database
            try:
                self.on_use(lease.switch.model)
            except Exception:
                log.exception("recording the use of %s failed", lease.switch.model)
        return lease

    def _acquire(self, name: str, device: str | None, width: int, height: int,
                 batch: int) -> Lease:
        dev = self.device(device)
        reserve = self.reserve_for(width, height, batch)
        t0 = time.perf_counter()
        with self._cond:
            e = self._entry(name)
            lease = self._hit(e, dev, reserve)
            if lease is not None:
                return lease
        with self._locks[dev.name]:
            while True:
                with self._cond:
                    lease = self._hit(e, dev, reserve)
                    if lease is not None:
                        return lease
                    plan = self._plan_when_possible(lambda: self._plan_gpu(e, dev, reserve))
                    claim = self._claim(plan)
                self._run(plan, claim)
                plan.executed = True
                own = [m.src for m in plan.moves if m.model == e.name]
                with self._cond:
                    copy = e.gpus.get(dev.name)
                    if copy is not None and not copy.busy:  # else an unload won: again
                        return self._lease(e, copy, dev, own[0] if own else Tier.GPU,
                                           time.perf_counter() - t0, plan)

    def _hit(self, e: Entry, dev: Device, reserve: int) -> Lease | None:
        copy = e.gpus.get(dev.name)
        if copy is None or copy.busy or dev.memory().free < reserve:
            return None
        return self._lease(e, copy, dev, Tier.GPU, 0.0, None)

    def _lease(self, e: Entry, copy: Copy, dev: Device, source: Tier, seconds: float,
               plan: Plan | None) -> Lease:
        copy.leases += 1
        self.rules.touch(e)
        self.metrics.record_switch(dev.name, source.value, seconds)
        return Lease(self, copy, dev, Switch(e.name, dev.name, source, seconds, plan))

    def _release(self, copy: Copy) -> None:
        with self._cond:
            copy.leases -= 1
            self._cond.notify_all()

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
            self._evict_one(lease.device, exclude={name, self.spec(name).name})
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
        ram = {**hb.to_json(), "models": [e.name for e in self.held(Tier.RAM)]}
        pinned = getattr(self.host, "pinned", None)
        if pinned is not None:
            ram.update(pinned.to_json())
        return {"devices": devices, "ram": ram,
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
