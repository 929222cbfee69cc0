"""The index's file watcher is supervised: restarted when it dies or the kernel's event
queue overflows, with a deep rescan for what was missed, and its state reported."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy.engine import Engine

from filebrowser import db
from filebrowser.images.index import Index, IndexService

from ...conftest import Server
from .conftest import wait_until, write_png

QUEUE = Path("/proc/sys/fs/inotify/max_queued_events")


def text(prompt: str) -> str:
    return f"{prompt}\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Seed: 1, Model: m"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = db.connect(f"sqlite:///{tmp_path / 'state' / 'db.sqlite'}")
    yield e
    e.dispose()


def test_a_dead_watcher_restarts_and_rescans(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "nas"
    write_png(root / "a" / "first.png", text("first"))
    index = Index(engine, root)
    # no periodic rescan within the test: only the watcher, or the rescan after its
    # restart, can see new files
    service = IndexService(index, watch=True, rescan_seconds=3600, deep_seconds=3600,
                           debounce=0.05)
    service.start()
    try:
        wait_until(lambda: index.counts().get("image") == 1 and not index.status.scanning,
                   what="first scan")
        assert dict(service.iter_status())["watcher"] == "running"
        # The emitter thread is what died on an inotify overflow (older watchdog raised
        # KeyError on the overflow event's wd -1 there); end it the way it ends: its
        # thread stops. What changes meanwhile produces no event at all.
        emitter = next(iter(service._observer.emitters))
        emitter.stop()
        emitter.join(10)
        for i in range(5):
            write_png(root / "a" / f"while-dead-{i}.png", text(f"unseen {i}"))
        wait_until(lambda: index.status.watcher_restarts == 1
                   and index.status.watcher == "running", what="restart")
        wait_until(lambda: index.counts().get("image") == 6, what="rescan after restart")
        st = dict(service.iter_status())
        assert st["watcher_error"] == "the file watcher stopped"
        assert st["watching"] and st["last_deep_scan"] is not None
        # and the new watcher follows changes again
        write_png(root / "b" / "after.png", text("after"))
        wait_until(lambda: index.counts().get("image") == 7, what="events after restart")
    finally:
        service.stop()


@contextmanager
def small_inotify_queue(size: int) -> Iterator[None]:
    """Lower fs.inotify.max_queued_events while an inotify instance is created (the kernel
    reads it then), and restore it at once: instances of other programs keep theirs."""
    old = QUEUE.read_text()
    QUEUE.write_text(str(size))
    try:
        yield
    finally:
        QUEUE.write_text(old)


def test_a_real_queue_overflow_restarts_and_rescans(spawn_server: Callable[..., Server],
                                                    tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("lowering fs.inotify.max_queued_events needs root (CI runs as root); "
                    "test_a_dead_watcher_restarts_and_rescans covers the restart without it")
    root = tmp_path / "nas"
    write_png(root / "outputs" / "seed.png", text("seed"))
    env = {"ATELIER_INDEX_RESCAN_SECONDS": "3600", "ATELIER_INDEX_DEEP_RESCAN_SECONDS": "3600"}

    def status() -> dict[str, Any]:
        r = requests.get(f"{srv.url}/api/search/status", headers=auth, timeout=10)
        assert r.status_code == 200
        return dict(r.json())

    with small_inotify_queue(32):
        srv = spawn_server(root=root, env=env)
        auth = {"Authorization": srv.session().headers["Authorization"]}
        wait_until(lambda: status()["watcher"] == "running", what="watcher up")
    n = 400  # each file is several events: far beyond a queue of 32
    # The service is paused while the burst is written, as a process starved of CPU under
    # load would be: the kernel queues events nobody reads, so the overflow is certain
    # (a fast reader on an idle machine could otherwise keep up with the burst).
    # The burst's folder must be watched before the pause: a folder made while nobody reads
    # is one event, and watchdog lists its contents when it adds the watch afterwards.
    write_png(root / "outputs" / "burst" / "marker.png", text("marker"), size=(8, 8))
    wait_until(lambda: status()["counts"].get("image") == 2, what="the burst folder watched")
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGSTOP)
    try:
        for i in range(n):
            write_png(root / "outputs" / "burst" / f"{i}.png", text(f"burst {i}"), size=(8, 8))
    finally:
        srv.proc.send_signal(signal.SIGCONT)
    seen: list[dict[str, Any]] = []

    def recovered() -> dict[str, Any] | None:
        s = status()
        seen.append(s)
        ok = (s["watcher_restarts"] >= 1 and s["watcher"] == "running" and not s["scanning"]
              and s["counts"].get("image") == n + 2)
        return s if ok else None

    try:
        st = wait_until(recovered, timeout=60,
                        what="overflow noticed, watcher restarted, all files indexed")
    except AssertionError as e:
        raise AssertionError(f"{e}; last status {seen[-1] if seen else None}") from None
    assert "overflowed" in st["watcher_error"]
    r = requests.get(f"{srv.url}/api/search", params={"q": "burst", "limit": 1}, headers=auth)
    assert r.json()["total"] == n + 1  # the burst, and the marker in the burst folder
