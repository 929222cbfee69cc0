"""Import the extension's code the way the WebUI does, against stand-in WebUI modules, and
a fake WebUI folder with Atelier installed by the real install.py.

The service the extension starts runs this worktree's code: install.py records
``<python> -I -m atelier serve``, and ``-I`` would make the interpreter ignore PYTHONPATH
and import the project's editable install instead; ``service_python()`` is a wrapper that
drops ``-I`` and puts this repository first. ``SERVICE_PYTHON_FOR_TESTS`` names the
interpreter that has the service's packages, so that the extension's own tests can run
under a WebUI's pinned stack::

    python3.11 -m venv /tmp/a1111 && /tmp/a1111/bin/pip install fastapi==0.94.0 'pydantic<2' \
        httpx==0.24.1 httpcore==0.15 'uvicorn<0.30' requests pytest pytest-timeout tuspy
    # Forge: fastapi==0.104.1 pydantic==2.8.2, the same httpx
    SERVICE_PYTHON_FOR_TESTS=.venv/bin/python /tmp/a1111/bin/python -m pytest \
        tests/extensions/test_proxy.py tests/extensions/test_atelier_tabs.py
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXT_SOURCE = REPO / "extensions" / "atelier"
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # webui_standins, for the fake WebUI processes too

import webui_standins  # noqa: E402


def forget_extension_modules() -> None:
    runtime = sys.modules.get("atelier_ext.runtime")
    if runtime is not None:
        runtime.forget_all()  # type: ignore[attr-defined]
    for name in [n for n in sys.modules if n == "atelier_ext" or n.startswith("atelier_ext.")]:
        del sys.modules[name]


@pytest.fixture
def ext(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``atelier_ext`` imported from the repository's extension folder."""
    forget_extension_modules()
    monkeypatch.syspath_prepend(str(EXT_SOURCE))
    import atelier_ext

    yield atelier_ext
    forget_extension_modules()


def service_python(folder: Path) -> str:
    """An interpreter path for install.py --service-python that runs this worktree."""
    base = os.environ.get("SERVICE_PYTHON_FOR_TESTS") or sys.executable
    wrapper = folder / "service-python"
    if not wrapper.exists():
        folder.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(
            "#!/bin/sh\n"
            "# test wrapper: this worktree's atelier, whatever the editable install says\n"
            'if [ "$1" = "-I" ]; then shift; fi\n'
            f"PYTHONPATH={REPO}; export PYTHONPATH\n"
            f'exec {base} "$@"\n')
        wrapper.chmod(0o755)
    return str(wrapper)


def install_webui(root: Path, port: int, *extra: str) -> Path:
    """A fake WebUI with Atelier installed by the real install.py; returns the WebUI folder."""
    webui = root / "webui"
    (webui / "modules").mkdir(parents=True)
    (webui / "webui.py").write_text("")
    (root / "nas").mkdir(exist_ok=True)
    r = subprocess.run([sys.executable, str(REPO / "install.py"), "--webui", str(webui),
                        "--nas", str(root / "nas"), "--service-python",
                        service_python(root / "bin"), "--port", str(port), *extra],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return webui


def load_script(extension_dir: Path) -> ModuleType:
    """A1111's way (modules/scripts.py, load_scripts): the extension folder first on
    sys.path for the import only, the file loaded by spec_from_file_location."""
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


@pytest.fixture
def make_webui(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """``make_webui(flavor, **cmd_opts)``: stand-in WebUI modules in sys.modules (and the
    extension's folder on sys.path, as the WebUI has it while loading scripts)."""
    made: list[Any] = []

    def make(flavor: str = "a1111", **kwargs: Any) -> webui_standins.WebUI:
        w = webui_standins.make_webui(flavor, **kwargs)
        for name in webui_standins.MODULE_NAMES:
            monkeypatch.delitem(sys.modules, name, raising=False)
        for name, mod in w.modules.items():
            monkeypatch.setitem(sys.modules, name, mod)
        made.append(w)
        return w

    forget_extension_modules()
    monkeypatch.syspath_prepend(str(EXT_SOURCE))
    yield make
    forget_extension_modules()
    webui_standins.Blocks.made.clear()
