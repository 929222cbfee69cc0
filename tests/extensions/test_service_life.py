"""The service lives and dies with the WebUI: real processes all the way.

A fake WebUI process (``fake_webui.py``: the stand-in modules, the installed extension,
A1111's ``os._exit`` SIGINT handler and restart) starts the real service through the
supervisor; then it dies the ways a WebUI dies, and the service must follow within a
bounded time. A supervisor in the test process plays the restarted WebUI that adopts or
replaces what is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from ..conftest import free_port
from .conftest import HERE, install_webui, service_python

GONE_WITHIN = 40.0  # grace (2 s) + uvicorn's bounded shutdown (10 s), on a loaded machine


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, timeout: float = GONE_WITHIN) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


class FakeWebUI:
    def __init__(self, proc: subprocess.Popen[bytes], info: dict[str, Any], log: Path) -> None:
        self.proc, self.info, self.log = proc, info, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.info['port']}"


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, int]:
    port = free_port()
    return install_webui(tmp_path, port), port


@pytest.fixture
def start_webui(tmp_path: Path) -> Iterator[Callable[..., FakeWebUI]]:
    started: list[FakeWebUI] = []

    def start(webui: Path, *args: str) -> FakeWebUI:
        n = len(started)
        ready, log = tmp_path / f"ready{n}.json", tmp_path / f"webui{n}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, str(HERE / "fake_webui.py"), "--webui",
                                     str(webui), "--ready", str(ready), *args],
                                    stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not ready.exists() or not ready.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        fw = FakeWebUI(proc, json.loads(ready.read_text()), log)
        started.append(fw)
        return fw

    yield start
    for fw in started:
        if fw.proc.poll() is None:
            fw.proc.kill()
            fw.proc.wait()
        pid = fw.info.get("service_pid")
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)


def _service_pid(fw: FakeWebUI) -> int:
    assert fw.info["outcome"] == "started", fw.log.read_text()
    assert fw.info["verified"] is True
    pid = fw.info["service_pid"]
    assert isinstance(pid, int) and alive(pid)
    return pid


@pytest.mark.parametrize("how", ["sigkill", "ctrl-c", "restart"])
def test_the_service_stops_when_the_webui_dies(how: str, installed: tuple[Path, int],
                                               start_webui: Callable[..., FakeWebUI]) -> None:
    webui, port = installed
    fw = start_webui(webui, "--grace", "2")
    pid = _service_pid(fw)
    assert requests.get(f"{fw.url}/atelier/api/health", timeout=10).json()["status"] == "ok"
    if how == "sigkill":
        fw.proc.kill()
    elif how == "ctrl-c":  # A1111's handler: os._exit(0), no atexit hook runs
        fw.proc.send_signal(signal.SIGINT)
    else:  # Settings > Restart: restart.restart_program() -> os._exit(0)
        try:
            requests.post(f"{fw.url}/_test/restart", timeout=10)
        except requests.ConnectionError:
            pass
        assert (webui / "tmp" / "restart").exists()
    assert fw.proc.wait(30) in (0, -signal.SIGKILL)
    assert wait_gone(pid), f"the service (pid {pid}) outlived the WebUI ({how})"
    log = (webui / ".atelier/state/service.log").read_text()
    assert "the WebUI that started the service is gone" in log
    assert "stopping" in log


def test_a_restarted_webui_adopts_the_service_in_its_grace(
        installed: tuple[Path, int], start_webui: Callable[..., FakeWebUI],
        ext: ModuleType) -> None:
    webui, port = installed
    first = start_webui(webui, "--grace", "6")
    pid = _service_pid(first)
    first.proc.kill()
    first.proc.wait()
    # The restarted WebUI (same settings) takes the running service over...
    cfg = ext.load_config(webui / ".atelier/service.json")
    from atelier_ext import webui_settings

    sup = ext.Supervisor(cfg, env=webui_settings.service_env({}), grace=6)
    assert sup.ensure_running() == "adopted"
    assert sup.pid == pid and sup.verified
    time.sleep(8)  # past the grace: held by the new WebUI, it stays
    assert alive(pid)
    assert json.loads(cfg.pid_file.read_text())["parent"] == os.getpid()
    # ...and it follows the new one: once released, it stops after the grace.
    assert sup.stop() is False, "an adopted service is released, never killed"
    assert wait_gone(pid)


def test_a_leftover_with_other_settings_is_replaced(
        installed: tuple[Path, int], start_webui: Callable[..., FakeWebUI],
        ext: ModuleType) -> None:
    webui, port = installed
    first = start_webui(webui, "--grace", "30")
    old = _service_pid(first)
    first.proc.kill()
    first.proc.wait()
    cfg = ext.load_config(webui / ".atelier/service.json")
    sup = ext.Supervisor(cfg, env={"ATELIER_CIVITAI_TOKEN": "changed"}, grace=2)
    try:
        assert sup.ensure_running() == "replaced"
        assert sup.pid != old and not alive(old)
        assert json.loads(cfg.pid_file.read_text())["pid"] == sup.pid
    finally:
        assert sup.stop() is True
    assert not ext.is_answering(cfg.base_url)


def test_a_hung_leftover_is_killed_and_replaced(installed: tuple[Path, int],
                                                ext: ModuleType) -> None:
    webui, port = installed
    cfg = ext.load_config(webui / ".atelier/service.json")
    first = ext.Supervisor(cfg)
    assert first.ensure_running() == "started"
    hung = first.pid
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)  # answers nothing; its socket still accepts connections
    try:
        second = ext.Supervisor(cfg)
        assert second.ensure_running() == "started"
        assert second.pid != hung and not alive(hung)
        assert second.stop() is True
    finally:
        if alive(hung):
            os.kill(hung, signal.SIGKILL)
        first.stop()


def test_a_second_webui_shares_the_service_and_the_last_one_stops_it(
        installed: tuple[Path, int], ext: ModuleType) -> None:
    webui, port = installed
    cfg = ext.load_config(webui / ".atelier/service.json")
    first, second = ext.Supervisor(cfg, grace=1), ext.Supervisor(cfg, grace=1)
    assert first.ensure_running() == "started"
    assert first.ensure_running() == "running"
    assert second.ensure_running() == "adopted" and second.pid == first.pid
    pid = first.pid
    assert first.stop() is False, "another WebUI holds it: only released"
    time.sleep(3)
    assert ext.is_answering(cfg.base_url), "still held by the second WebUI"
    assert second.stop() is False
    assert wait_gone(pid)


def test_a_service_without_our_secret_is_used_but_not_trusted(
        installed: tuple[Path, int], ext: ModuleType, tmp_path: Path) -> None:
    webui, port = installed
    cfg = ext.load_config(webui / ".atelier/service.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env["ATELIER_GATEWAY_SECRET"] = "x" * 40  # someone else's secret
    with open(tmp_path / "foreign.log", "wb") as log:
        proc = subprocess.Popen([service_python(tmp_path / "bin"), "-m", "atelier", "serve",
                                 "--root", str(tmp_path / "nas"), "--state-dir",
                                 str(tmp_path / "other-state"), "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not ext.is_answering(cfg.base_url):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        sup = ext.Supervisor(cfg)
        assert sup.ensure_running() == "foreign"
        assert sup.verified is False and sup.pid is None
        assert proc.poll() is None, "never stopped: it is not ours"
    finally:
        proc.terminate()
        proc.wait(20)


def test_another_program_on_the_port_is_an_error(installed: tuple[Path, int],
                                                 ext: ModuleType) -> None:
    import http.server
    import threading

    webui, port = installed
    cfg = ext.load_config(webui / ".atelier/service.json")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                          http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ext.ServiceError, match="another program uses port"):
            ext.Supervisor(cfg).ensure_running()
    finally:
        srv.shutdown()
        srv.server_close()
