"""The desktop client (``atelier push``) through nginx balancing two replicas round-robin:
its PATCHes land on both, one replica is killed with -9 half way, and the client's
resume (HEAD, then PATCH from the offset) goes on through the survivor."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from atelier_io.http import Client
from filebrowser.client.push import Pusher
from filebrowser.client.transfers import ResumeStore, Retry

from ..conftest import Server, free_port
from ..filebrowser.images.conftest import wait_until
from ..filebrowser.transfers.conftest import sha256

MiB = 1024 * 1024
CONF = """
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
  log_format up '$request_method $uri $status $upstream_addr';
  access_log {d}/access.log up;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  client_max_body_size 0;
  upstream atelier {{
    server 127.0.0.1:{a} max_fails=1 fail_timeout=30s;
    server 127.0.0.1:{b} max_fails=1 fail_timeout=30s;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://atelier;
      proxy_http_version 1.1;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_set_header Host $http_host;
    }}
  }}
}}
"""


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[Callable[[Server, Server], str]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(a: Server, b: Server) -> str:
        d = tmp_path / "nginx"
        d.mkdir()
        port = free_port()
        (d / "nginx.conf").write_text(CONF.format(d=d, port=port, a=a.port, b=b.port))
        procs.append(subprocess.Popen(["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(url), timeout=20, what="nginx")
        return url

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/health", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def test_push_through_a_balancer_survives_the_loss_of_a_replica(
        replicas: Callable[..., list[Server]], balancer: Callable[[Server, Server], str],
        tmp_path: Path) -> None:
    a, b = replicas()
    url = balancer(a, b)
    src = tmp_path / "big.safetensors"
    src.write_bytes(os.urandom(24 * MiB))
    token = a.session().headers["Authorization"]
    pusher = Pusher(Client(url, headers={"Authorization": token}),
                    ResumeStore(tmp_path / "resume.json"), chunk_size=2 * MiB,
                    retry=Retry(attempts=20, first=0.2, cap=1), rate=4 * MiB)
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(
        pusher.push(src, "users/admin", "big.safetensors")))
    t.start()
    log = tmp_path / "nginx" / "access.log"

    def patched_on(skip: int = 0) -> list[str]:
        return [line.split()[-1] for line in log.read_text().splitlines()[skip:]
                if line.startswith("PATCH ") and line.split()[2] == "204"]

    # round-robin: both replicas have taken PATCHes of the same upload
    wait_until(lambda: len(set(patched_on())) == 2, timeout=30, what="PATCHes on both")
    a.kill9()
    killed_at = len(log.read_text().splitlines())
    t.join(120)
    assert result, "the push did not finish"
    assert sha256(b.root / "users/admin/big.safetensors") == sha256(src)
    assert not [n for n in os.listdir(b.root / "users/admin") if n.startswith(".atelier-tmp")]
    # the survivor took the rest, from the offset it read in the shared state
    after = patched_on(killed_at)
    assert after and set(after) == {f"127.0.0.1:{b.port}"}, after
