"""The adapter's line to the service: reports out, commands in (standard library only).

- reporter: ``POST /api/gpu/webui/report`` when something changed (a model loaded, a
  command ran, settings applied) and every ``interval`` seconds (free memory moves).
- poller: ``GET /api/gpu/webui/poll?wait=25``, a long poll that returns the commands the
  Models on GPU tab queued; each runs in one worker thread (one at a time, like the
  WebUI's queue), then ``POST /api/gpu/webui/commands/{id}/result``.

Both send the gateway secret, and only to a service that proved it holds it
(``secret()`` is None otherwise). Failures back off quietly: the service may be
restarting, and the WebUI must never notice.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from .residency import Adapter, CommandError
from .supervisor import GATEWAY_HEADER, _opener

POLL_WAIT = 25.0


class ServiceLink:
    def __init__(self, base_url: str, adapter: Adapter, secret: Callable[[], str | None], *,
                 interval: float = 30.0, log: Callable[[str], Any] = print) -> None:
        self.base_url = base_url.rstrip("/")
        self.adapter = adapter
        self.secret = secret
        self.interval = interval
        self.log = log
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._jobs: queue.Queue[dict[str, Any]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self.reports = 0
        adapter.on_change = self.changed

    def changed(self) -> None:
        self._dirty.set()

    def start(self) -> None:
        if self._threads:
            return
        for target, name in ((self._report_loop, "atelier-report"),
                             (self._poll_loop, "atelier-poll"),
                             (self._work_loop, "atelier-commands")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()

    # -- HTTP -----------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None,
              timeout: float = 10.0) -> Any:
        secret = self.secret()
        if not secret:
            raise ConnectionError("no verified service")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method,
                                     headers={GATEWAY_HEADER: secret,
                                              "Content-Type": "application/json"})
        with _opener.open(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")

    # -- loops ----------------------------------------------------------------------

    def report_now(self) -> None:
        self._call("POST", "/api/gpu/webui/report", self.adapter.report())
        self.reports += 1

    def _report_loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            self._dirty.wait(self.interval)
            self._dirty.clear()
            if self._stop.is_set():
                return
            try:
                self.report_now()
                backoff = 1.0
            except Exception:  # noqa: BLE001 (the service may be restarting)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                self._dirty.set()

    def _poll_loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                got = self._call("GET", f"/api/gpu/webui/poll?wait={POLL_WAIT:g}",
                                 timeout=POLL_WAIT + 10)
                backoff = 1.0
            except Exception:  # noqa: BLE001
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            for command in got.get("commands", []) if isinstance(got, dict) else []:
                self._jobs.put(command)

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            try:
                command = self._jobs.get(timeout=1.0)
            except queue.Empty:
                continue
            result = self.execute(command)
            for attempt in range(5):
                try:
                    self._call("POST", f"/api/gpu/webui/commands/{command['id']}/result",
                               result)
                    break
                except Exception:  # noqa: BLE001
                    time.sleep(0.5 * (attempt + 1))
            self.changed()

    def execute(self, command: dict[str, Any]) -> dict[str, Any]:
        try:
            message = self.adapter.run(command)
            return {"ok": True, "message": message}
        except CommandError as exc:
            return {"ok": False, "message": str(exc), "error": exc.code, "status": exc.status}
        except Exception as exc:  # noqa: BLE001 (the WebUI's own failure, reported back)
            self.log(f"Atelier: {command.get('action')} {command.get('model')!r} failed: "
                     f"{exc!r}")
            return {"ok": False, "message": f"the WebUI failed: {exc}", "error": "webui_error",
                    "status": 500}
