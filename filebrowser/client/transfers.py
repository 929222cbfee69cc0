"""What ``atelier push`` and ``pull`` share: errors, the resume file, retries, a rate limit.

Both talk through a :class:`~atelier_io.http.Client` (already carrying the token).
State that makes a rerun resume lives in a small JSON file (:class:`ResumeStore`): for
uploads the tus URL of each local file (keyed by server, path, size, mtime and target),
for downloads the ETag the partial file was started from. The transfers themselves are
:mod:`.push` and :mod:`.pull`. Nothing here imports more than the standard library
needs: ``atelier pull`` of a small file is mostly start-up.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from atelier_io.http import Response

TUS = {"Tus-Resumable": "1.0.0"}
Progress = Callable[[int], None]  # called with bytes newly transferred


class TransferError(Exception):
    """A transfer that failed for good (after retries), with a message for the user."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthError(TransferError):
    """401: the token is wrong or revoked; every other transfer will fail too."""


def raise_final(r: Response, what: str) -> None:
    if r.status == 401:
        raise AuthError("the server refused the token; run `atelier login` again", 401)
    raise TransferError(f"{what}: {r.message()} (HTTP {r.status})", r.status)


class ResumeStore:
    """A JSON dict on disk, shared by threads; written atomically, mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> Any:
        with self._lock:
            return self._load().get(key)

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            data = self._load()
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)


class Retry:
    """How long to keep trying through outages: ``attempts`` waits, doubling up to ``cap``."""

    def __init__(self, attempts: int = 10, first: float = 0.5, cap: float = 15.0) -> None:
        self.attempts, self.first, self.cap = attempts, first, cap

    def waits(self) -> Iterator[float]:
        delay = self.first
        for _ in range(self.attempts):
            yield delay
            delay = min(delay * 2, self.cap)


class Throttle:
    """At most ``rate`` bytes per second for one transfer (None: unlimited)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.t0 = time.monotonic()
        self.done = 0

    def __call__(self, n: int) -> None:
        if not self.rate:
            return
        self.done += n
        ahead = self.done / self.rate - (time.monotonic() - self.t0)
        if ahead > 0:
            time.sleep(ahead)
