"""install.py as a user runs it: a real subprocess against a fake WebUI folder and NAS.

The fake WebUI has what install.py looks at: ``webui.py``, ``modules/``, model folders
that are empty, hold only the checkout's placeholder, or hold a user's file, and a
neighbouring extension. Snapshots of the whole tree (types, modes, contents, link
targets) prove that a second run changes nothing and that --uninstall restores it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from .conftest import ADMIN_PASSWORD, free_port, wait_http

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "install.py"
EXT_SOURCE = REPO / "extensions" / "atelier"
PY = sys.executable  # the project's venv: atelier is installed there
PLACEHOLDER = "Place Textual Inversion embeddings here.txt"  # as A1111 ships it


def run_install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(INSTALL), *args], capture_output=True, text=True,
                          timeout=120, env=env)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: kind, permission bits, content hash or link target."""
    snap: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath, name)
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                snap[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                snap[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                snap[rel] = ("file", stat.S_IMODE(st.st_mode),
                             hashlib.sha256(p.read_bytes()).hexdigest())
    return snap


@pytest.fixture
def webui(tmp_path: Path) -> Path:
    w = tmp_path / "webui"
    (w / "modules").mkdir(parents=True)
    (w / "webui.py").write_text("# the WebUI\n")
    (w / "models" / "Stable-diffusion").mkdir(parents=True)    # empty
    (w / "models" / "VAE").mkdir()
    os.chmod(w / "models" / "VAE", 0o750)                       # empty, unusual mode
    (w / "models" / "Lora").mkdir()
    (w / "models" / "Lora" / "mine.safetensors").write_bytes(b"user lora")  # the user's
    (w / "embeddings").mkdir()
    (w / "embeddings" / PLACEHOLDER).write_text("")            # only the placeholder
    (w / "extensions" / "other-ext" / "scripts").mkdir(parents=True)
    (w / "extensions" / "other-ext" / "scripts" / "x.py").write_text("print('hi')\n")
    return w                                  # ControlNet, ESRGAN, hypernetworks: missing


@pytest.fixture
def nas(tmp_path: Path) -> Path:
    n = tmp_path / "nas"
    (n / "models" / "Lora").mkdir(parents=True)
    (n / "models" / "Lora" / "shared.safetensors").write_bytes(b"shared lora")
    return n


def install_args(webui: Path, nas: Path, *extra: str) -> list[str]:
    return ["--webui", str(webui), "--nas", str(nas), "--service-python", PY, *extra]


LINKED = {"models/Stable-diffusion": "Stable-diffusion", "models/VAE": "VAE",
          "embeddings": "embeddings", "models/ControlNet": "ControlNet",
          "models/ESRGAN": "ESRGAN", "models/hypernetworks": "hypernetworks"}


def test_install_copies_the_extension_links_empty_folders_and_keeps_user_files(
        webui: Path, nas: Path) -> None:
    r = run_install(*install_args(webui, nas, "--port", "17862"))
    assert r.returncode == 0, r.stderr

    ext = webui / "extensions" / "atelier"
    assert ext.is_dir() and not ext.is_symlink(), "a copy, so the repository may go away"
    src = {p.relative_to(EXT_SOURCE) for p in EXT_SOURCE.rglob("*.py")}
    assert src and src == {p.relative_to(ext) for p in ext.rglob("*.py")}
    for rel in src:
        assert (ext / rel).read_bytes() == (EXT_SOURCE / rel).read_bytes()
    assert (webui / "extensions/other-ext/scripts/x.py").read_text() == "print('hi')\n"

    for folder, name in LINKED.items():
        path = webui / folder
        assert path.is_symlink(), folder
        assert os.readlink(path) == str(nas / "models" / name)
        assert (nas / "models" / name).is_dir()
    # The placeholder moved aside, not deleted; the user's folder left alone, with advice.
    assert (webui / ".atelier/backup/embeddings" / PLACEHOLDER).is_file()
    lora = webui / "models" / "Lora"
    assert lora.is_dir() and not lora.is_symlink()
    assert (lora / "mine.safetensors").read_bytes() == b"user lora"
    assert f"--lora-dir {nas / 'models' / 'Lora'}" in r.stdout
    assert (nas / "models/Lora/shared.safetensors").read_bytes() == b"shared lora"

    manifest = json.loads((webui / ".atelier/install.json").read_text())
    links = {c["path"]: c for c in manifest["changes"] if c["kind"] == "link"}
    assert set(links) == {str(webui / rel) for rel in LINKED}
    assert links[str(webui / "models/VAE")]["was"] == "dir"
    assert links[str(webui / "models/VAE")]["mode"] == 0o750
    assert links[str(webui / "models/ControlNet")]["was"] == "missing"
    kinds = {c["kind"] for c in manifest["changes"]}
    assert {"dir", "extension", "file", "link"} <= kinds
    assert "venv" not in kinds, "--service-python: no virtual environment made"

    cfg = json.loads((webui / ".atelier/service.json").read_text())
    assert cfg["port"] == 17862 and cfg["nas_root"] == str(nas)
    assert cfg["argv"][:4] == [PY, "-I", "-m", "atelier"]
    assert cfg["state_dir"] == str(webui / ".atelier" / "state")
    launcher = webui / ".atelier" / "atelier-serve"
    assert os.access(launcher, os.X_OK)
    assert not (webui / ".atelier" / "state").exists(), "the service makes its state itself"


def test_second_run_changes_nothing_and_says_so(webui: Path, nas: Path) -> None:
    assert run_install(*install_args(webui, nas)).returncode == 0
    before = snapshot(webui.parent)
    mtime = (webui / ".atelier/install.json").stat().st_mtime_ns
    r = run_install(*install_args(webui, nas))
    assert r.returncode == 0, r.stderr
    assert "nothing to do" in r.stdout
    assert snapshot(webui.parent) == before
    assert (webui / ".atelier/install.json").stat().st_mtime_ns == mtime


def test_uninstall_restores_the_tree_exactly_and_keeps_the_nas(webui: Path, nas: Path) -> None:
    original = snapshot(webui)
    assert run_install(*install_args(webui, nas)).returncode == 0
    # The user puts a model on the NAS through one of the links.
    (webui / "models" / "VAE" / "new.safetensors").write_bytes(b"vae")

    r = run_install("--webui", str(webui), "--uninstall")
    assert r.returncode == 0, r.stderr
    assert snapshot(webui) == original
    assert (nas / "models/VAE/new.safetensors").read_bytes() == b"vae"
    assert (nas / "models/Lora/shared.safetensors").read_bytes() == b"shared lora"
    assert (nas / "models/hypernetworks").is_dir(), "NAS folders are never removed"

    again = run_install("--webui", str(webui), "--uninstall")
    assert again.returncode == 0 and "nothing to uninstall" in again.stdout
    assert snapshot(webui) == original


def test_dry_run_changes_nothing(webui: Path, nas: Path) -> None:
    before = snapshot(webui.parent)
    # Without --service-python the plan includes making the service's venv.
    r = run_install("--webui", str(webui), "--nas", str(nas), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would create the service's virtual environment" in r.stdout
    assert f"would link {webui / 'models/ControlNet'}" in r.stdout
    assert snapshot(webui.parent) == before

    assert run_install(*install_args(webui, nas)).returncode == 0
    installed = snapshot(webui.parent)
    r = run_install("--webui", str(webui), "--uninstall", "--dry-run")
    assert r.returncode == 0 and "would remove the extension" in r.stdout
    assert snapshot(webui.parent) == installed


def test_changed_options_update_in_place_and_uninstall_still_restores(
        webui: Path, nas: Path, tmp_path: Path) -> None:
    original = snapshot(webui)
    assert run_install(*install_args(webui, nas)).returncode == 0
    nas2 = tmp_path / "nas2"
    nas2.mkdir()
    r = run_install(*install_args(webui, nas2, "--port", "17999"))
    assert r.returncode == 0, r.stderr
    assert "re-point" in r.stdout and "update" in r.stdout
    assert os.readlink(webui / "models/VAE") == str(nas2 / "models/VAE")
    cfg = json.loads((webui / ".atelier/service.json").read_text())
    assert cfg["port"] == 17999 and cfg["nas_root"] == str(nas2)

    assert run_install("--webui", str(webui), "--uninstall").returncode == 0
    assert snapshot(webui) == original


def test_an_updated_extension_source_is_copied_again(webui: Path, nas: Path) -> None:
    assert run_install(*install_args(webui, nas)).returncode == 0
    # A stale copy (an older release) is replaced; bytecode the WebUI wrote does not count.
    installed = webui / "extensions/atelier/atelier_ext/pages.py"
    installed.write_text("# old\n")
    (webui / "extensions/atelier/scripts/__pycache__").mkdir()
    r = run_install(*install_args(webui, nas))
    assert r.returncode == 0, r.stderr
    assert "update the extension" in r.stdout
    assert installed.read_bytes() == (EXT_SOURCE / "atelier_ext/pages.py").read_bytes()
    assert "nothing to do" in run_install(*install_args(webui, nas)).stdout


def test_refuses_to_clobber_a_foreign_extension_folder(webui: Path, nas: Path) -> None:
    (webui / "extensions" / "atelier").mkdir()
    (webui / "extensions" / "atelier" / "theirs.py").write_text("x = 1\n")
    before = snapshot(webui.parent)
    r = run_install(*install_args(webui, nas))
    assert r.returncode == 1
    assert "not installed by this script" in r.stderr
    assert snapshot(webui.parent) == before


@pytest.mark.parametrize("case", ["not-webui", "no-nas-arg", "nas-missing", "state-on-nas",
                                  "bad-port", "python-without-atelier", "python-missing",
                                  "no-webui-arg"])
def test_bad_arguments_exit_2_and_change_nothing(case: str, webui: Path, nas: Path,
                                                  tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    fake_py = tmp_path / "fake-python"
    fake_py.write_text("#!/bin/sh\nexit 1\n")
    fake_py.chmod(0o755)
    args = {
        "not-webui": ["--webui", str(plain), "--nas", str(nas), "--service-python", PY],
        "no-nas-arg": ["--webui", str(webui), "--service-python", PY],
        "nas-missing": install_args(webui, tmp_path / "nope"),
        "state-on-nas": install_args(webui, nas, "--state-dir", str(nas / "state")),
        "bad-port": install_args(webui, nas, "--port", "70000"),
        "python-without-atelier": ["--webui", str(webui), "--nas", str(nas),
                                   "--service-python", str(fake_py)],
        "python-missing": ["--webui", str(webui), "--nas", str(nas),
                           "--service-python", str(tmp_path / "no-python")],
        "no-webui-arg": ["--nas", str(nas)],
    }[case]
    before = snapshot(tmp_path)
    r = run_install(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "error" in r.stderr
    assert snapshot(tmp_path) == before


def test_the_launcher_runs_the_service_with_state_on_local_disk(webui: Path, nas: Path) -> None:
    port = free_port()
    assert run_install(*install_args(webui, nas, "--port", str(port))).returncode == 0
    env = {**os.environ, "ATELIER_ADMIN_PASSWORD": ADMIN_PASSWORD}
    log = webui.parent / "launcher.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([str(webui / ".atelier/atelier-serve")], env=env, stdout=f,
                                stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health")
        health = requests.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
        assert health.json()["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert (webui / ".atelier/state/atelier.db").is_file()
    assert not list(nas.rglob("*.db")), "the database stays off the NAS"

    # Uninstall keeps the service's state (users, sessions) and says so.
    out = run_install("--webui", str(webui), "--uninstall")
    assert out.returncode == 0, out.stderr
    assert "kept" in out.stdout
    assert (webui / ".atelier/state/atelier.db").is_file()
    assert sorted(p.name for p in (webui / ".atelier").iterdir()) == ["state"]
    assert not (webui / "extensions/atelier").exists()


def test_forge_placeholders_without_a_suffix_count_as_empty(webui: Path, nas: Path) -> None:
    # Forge ships models/ESRGAN/ESRGAN_here (no .txt); A1111-style names keep working.
    esrgan = webui / "models" / "ESRGAN"
    esrgan.mkdir(parents=True)
    (esrgan / "ESRGAN_here").write_text("")
    (webui / "models" / "hypernetworks").mkdir()
    big = webui / "models" / "hypernetworks" / "not_a_placeholder_here.txt"
    big.write_bytes(b"x" * 100_000)  # named like one, but holds something: the user's
    original = snapshot(webui)
    r = run_install(*install_args(webui, nas))
    assert r.returncode == 0, r.stderr
    assert esrgan.is_symlink() and os.readlink(esrgan) == str(nas / "models/ESRGAN")
    assert (webui / ".atelier/backup/models/ESRGAN/ESRGAN_here").is_file()
    assert not (webui / "models/hypernetworks").is_symlink(), "a big file is kept in place"
    assert "--hypernetwork-dir" in r.stdout
    assert run_install("--webui", str(webui), "--uninstall").returncode == 0
    assert snapshot(webui) == original


def _service_running(webui: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ATELIER_ADMIN_PASSWORD": ADMIN_PASSWORD}
    log = open(webui.parent / "service.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([str(webui / ".atelier/atelier-serve")], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    log.close()
    wait_http(f"http://127.0.0.1:{port}/api/health")
    return proc


def test_uninstall_stops_a_running_service_first(webui: Path, nas: Path) -> None:
    port = free_port()
    original = snapshot(webui)
    assert run_install(*install_args(webui, nas, "--port", str(port))).returncode == 0
    proc = _service_running(webui, port)
    try:
        dry = run_install("--webui", str(webui), "--uninstall", "--dry-run")
        assert dry.returncode == 0 and f"would stop the running Atelier service (pid {proc.pid})" \
            in dry.stdout
        assert proc.poll() is None, "a dry run stops nothing"
        r = run_install("--webui", str(webui), "--uninstall")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        stop = next(i for i, line in enumerate(lines)
                    if "stop the running Atelier service" in line)
        remove = next(i for i, line in enumerate(lines) if "remove the extension" in line)
        assert stop < remove, "stopped before anything is removed"
        assert proc.poll() is not None, "gone when uninstall goes on (it waited)"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
    state = webui / ".atelier" / "state"
    assert (state / "atelier.db").is_file(), "the service's state is kept"
    shutil.rmtree(webui / ".atelier")
    assert snapshot(webui) == original
