"""A token bucket shared by all connections of one download (the bandwidth limit)."""

from __future__ import annotations

import threading
import time


class Throttle:
    def __init__(self, rate: int) -> None:
        self.rate = rate  # bytes per second; 0 = unlimited
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def consume(self, n: int, stop: threading.Event | None = None) -> None:
        """Account ``n`` bytes just received; sleep so the total stays at ``rate``."""
        if self.rate <= 0 or n <= 0:
            return
        with self._lock:
            now = time.monotonic()
            # no credit for idle time beyond a quarter second: avoids bursts after stalls
            start = max(self._next, now - 0.25)
            self._next = start + n / self.rate
            delay = self._next - now
        if delay > 0:
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
