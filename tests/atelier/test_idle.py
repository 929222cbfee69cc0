"""Idle scale-down: the idle clock, the once-per-idle-period release and command, and the
real service (health, a job holding it awake, GPU memory given back, the recently used
models warmed first after a restart)."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from atelier.idle import Activity, IdleSettings, IdleWatch, run_command

from ..conftest import Server
from ..filebrowser.images.conftest import wait_until
from ..modelzoo.api.conftest import add_lora, wait_job
from ..modelzoo.conftest import civitai  # noqa: F401  (the stand-in, as a fixture here)
from ..modelzoo.standins.civitai import CivitaiStandIn

MB = 1024 * 1024


def run_async(coro: Any) -> Any:
    """``asyncio.run`` in a thread of its own: a test before this one (Playwright's sync
    API) may have left an event loop running in the main thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# -- the idle clock and the watch, without a server --------------------------------------


def test_requests_and_jobs_hold_the_idle_clock_at_zero() -> None:
    clock = Clock()
    act = Activity(clock)
    clock.t += 5
    assert act.idle_seconds() == 5
    act.begin()
    clock.t += 60
    assert act.idle_seconds() == 0           # a long request (a tus PATCH) is activity
    act.end()
    clock.t += 2
    assert act.idle_seconds() == 2           # counted from its end
    jobs = [1]
    act.busy.append(lambda: jobs[0])
    clock.t += 30
    assert act.idle_seconds() == 0           # a running job is activity
    jobs[0] = 0
    clock.t += 3
    assert act.idle_seconds() == 3           # from the last moment it was seen running


def test_a_failing_job_count_reads_as_busy() -> None:
    clock = Clock()
    act = Activity(clock)
    act.busy.append(lambda: 1 // 0)
    clock.t += 99
    assert act.idle_seconds() == 0


def test_idle_releases_and_runs_the_command_once_per_idle_period(tmp_path: Path) -> None:
    clock = Clock()
    act = Activity(clock)
    marker = tmp_path / "marker"
    cmd = f"{shlex.quote(sys.executable)} -c \"open({str(marker)!r}, 'a').write('x')\""
    released: list[int] = []
    watch = IdleWatch(act, IdleSettings(idle_minutes=0.5, idle_command=cmd),
                      release=lambda: released.append(1))

    async def steps() -> None:
        clock.t += 29
        await watch.check()
        assert not watch.reached and not released
        clock.t += 2
        await watch.check()
        await watch.check()
        assert watch.reached and released == [1] and marker.read_text() == "x"
        assert watch.health()["idle"] is True
        act.begin()
        act.end()                     # a request: a new idle period starts
        await watch.check()
        assert not watch.reached
        clock.t += 31
        await watch.check()
        assert released == [1, 1] and marker.read_text() == "xx"

    run_async(steps())


def test_the_commands_exit_code_and_output_are_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    code = "import sys; print('scaling to zero'); sys.exit(3)"
    with caplog.at_level("INFO", logger="atelier.idle"):
        assert run_async(run_command([sys.executable, "-c", code])) == 3
    (rec,) = [r for r in caplog.records if "exited" in r.getMessage()]
    assert rec.levelname == "ERROR" and "3: scaling to zero" in rec.getMessage()


def test_off_when_unset_and_the_command_is_not_a_shell(tmp_path: Path) -> None:
    assert IdleSettings().idle_minutes is None
    watch = IdleWatch(Activity(), IdleSettings())
    assert watch.health()["idle_after_seconds"] is None
    run_async(asyncio.wait_for(watch.run(), 1))  # returns at once: nothing to watch
    # no shell: a ';' is an argument, not a second command
    marker = tmp_path / "m"
    code = run_async(run_command(["echo", "hi;", "touch", str(marker)]))
    assert code == 0 and not marker.exists()
    assert run_async(run_command([str(tmp_path / "missing")])) is None


# -- the real service --------------------------------------------------------------------


def _health(srv: Server) -> dict[str, Any]:
    r = requests.get(f"{srv.url}/api/health", timeout=10)
    assert r.status_code == 200
    return r.json()


def _marker_env(marker: Path, minutes: str = "0.02") -> dict[str, str]:
    # sh is named, not implied: the command runs without a shell of our own
    return {"ATELIER_IDLE_MINUTES": minutes,
            "ATELIER_IDLE_COMMAND": f"sh -c 'echo idle >> {marker}'"}


def test_the_service_reports_idle_and_runs_the_command_once(
        spawn_server: Callable[..., Server], tmp_path: Path) -> None:
    marker = tmp_path / "scaled-to-zero"
    srv = spawn_server(env=_marker_env(marker, "0.03"))      # 1.8 s
    s = srv.session()
    first = _health(srv)
    assert first["idle_after_seconds"] == pytest.approx(1.8)
    time.sleep(0.3)
    # health checks are not activity: the clock goes on while an autoscaler polls
    assert _health(srv)["idle_seconds"] > first["idle_seconds"]
    wait_until(marker.exists, timeout=10, what="the idle command")
    assert _health(srv)["idle"] is True
    time.sleep(1.0)
    assert marker.read_text() == "idle\n"      # once, not once per check
    assert s.get(f"{srv.url}/api/me").ok        # a request: awake again
    assert _health(srv)["idle_seconds"] < 1.0
    wait_until(lambda: _health(srv)["idle"] is False, timeout=5, what="awake")
    wait_until(lambda: marker.read_text() == "idle\nidle\n", timeout=10,
               what="the next idle period")


def test_a_running_download_keeps_the_service_awake(
        spawn_server: Callable[..., Server], civitai: CivitaiStandIn,  # noqa: F811
        tmp_path: Path) -> None:
    data = add_lora(civitai, size=2 * MB)
    civitai.rate = 192 * 1024   # per connection: a few seconds for the file
    marker = tmp_path / "scaled-to-zero"
    srv = spawn_server(env={**_marker_env(marker, "0.01"),   # 0.6 s
                            "ATELIER_CIVITAI_URL": civitai.url,
                            "ATELIER_MODELS_POLL_SECONDS": "0.1",
                            "ATELIER_FETCH_RESERVE_BYTES": "0"})
    s = srv.session()
    job = s.post(f"{srv.url}/api/models/jobs", json={"ref": "civitai:4201"}).json()
    # no requests from here on while the job runs, only health checks (and the job's
    # state read from the database file, which the service does not see)
    engine = sa.create_engine(f"sqlite:///{srv.state / 'atelier.db'}")

    def state() -> str:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT state FROM modelzoo_jobs WHERE id = :i"),
                                    {"i": job["id"]}).scalar())

    seen = []
    try:
        while (now := state()) in ("queued", "running"):
            h = _health(srv)
            r = requests.get(f"{srv.url}/metrics", timeout=10)   # not activity either
            assert r.status_code in (200, 401)
            if now == "running":
                seen.append(h)
            time.sleep(0.8)   # longer than the idle limit, with no request
    finally:
        engine.dispose()
    assert len(seen) >= 2 and not marker.exists()
    assert all(not h["idle"] for h in seen)
    done = wait_job(s, srv.url, job["id"])
    assert done["state"] == "done"
    assert (tmp_path / "nas/models/Lora/detail_tweaker.safetensors").read_bytes() == data
    wait_until(marker.exists, timeout=10, what="idle after the download")


# -- GPU memory: released on idle, the recently used warmed after a restart ---------------

GEN = {"prompt": "lowest newer", "steps": 2, "width": 64, "height": 64, "seed": 7}


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ..modelzoo.residency.checkpoints import tiny_pipeline as build

    return build(tmp_path_factory.mktemp("gen") / "tiny", "sd1")


def _gpu_env(root: Path, tiny: Path, names: list[str]) -> dict[str, str]:
    """``names`` as copies of the tiny pipeline; a simulated GPU that holds one of them."""
    from modelzoo.residency.catalog import ModelCatalog

    models = root / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    for name in names:
        shutil.copytree(tiny, models / name)
    size = ModelCatalog(models, dtype="fp32").get(names[0]).nbytes
    return {"ATELIER_GPU_DEVICES": f"sim:{size * 3 // 2}", "ATELIER_GPU_DTYPE": "fp32",
            "ATELIER_GPU_RAM_BUDGET": str(size * 4), "ATELIER_GPU_RAM_RESERVE": "0",
            "ATELIER_GPU_RESERVE_BASE": "0", "ATELIER_GPU_RESERVE_EXTRA": "0",
            "ATELIER_GPU_RESERVE_PER_MEGAPIXEL": "0", "ATELIER_GPU_PREFETCH": "false",
            "OMP_NUM_THREADS": "1"}


def _where(s: requests.Session, srv: Server) -> tuple[list[str], list[str]]:
    snap = s.get(f"{srv.url}/api/gpu", timeout=30).json()
    return [m for d in snap["devices"] for m in d["models"]], snap["ram"]["models"]


def test_idle_releases_the_gpu_and_a_restart_warms_the_last_used_first(
        spawn_server: Callable[..., Server], tiny_pipeline: Path, tmp_path: Path) -> None:
    root = tmp_path / "nas"
    env = _gpu_env(root, tiny_pipeline, ["alpha", "beta"])
    marker = tmp_path / "scaled-to-zero"
    srv = spawn_server(root=root, env={**env, **_marker_env(marker, "0.05")})   # 3 s
    s = srv.session()
    for model in ("beta", "alpha"):   # alpha is the most recent
        r = s.post(f"{srv.url}/api/generate?wait=true", json={**GEN, "model": model},
                   timeout=120)
        assert r.status_code == 200, r.text
    gpu, ram = _where(s, srv)
    assert gpu == ["alpha"] and "beta" in ram
    wait_until(marker.exists, timeout=15, what="idle")
    assert _where(s, srv) == ([], [])       # GPU and (pinned) RAM given back
    srv.stop()

    again = spawn_server(root=root, state=srv.state, env=env)
    s = again.session()
    # in the background after start: the most recent onto the GPU, the other into RAM
    wait_until(lambda: _where(s, again) == (["alpha"], ["beta"]), timeout=30,
               what="the warm-up")
    r = s.post(f"{again.url}/api/generate?wait=true", json={**GEN, "model": "alpha"},
               timeout=120)
    assert r.status_code == 200 and r.json()["switched_from"] == "gpu", r.json()


def test_the_webui_extensions_heartbeats_do_not_keep_it_awake(
        spawn_server: Callable[..., Server], tmp_path: Path) -> None:
    marker = tmp_path / "scaled-to-zero"
    secret = "g" * 43
    srv = spawn_server(env={**_marker_env(marker, "0.03"), "ATELIER_GATEWAY_SECRET": secret})
    gateway = {"X-Atelier-Gateway": secret}
    deadline = time.monotonic() + 20
    while not marker.exists():  # the extension polls for commands, as a WebUI left open
        assert time.monotonic() < deadline, "the extension's long polls kept it awake"
        r = requests.get(f"{srv.url}/api/gpu/webui/poll", params={"wait": 0.2},
                         headers=gateway, timeout=10)
        assert r.status_code == 200
    # a checkpoint loaded in the WebUI is use: its report wakes the service
    r = requests.post(f"{srv.url}/api/gpu/webui/report", headers=gateway, timeout=10,
                      json={"checkpoints": []})
    assert r.status_code == 200, r.text
    assert _health(srv)["idle_seconds"] < 1.0
    wait_until(lambda: _health(srv)["idle"] is False, timeout=5, what="awake")
