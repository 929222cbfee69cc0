"""Hashes are computed once per file version and kept in the database."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelzoo.residency import db, hashes
from modelzoo.residency.hashes import HashStore

from .checkpoints import write_family


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    e = sa.create_engine(f"sqlite:///{tmp_path / 'h.db'}")
    db.create(e)
    return e


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every full read of a file, recorded (the real function still runs)."""
    calls: list[Path] = []
    real = hashes.compute

    def compute(path: Path) -> hashes.FileHashes:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(hashes, "compute", compute)
    return calls


def test_values_are_the_webuis(tmp_path: Path, engine: sa.Engine) -> None:
    f = write_family(tmp_path / "m.safetensors", "sd1", pad_bytes=3 << 20)
    data = f.read_bytes()
    n = int.from_bytes(data[:8], "little")
    h = HashStore(engine).get(f)
    assert h is not None
    assert h.sha256 == hashlib.sha256(data).hexdigest() and h.short == h.sha256[:10]
    assert h.addnet == hashlib.sha256(data[8 + n:]).hexdigest()  # tensor data only
    assert h.legacy == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert h.addnet_short == h.addnet[:12]


def test_computed_once_and_shared_through_the_database(tmp_path: Path, engine: sa.Engine,
                                                       counted: list[Path]) -> None:
    f = write_family(tmp_path / "m.safetensors", "sd1", pad_bytes=1 << 20)
    first = HashStore(engine)
    assert first.lookup(f) is None  # lookup never reads the file
    a = first.get(f)
    assert len(counted) == 1
    # another process (a new store on the same database) reads the row, not the file
    b = HashStore(engine).get(f)
    assert a == b and len(counted) == 1
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.file_hashes)).one()
    assert row.path == os.path.realpath(f) and row.size == f.stat().st_size
    # a new version of the file (same path) is hashed again
    with open(f, "r+b") as fh:
        fh.seek(-1, os.SEEK_END)
        fh.write(b"\x07")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c = HashStore(engine).get(f)
    assert c is not None and c.sha256 != a.sha256 and len(counted) == 2  # type: ignore[union-attr]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.file_hashes)).scalar() == 1


def test_concurrent_callers_wait_for_one_reading(tmp_path: Path, engine: sa.Engine,
                                                 counted: list[Path]) -> None:
    f = write_family(tmp_path / "m.safetensors", "sd1", pad_bytes=8 << 20)
    store = HashStore(engine)
    out: list[object] = []
    threads = [threading.Thread(target=lambda: out.append(store.get(f))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(counted) == 1 and len({o.sha256 for o in out}) == 1  # type: ignore[attr-defined]


def test_warm_hashes_in_the_background(tmp_path: Path, engine: sa.Engine) -> None:
    f = write_family(tmp_path / "m.safetensors", "sd1")
    store = HashStore(engine)
    fut = store.warm(f)
    assert fut is not None and fut.result(30) == store.lookup(f)
    assert store.warm(f) is None  # known: nothing to do
    assert store.get(tmp_path / "missing.safetensors") is None
    assert store.get(tmp_path) is None  # a folder has no file hash
    store.close()
