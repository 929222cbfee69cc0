"""Fixtures shared by every test: isolated environment, and the real service on loopback.

``make_server()`` starts the real ASGI app under uvicorn in a thread on a free
127.0.0.1 port, with its own NAS root and state folder in ``tmp_path``;
``spawn_server()`` starts ``atelier serve`` as a real process (for kill -9 tests).
Both give a :class:`Server` with the base URL, the admin credentials, and helpers
to make users and authenticated ``requests`` sessions.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn

ADMIN_PASSWORD = "admin-pass-123"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ATELIER_* or proxy variables leak in; no test touches a hub."""
    for key in list(os.environ):
        if key.startswith("ATELIER_") or key.lower() in (
                "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except (requests.ConnectionError, requests.Timeout):  # a busy machine: try again
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class Server:
    url: str
    root: Path
    state: Path
    port: int
    app: Any = None
    proc: subprocess.Popen[bytes] | None = None
    _uv: uvicorn.Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def fb(self) -> Any:
        return self.app.state.fb

    def session(self, user: str = "admin", password: str = ADMIN_PASSWORD) -> requests.Session:
        """A requests session authenticated with a fresh Bearer token."""
        r = requests.post(f"{self.url}/api/tokens", auth=(user, password), json={"name": "t"},
                          timeout=10)
        r.raise_for_status()
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {r.json()['token']}"
        return s

    def add_user(self, name: str, role: str = "user", quota: int | None = None,
                 password: str = "user-pass-123") -> requests.Session:
        r = self.session().post(f"{self.url}/api/users", json={
            "name": name, "password": password, "role": role, "quota_bytes": quota}, timeout=10)
        assert r.status_code == 201, r.text
        return self.session(name, password)

    def stop(self) -> None:
        if self._uv is not None:
            self._uv.should_exit = True
            if self._thread:
                self._thread.join(10)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


def _settings_env(root: Path, state: Path, extra: dict[str, str]) -> dict[str, str]:
    return {"ATELIER_ROOT": str(root), "ATELIER_STATE_DIR": str(state),
            "ATELIER_ADMIN_PASSWORD": ADMIN_PASSWORD, **extra}


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start the real app under uvicorn in a thread; ``make_server(**settings)``."""
    started: list[Server] = []

    def start(root: Path | None = None, state: Path | None = None, **settings: Any) -> Server:
        from atelier.protocol import JsonErrorsHttpTools
        from atelier.service import create_app
        from filebrowser.settings import Settings

        n = len(started)
        root = root or tmp_path / f"nas{n}"
        state = state or tmp_path / f"state{n}"
        s = Settings(root=root, state_dir=state, admin_password=ADMIN_PASSWORD, **settings)
        app = create_app(s)
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                http=JsonErrorsHttpTools, loop="asyncio", lifespan="on",
                                proxy_headers=False)  # as `atelier serve` runs it
        uv = uvicorn.Server(config)
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/api/health")
        srv = Server(url, root, state, port, app=app, _uv=uv, _thread=thread)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


@pytest.fixture
def spawn_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start ``atelier serve`` as a real process; ``spawn_server(root=..., state=..., env=)``."""
    procs: list[Server] = []

    def start(root: Path | None = None, state: Path | None = None, port: int | None = None,
              env: dict[str, str] | None = None) -> Server:
        root = root or tmp_path / "nas"
        state = state or tmp_path / "state"
        port = port or free_port()
        full_env = {**os.environ, **_settings_env(root, state, env or {})}
        log = open(tmp_path / f"server-{port}-{len(procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "atelier", "serve", "--port", str(port), "--log-level",
             "warning"], env=full_env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/api/health")
        except RuntimeError:
            proc.kill()
            raise
        srv = Server(url, root, state, port, proc=proc)
        procs.append(srv)
        return srv

    yield start
    for srv in procs:
        srv.stop()


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed (bash .ci/run installs it from Debian)")
    return found[-1].parent


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A real PostgreSQL server on loopback for the session; yields a server URL prefix.

    PostgreSQL refuses to run as root, so the cluster belongs to the ``postgres`` user.
    """
    import shutil
    import tempfile

    bindir = _pg_bin()
    base = Path(tempfile.mkdtemp(prefix="atelier-pg-"))
    base.chmod(0o755)
    data = base / "data"
    shutil.chown(base, "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U",
                    "atelier", "--no-sync"], check=True, capture_output=True)
    port = free_port()
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"),
                    "-w", "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
                    "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://atelier@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres: str) -> str:
    """A fresh, empty database on the session's PostgreSQL server; its SQLAlchemy URL."""
    import secrets

    import sqlalchemy as sa

    name = f"t_{secrets.token_hex(6)}"
    engine = sa.create_engine(f"{postgres}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return f"{postgres}/{name}"


# -- real filesystems mounted for a test (full disks, ext4 vs tmpfs) -----------------


class _Mounts:
    """Filesystems a test mounts, lazily unmounted after it (a server may still hold files
    open there). Mounting needs root, as CI has; elsewhere the test is skipped."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def mount(self, path: Path, *args: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", *args, str(path)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount {' '.join(args)} here: {r.stderr.decode().strip()}")
        self.paths.append(path)
        return path

    def unmount_all(self) -> None:
        for path in self.paths:
            subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def tmpfs() -> Iterator[Callable[..., Path]]:
    """Mount a small tmpfs (a full disk on demand): ``tmpfs(path, "8m")``."""
    mounts = _Mounts()
    yield lambda path, size="8m": mounts.mount(path, "-t", "tmpfs", "-o", f"size={size}",
                                               "tmpfs")
    mounts.unmount_all()


@pytest.fixture
def ext4() -> Iterator[Callable[..., Path]]:
    """Mount a small ext4 loop image (a real local disk that fills up): ``ext4(path)``."""
    mounts = _Mounts()

    def mount(path: Path, size: str = "32M") -> Path:
        image = path.with_name(path.name + ".img")
        subprocess.run(["truncate", "-s", size, str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
        return mounts.mount(path, "-o", "loop", str(image))

    yield mount
    mounts.unmount_all()
