"""scripts/atelier_tabs.py loaded as the WebUI loads it, with stand-ins for the WebUI's
``modules.script_callbacks`` and for gradio that record what the script asks of them.

A1111 imports each ``scripts/*.py`` with ``spec_from_file_location(basename, path)`` and
puts the extension folder first on ``sys.path`` for the import only (modules/scripts.py,
``load_scripts``); the loader below does the same.
"""

from __future__ import annotations

import atexit
import importlib.util
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ..conftest import ADMIN_PASSWORD, free_port
from .conftest import EXT_SOURCE, forget_extension_modules, install_webui


@dataclass
class WebUI:
    """What the script registered with the stand-in WebUI and built with stand-in gradio."""

    ui_tabs: list[Callable[[], Any]] = field(default_factory=list)
    app_started: list[Callable[[Any, Any], Any]] = field(default_factory=list)
    blocks: list[StandInBlocks] = field(default_factory=list)


class StandInBlocks:
    current: StandInBlocks | None = None

    def __init__(self, recorder: WebUI, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.children: list[tuple[str, str]] = []
        recorder.blocks.append(self)

    def __enter__(self) -> StandInBlocks:
        StandInBlocks.current = self
        return self

    def __exit__(self, *exc: object) -> None:
        StandInBlocks.current = None


@pytest.fixture
def webui_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebUI]:
    rec = WebUI()
    callbacks = ModuleType("modules.script_callbacks")
    callbacks.on_ui_tabs = rec.ui_tabs.append  # type: ignore[attr-defined]
    callbacks.on_app_started = rec.app_started.append  # type: ignore[attr-defined]
    modules = ModuleType("modules")
    modules.script_callbacks = callbacks  # type: ignore[attr-defined]
    gradio = ModuleType("gradio")

    def html(value: str, **kwargs: Any) -> None:
        assert StandInBlocks.current is not None, "gr.HTML outside a Blocks"
        StandInBlocks.current.children.append(("HTML", value))

    gradio.Blocks = lambda **kw: StandInBlocks(rec, **kw)  # type: ignore[attr-defined]
    gradio.HTML = html  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modules", modules)
    monkeypatch.setitem(sys.modules, "modules.script_callbacks", callbacks)
    monkeypatch.setitem(sys.modules, "gradio", gradio)
    forget_extension_modules()
    yield rec
    forget_extension_modules()
    sys.modules.pop("scripts.atelier_tabs", None)


def load_script(extension_dir: Path) -> ModuleType:
    path = extension_dir / "scripts" / "atelier_tabs.py"
    saved = sys.path
    sys.path = [str(extension_dir), *sys.path]
    try:
        spec = importlib.util.spec_from_file_location(path.name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path = saved
    return module


def test_registers_three_tabs_framing_the_service_pages(webui_modules: WebUI,
                                                        tmp_path: Path) -> None:
    webui = install_webui(tmp_path, 17862)
    load_script(webui / "extensions" / "atelier")
    assert len(webui_modules.ui_tabs) == 1 and len(webui_modules.app_started) == 1
    assert webui_modules.blocks == [], "no UI is built at import"

    tabs = webui_modules.ui_tabs[0]()
    assert [(t[1], t[2]) for t in tabs] == [
        ("FileBrowser", "atelier_files"), ("ModelZoo", "atelier_models"),
        ("Models on GPU", "atelier_gpu")]
    assert [t[0] for t in tabs] == webui_modules.blocks
    for (block, _, _), path in zip(tabs, ("/ui/files", "/ui/models", "/ui/gpu"), strict=True):
        assert block.kwargs == {"analytics_enabled": False}
        [(kind, html)] = block.children
        assert kind == "HTML"
        assert f'<iframe src="http://127.0.0.1:17862{path}"' in html
        assert 'href="http://127.0.0.1:17862/docs"' in html


def test_without_a_config_the_tabs_say_how_to_install(webui_modules: WebUI, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_SERVICE_CONFIG", str(tmp_path / "missing.json"))
    module = load_script(EXT_SOURCE)
    tabs = webui_modules.ui_tabs[0]()
    assert len(tabs) == 3
    for block, _, _ in tabs:
        [(_, html)] = block.children
        assert "iframe" not in html and "install.py" in html
    assert webui_modules.app_started[0](None, None) is None
    assert module.supervisor is None


def test_app_started_starts_the_service_and_exit_stops_it(
        webui_modules: WebUI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_ADMIN_PASSWORD", ADMIN_PASSWORD)
    port = free_port()
    webui = install_webui(tmp_path, port)
    module = load_script(webui / "extensions" / "atelier")
    ext = sys.modules["atelier_ext"]
    assert Path(str(ext.__file__)).is_relative_to(webui / "extensions" / "atelier")
    url = f"http://127.0.0.1:{port}"
    assert not ext.is_answering(url)

    thread = webui_modules.app_started[0](None, None)  # demo is None under --nowebui
    try:
        thread.join(60)
        assert not thread.is_alive()
        assert ext.is_answering(url)
        assert module.supervisor.process is not None
        # A UI reload calls app_started again: the running service is kept.
        pid = module.supervisor.process.pid
        again = webui_modules.app_started[0](None, None)
        again.join(60)
        assert module.supervisor.process is not None and module.supervisor.process.pid == pid
    finally:
        sup = module.supervisor
        atexit.unregister(sup.stop)
        stopped = sup.stop()  # what the exit hook does
    assert stopped is True
    assert not ext.is_answering(url)
