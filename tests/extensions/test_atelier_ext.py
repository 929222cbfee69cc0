"""atelier_ext's parts: the configuration install.py writes, the tab HTML, local state,
process lookup, the WebUI settings, the WebUI's auth, the cross-site check, and the
supervisor against the real service (``python -m atelier serve`` on a loopback port)."""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from ..conftest import free_port
from .conftest import EXT_SOURCE, install_webui


def test_the_extension_imports_nothing_but_the_standard_library() -> None:
    # It runs inside the WebUI, whose fastapi/pydantic must never meet the service's.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import atelier_ext; "
            "import atelier_ext.residency, atelier_ext.link, atelier_ext.webui_auth; "
            "bad = {'fastapi', 'pydantic', 'sqlalchemy', 'requests', 'starlette', 'httpx', "
            "'atelier', 'filebrowser', 'modelzoo', 'torch'} & "
            "{m.split('.')[0] for m in sys.modules}; print(sorted(bad))")
    out = subprocess.run([sys.executable, "-I", "-c", code, str(EXT_SOURCE)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_config_is_found_beside_the_installed_extension(ext: ModuleType, tmp_path: Path) -> None:
    webui = install_webui(tmp_path, 17862)
    installed = webui / "extensions" / "atelier"
    path = ext.find_config(installed, environ={})
    assert path == webui / ".atelier" / "service.json"
    cfg = ext.load_config(path)
    assert cfg.port == 17862 and cfg.base_url == "http://127.0.0.1:17862"
    assert ext.page_url(cfg, "/ui/files") == "./atelier/ui/files"
    assert cfg.state_dir == webui / ".atelier" / "state"
    assert cfg.log_file == cfg.state_dir / "service.log"
    assert cfg.argv[1:4] == ("-I", "-m", "atelier")
    assert cfg.argv_for("/other/nas")[cfg.argv.index("--root") + 1] == "/other/nas"
    assert cfg.argv_for(None) == cfg.argv
    other = tmp_path / "elsewhere.json"
    assert ext.find_config(installed, environ={ext.CONFIG_ENV: str(other)}) == other


@pytest.mark.parametrize(("content", "message"), [
    (None, "install.py"),
    ("{not json", "elsewhere.json"),
    ("[]", "not a JSON object"),
    ('{"argv": [], "port": 1, "state_dir": "s"}', "argv"),
    ('{"argv": ["py"], "port": 0, "state_dir": "s"}', "port"),
    ('{"argv": ["py"], "port": 7862}', "state_dir"),
])
def test_a_bad_config_says_what_is_wrong(ext: ModuleType, tmp_path: Path, content: str | None,
                                         message: str) -> None:
    path = tmp_path / "elsewhere.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ext.ConfigError, match=message):
        ext.load_config(path)


def test_tab_html_frames_the_page_through_the_webui_origin(ext: ModuleType) -> None:
    local = ext.ServiceConfig(argv=("py",), host="0.0.0.0", port=7862, state_dir=Path("s"),
                              log_file=Path("s/l"))
    assert local.base_url == "http://127.0.0.1:7862"
    files = ext.TABS[0]
    html = ext.tab_html(files, local)
    assert '<iframe src="./atelier/ui/files"' in html, "same origin, relative"
    assert "sandbox" not in html, "resumable uploads need the page's localStorage"
    assert 'href="./atelier/docs"' in html
    assert "7862" not in html, "the service's own port is never shown to the browser"
    assert [t.path for t in ext.TABS] == ["/ui/files", "/ui/models", "/ui/gpu"]
    assert [t.title for t in ext.TABS] == ["FileBrowser", "ModelZoo", "Models on GPU"]
    gw = ext.ServiceConfig(argv=("py",), host="0.0.0.0", port=7862, state_dir=Path("s"),
                           log_file=Path("s/l"), public_url='https://gw.example/a"b/')
    html = ext.tab_html(files, gw)
    assert '<iframe src="https://gw.example/a&quot;b/ui/files"' in html
    missing = ext.tab_html(files, None, "no <config>")
    assert "iframe" not in missing and "no &lt;config&gt;" in missing


# -- local state ----------------------------------------------------------------------


def test_the_gateway_secret_is_made_once_and_private(ext: ModuleType, tmp_path: Path) -> None:
    from atelier_ext import state

    path = tmp_path / "state" / "webui-gateway.secret"
    secrets = []

    def make() -> None:
        secrets.append(state.gateway_secret(path))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(secrets)) == 1 and len(secrets[0]) >= 32, "concurrent starts agree"
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)
    assert state.gateway_secret(path) == secrets[0]
    assert path.stat().st_mode & 0o777 == 0o600, "mode put back"
    path.write_text("short\n")
    fresh = state.gateway_secret(path)
    assert fresh != secrets[0] and len(fresh) >= 32
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporaries left"


def test_the_admin_notice_is_chosen_only_for_a_new_database(ext: ModuleType,
                                                            tmp_path: Path) -> None:
    from atelier_ext import state

    db = tmp_path / "atelier.db"
    notice = state.prepare_notice(tmp_path / "n.json", db, environ={})
    assert notice is not None and notice.shown and notice.status == state.PENDING
    assert (tmp_path / "n.json").stat().st_mode & 0o777 == 0o600
    again = state.prepare_notice(tmp_path / "n.json", db, environ={})
    assert again is not None and again.password == notice.password
    again.set(state.DISMISSED)
    gone = state.load_notice(tmp_path / "n.json")
    assert gone is not None and not gone.shown
    assert notice.password not in (tmp_path / "n.json").read_text()
    db.write_bytes(b"")  # an existing database: its admin's password is not ours to know
    old = state.prepare_notice(tmp_path / "m.json", db, environ={})
    assert old is not None and not old.shown
    assert state.prepare_notice(tmp_path / "o.json", tmp_path / "none.db",
                                environ={"ATELIER_ADMIN_PASSWORD": "chosen"}) is None
    html = ext.notice_html(notice, show_password=True)
    assert notice.password in html and "Dismiss" in html
    assert notice.password not in ext.notice_html(notice, show_password=False)
    assert ext.notice_html(gone, show_password=True) == ""


# -- processes ------------------------------------------------------------------------


def test_services_of_this_installation_are_found_by_command_line(ext: ModuleType,
                                                                 tmp_path: Path) -> None:
    from atelier_ext import procs

    recorded = ["/venv/bin/python", "-I", "-m", "atelier", "serve", "--root", "/nas",
                "--state-dir", str(tmp_path / "state"), "--port", "7862"]
    ours = ["python3", "-m", "atelier", "serve", "--state-dir", str(tmp_path / "state"),
            "--parent-fd", "5"]
    script = ["/venv/bin/python", "/venv/bin/atelier", "serve", "--state-dir",
              str(tmp_path / "state")]
    other = ["python3", "-m", "atelier", "serve", "--state-dir", str(tmp_path / "other")]
    assert procs.is_service(ours, recorded) and procs.is_service(script, recorded)
    assert not procs.is_service(other, recorded)
    assert not procs.is_service(["python3", "-m", "atelier", "users", "--state-dir",
                                 str(tmp_path / "state")], recorded)
    # a real process whose command line says so ("-c" code that sleeps)
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "atelier",
                             "serve", "--state-dir", str(tmp_path / "state")])
    try:
        deadline = time.monotonic() + 10
        while "serve" not in (procs.cmdline(fake.pid) or []):  # until it has exec'd
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert procs.find_services(recorded) == [fake.pid]
        assert procs.parent(fake.pid) == os.getpid()
        assert procs.terminate([fake.pid], timeout=10) == []
        fake.wait(10)
        assert procs.find_services(recorded) == []
    finally:
        fake.kill()


# -- WebUI settings -> service environment --------------------------------------------


def test_webui_settings_become_the_service_environment(ext: ModuleType) -> None:
    from atelier_ext import webui_settings as ws

    assert {s.key for s in ws.SETTINGS} >= {
        "atelier_nas_root", "atelier_civitai_token", "atelier_hf_mirrors",
        "atelier_ram_reserve_gib", "atelier_residency"}
    env = ws.service_env({"atelier_civitai_token": " tok ", "atelier_hf_mirrors":
                          "https://hf-mirror.com, https://b.example\nhttps://c.example",
                          "atelier_ram_reserve_gib": 3, "atelier_civitai_url": "",
                          "atelier_modelscope_url": "https://ms.example"})
    assert env["ATELIER_CIVITAI_TOKEN"] == "tok"
    assert json.loads(env["ATELIER_HF_MIRRORS"]) == [
        "https://hf-mirror.com", "https://b.example", "https://c.example"]
    assert env["ATELIER_GPU_RAM_RESERVE"] == str(3 << 30)
    assert env["ATELIER_MODELSCOPE_URL"] == "https://ms.example"
    assert "ATELIER_CIVITAI_URL" not in env, "empty: the service's default"
    assert "ATELIER_ROOT" not in env, "unset: install.py's --root stays"
    assert ws.service_env({"atelier_nas_root": "/mnt/nas"})["ATELIER_ROOT"] == "/mnt/nas"
    assert ws.nas_root({"atelier_nas_root": " /mnt/nas "}) == "/mnt/nas"
    assert ws.nas_root({}) is None
    assert ws.residency_on({}) is True and ws.residency_on({"atelier_residency": False}) is False
    assert ws.reserves({"atelier_ram_reserve_gib": "bad"}) == (2 << 30, int(0.8 * (1 << 30)))


# -- the WebUI's auth and the cross-site check ----------------------------------------


def _request(headers: dict[str, str], cookies: dict[str, str] | None = None,
             method: str = "GET") -> Any:
    return SimpleNamespace(headers={k.lower(): v for k, v in headers.items()},
                           cookies=cookies or {}, method=method)


def test_webui_auth_reads_gradio_tokens_and_api_auth(ext: ModuleType) -> None:
    from atelier_ext.webui_auth import Unauthenticated, WebUIAuth, parse_pairs

    assert parse_pairs("a:b, c:d:e ,bad,") == {"a": "b", "c": "d:e"}
    open_app = SimpleNamespace(auth=None, tokens={})
    assert WebUIAuth(open_app).identify(_request({})).via == "open"
    g3 = SimpleNamespace(auth={"bob": "pw"}, tokens={"tok": "bob"})
    auth = WebUIAuth(g3)
    assert auth.identify(_request({}, {"access-token-unsecure": "tok"})).user == "bob"
    with pytest.raises(Unauthenticated):
        auth.identify(_request({}, {"access-token": "forged"}))
    basic = "Basic " + base64.b64encode(b"bob:pw").decode()
    who = auth.identify(_request({"Authorization": basic}))
    assert (who.user, who.used_authorization) == ("bob", True)
    g4 = SimpleNamespace(auth={"bob": "pw"}, tokens={"tok": "bob"}, cookie_id="CID")
    auth4 = WebUIAuth(g4)
    assert auth4.webui_cookies() == ("access-token-CID", "access-token-unsecure-CID")
    assert auth4.identify(_request({}, {"access-token-CID": "tok"})).user == "bob"
    with pytest.raises(Unauthenticated):
        auth4.identify(_request({}, {"access-token": "tok"}))
    api = WebUIAuth(SimpleNamespace(), "alice:secret")
    good = "Basic " + base64.b64encode(b"alice:secret").decode()
    assert api.enabled and api.identify(_request({"Authorization": good})).user == "alice"
    for header in ("Basic " + base64.b64encode(b"alice:nope").decode(), "Basic !!!",
                   "Bearer x"):
        with pytest.raises(Unauthenticated):
            api.identify(_request({"Authorization": header}))
    dep = SimpleNamespace(auth=None, auth_dependency=lambda r: "oauth-user")
    assert WebUIAuth(dep).identify(_request({})).user == "oauth-user"


def test_cross_site_requests_are_told_apart(ext: ModuleType) -> None:
    pytest.importorskip("starlette")
    from atelier_ext.proxy import cross_site

    host = {"Host": "webui.example:7860"}
    post = "POST"
    assert not cross_site(_request(host, method="GET"))
    assert not cross_site(_request({**host, "Sec-Fetch-Site": "same-origin"}, method=post))
    assert cross_site(_request({**host, "Sec-Fetch-Site": "cross-site"}, method=post))
    assert cross_site(_request({**host, "Sec-Fetch-Site": "same-site"}, method=post))
    assert not cross_site(_request(host, method=post)), "no browser headers: not a browser"
    assert not cross_site(_request({**host, "Origin": "http://webui.example:7860"},
                                   method=post))
    assert cross_site(_request({**host, "Origin": "http://evil.example"}, method=post))
    assert cross_site(_request({**host, "Origin": "null"}, method=post))
    behind = {"Host": "127.0.0.1:7860", "X-Forwarded-Host": "gw.example",
              "Origin": "https://gw.example"}
    assert not cross_site(_request(behind, method=post))
    cors = {**host, "Sec-Fetch-Site": "cross-site", "Origin": "https://app.example"}
    assert not cross_site(_request(cors, method=post), {"https://app.example"})


# -- the supervisor -------------------------------------------------------------------


@pytest.fixture
def installed(tmp_path: Path, ext: ModuleType) -> tuple[Path, Any]:
    webui = install_webui(tmp_path, free_port())
    return webui, ext.load_config(webui / ".atelier" / "service.json")


def test_supervisor_starts_reuses_and_stops_the_real_service(
        ext: ModuleType, installed: tuple[Path, Any]) -> None:
    import requests

    webui, cfg = installed
    sup = ext.Supervisor(cfg, env={"ATELIER_ADMIN_PASSWORD": "admin-pass-123"})
    try:
        assert not ext.is_answering(cfg.base_url)
        assert sup.ensure_running() == "started"
        assert ext.is_answering(cfg.base_url) and sup.verified
        r = requests.post(f"{cfg.base_url}/api/tokens", auth=("admin", "admin-pass-123"),
                          json={"name": "t"}, timeout=10)
        assert r.status_code in (200, 201), "the env reached the service"
        assert sup.ensure_running() == "running"
        rec = json.loads(cfg.pid_file.read_text())
        assert rec["pid"] == sup.pid and rec["parent"] == os.getpid()
        env = Path(f"/proc/{sup.pid}/environ").read_bytes().split(b"\0")
        assert f"ATELIER_GATEWAY_SECRET={sup.secret}".encode() in env
        assert b"ATELIER_PROXY_USER_HEADER=X-Forwarded-User" in env
        argv = Path(f"/proc/{sup.pid}/cmdline").read_bytes().split(b"\0")
        assert b"--parent-fd" in argv and b"--orphan-grace" in argv
        assert cfg.log_file.is_file() and "starting" in cfg.log_file.read_text()
        assert (webui / ".atelier" / "state" / "atelier.db").is_file()
    finally:
        stopped = sup.stop()
    assert stopped is True
    assert sup.process is None and not cfg.pid_file.exists()
    assert not ext.is_answering(cfg.base_url)
    assert sup.stop() is False


def test_supervisor_reports_a_service_that_cannot_start(
        ext: ModuleType, installed: tuple[Path, Any]) -> None:
    _, cfg = installed
    # Something else holds the port: the service fails to bind and exits. (Bound, not
    # listening: health checks are refused at once instead of waiting on a silent peer.)
    with socket.socket() as s:
        s.bind(("127.0.0.1", cfg.port))
        sup = ext.Supervisor(cfg)
        with pytest.raises(ext.ServiceError, match="exited with code") as info:
            sup.ensure_running()
    assert "address already in use" in str(info.value).lower()
    assert sup.process is None and not sup.verified


def test_is_answering_wants_the_atelier_health_answer(ext: ModuleType) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        body = b'{"status": "starting"}'

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self.send_response(200 if self.path == "/api/health" else 404)
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        assert ext.is_answering(url) is False, "another program on the port is not the service"
        Handler.body = json.dumps({"status": "ok"}).encode()
        assert ext.is_answering(url) is True
    finally:
        srv.shutdown()
        srv.server_close()
    assert ext.is_answering(url) is False
