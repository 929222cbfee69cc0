"""What the benchmarks share: a free loopback port, a process's peak memory, the
packages' bytecode, and the real service started as ``atelier serve`` in a fresh process
with an admin token.

The scripts run as ``python bench/NAME.py``, so this folder is on ``sys.path``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

PASSWORD = "bench-pass-123"
MB = 1_000_000
PACKAGES = ("atelier", "atelier_io", "filebrowser", "modelzoo")


def compile_packages() -> None:
    """Bytecode for the packages, as an installed copy has (``pip install`` compiles
    them). With ``PYTHONDONTWRITEBYTECODE`` set and no ``__pycache__``, every run of a
    CLI would compile its modules again (30-40 ms for ``atelier fetch``, a fifth of its
    start), which no installed copy does."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    *(str(root / p) for p in PACKAGES)], check=True, capture_output=True)


def vm_hwm(pid: int) -> int:
    """Peak resident memory of a running process in bytes (VmHWM), 0 once it is gone."""
    return proc_status(pid, "VmHWM:")


def proc_status(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    def __init__(self, root: Path, state: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "ATELIER_ROOT": str(root), "ATELIER_STATE_DIR": str(state),
               "ATELIER_ADMIN_PASSWORD": PASSWORD, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atelier", "serve", "--port", str(self.port),
             "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.url}/api/health", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        r = requests.post(f"{self.url}/api/tokens", auth=("admin", PASSWORD),
                          json={"name": "bench"}, timeout=30)
        r.raise_for_status()
        self.token = r.json()["token"]
        self.idle_mb = self._status("VmRSS:")
        self.start_hwm = self._status("VmHWM:")  # imports peak above the idle RSS

    def _status(self, key: str) -> float:
        return proc_status(self.proc.pid, key) / MB

    def peak_mb(self) -> str:
        """Peak RSS, with the idle RSS after start-up for comparison."""
        return (f"{self._status('VmHWM:'):.0f} (after start-up: peak {self.start_hwm:.0f}, "
                f"idle {self.idle_mb:.0f})")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
