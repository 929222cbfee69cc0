"""scripts/atelier_tabs.py loaded as the WebUI loads it, against the stand-in WebUI
modules and gradio (``webui_standins``): what it registers, the tabs it builds, its
settings, and what its app_started callback does with the real service.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from ..conftest import ADMIN_PASSWORD, free_port
from .conftest import EXT_SOURCE, install_webui, load_script
from .webui_standins import Blocks


def test_registers_its_callbacks_and_builds_nothing_at_import(
        make_webui: Callable[..., Any], tmp_path: Path) -> None:
    w = make_webui()
    webui = install_webui(tmp_path, 17862)
    load_script(webui / "extensions" / "atelier")
    assert {k: len(v) for k, v in w.callbacks.items()} == {
        "ui_tabs": 1, "ui_settings": 1, "app_started": 1, "model_loaded": 1}
    assert Blocks.made == [], "no UI is built at import"
    assert "atelier_ext.proxy" not in sys.modules, "starlette/httpx only once mounted"


def test_three_tabs_frame_the_pages_through_the_webui_origin(
        make_webui: Callable[..., Any], tmp_path: Path) -> None:
    w = make_webui()
    webui = install_webui(tmp_path, 17862)
    load_script(webui / "extensions" / "atelier")
    [tabs] = w.run("ui_tabs")
    assert [(t[1], t[2]) for t in tabs] == [
        ("FileBrowser", "atelier_files"), ("ModelZoo", "atelier_models"),
        ("Models on GPU", "atelier_gpu")]
    for (block, _, _), path in zip(tabs, ("/ui/files", "/ui/models", "/ui/gpu"), strict=True):
        assert block.kwargs == {"analytics_enabled": False}
        [html] = block.children
        assert html.kind == "HTML"
        assert f'<iframe src="./atelier{path}"' in html.value
        assert "sandbox" not in html.value and "127.0.0.1" not in html.value


def test_settings_page_has_an_atelier_section(make_webui: Callable[..., Any],
                                              tmp_path: Path) -> None:
    w = make_webui()
    webui = install_webui(tmp_path, 17862)
    load_script(webui / "extensions" / "atelier")
    w.run("ui_settings")
    labels = w.shared.opts.data_labels
    ours = {k: v for k, v in labels.items() if k.startswith("atelier_")}
    assert {"atelier_nas_root", "atelier_civitai_token", "atelier_hf_mirrors",
            "atelier_ram_reserve_gib", "atelier_residency"} <= set(ours)
    assert {v.section for v in ours.values()} == {("atelier", "Atelier")}
    assert all(v.onchange is not None for v in ours.values()), "a change restarts the service"
    assert ours["atelier_civitai_token"].component_args == {"type": "password"}
    assert ours["atelier_residency"].component is w.gradio.Checkbox
    assert w.shared.opts.data["atelier_residency"] is True


def test_without_a_config_the_tabs_say_how_to_install(make_webui: Callable[..., Any],
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_webui()
    monkeypatch.setenv("ATELIER_SERVICE_CONFIG", str(tmp_path / "missing.json"))
    load_script(EXT_SOURCE)
    [tabs] = w.run("ui_tabs")
    assert len(tabs) == 3
    for block, _, _ in tabs:
        [html] = block.children
        assert "iframe" not in html.value and "install.py" in html.value
    assert w.run("app_started", None, object()) == [None]


def _app(w: Any) -> Any:
    return w.gradio.routes.App()


def test_app_started_mounts_the_route_and_starts_the_service(
        make_webui: Callable[..., Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_ADMIN_PASSWORD", ADMIN_PASSWORD)
    port = free_port()
    webui = install_webui(tmp_path, port)
    w = make_webui(config_file=tmp_path / "config.json")
    load_script(webui / "extensions" / "atelier")
    w.run("ui_settings")
    ext = sys.modules["atelier_ext"]
    assert Path(str(ext.__file__)).is_relative_to(webui / "extensions" / "atelier")
    app = _app(w)
    [thread] = w.run("app_started", None, app)  # demo is None under --nowebui
    thread.join(120)
    rt = sys.modules["atelier_ext.runtime"]._RUNTIMES  # type: ignore[attr-defined]
    [runtime] = rt.values()
    sup = runtime.supervisor
    assert sup.outcome == "started" and sup.verified
    assert [r.path for r in app.router.routes[:2]] == ["/atelier", "/atelier/{path:path}"]
    pid = sup.pid
    # "Reload UI": the script runs again on a new app; the service carries over.
    load_script(webui / "extensions" / "atelier")
    new_app = _app(w)
    [again] = w.callbacks["app_started"][-1:]
    again(None, new_app).join(60)
    assert sup.pid == pid and sup.outcome == "running"
    assert new_app.router.routes[1].path == "/atelier/{path:path}"
    # a setting changes: the service restarts with it (once, however many fields changed)
    other_nas = tmp_path / "other-nas"
    other_nas.mkdir()
    w.shared.opts.set("atelier_civitai_token", "tok-123")
    w.shared.opts.set("atelier_hf_mirrors", "https://hf-mirror.com")
    w.shared.opts.set("atelier_nas_root", str(other_nas))
    deadline = time.monotonic() + 90
    while (sup.pid == pid or not sup.verified) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sup.pid != pid and sup.verified
    env = Path(f"/proc/{sup.pid}/environ").read_bytes().split(b"\0")
    assert b"ATELIER_CIVITAI_TOKEN=tok-123" in env
    assert b'ATELIER_HF_MIRRORS=["https://hf-mirror.com"]' in env
    assert f"ATELIER_ROOT={other_nas}".encode() in env
    argv = Path(f"/proc/{sup.pid}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"--root") + 1] == str(other_nas).encode()
    assert ext.is_answering(f"http://127.0.0.1:{port}")


def test_the_generated_admin_password_is_shown_until_dismissed(
        make_webui: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    port = free_port()
    webui = install_webui(tmp_path, port)
    w = make_webui(config_file=tmp_path / "config.json")
    load_script(webui / "extensions" / "atelier")
    [tabs] = w.run("ui_tabs")  # before the first start: the password is chosen now
    notice = json.loads((webui / ".atelier/state/admin-notice.json").read_text())
    password = notice["password"]
    assert password and notice["status"] == "pending"
    assert password in tabs[0][0].children[0].value, "shown in the FileBrowser tab"
    assert all(password not in t[0].children[0].value for t in tabs[1:])
    app = _app(w)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(),
                                           log_level="warning", lifespan="off"))
    import threading

    threading.Thread(target=server.run, daemon=True).start()
    try:
        while not server.started:
            time.sleep(0.02)
        [thread] = w.run("app_started", None, app)
        thread.join(120)
        assert f"password {password}" in capsys.readouterr().out, "printed in the console"
        r = requests.post(f"http://127.0.0.1:{port}/api/tokens", auth=("admin", password),
                          json={"name": "t"}, timeout=10)
        assert r.status_code in (200, 201), "it is the admin's password"
        status = json.loads((webui / ".atelier/state/admin-notice.json").read_text())
        assert status["status"] == "confirmed"
        url = f"http://127.0.0.1:{server.config.port}/atelier/_webui/notice/dismiss"
        assert requests.post(url, timeout=10).json() == {"ok": True}
        [tabs] = w.run("ui_tabs")
        assert password not in tabs[0][0].children[0].value
        gone = (webui / ".atelier/state/admin-notice.json").read_text()
        assert password not in gone
    finally:
        server.should_exit = True


def test_with_gradio_auth_the_tab_keeps_the_password_to_the_console(
        make_webui: Callable[..., Any], tmp_path: Path) -> None:
    w = make_webui(gradio_auth="bob:pw")
    webui = install_webui(tmp_path, free_port())
    load_script(webui / "extensions" / "atelier")
    [tabs] = w.run("ui_tabs")
    password = json.loads((webui / ".atelier/state/admin-notice.json").read_text())["password"]
    html = tabs[0][0].children[0].value
    assert password not in html and "printed in the WebUI console" in html


def test_a_changed_admin_password_ends_the_notice(
        make_webui: Callable[..., Any], tmp_path: Path) -> None:
    port = free_port()
    webui = install_webui(tmp_path, port)
    state = webui / ".atelier/state"
    state.mkdir(parents=True)
    (state / "admin-notice.json").write_text(json.dumps({"status": "confirmed",
                                                         "password": "not-the-password"}))
    w = make_webui()
    load_script(webui / "extensions" / "atelier")
    [thread] = w.run("app_started", None, _app(w))
    thread.join(120)
    # The database was new, so the service made admin with the notice's password; the
    # admin then changes it, and the next check ends the notice.
    rt = next(iter(sys.modules["atelier_ext.runtime"]._RUNTIMES.values()))  # type: ignore[attr-defined]
    assert rt.supervisor.verified
    base = f"http://127.0.0.1:{port}"
    token = requests.post(f"{base}/api/tokens", auth=("admin", "not-the-password"),
                          json={"name": "t"}, timeout=10).json()["token"]
    r = requests.patch(f"{base}/api/users/admin", json={"password": "changed-by-admin-1"},
                       headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    rt._check_notice()
    notice = json.loads((state / "admin-notice.json").read_text())
    assert notice == {"status": "gone", "password": None}
