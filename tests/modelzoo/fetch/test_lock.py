"""The per-destination lock file: exclusive, stale takeover, heartbeat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from modelzoo.errors import LockTimeout
from modelzoo.fetch.lock import FileLock


def test_second_holder_waits_until_release(tmp_path: Path) -> None:
    path = tmp_path / ".m.lock"
    a = FileLock(path, heartbeat=0.1)
    assert a.try_acquire()
    b = FileLock(path, heartbeat=0.1, poll=0.02)
    assert not b.try_acquire()
    got = threading.Event()

    def wait() -> None:
        assert b.acquire(timeout=30) is True  # True: it had to wait
        got.set()

    t = threading.Thread(target=wait)
    t.start()
    assert not got.wait(0.3)
    a.release()
    t.join(30)
    assert got.is_set()
    assert json.loads(path.read_text())["owner"] == b.owner
    b.release()
    assert not path.exists()


def test_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / ".m.lock"
    code = ("import sys, time; from pathlib import Path; from modelzoo.fetch.lock import "
            "FileLock; l = FileLock(Path(sys.argv[1])); assert l.try_acquire(); "
            "print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == b"held"
    assert not FileLock(path).try_acquire()
    p.kill()  # SIGKILL: no cleanup, the lock file stays
    p.wait()
    p.stdout.close()
    assert path.exists()
    mine = FileLock(path)
    assert mine.try_acquire()  # same host, dead pid: stale at once
    mine.release()


def test_lock_without_heartbeat_is_stale_and_taken_over(tmp_path: Path) -> None:
    path = tmp_path / ".m.lock"
    path.write_text(json.dumps({"owner": "x", "host": "other-replica", "pid": 1}))
    fresh = FileLock(path, stale_after=30)
    assert not fresh.try_acquire()  # another host, heartbeat recent
    old = time.time() - 120
    os.utime(path, (old, old))  # its owner stopped beating two minutes ago
    assert fresh.try_acquire()
    fresh.release()


def test_heartbeat_keeps_the_lock_fresh_and_notices_a_takeover(tmp_path: Path) -> None:
    path = tmp_path / ".m.lock"
    a = FileLock(path, heartbeat=0.05, stale_after=1)
    assert a.try_acquire()
    old = time.time() - 120
    os.utime(path, (old, old))
    deadline = time.monotonic() + 10
    while os.stat(path).st_mtime < old + 60 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert os.stat(path).st_mtime > old + 60  # touched by the heartbeat
    path.write_text(json.dumps({"owner": "someone-else"}))
    assert a.lost.wait(10)
    a.release()
    assert path.exists()  # not ours any more: left alone


def test_timeout_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / ".m.lock"
    a = FileLock(path)
    assert a.try_acquire()
    with pytest.raises(LockTimeout, match="pid"):
        FileLock(path, poll=0.01).acquire(timeout=0.05)
    a.release()
