"""Against Debian's nginx: throttled static files, kill -9 and resume, racing processes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from modelzoo.fetch import FetchSettings, fetch
from modelzoo.fetch.control import ControlFile

MB = 1024 * 1024


def test_throttled_nginx_every_connection_busy(nginx, tools, tmp_path: Path) -> None:
    data = tools.make_safetensors(4 * MB)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "m.safetensors").write_bytes(data)
    srv = nginx(tmp_path / "www", limit_rate="1m")
    out = tmp_path / "out"
    s = FetchSettings(connections=8, piece_size=128 * 1024, reserve_bytes=0)
    r = fetch(srv.url("m.safetensors"), out / "m.safetensors", sha256=tools.sha(data),
              settings=s)
    assert (out / "m.safetensors").read_bytes() == data
    log = srv.log_path.read_text().splitlines()
    # the probe and eight connections (the first goes on where the probe stopped)
    assert sum(1 for line in log if line.startswith("206 ")) >= 1 + 8
    # nginx sent the file once, plus the probe and what stolen-from connections overshot
    assert srv.bytes_sent() <= len(data) + s.probe_bytes + 8 * s.buffer_size
    assert r.fetched >= len(data)


def _wait_for(cond, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def _done_bytes(ctl_path: Path, size: int) -> int:
    ctl = ControlFile.load(ctl_path)
    if ctl is None:
        return 0
    try:
        return sum(min(ctl.piece_size, size - i * ctl.piece_size)
                   for i, d in enumerate(ctl.done) if d)
    finally:
        ctl.close()


def test_kill_9_mid_download_then_resume_refetches_at_most_the_pieces_in_flight(
        nginx, tools, tmp_path: Path, child_env) -> None:
    data = tools.make_safetensors(4 * MB)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "m.safetensors").write_bytes(data)
    srv = nginx(tmp_path / "www", limit_rate="256k")
    out = tmp_path / "out"
    conns, piece = 4, 64 * 1024
    args = [srv.url("m.safetensors"), "--to", str(out), "-x", str(conns),
            "--piece-size", "64K", "-q"]
    child = subprocess.Popen(tools.fetch_cmd(*args), env=child_env)
    ctl = out / ".m.safetensors.part.ctl"
    try:
        _wait_for(lambda: _done_bytes(ctl, len(data)) >= len(data) // 2)
    finally:
        child.kill()  # SIGKILL: no cleanup at all
        child.wait()
    assert not (out / "m.safetensors").exists()
    kept = _done_bytes(ctl, len(data))
    assert len(data) // 2 <= kept < len(data)
    s = FetchSettings(connections=conns, piece_size=piece, reserve_bytes=0)
    r = fetch(srv.url("m.safetensors"), out / "m.safetensors", sha256=tools.sha(data),
              settings=s)
    assert (out / "m.safetensors").read_bytes() == data
    assert r.resumed == kept
    # nginx's own count: everything it sent to both processes, minus the file and the two
    # probes, is what was fetched twice
    _wait_for(lambda: len(srv.log_path.read_text().splitlines()) >= 2)
    refetched = srv.bytes_sent() - len(data) - 2 * s.probe_bytes
    assert refetched <= conns * piece + conns * s.buffer_size


def test_two_processes_racing_for_one_file_download_it_once(nginx, tools, tmp_path: Path,
                                                            child_env) -> None:
    data = tools.make_safetensors(3 * MB)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "m.safetensors").write_bytes(data)
    srv = nginx(tmp_path / "www", limit_rate="512k")
    out = tmp_path / "nas"
    args = [srv.url("m.safetensors"), "--to", str(out), "-x", "4"]
    procs = [subprocess.Popen(tools.fetch_cmd(*args, "-q"), env=child_env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert (out / "m.safetensors").read_bytes() == data
    assert sum("already there" in o for o in outputs) == 1
    assert sorted(p.name for p in out.iterdir()) == ["m.safetensors"]
    # one download (plus each process's small probe), not two
    assert srv.bytes_sent() <= len(data) + 2 * 256 * 1024 + 4 * MB // 4
