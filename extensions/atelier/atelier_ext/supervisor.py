"""Keeps the standalone service running beside the WebUI.

``ensure_running()`` first asks ``GET /api/health`` on the configured port. If something
answers as the service (a reloaded UI, a second WebUI process on the same machine, or one
started by hand with ``.atelier/atelier-serve``), it is used as it is. Otherwise the
recorded command (the service's own venv python, ``-I -m atelier serve ...``) is started
as a child process, its output appended to the log file in the local state folder, and
the call waits until health answers. ``stop()`` ends only a process this supervisor
started, so the WebUI never stops a service someone else runs.

The child runs in its own session: a Ctrl-C in the WebUI's terminal reaches the WebUI,
whose exit hook then stops the service in order, instead of both dying mid-request.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from .config import ServiceConfig

# The WebUI environment may carry http_proxy (common where hubs need one); the service is
# on loopback, so health checks never go through a proxy.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Variables that would make the service's interpreter see the WebUI's packages.
_LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")


class ServiceError(RuntimeError):
    """The service could not be started; the message carries the end of its log."""


def is_answering(base_url: str, timeout: float = 1.0) -> bool:
    """True if the Atelier service answers its health check at ``base_url``."""
    try:
        with _opener.open(f"{base_url}/api/health", timeout=timeout) as resp:
            if resp.status != 200:
                return False
            body = json.loads(resp.read(4096))
    except (OSError, ValueError):  # URLError and timeouts are OSErrors
        return False
    return isinstance(body, dict) and body.get("status") == "ok"


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


class Supervisor:
    def __init__(self, config: ServiceConfig, *, env: Mapping[str, str] | None = None,
                 start_timeout: float = 60.0, poll_interval: float = 0.1) -> None:
        self.config = config
        self.extra_env = dict(env or {})
        self.start_timeout = start_timeout
        self.poll_interval = poll_interval
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
        env.update(self.extra_env)
        return env

    def ensure_running(self) -> bool:
        """Make sure the service answers; True if this call started it."""
        with self._lock:
            if is_answering(self.config.base_url):
                return False
            return self._start()

    def _start(self) -> bool:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        cfg.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(cfg.log_file, "ab") as log:
            log.write(f"--- atelier: starting {' '.join(cfg.argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(list(cfg.argv), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=self.child_env(),
                                    cwd=cfg.state_dir, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while not is_answering(cfg.base_url):
            rc = proc.poll()
            if rc is not None:
                # Another WebUI process may have won the race for the port: use its service.
                if is_answering(cfg.base_url):
                    return False
                raise ServiceError(f"the Atelier service exited with code {rc}; "
                                   f"{cfg.log_file} ends with:\n{_tail(cfg.log_file)}")
            if time.monotonic() > deadline:
                self._terminate(proc, 10.0)
                raise ServiceError(f"the Atelier service did not answer on {cfg.base_url} "
                                   f"within {self.start_timeout:.0f} s; see {cfg.log_file}")
            time.sleep(self.poll_interval)
        self.process = proc
        return True

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the service if this supervisor started it; True if it did so."""
        with self._lock:
            proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return False
        self._terminate(proc, timeout)
        return True

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
        proc.send_signal(signal.SIGTERM)  # uvicorn finishes open requests on SIGTERM
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
