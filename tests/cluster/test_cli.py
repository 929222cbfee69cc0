"""`atelier serve-cluster` as a user starts it: a local Ray cluster, the app on a port,
and Ctrl-C stopping all of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from ..conftest import ADMIN_PASSWORD, free_port


def _up(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve-cluster exited early"
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


def test_serve_cluster_serves_with_the_service_credentials_and_stops_on_ctrl_c(
        tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ATELIER_ADMIN_PASSWORD": ADMIN_PASSWORD, "OMP_NUM_THREADS": "1",
           "ATELIER_CLUSTER_STATS_PERIOD": "0.2", "ATELIER_GPU_RAM_RESERVE": "0"}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / "serve-cluster.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "atelier", "serve-cluster", "--root", str(tmp_path / "nas"),
         "--state-dir", str(tmp_path / "state"), "--devices", "sim:64MiB,sim:64MiB",
         "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _up(f"{url}/api/health", proc)
        assert requests.get(f"{url}/api/health", timeout=10).json()["edition"] == "ray-serve"
        r = requests.get(f"{url}/sdapi/v1/sd-models", timeout=30)
        assert r.status_code == 401
        # the admin made on first start, with HTTP Basic as WebUI clients send it
        r = requests.get(f"{url}/sdapi/v1/sd-models", auth=("admin", ADMIN_PASSWORD),
                         timeout=30)
        assert r.status_code == 200, r.text
        assert r.json() == []  # an empty models folder
        assert r.headers["x-atelier-replica"] in ("0", "1")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0
        with socket.socket() as s:  # the HTTP proxy went with it
            assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
        print((tmp_path / "serve-cluster.log").read_text()[-3000:])
