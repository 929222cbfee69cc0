"""``/atelier/...`` on the WebUI's own origin: a real FastAPI app (the stand-in gradio
``App`` with A1111's GZip and CORS middleware) served by uvicorn on loopback, the
extension's ``on_app_started`` mounting the route, and the real service behind it,
started by the extension.

Uploads (tus with tuspy, a streamed WebDAV PUT), Range downloads and Server-Sent Events go
through it; the WebUI's auth guards it and names the user to the service; headers a
browser sends to pose as someone are dropped.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from tusclient import client as tus_client

from ..conftest import ADMIN_PASSWORD, free_port
from .conftest import install_webui, load_script


@dataclass
class Proxied:
    url: str  # the WebUI
    service: str  # the service, directly
    webui: Path
    nas: Path
    rt: Any
    app: Any

    @property
    def secret(self) -> str:
        return str(self.rt.supervisor.secret)

    def token(self, user: str = "admin", password: str = ADMIN_PASSWORD, **kw: Any) -> str:
        r = requests.post(f"{self.url}/atelier/api/tokens", auth=(user, password),
                          json={"name": "t"}, timeout=10, **kw)
        assert r.status_code in (200, 201), r.text
        return str(r.json()["token"])


def _a1111_middleware(app: Any) -> None:
    """modules/initialize_util.py: setup_middleware (GZip minimum 1000 bytes, CORS)."""
    from starlette.middleware.cors import CORSMiddleware
    from starlette.middleware.gzip import GZipMiddleware

    app.middleware_stack = None
    app.add_middleware(GZipMiddleware, minimum_size=1000)
    app.add_middleware(CORSMiddleware, allow_methods=["*"], allow_headers=["*"],
                       allow_credentials=True)
    app.middleware_stack = app.build_middleware_stack()


@pytest.fixture
def proxied(tmp_path: Path, make_webui: Callable[..., Any],
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Proxied]]:
    import uvicorn

    monkeypatch.setenv("ATELIER_ADMIN_PASSWORD", ADMIN_PASSWORD)
    servers: list[Any] = []

    def start(*, gradio_auth: str | None = None, api_auth: str | None = None,
              gradio_version: int = 3) -> Proxied:
        port = free_port()
        root = tmp_path / f"w{len(servers)}"
        webui = install_webui(root, port)
        w = make_webui("a1111", gradio_version=gradio_version, api_auth=api_auth,
                       gradio_auth=gradio_auth, config_file=webui / "config.json")
        load_script(webui / "extensions" / "atelier")
        w.run("ui_settings")
        app = w.gradio.routes.App()
        if gradio_auth:
            app.auth = dict(p.split(":", 1) for p in gradio_auth.split(","))
        _a1111_middleware(app)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(),
                                               log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        while not server.started:
            time.sleep(0.02)
        [started] = w.run("app_started", None, app)
        started.join(120)
        import atelier_ext

        rt = atelier_ext.runtime(atelier_ext.load_config(webui / ".atelier/service.json"),
                                 lambda: w.shared.opts.data)
        assert rt.supervisor.outcome == "started", rt.error
        return Proxied(f"http://127.0.0.1:{server.config.port}", f"http://127.0.0.1:{port}",
                       webui, root / "nas", rt, app)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


# -- streaming ------------------------------------------------------------------------


def test_a_tus_upload_goes_through_and_resumes(proxied: Callable[..., Proxied],
                                               tmp_path: Path) -> None:
    p = proxied()
    token = p.token()
    data = os.urandom(6 * 1024 * 1024 + 77)
    src = tmp_path / "model.safetensors"
    src.write_bytes(data)
    client = tus_client.TusClient(f"{p.url}/atelier/api/tus/",
                                  headers={"Authorization": f"Bearer {token}"})
    meta = {"filename": "model.safetensors", "folder": "models/Lora"}
    first = client.uploader(str(src), chunk_size=1024 * 1024, metadata=meta,
                            upload_checksum=True)
    first.upload(stop_at=3 * 1024 * 1024)
    assert first.url.startswith(f"{p.url}/atelier/api/tus/"), "Location stays on the WebUI"
    second = client.uploader(str(src), url=first.url, chunk_size=1024 * 1024,
                             upload_checksum=True)
    assert second.offset == 3 * 1024 * 1024
    second.upload()
    assert (p.nas / "models/Lora/model.safetensors").read_bytes() == data
    h = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    r = requests.head(first.url, headers=h, timeout=10)
    assert r.status_code == 200 and r.headers["Upload-Offset"] == str(len(data))
    r = requests.options(f"{p.url}/atelier/api/tus/", headers=h, timeout=10)
    assert r.status_code == 204 and r.headers["Tus-Version"] == "1.0.0"
    unfinished = client.uploader(str(src), chunk_size=1024 * 1024, metadata={
        "filename": "other.bin", "folder": "models/Lora"})
    unfinished.upload(stop_at=1024 * 1024)
    r = requests.delete(unfinished.url, headers=h, timeout=10)  # tus termination
    assert r.status_code == 204
    assert requests.head(unfinished.url, headers=h, timeout=10).status_code in (404, 410)


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_big_put_streams_without_holding_the_body(proxied: Callable[..., Proxied]) -> None:
    p = proxied()
    token = p.token()
    size, piece = 320 * 1024 * 1024, os.urandom(1024 * 1024)
    digest = hashlib.sha256()

    class Body:  # made as it is read: the client holds no copy either
        sent = 0

        def __len__(self) -> int:
            return size

        def read(self, n: int = -1) -> bytes:
            if self.sent >= size:
                return b""
            self.sent += len(piece)
            digest.update(piece)
            return piece

    before = _peak_rss()
    r = requests.put(f"{p.url}/atelier/dav/users/admin/big.bin", data=Body(),
                     headers={"Authorization": f"Bearer {token}"}, timeout=300)
    assert r.status_code in (200, 201, 204), r.text
    grown = _peak_rss() - before
    # The WebUI process (this one) serves the proxy: a buffered body would show here.
    assert grown < 96 * 1024 * 1024, f"the WebUI grew by {grown >> 20} MiB"
    out = p.nas / "users/admin/big.bin"
    assert out.stat().st_size == size
    with open(out, "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == digest.hexdigest()


def test_range_downloads_pass_through_uncompressed(proxied: Callable[..., Proxied]) -> None:
    p = proxied()
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {p.token()}"
    data = os.urandom(200_000)
    (p.nas / "models" / "VAE").mkdir(parents=True, exist_ok=True)
    (p.nas / "models/VAE/x.bin").write_bytes(data)
    url = f"{p.url}/atelier/api/fs/download"
    gz = {"Accept-Encoding": "gzip"}
    r = s.get(url, params={"path": "models/VAE/x.bin"}, headers={**gz, "Range": "bytes=100-1099"},
              timeout=10)
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
    assert "Content-Encoding" not in r.headers, "the WebUI's GZipMiddleware kept out"
    assert r.content == data[100:1100]
    full = s.get(url, params={"path": "models/VAE/x.bin"}, headers=gz, timeout=10)
    assert full.status_code == 200 and full.content == data
    assert full.headers["Content-Length"] == str(len(data))
    assert "Content-Encoding" not in full.headers
    assert full.headers.get("Accept-Ranges") == "bytes"
    cond = s.get(url, params={"path": "models/VAE/x.bin"}, timeout=10,
                 headers={"If-None-Match": full.headers["ETag"]})
    assert cond.status_code == 304
    # HEAD: whatever the service answers, the same through the proxy, with no body
    direct = s.head(f"{p.service}/api/fs/download", params={"path": "models/VAE/x.bin"},
                    timeout=10)
    head = s.head(url, params={"path": "models/VAE/x.bin"}, timeout=10)
    assert head.status_code == direct.status_code and head.content == b""
    assert head.headers.get("Content-Length") == direct.headers.get("Content-Length")
    # WebDAV methods the WebUI's own routes never see
    r = s.request("PROPFIND", f"{p.url}/atelier/dav/models/", headers={"Depth": "1"}, timeout=10)
    assert r.status_code == 207


def test_server_sent_events_arrive_one_by_one(proxied: Callable[..., Proxied]) -> None:
    p = proxied()
    token = p.token()
    with requests.get(f"{p.url}/atelier/api/gpu/webui/events", stream=True, timeout=20,
                      headers={"Authorization": f"Bearer {token}",
                               "Accept-Encoding": "gzip"}) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert "Content-Encoding" not in r.headers
        lines = r.iter_lines(decode_unicode=True)
        first = [next(lines) for _ in range(3)]
        assert first[1] == "event: state"
        # A report reaches the service now; its event must reach us while the stream
        # stays open (a buffering proxy or gzip would hold it back).
        version = int(first[0].split(": ")[1])
        rr = requests.post(f"{p.service}/api/gpu/webui/report",
                           headers={"X-Atelier-Gateway": p.secret},
                           json={"webui": {"generation": "test-marker"}}, timeout=10)
        assert rr.status_code == 200
        seen = []
        for line in lines:
            seen.append(line)
            if "test-marker" in line:
                break
        ids = [int(x.split(": ")[1]) for x in seen if x.startswith("id: ")]
        assert ids and ids[-1] > version


def test_cookies_are_scoped_to_the_prefix_and_the_session_works(
        proxied: Callable[..., Proxied]) -> None:
    p = proxied()
    s = requests.Session()
    r = s.post(f"{p.url}/atelier/api/login", json={"username": "admin",
                                                    "password": ADMIN_PASSWORD}, timeout=10)
    assert r.status_code == 200
    cookies = r.raw.headers.getlist("Set-Cookie")
    assert len(cookies) == 2, "both cookies pass, each its own header"
    assert all("Path=/atelier/" in c for c in cookies), cookies
    me = s.get(f"{p.url}/atelier/api/me", timeout=10)
    assert me.status_code == 200 and me.json()["name"] == "admin"
    csrf = r.json()["csrf_token"]
    assert s.post(f"{p.url}/atelier/api/logout", headers={"X-CSRF-Token": csrf},
                  timeout=10).status_code == 200
    assert s.get(f"{p.url}/atelier/api/me", timeout=10).status_code == 401


# -- who ------------------------------------------------------------------------------


def test_without_webui_auth_no_user_is_named(proxied: Callable[..., Proxied]) -> None:
    p = proxied()
    spoof = {"X-Forwarded-User": "admin", "X-Atelier-Gateway": "guess",
             "X-Forwarded-For": "1.2.3.4"}
    r = requests.get(f"{p.url}/atelier/api/me", headers=spoof, timeout=10)
    assert r.status_code == 401, "the service's own login applies"
    assert requests.get(f"{p.url}/atelier/_webui/status", timeout=10).json()["via"] == "open"


@pytest.mark.parametrize("gradio_version", [3, 4])
def test_gradio_login_maps_the_webui_user_to_an_atelier_user(
        proxied: Callable[..., Proxied], gradio_version: int) -> None:
    p = proxied(gradio_auth="bob:bob-pw,admin:webui-admin-pw", gradio_version=gradio_version)
    anon = requests.get(f"{p.url}/atelier/api/me", timeout=10)
    assert anon.status_code == 401 and anon.json()["error"] == "unauthorized"
    assert "WWW-Authenticate" not in anon.headers, "no Basic prompt without --api-auth"
    s = requests.Session()
    assert s.post(f"{p.url}/login", data={"username": "bob", "password": "bob-pw"},
                  timeout=10).status_code == 200
    # requests drops the Secure cookie on http, as a browser does: the -unsecure one works
    me = s.get(f"{p.url}/atelier/api/me", timeout=10)
    assert me.status_code == 200, me.text
    assert me.json()["name"] == "bob" and me.json()["role"] == "user"
    # what the browser adds to pose as someone else is dropped
    spoof = s.get(f"{p.url}/atelier/api/me", timeout=10, headers={
        "X-Forwarded-User": "admin", "X-Atelier-Gateway": p.secret})
    assert spoof.json()["name"] == "bob"
    # the WebUI's login token is not handed to the service
    assert s.get(f"{p.url}/atelier/_webui/status", timeout=10).json()["user"] == "bob"
    # state changes need this origin: gradio's cookie is SameSite=None
    mk = {"path": "users/bob/made"}
    r = s.post(f"{p.url}/atelier/api/fs/mkdir", json=mk, timeout=10,
               headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"] == "cross_site"
    r = s.post(f"{p.url}/atelier/api/fs/mkdir", json=mk, timeout=10,
               headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    host = p.url.split("//", 1)[1]
    r = s.post(f"{p.url}/atelier/api/fs/mkdir", json=mk, timeout=10,
               headers={"Sec-Fetch-Site": "same-origin", "Origin": f"http://{host}"})
    assert r.status_code in (200, 201), r.text
    assert (p.nas / "users/bob/made").is_dir()


def test_api_auth_basic_names_the_user_and_wrong_ones_are_refused(
        proxied: Callable[..., Proxied]) -> None:
    p = proxied(api_auth="alice:alice-pw")
    r = requests.get(f"{p.url}/atelier/api/me", auth=("alice", "alice-pw"), timeout=10)
    assert r.status_code == 200 and r.json()["name"] == "alice"
    bad = requests.get(f"{p.url}/atelier/api/me", auth=("alice", "nope"), timeout=10)
    assert bad.status_code == 401
    assert bad.headers["WWW-Authenticate"].startswith("Basic")
    # an Atelier token alone is not a WebUI credential
    token = base64.b64encode(b"x").decode()
    assert requests.get(f"{p.url}/atelier/api/me", timeout=10,
                        headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_a_local_process_without_the_secret_is_not_believed(
        proxied: Callable[..., Proxied]) -> None:
    p = proxied(gradio_auth="bob:bob-pw")
    me = f"{p.service}/api/me"
    assert requests.get(me, headers={"X-Forwarded-User": "admin"}, timeout=10).status_code == 401
    wrong = requests.get(me, headers={"X-Forwarded-User": "admin",
                                      "X-Atelier-Gateway": "x" * 43}, timeout=10)
    assert wrong.status_code == 401 and "gateway" in wrong.json()["message"]
    secret = (p.webui / ".atelier/state/webui-gateway.secret")
    assert secret.stat().st_mode & 0o777 == 0o600
    right = requests.get(me, headers={"X-Forwarded-User": "carol",
                                      "X-Atelier-Gateway": secret.read_text().strip()},
                         timeout=10)
    assert right.status_code == 200 and right.json()["name"] == "carol"


def test_a_dead_service_answers_503_and_is_started_again(
        proxied: Callable[..., Proxied]) -> None:
    p = proxied()
    old = p.rt.supervisor.pid
    p.rt.supervisor.stop()
    r = requests.get(f"{p.url}/atelier/api/health", timeout=10)
    assert r.status_code == 503 and r.json()["error"] == "service_unavailable"
    assert r.headers["Retry-After"] == "5"
    deadline = time.monotonic() + 180  # a service start on a busy machine
    # the new service answers a moment before its supervisor has verified and recorded it
    # (until then the proxy sends no gateway secret): wait for both
    while time.monotonic() < deadline:
        r = requests.get(f"{p.url}/atelier/api/health", timeout=10)
        if r.status_code == 200 and p.rt.supervisor.verified:
            break
        time.sleep(0.5)
    assert r.status_code == 200, p.rt.error
    assert p.rt.supervisor.verified and p.rt.supervisor.pid not in (None, old)


def test_the_bare_prefix_redirects_and_other_routes_stay_the_webuis(
        proxied: Callable[..., Proxied]) -> None:
    p = proxied()
    r = requests.get(f"{p.url}/atelier", allow_redirects=False, timeout=10)
    assert r.status_code == 307 and r.headers["Location"] == "./atelier/"
    r = requests.get(f"{p.url}/atelierx", timeout=10)
    assert r.status_code == 404
    openapi = requests.get(f"{p.url}/openapi.json", timeout=10).json()
    assert not [k for k in openapi.get("paths", {}) if k.startswith("/atelier")]
