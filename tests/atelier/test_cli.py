"""The ``atelier`` command as a user runs it: serve's first start, and user management."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import requests

from ..conftest import free_port, wait_http


def run(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ATELIER_ROOT": str(tmp_path / "nas"),
           "ATELIER_STATE_DIR": str(tmp_path / "state")}
    return subprocess.run([sys.executable, "-m", "atelier", *args], input=stdin, text=True,
                          capture_output=True, env=env, timeout=60)


def test_first_start_creates_layout_and_prints_a_generated_password_once(tmp_path: Path) -> None:
    env = {**os.environ, "ATELIER_STATE_DIR": str(tmp_path / "state")}
    root = tmp_path / "nas"
    outputs = []
    for _ in range(2):
        port = free_port()
        log = tmp_path / f"serve-{port}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen([sys.executable, "-m", "atelier", "serve", "--root",
                                     str(root), "--port", str(port)], env=env, stderr=f,
                                    stdout=f)
        try:
            wait_http(f"http://127.0.0.1:{port}/api/health")
        finally:
            proc.terminate()
            proc.wait(10)
        outputs.append(log.read_text())
    m = re.search(r"user 'admin' with password (\S+)", outputs[0])
    assert m, outputs[0]
    assert "password" not in outputs[1]
    for sub in ("Stable-diffusion", "Lora", "VAE", "embeddings", "ControlNet", "ESRGAN",
                "hypernetworks"):
        assert (root / "models" / sub).is_dir()
    assert (root / "outputs").is_dir() and (root / "users").is_dir()
    assert not list(root.glob("*.db")), "the database stays outside the served root"
    assert (tmp_path / "state/atelier.db").is_file()


def test_users_commands(tmp_path: Path) -> None:
    r = run(tmp_path, "users", "add", "ann", "--role", "viewer", "--quota", "1000",
            "--password-stdin", stdin="ann-pass-123\n")
    assert r.returncode == 0, r.stderr
    r = run(tmp_path, "users", "list")
    assert "ann\tviewer\tquota=1000" in r.stdout
    assert (tmp_path / "nas/users/ann/outputs").is_dir()
    r = run(tmp_path, "users", "add", "ann", "--password-stdin", stdin="ann-pass-123\n")
    assert r.returncode == 1 and "exists" in r.stderr
    r = run(tmp_path, "users", "add", "bob", "--password-stdin", stdin="short\n")
    assert r.returncode == 1 and "at least 8" in r.stderr
    r = run(tmp_path, "users", "passwd", "ann", "--password-stdin", stdin="ann-pass-456\n")
    assert r.returncode == 0
    r = run(tmp_path, "users", "rm", "ann")
    assert r.returncode == 0 and "home folder is kept" in r.stdout
    assert "ann" not in run(tmp_path, "users", "list").stdout
    assert run(tmp_path, "users", "rm", "ann").returncode == 1


def test_cli_password_works_against_the_service(tmp_path: Path) -> None:
    assert run(tmp_path, "users", "add", "ann", "--password-stdin",
               stdin="ann-pass-123\n").returncode == 0
    port = free_port()
    env = {**os.environ, "ATELIER_ROOT": str(tmp_path / "nas"),
           "ATELIER_STATE_DIR": str(tmp_path / "state"), "ATELIER_ADMIN_PASSWORD": "admin-pass-999"}
    proc = subprocess.Popen([sys.executable, "-m", "atelier", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health")
        r = requests.post(f"http://127.0.0.1:{port}/api/login",
                          json={"username": "ann", "password": "ann-pass-123"})
        assert r.status_code == 200 and r.json()["role"] == "user"
        # users made before the first start do not stop the admin account being created
        r = requests.post(f"http://127.0.0.1:{port}/api/login",
                          json={"username": "admin", "password": "admin-pass-999"})
        assert r.status_code == 200 and r.json()["role"] == "admin"
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_help_lists_every_setting() -> None:
    r = subprocess.run([sys.executable, "-m", "atelier", "serve", "--help"], text=True,
                       capture_output=True)
    from filebrowser.settings import Settings

    for name in Settings.model_fields:
        assert f"ATELIER_{name.upper()}" in r.stdout


def test_an_invalid_setting_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    for name, value, field in (("ATELIER_UPLOAD_DIRECT_IO", "sometimes", "upload_direct_io"),
                               ("ATELIER_QUOTA_RECHECK_SECONDS", "-1", "quota_recheck_seconds"),
                               ("ATELIER_PORT", "http", "port")):
        env = {**os.environ, "ATELIER_ROOT": str(tmp_path / "nas"),
               "ATELIER_STATE_DIR": str(tmp_path / "state"), name: value}
        r = subprocess.run([sys.executable, "-m", "atelier", "serve"], capture_output=True,
                           text=True, env=env, timeout=60)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr
        assert f"{field}:" in r.stderr and repr(value) in r.stderr
        assert not (tmp_path / "nas").exists()  # nothing was created
