"""Job changes fanned out to Server-Sent Events subscribers.

Download threads publish; each subscriber (one ``GET /api/models/events`` stream) owns an
asyncio queue on the event loop, fed with ``call_soon_threadsafe`` so no thread ever
touches the loop's objects. Progress of one job is passed on at most every
``min_interval`` seconds (~4/s); a change of state always goes through. A slow client
whose queue is full loses the oldest events, never blocks a download.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

Filter = Callable[[dict[str, Any]], bool]


class EventHub:
    def __init__(self, min_interval: float = 0.25, queue_size: int = 256) -> None:
        self.min_interval = min_interval
        self.queue_size = queue_size
        self._subs: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]],
                               Filter]] = []
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, str]] = {}

    def subscribe(self, wants: Filter) -> asyncio.Queue[dict[str, Any]]:
        """Call on the event loop; returns the queue the stream reads."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.queue_size)
        with self._lock:
            self._subs.append((asyncio.get_running_loop(), queue, wants))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._subs = [s for s in self._subs if s[1] is not queue]

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, job: dict[str, Any], force: bool = False) -> bool:
        """Pass a job's new state on; False when throttled away."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(job["id"])
            if (not force and last is not None and last[1] == job["state"]
                    and now - last[0] < self.min_interval):
                return False
            self._last[job["id"]] = (now, job["state"])
            if len(self._last) > 10_000:
                self._last.clear()
            subs = list(self._subs)
        for loop, queue, wants in subs:
            if wants(job):
                try:
                    loop.call_soon_threadsafe(_put, queue, job)
                except RuntimeError:  # that loop is closed: the stream is gone
                    self.unsubscribe(queue)
        return True


def _put(queue: asyncio.Queue[dict[str, Any]], item: dict[str, Any]) -> None:
    if queue.full():
        try:
            queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
    queue.put_nowait(item)
