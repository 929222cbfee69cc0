"""atelier_ext: the configuration install.py writes, the tab HTML, and the supervisor
against the real service (``python -m atelier serve`` on a loopback port)."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from ..conftest import ADMIN_PASSWORD, free_port
from .conftest import EXT_SOURCE, install_webui


def test_the_extension_imports_nothing_but_the_standard_library() -> None:
    # It runs inside the WebUI, whose fastapi/pydantic must never meet the service's.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import atelier_ext; "
            "bad = {'fastapi', 'pydantic', 'sqlalchemy', 'requests', 'starlette', 'atelier', "
            "'filebrowser', 'modelzoo'} & {m.split('.')[0] for m in sys.modules}; "
            "print(sorted(bad))")
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
    assert cfg.page_url("/ui/files") == "http://127.0.0.1:17862/ui/files"
    assert cfg.state_dir == webui / ".atelier" / "state"
    assert cfg.log_file == cfg.state_dir / "service.log"
    assert cfg.argv[:4] == (sys.executable, "-I", "-m", "atelier")
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


def test_tab_html_frames_the_page_and_escapes(ext: ModuleType) -> None:
    cfg = ext.ServiceConfig(argv=("py",), host="0.0.0.0", port=7862, state_dir=Path("s"),
                            log_file=Path("s/l"), public_url='https://gw.example/a"b/')
    files = ext.TABS[0]
    html = ext.tab_html(files, cfg)
    assert '<iframe src="https://gw.example/a&quot;b/ui/files"' in html
    assert 'href="https://gw.example/a&quot;b/docs"' in html
    assert [t.title for t in ext.TABS] == ["FileBrowser", "ModelZoo", "Models on GPU"]
    local = ext.ServiceConfig(argv=("py",), host="0.0.0.0", port=7862, state_dir=Path("s"),
                              log_file=Path("s/l"))
    assert local.base_url == "http://127.0.0.1:7862"
    missing = ext.tab_html(files, None, "no <config>")
    assert "iframe" not in missing and "no &lt;config&gt;" in missing


@pytest.fixture
def installed(tmp_path: Path, ext: ModuleType) -> Iterator[tuple[Path, Any]]:
    """A fake WebUI with Atelier installed on a free port, and its loaded config."""
    webui = install_webui(tmp_path, free_port())
    cfg = ext.load_config(webui / ".atelier" / "service.json")
    yield webui, cfg


def test_supervisor_starts_reuses_and_stops_the_real_service(
        ext: ModuleType, installed: tuple[Path, Any]) -> None:
    webui, cfg = installed
    env = {"ATELIER_ADMIN_PASSWORD": ADMIN_PASSWORD}
    first = ext.Supervisor(cfg, env=env)
    second = ext.Supervisor(cfg, env=env)
    try:
        assert not ext.is_answering(cfg.base_url)
        assert first.ensure_running() is True
        assert ext.is_answering(cfg.base_url)
        r = requests.post(f"{cfg.base_url}/api/tokens", auth=("admin", ADMIN_PASSWORD),
                          json={"name": "t"}, timeout=10)
        assert r.status_code in (200, 201), "the env reached the service"
        assert first.ensure_running() is False, "already answering: nothing started"
        # A second WebUI process (or a reloaded UI) uses the running service...
        assert second.ensure_running() is False and second.process is None
        # ...and never stops one it did not start.
        assert second.stop() is False
        assert ext.is_answering(cfg.base_url)
        assert cfg.log_file.is_file() and "starting" in cfg.log_file.read_text()
        assert (webui / ".atelier" / "state" / "atelier.db").is_file()
    finally:
        stopped = first.stop()
    assert stopped is True
    assert first.process is None
    assert not ext.is_answering(cfg.base_url)
    assert first.stop() is False


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
    assert sup.process is None


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
