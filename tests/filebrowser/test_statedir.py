"""One state folder per NAS root by default; an old shared folder stays with its root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from filebrowser.core import FileBrowser
from filebrowser.settings import Settings
from filebrowser.statedir import MARKER, state_home


def atelier(*args: str, stdin: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env["ATELIER_ADMIN_PASSWORD"] = "admin-pass-123"
    r = subprocess.run([sys.executable, "-m", "atelier", *args], input=stdin, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_two_roots_never_share_a_database(tmp_path: Path) -> None:
    a, b = tmp_path / "nas-a", tmp_path / "nas-b"
    atelier("users", "add", "ann", "--root", str(a), "--password-stdin", stdin="ann-pass-123\n")
    assert "ann" in atelier("users", "list", "--root", str(a))
    assert "ann" not in atelier("users", "list", "--root", str(b))  # b's own database
    folders = sorted(p.name for p in state_home().iterdir())
    assert len(folders) == 2 and all(f.startswith(("nas-a-", "nas-b-")) for f in folders)
    for root in (a, b):
        state = Settings(root=root).state_dir
        assert state.parent == state_home() and (state / "atelier.db").is_file()
        assert (state / MARKER).read_text().strip() == os.path.realpath(root)
    # the same root however it is spelled
    os.symlink(a, tmp_path / "link-to-a")
    assert Settings(root=tmp_path / "link-to-a").state_dir == Settings(root=a).state_dir


def test_an_explicit_state_dir_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(root=tmp_path / "r", state_dir=tmp_path / "s").state_dir == tmp_path / "s"
    monkeypatch.setenv("ATELIER_STATE_DIR", str(tmp_path / "env"))
    assert Settings(root=tmp_path / "r").state_dir == tmp_path / "env"


def _old_install(root: Path) -> Path:
    """The shared default of earlier versions, made for ``root`` (no nas-root written)."""
    legacy = state_home()
    fb = FileBrowser(Settings(root=root, state_dir=legacy, admin_password="admin-pass-123"))
    fb.ensure_admin()
    fb.users.create("ann", "ann-pass-123")
    fb.engine.dispose()
    (legacy / MARKER).unlink()
    return legacy


def test_an_existing_install_keeps_its_database(tmp_path: Path) -> None:
    a, b = tmp_path / "nas-a", tmp_path / "nas-b"
    legacy = _old_install(a)
    assert Settings(root=a).state_dir == legacy  # its users' homes are under a
    b.mkdir()
    assert Settings(root=b).state_dir != legacy
    FileBrowser(Settings(root=a))  # a's service starts: it claims the old folder
    assert (legacy / MARKER).read_text().strip() == os.path.realpath(a)
    # from now on the marker decides, even for a root that looks alike
    (b / "users" / "admin").mkdir(parents=True)
    assert Settings(root=b).state_dir != legacy
    assert "admin" in atelier("users", "list", "--root", str(a))


def test_an_old_install_of_another_root_is_not_taken(tmp_path: Path) -> None:
    legacy = _old_install(tmp_path / "nas-a")
    b = tmp_path / "nas-b"
    state = Settings(root=b).state_dir
    assert state != legacy and state.parent == legacy
