"""Placement over several GPUs: one worker thread and queue per GPU, routing by residency.

A request for model M goes to the first of::

    1. a GPU holding M (or with M already waiting in its queue: it will be loaded there),
       the shortest queue among them
    2. a GPU close to the RAM holding M    (one host: every GPU is as close; go on to 3's order)
    3. the GPU with the most free memory

Ties are broken by the shorter queue. "Most free memory" compares room: among GPUs where
M fits without evicting anything the shorter queue wins (memory is no constraint there),
otherwise the GPU with the most free bytes. Ray Serve's multiplexing router ranks by
"holds the model" then "fewest models" and never looks at memory; this looks.

A popular model spreads (ModelMesh loads copies "based on usage frequency and current
request volumes"): when every GPU holding M has ``spread_queue`` or more jobs more than
another GPU where M fits without evicting anything, M goes there and that GPU loads a
copy of its own; from then on both hold M and share its queue.

Jobs run through :meth:`ResidencyManager.run` on the worker's GPU, so loading and
inference never happen on the caller's thread (nor on an event loop). When a worker
starts a job it asks the prefetcher to warm the model of the next queued job into RAM,
so the disk read overlaps the current job.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from .devices import Device
from .manager import ResidencyManager, Switch
from .plan import Tier

log = logging.getLogger(__name__)


@dataclass
class Job:
    model: str
    fn: Callable[[Any, Device], Any]
    width: int = 512
    height: int = 512
    batch: int = 1
    future: Future[tuple[Any, Switch]] = field(default_factory=Future)


class GpuWorker:
    """A thread that runs one job at a time on its GPU, in FIFO order."""

    def __init__(self, manager: ResidencyManager, device: Device,
                 on_start: Callable[[GpuWorker], None] | None = None) -> None:
        self.manager = manager
        self.device = device
        self._on_start = on_start
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._running: Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"gpu-{device.name}",
                                        daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future[tuple[Any, Switch]]:
        with self._cond:
            if self._closed:
                raise RuntimeError("worker is closed")
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    @property
    def queue_length(self) -> int:
        """Jobs waiting plus the one running."""
        with self._cond:
            return len(self._jobs) + (self._running is not None)

    def models(self) -> list[str]:
        """Models of the running job and the queued ones, in order."""
        with self._cond:
            head = [self._running.model] if self._running else []
            return head + [j.model for j in self._jobs]

    def next_model(self) -> str | None:
        with self._cond:
            return self._jobs[0].model if self._jobs else None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if self._closed and not self._jobs:
                    return
                job = self._jobs.popleft()
                self._running = job
            try:
                if not job.future.set_running_or_notify_cancel():
                    continue
                if self._on_start is not None:
                    self._on_start(self)
                try:
                    result = self.manager.run(job.model, job.fn, self.device.name,
                                              width=job.width, height=job.height,
                                              batch=job.batch)
                except BaseException as exc:
                    job.future.set_exception(exc)
                else:
                    job.future.set_result(result)
            finally:
                with self._cond:
                    self._running = None

    def close(self, timeout: float | None = None) -> None:
        with self._cond:
            self._closed = True
            for job in self._jobs:
                job.future.cancel()
            self._jobs.clear()
            self._cond.notify_all()
        self._thread.join(timeout)


class Prefetcher:
    """One thread warming models into RAM, best effort, one request per model at a time."""

    def __init__(self, manager: ResidencyManager,
                 protect: Callable[[], set[str]] = set) -> None:
        self.manager = manager
        self._protect = protect
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._wanted: set[str] = set()
        self._lock = threading.Lock()
        self.warmed: list[str] = []
        self._thread = threading.Thread(target=self._loop, name="gpu-prefetch", daemon=True)
        self._thread.start()

    def request(self, model: str) -> None:
        if self.manager.where(model)[0] is not Tier.DISK:
            return
        with self._lock:
            if model in self._wanted:
                return
            self._wanted.add(model)
        self._queue.put(model)

    def _loop(self) -> None:
        while (model := self._queue.get()) is not None:
            try:
                if self.manager.prefetch(model, protect=self._protect()) is not None:
                    self.warmed.append(model)
            except Exception as exc:  # a prefetch is a hint; the job will report real errors
                log.info("prefetch of %s skipped: %s", model, exc)
            finally:
                with self._lock:
                    self._wanted.discard(model)
                self._queue.task_done()

    def join(self) -> None:
        """Wait until every requested prefetch has finished (tests, benchmarks)."""
        self._queue.join()

    def close(self, timeout: float | None = None) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


class Placement:
    def __init__(self, manager: ResidencyManager, *, prefetch: bool = True,
                 spread_queue: int = 3) -> None:
        if spread_queue < 0:
            raise ValueError("spread_queue must be >= 0 (0: never spread)")
        self.manager = manager
        self.spread_queue = spread_queue
        self.prefetcher = Prefetcher(manager, self._queued) if prefetch else None
        self.workers = {name: GpuWorker(manager, dev, self._started)
                        for name, dev in manager.devices.items()}

    def _queued(self) -> set[str]:
        return {m for w in self.workers.values() for m in w.models()}

    def _started(self, worker: GpuWorker) -> None:
        nxt = worker.next_model()
        if nxt is not None and self.prefetcher is not None:
            self.prefetcher.request(nxt)

    def rank(self, model: str, width: int = 512, height: int = 512,
             batch: int = 1) -> list[tuple[tuple[float, ...], str]]:
        """Every GPU with its sort key, best first (shown by ``GET /api/gpu``).

        Keys: ``(0, queue, 0)`` holds M; ``(0, queue, 1)`` will get a copy (spreading);
        ``(1 or 2, 0, queue, -room)`` M fits without evicting; ``(1 or 2, 1, -room, queue)``
        it does not.
        """
        tier, _ = self.manager.where(model)
        holding = set(self.manager.locations(model))
        size = self.manager.spec(model).nbytes
        reserve = self.manager.reserve_for(width, height, batch)
        ranked = []
        for name, worker in self.workers.items():
            qlen = worker.queue_length
            if name in holding or model in worker.models():
                key: tuple[float, ...] = (0, qlen, 0)
            else:
                # with a single host RAM every GPU is as close to a RAM copy: rank 1 keeps the
                # order of rank 2 below (memory, then queue)
                rank = 1 if tier is Tier.RAM else 2
                room = self.manager.budget(name, reserve).room
                key = (rank, 0, qlen, -room) if room >= size else (rank, 1, -room, qlen)
            ranked.append((key, name))
        holders = [k[1] for k, _ in ranked if k[0] == 0]
        if holders and self.spread_queue:
            shortest = min(holders)
            ranked = [((0, k[2], 1) if k[0] != 0 and k[1] == 0
                       and k[2] + self.spread_queue <= shortest else k, n) for k, n in ranked]
        ranked.sort()
        return ranked

    def choose(self, model: str, width: int = 512, height: int = 512, batch: int = 1) -> str:
        return self.rank(model, width, height, batch)[0][1]

    def submit(self, model: str, fn: Callable[[Any, Device], Any], *, device: str | None = None,
               width: int = 512, height: int = 512, batch: int = 1
               ) -> Future[tuple[Any, Switch]]:
        """Queue ``fn(handle, device)`` to run with ``model`` resident; returns a Future of
        ``(result, Switch)``."""
        spec_name = self.manager.spec(model).name  # resolve aliases, raise UnknownModel now
        name = device if device is not None else self.choose(spec_name, width, height, batch)
        worker = self.workers.get(name)
        if worker is None:
            self.manager.device(name)  # raises UnknownDevice
            raise AssertionError("unreachable")
        busy = worker.queue_length > 0
        fut = worker.submit(Job(spec_name, fn, width, height, batch))
        if busy and self.prefetcher is not None and worker.next_model() == spec_name:
            self.prefetcher.request(spec_name)
        return fut

    def queue_lengths(self) -> dict[str, int]:
        return {n: w.queue_length for n, w in self.workers.items()}

    def close(self, timeout: float | None = 10.0) -> None:
        for w in self.workers.values():
            w.close(timeout)
        if self.prefetcher is not None:
            self.prefetcher.close(timeout)
