"""An exclusive lock file per destination, safe on a NAS shared by replicas.

``.NAME.lock`` is created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and on
NFSv3+), holding JSON ``{"owner", "host", "pid", "created"}``. While held, a heartbeat
thread touches its mtime. flock/fcntl are not used: they are unreliable across NFS clients
(HF hub PR #4306, the SQLite FAQ).

A lock is stale when its owner is a dead process on this host, or when its heartbeat is
older than ``stale_after`` (another host died; this compares the NAS's mtime with our
clock, so keep clocks roughly in sync). Takeover renames the stale file to a unique name
first, so of two processes taking over at once only one wins; if the renamed file turns out
to be a fresh lock after all, it is linked back (``link`` fails if a lock already exists).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from ..errors import LockTimeout


class FileLock:
    def __init__(self, path: Path, *, heartbeat: float = 5.0, stale_after: float = 60.0,
                 poll: float = 0.2) -> None:
        self.path = path
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.poll = poll
        self.owner = os.urandom(16).hex()  # what uuid4 is, without importing uuid
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- acquiring ---------------------------------------------------------------------

    def try_acquire(self) -> bool:
        info = {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                "created": time.time()}
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if self._take_over_if_stale():
                return self.try_acquire()
            return False
        try:
            # No fsync: O_EXCL is what excludes. After a machine crash an empty or torn
            # lock is taken over once stale_after has passed, like a dead holder's.
            os.write(fd, json.dumps(info).encode())
        finally:
            os.close(fd)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="fetch-lock", daemon=True)
        self._thread.start()
        return True

    def acquire(self, timeout: float, cancel: threading.Event | None = None) -> bool:
        """Take the lock; returns True if it had to wait for another holder first."""
        deadline = time.monotonic() + timeout
        waited = False
        while not self.try_acquire():
            waited = True
            if time.monotonic() >= deadline:
                holder = self.read() or {}
                raise LockTimeout(
                    f"{self.path.name}: still being downloaded by {holder.get('host')} "
                    f"pid {holder.get('pid')} after waiting {timeout:.0f} s")
            if cancel is not None and cancel.wait(self.poll):
                raise KeyboardInterrupt
            elif cancel is None:
                time.sleep(self.poll)
        return waited

    def read(self) -> dict[str, object] | None:
        try:
            data = json.loads(self.path.read_bytes() or b"{}")
            return data if isinstance(data, dict) else {}
        except (FileNotFoundError, ValueError):
            return None

    def is_stale(self, info: dict[str, object] | None, mtime: float) -> bool:
        if info and info.get("host") == socket.gethostname():
            pid = info.get("pid")
            if isinstance(pid, int) and not _alive(pid):
                return True
        return time.time() - mtime > self.stale_after

    def _take_over_if_stale(self) -> bool:
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return True  # released meanwhile: try again
        info = self.read()
        if info is None or not self.is_stale(info, mtime):
            # an empty file is a lock being written right now, unless it is old
            if not (info == {} and time.time() - mtime > self.stale_after):
                return False
        grave = self.path.with_name(f"{self.path.name}.stale-{os.urandom(16).hex()}")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return True
        taken = json.loads(grave.read_bytes() or b"{}")
        if info and taken.get("owner") != info.get("owner"):
            # Someone took over and re-locked between our read and our rename: put it back.
            try:
                os.link(grave, self.path)
            except FileExistsError:
                pass
            grave.unlink(missing_ok=True)
            return False
        grave.unlink(missing_ok=True)
        return True

    # ---- holding -----------------------------------------------------------------------

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            info = self.read()
            if not info or info.get("owner") != self.owner:
                self.lost.set()  # taken over: the engine stops
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                self.lost.set()
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        info = self.read()
        if info and info.get("owner") == self.owner:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
