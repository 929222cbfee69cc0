"""The pages below a proxy prefix: nginx on loopback serves the service at /atelier/
(stripping the prefix, as the WebUI's proxy does), with a request body limit smaller than
one upload chunk. Links, assets, API calls, thumbnails and tus all stay under the prefix."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image
from playwright.sync_api import expect

from ..conftest import Server, free_port
from .conftest import login

MB = 1024 * 1024
CONF = """
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  client_max_body_size 8m;
  server {{
    listen 127.0.0.1:{port};
    location = / {{ return 404; }}
    location /atelier/ {{
      proxy_pass http://127.0.0.1:{upstream}/;
      proxy_http_version 1.1;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_set_header Host $http_host;
    }}
  }}
}}
"""


@pytest.fixture
def proxied(server: Server, tmp_path: Path) -> Iterator[str]:
    """The service at http://127.0.0.1:PORT/atelier/; nginx's log in tmp_path/nginx."""
    d = tmp_path / "nginx"
    d.mkdir()
    port = free_port()
    (d / "nginx.conf").write_text(CONF.format(d=d, port=port, upstream=server.port))
    proc = subprocess.Popen(["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/atelier/"
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(base + "api/health", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, (d / "error.log").read_text()
        time.sleep(0.05)
    yield base
    proc.send_signal(signal.SIGQUIT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_pages_work_below_a_prefix(server: Server, proxied: str, open_page,
                                   tmp_path: Path) -> None:
    home = server.root / "users" / "admin" / "pics"
    home.mkdir(parents=True)
    Image.new("RGB", (40, 30), (10, 200, 90)).save(home / "green.png")
    r = requests.get(proxied, timeout=10, allow_redirects=False)
    assert r.headers["location"] == "ui/"
    w = open_page(server)
    page = w.page
    seen: list[str] = []
    page.on("request", lambda req: seen.append(req.url))
    page.goto(proxied)
    page.wait_for_url(proxied + "ui/login**")
    login(page, proxied.rstrip("/"))
    page.goto(proxied + "ui/files/users/admin/pics")
    thumb = page.locator("[data-testid=item][data-path='users/admin/pics/green.png'] img")
    expect(thumb).to_be_visible()
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=thumb.element_handle())
    # a file bigger than the proxy's body limit: the 413 makes the chunks smaller
    w.allow("413")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(20 * MB))
    page.get_by_test_id("file-input").set_input_files(str(src))
    expect(page.locator("[data-testid=upload-item][data-state=done]")).to_have_count(
        1, timeout=60_000)
    got = (home / "big.bin").read_bytes()
    assert hashlib.sha256(got).digest() == hashlib.sha256(src.read_bytes()).digest()
    expect(page.locator("[data-testid=item][data-path='users/admin/pics/big.bin']")).to_be_visible()
    log = (tmp_path / "nginx" / "access.log").read_text().splitlines()
    patches = [line for line in log if '"PATCH /atelier/api/tus/' in line]
    assert any('" 413 ' in line for line in patches), "the first chunk was not refused"
    assert any('" 204 ' in line for line in patches)
    # every request the page made stayed below the prefix
    origin = proxied.split("/atelier/")[0]
    outside = [u for u in seen if u.startswith(origin) and not u.startswith(proxied)]
    assert not outside, outside
    # deep links and the other pages, straight through the proxy
    for name in ("images", "gpu", "admin", "models"):
        page.goto(proxied + "ui/" + name)
        expect(page.get_by_test_id("nav-" + name)).to_have_attribute("aria-current", "page")
