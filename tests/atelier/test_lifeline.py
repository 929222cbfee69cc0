"""The service's tie to the WebUI (atelier/lifeline.py): holders, grace, the parent pipe,
adoption over HTTP, and the identity proof; in-process and as a real ``atelier serve``."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from atelier.lifeline import Lifeline, proof

from ..conftest import ADMIN_PASSWORD, Server, free_port, wait_http

SECRET = "g" * 43


def test_holders_and_grace() -> None:
    stopped = threading.Event()
    life = Lifeline(grace=0.3, stop=stopped.set, hard_exit=lambda code: None)
    parent = life.hold("parent")
    other = life.hold()
    assert life.holders == 2
    life.release(parent)
    life.release(parent)  # the pipe and PR_SET_PDEATHSIG both report the same death
    assert life.holders == 1
    time.sleep(0.5)
    assert not stopped.is_set(), "held by another WebUI"
    assert other is not None
    life.release(other)
    time.sleep(0.1)
    adopter = life.hold()  # a restarted WebUI within the grace
    time.sleep(0.5)
    assert not stopped.is_set() and adopter is not None
    life.release(adopter)
    assert stopped.wait(5)
    assert life.stopping and life.hold() is None, "no adoption once stopping"


def test_proof_is_an_hmac_of_nonce_and_pid() -> None:
    msg = b"atelier-gateway-proof\0" + b"n" * 16 + b"\0" + b"42"
    assert proof(SECRET, "n" * 16, 42) == hmac.new(SECRET.encode(), msg,
                                                   hashlib.sha256).hexdigest()
    assert proof(SECRET, "n" * 16, 43) != proof(SECRET, "n" * 16, 42)


def test_proof_and_lifeline_routes(make_server: Callable[..., Server]) -> None:
    srv = make_server(gateway_secret=SECRET)
    r = requests.post(f"{srv.url}/api/gateway/proof", json={"nonce": "a" * 32}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["pid"] == os.getpid() and body["tied"] is False
    assert body["proof"] == proof(SECRET, "a" * 32, os.getpid())
    assert requests.post(f"{srv.url}/api/gateway/proof", json={"nonce": "short"},
                         timeout=10).status_code == 422
    lifeline = f"{srv.url}/api/gateway/lifeline"
    assert requests.post(lifeline, timeout=10).status_code == 401
    assert requests.post(lifeline, headers={"X-Atelier-Gateway": "x" * 43},
                         timeout=10).status_code == 401
    r = requests.post(lifeline, headers={"X-Atelier-Gateway": SECRET}, timeout=10)
    assert r.status_code == 409, "a service nobody started: nothing to hold"
    stopped = threading.Event()
    srv.app.state.lifeline = Lifeline(grace=0.2, stop=stopped.set, hard_exit=lambda c: None)
    with requests.post(lifeline, headers={"X-Atelier-Gateway": SECRET}, stream=True,
                       timeout=10) as held:
        assert held.status_code == 200 and held.raw.read(5) == b"held\n"
        assert srv.app.state.lifeline.holders == 1
        assert requests.post(f"{srv.url}/api/gateway/proof", json={"nonce": "b" * 32},
                             timeout=10).json()["holders"] == 1
        time.sleep(0.5)
        assert not stopped.is_set()
    deadline = time.monotonic() + 10
    while srv.app.state.lifeline.holders and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stopped.wait(5), "the holder went away: the service stops after the grace"


def test_no_secret_no_proof(server: Server) -> None:
    r = requests.post(f"{server.url}/api/gateway/proof", json={"nonce": "a" * 32}, timeout=10)
    assert r.status_code == 404


def _serve(tmp_path: Path, port: int, *extra: str, pass_fds: tuple[int, ...] = ()
           ) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ATELIER_ROOT": str(tmp_path / "nas"),
           "ATELIER_STATE_DIR": str(tmp_path / "state"), "ATELIER_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "ATELIER_GATEWAY_SECRET": SECRET}
    log = open(tmp_path / f"serve-{port}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "atelier", "serve", "--port", str(port),
                             "--log-level", "warning", *extra], env=env, stdout=log,
                            stderr=subprocess.STDOUT, pass_fds=pass_fds)
    log.close()
    return proc


def test_serve_stops_when_its_parent_pipe_closes_unless_adopted(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    r, w = os.pipe()
    proc = _serve(tmp_path, port, "--parent-fd", str(r), "--orphan-grace", "1",
                  pass_fds=(r,))
    os.close(r)
    try:
        wait_http(f"{url}/api/health", 60)
        assert requests.post(f"{url}/api/gateway/proof", json={"nonce": "c" * 32},
                             timeout=10).json()["tied"] is True
        with requests.post(f"{url}/api/gateway/lifeline", stream=True, timeout=10,
                           headers={"X-Atelier-Gateway": SECRET}) as held:
            assert held.raw.read(5) == b"held\n"
            os.close(w)  # the WebUI that started it is gone...
            w = -1
            time.sleep(3)
            assert proc.poll() is None, "...but another one holds it"
        proc.wait(40)  # released: stops after the grace
        log = (tmp_path / f"serve-{port}.log").read_text()
        assert "pipe closed" in log and "stopping" in log
    finally:
        if w >= 0:
            os.close(w)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def test_serve_without_a_parent_runs_until_stopped(tmp_path: Path) -> None:
    port = free_port()
    proc = _serve(tmp_path, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", 60)
        time.sleep(1)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
