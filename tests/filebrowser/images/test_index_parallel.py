"""A large scan reads files in worker processes: the same index as one thread gives,
nothing lost when a worker dies, and the workers' opens are checked as the thread's."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from filebrowser import db
from filebrowser.access.jail import Scope
from filebrowser.images import index as index_mod
from filebrowser.images.index import Index, SearchQuery, search
from filebrowser.images.rows import Parsers
from filebrowser.settings import Settings

from . import generators as gen
from .conftest import CHINESE_TEXT, comfy_png, write_exif_image, write_png

ALL = Scope(read=("",), write=("",))


def text(prompt: str, seed: int) -> str:
    return (f"{prompt}, <lora:style{seed % 5}:0.7>\nNegative prompt: blurry\n"
            f"Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: {seed}, Size: 512x512, "
            f"Model hash: abc{seed % 3}, Model: model{seed % 3}")


@pytest.fixture
def small_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers from the 40th file on, 16 files a group, at most 3 groups out: a tree of
    a few hundred files goes through every path of the pool (the real figures are 512,
    256 and 8)."""
    monkeypatch.setattr(index_mod, "PARALLEL_AFTER", 40)
    monkeypatch.setattr(index_mod, "GROUP", 16)
    monkeypatch.setattr(index_mod, "MAX_PENDING", 3)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Parsers | None]:
    """The pools the scans start (a spy on the real Parsers.start)."""
    pools: list[Parsers | None] = []
    real = Parsers.start.__func__  # type: ignore[attr-defined]

    def start(cls: type[Parsers], workers: int) -> Parsers | None:
        pools.append(real(cls, workers))
        return pools[-1]

    monkeypatch.setattr(Parsers, "start", classmethod(start))
    return pools


def make_tree(root: Path) -> int:
    """Every kind of file the index reads, in six folders; returns the number indexed."""
    n = 0
    for i in range(240):
        folder = root / f"f{i % 6}"
        kind = i % 8
        if kind == 0:
            write_png(folder / f"a{i}.png", text(f"walrus {i}", i))
        elif kind == 1:
            write_exif_image(folder / f"b{i}.jpg", CHINESE_TEXT)
        elif kind == 2:
            comfy_png(folder / f"c{i}.png")
        elif kind == 3:
            gen.novelai_png(folder / f"n{i}.png")
        elif kind == 4:
            gen.invokeai_png(folder / f"i{i}.png")
        elif kind == 5:
            gen.swarm_jpeg(folder / f"s{i}.jpg")
        elif kind == 6:
            gen.fooocus_png(folder / f"o{i}.png", scheme="fooocus" if i % 16 < 8 else "a1111")
        else:
            write_png(folder / f"t{i}.png", None)  # parameters in its sidecar .txt
            (folder / f"t{i}.txt").write_text(text(f"sidecar {i}", i))
        n += 1
    # Fooocus images described only by their folder's log.html
    logged = root / "fooocus"
    entries = []
    for i in range(30):
        write_png(logged / f"l{i}.png", None)
        entries.append((f"l{i}.png", [(lab, key, f"otter {i}" if key == "prompt" else v)
                                      for lab, key, v in gen.FOOOCUS_FIELDS]))
        n += 1
    gen.fooocus_log(logged, entries)
    for i in range(12):  # parameters in the pixels only (read when stealth is on)
        gen.stealth_png(root / "stealth" / f"p{i}.png", text(f"heron {i}", i))
        n += 1
    (root / "models").mkdir()
    (root / "models" / "m.safetensors").write_bytes(b"\0" * 64)
    (root / "名前").mkdir()
    write_png(root / "名前" / "猫.png", text("猫 cat", 7))
    return n + 2


def dump(engine: Engine) -> tuple[list[Any], list[Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT * FROM image_index ORDER BY path")).mappings().all()
        folders = conn.execute(sa.text("SELECT * FROM index_folders ORDER BY path")).all()
    return [{k: v for k, v in r.items() if k != "id"} for r in rows], list(folders)


def found(index: Index, q: str) -> set[str]:
    return {r["path"] for r in search(index, ALL, SearchQuery(q=q, limit=1000))["results"]}


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    a = db.connect(f"sqlite:///{tmp_path / 'a' / 'db.sqlite'}")
    b = db.connect(f"sqlite:///{tmp_path / 'b' / 'db.sqlite'}")
    yield a, b
    a.dispose()
    b.dispose()


@pytest.mark.usefixtures("small_groups")
@pytest.mark.parametrize("stealth", [False, True])
def test_workers_give_the_index_one_thread_gives(tmp_path: Path, engines: tuple[Engine, Engine],
                                                 started: list[Parsers | None],
                                                 stealth: bool) -> None:
    root = tmp_path / "nas"
    n = make_tree(root)
    threaded = Index(engines[0], root, workers=0, stealth=stealth)
    parallel = Index(engines[1], root, workers=2, stealth=stealth)
    assert threaded.scan() == n
    assert started == []  # workers=0: no pool, whatever the number of files
    assert parallel.scan() == n
    assert len(started) == 1 and started[0] is not None
    one, two = dump(engines[0]), dump(engines[1])
    assert len(one[0]) == n and one == two  # every column of every row, and the folders
    for q in ("walrus", "otter", "红发", "猫", "sidecar", "model1", "Euler", "f3"):
        assert found(parallel, q) == found(threaded, q) != set(), q
    assert len(found(parallel, "heron")) == (12 if stealth else 0)
    # the workers end with the scan; a rescan with nothing new starts none
    assert parallel.scan() == 0 and len(started) == 1


def test_small_scans_stay_in_the_thread(tmp_path: Path, engines: tuple[Engine, Engine],
                                        started: list[Parsers | None]) -> None:
    root = tmp_path / "nas"
    for i in range(100):
        write_png(root / f"{i}.png", text("few", i), size=(8, 8))
    index = Index(engines[0], root, workers=2)
    assert index.scan() == 100
    assert started == []  # under PARALLEL_AFTER (512) files: not worth a pool


@pytest.mark.usefixtures("small_groups")
def test_a_worker_killed_mid_scan_loses_nothing(tmp_path: Path, engines: tuple[Engine, Engine],
                                               monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "nas"
    n = make_tree(root)
    submitted = []
    real = Parsers.submit

    def submit(self: Parsers, tasks: list[Any], stealth: bool) -> Any:
        future = real(self, tasks, stealth)
        submitted.append(len(tasks))
        if len(submitted) == 4:  # kill -9 a worker with groups in flight
            pid = next(iter(self.pool._processes))  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGKILL)
        return future

    monkeypatch.setattr(Parsers, "submit", submit)
    index = Index(engines[0], root, workers=2)
    with caplog.at_level(logging.WARNING, "atelier.index"):
        assert index.scan() == n
    assert caplog.text.count("the parsing workers failed (BrokenProcessPool") == 1
    assert len(submitted) >= 4  # (the rest of the scan was read in the thread)
    reference = Index(engines[1], root, workers=0)
    reference.scan()
    assert dump(engines[0]) == dump(engines[1])


@pytest.mark.usefixtures("small_groups")
def test_no_process_for_a_group_mid_scan_loses_nothing(
        tmp_path: Path, engines: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """fork() refused (a container's pids limit) while groups are out: those still
    queued are cancelled and read in the thread, in order, with the rest."""
    monkeypatch.setattr(index_mod, "MAX_PENDING", 12)  # more out than the pool takes in
    root = tmp_path / "nas"
    n = make_tree(root)
    calls = []
    real = Parsers.submit

    def submit(self: Parsers, tasks: list[Any], stealth: bool) -> Any:
        calls.append(len(tasks))
        if len(calls) == 10:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real(self, tasks, stealth)

    monkeypatch.setattr(Parsers, "submit", submit)
    with caplog.at_level(logging.WARNING, "atelier.index"):
        assert Index(engines[0], root, workers=2).scan() == n
    assert caplog.text.count("the parsing workers failed (BlockingIOError") == 1
    assert len(calls) == 10
    Index(engines[1], root, workers=0).scan()
    assert dump(engines[0]) == dump(engines[1])


@pytest.mark.usefixtures("small_groups")
def test_no_workers_to_be_had_the_thread_reads(tmp_path: Path, engines: tuple[Engine, Engine],
                                               monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A container without /dev/shm has no semaphores, so no process pool: the scan
    says so once and reads every file in its own thread."""
    import filebrowser.images.rows as rows

    def no_sem_open(*_a: Any, **_k: Any) -> Any:
        raise NotImplementedError("This platform lacks a functioning sem_open implementation")

    monkeypatch.setattr(rows, "ProcessPoolExecutor", no_sem_open)
    root = tmp_path / "nas"
    n = make_tree(root)
    with caplog.at_level(logging.WARNING, "atelier.index"):
        assert Index(engines[0], root, workers=2).scan() == n
    assert caplog.text.count("no parsing workers (This platform lacks") == 1


@pytest.mark.usefixtures("small_groups")
def test_workers_do_not_follow_a_file_swapped_after_the_listing(
        tmp_path: Path, engines: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch,
        started: list[Parsers | None]) -> None:
    """The walk lists a regular file; before a worker opens it, it becomes a symlink to
    a file outside the NAS, or a FIFO (which a plain open would block on for ever)."""
    root = tmp_path / "nas"
    n = make_tree(root)
    secret = write_png(tmp_path / "outside" / "secret.png", text("platypus secret", 1))
    real_list = Index._list

    def listing(self: Index, real: Path) -> Any:
        out = real_list(self, real)
        if real.name == "fooocus":  # walked last, when the workers are reading
            (real / "l3.png").unlink()
            os.symlink(secret, real / "l3.png")
            (real / "l4.png").unlink()
            os.mkfifo(real / "l4.png")
        return out

    monkeypatch.setattr(Index, "_list", listing)
    index = Index(engines[0], root, workers=2)
    assert index.scan() == n - 2
    assert started and started[0] is not None
    assert found(index, "platypus") == set()
    paths = {r["path"] for r in dump(engines[0])[0]}
    assert "fooocus/l3.png" not in paths and "fooocus/l4.png" not in paths
    assert "fooocus/l5.png" in paths


@pytest.mark.usefixtures("small_groups")
def test_crashed_mid_scan_each_marked_folder_is_complete(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder's mark is committed with its last rows, whichever process read them: a
    scan that dies after any of its commits leaves no folder marked as done with rows
    missing, and the next scan completes the index."""
    monkeypatch.setattr(index_mod, "FIRST_BATCH", 20)
    monkeypatch.setattr(index_mod, "BATCH", 30)
    monkeypatch.setattr(index_mod, "GROUP", 8)  # f0..f5 hold 40 files: folders end
    # where groups do, so a mark comes while groups are out and no file waits
    root = tmp_path / "nas"
    n = make_tree(root)
    for crash_at in range(2, 8):
        engine = db.connect(f"sqlite:///{tmp_path / f'db{crash_at}' / 'db.sqlite'}")
        index = Index(engine, root, workers=2)
        commits: list[int] = []

        def on_flush(written: int, commits: list[int] = commits, crash_at: int = crash_at
                     ) -> None:
            commits.append(written)
            if len(commits) == crash_at:  # as if the process died after this commit
                raise RuntimeError("crash")

        index.on_flush = on_flush
        with pytest.raises(RuntimeError, match="crash"):
            index.scan()
        rows, folders = dump(engine)
        assert 0 < len(rows) <= n
        for folder, _mtime in folders:
            on_disk = {f"{folder}/{e.name}" if folder else e.name
                       for e in os.scandir(root / folder)
                       if e.is_file() and e.name.endswith((".png", ".jpg", ".safetensors"))}
            indexed = {r["path"] for r in rows if r["folder"] == folder}
            assert indexed == on_disk, (crash_at, folder)
        Index(engine, root, workers=2).scan()
        assert len(dump(engine)[0]) == n
        engine.dispose()


def test_workers_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_INDEX_WORKERS", "0")
    assert Settings(root=tmp_path).index_workers == 0
    monkeypatch.delenv("ATELIER_INDEX_WORKERS")
    assert Settings(root=tmp_path).index_workers is None
    engine = db.connect(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        assert Index(engine, tmp_path, workers=0).workers == 0
        cpus = len(os.sched_getaffinity(0))
        assert Index(engine, tmp_path).workers == (min(cpus, 4) if cpus > 1 else 0)
    finally:
        engine.dispose()


# A scan in its own process, with the small groups above, that says when it commits.
_SCAN = """
import sys
from pathlib import Path
from filebrowser import db
from filebrowser.images import index as ix
ix.PARALLEL_AFTER, ix.GROUP, ix.MAX_PENDING, ix.FIRST_BATCH, ix.BATCH = 40, 4, 3, 20, 20
index = ix.Index(db.connect("sqlite:///" + sys.argv[2]), Path(sys.argv[1]), workers=2)
index.on_flush = lambda n: print("flush", n, flush=True)
index.scan()
"""


def test_kill_9_mid_scan_leaves_no_process_behind(tmp_path: Path) -> None:
    """The workers, the fork server and the resource tracker all end when the service
    that started them is killed mid-scan (workers blocked writing results nobody reads
    would otherwise live for ever)."""
    root = tmp_path / "nas"
    make_tree(root)
    proc = subprocess.Popen([sys.executable, "-c", _SCAN, str(root), str(tmp_path / "db")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("flush")
        assert proc.stdout.readline().startswith("flush")  # (the workers' rows by now)
        helpers = psutil.Process(proc.pid).children(recursive=True)
        assert len(helpers) >= 3  # two workers, the fork server (and a resource tracker)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        alive = [p for p in helpers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            break
        time.sleep(0.1)
    assert alive == [], [p.cmdline() for p in alive]
