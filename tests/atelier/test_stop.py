"""A stop is not held up by the WebUI extension's open requests: its long poll for
commands and the WebUI event stream end when the stop begins."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import requests

from ..conftest import Server

SECRET = "s" * 43


def test_sigterm_answers_the_extensions_long_poll_and_ends_the_event_stream(
        spawn_server: Callable[..., Server]) -> None:
    srv = spawn_server(env={"ATELIER_GATEWAY_SECRET": SECRET})
    gateway = {"X-Atelier-Gateway": SECRET}
    got: dict[str, Any] = {}

    def poll() -> None:
        try:
            r = requests.get(f"{srv.url}/api/gpu/webui/poll", params={"wait": 60},
                             headers=gateway, timeout=90)
            got["poll"] = (r.status_code, r.json())
        except requests.RequestException as exc:  # cut off by the server's stop
            got["poll"] = exc

    def stream() -> None:
        try:
            with requests.get(f"{srv.url}/api/gpu/webui/events",
                              headers=srv.session().headers, stream=True, timeout=90) as r:
                got["events_status"] = r.status_code
                body = b"".join(r.iter_content(None))
                got["events"] = body
        except requests.RequestException as exc:
            got["events"] = exc

    threads = [threading.Thread(target=poll), threading.Thread(target=stream)]
    for t in threads:
        t.start()
    # both requests are in the server before the stop
    deadline_ok = False
    for _ in range(200):
        r = requests.get(f"{srv.url}/api/gpu/webui", headers=srv.session().headers, timeout=10)
        if r.json()["connected"] and "events_status" in got:
            deadline_ok = True
            break
        threading.Event().wait(0.05)
    assert deadline_ok, "the poll and the event stream did not reach the server"
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert srv.proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    # answered, not cut off after the graceful stop's limit
    assert got["poll"] == (200, {"commands": []})
    assert isinstance(got["events"], bytes) and b"event: state" in got["events"]
