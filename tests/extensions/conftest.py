"""Import the extension's code the way the WebUI does: its folder put on ``sys.path``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
EXT_SOURCE = REPO / "extensions" / "atelier"


def forget_extension_modules() -> None:
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


def install_webui(root: Path, port: int) -> Path:
    """A fake WebUI with Atelier installed by the real install.py; returns the WebUI folder."""
    webui = root / "webui"
    (webui / "modules").mkdir(parents=True)
    (webui / "webui.py").write_text("")
    (root / "nas").mkdir()
    r = subprocess.run([sys.executable, str(REPO / "install.py"), "--webui", str(webui),
                        "--nas", str(root / "nas"), "--service-python", sys.executable,
                        "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return webui
