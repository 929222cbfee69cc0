"""The upload writer on real filesystems: exact bytes across unaligned requests, the page
cache really bypassed (fincore), a full ext4 disk, and the auto choice per filesystem."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from atelier_io.diskwrite import BATCH, BLOCK, Appender, DiskFull, filesystem_type, use_direct

MiB = 1024 * 1024


def resident(path: Path) -> int:
    """Bytes of ``path`` in the page cache, as util-linux's fincore counts them."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


def append(path: Path, data: bytes, direct: bool, rng: random.Random) -> Appender:
    """One request's worth: a new Appender at the file's end, fed in random chunks."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        out = Appender(path, fd, os.fstat(fd).st_size, direct)
        at = 0
        while at < len(data):
            batch = []
            for _ in range(rng.randint(1, 40)):
                n = rng.randint(1, 300_000)
                batch.append(data[at:at + n])
                at += n
            out.write([c for c in batch if c])
        out.flush()
        out.close()
        return out
    finally:
        os.close(fd)


@pytest.mark.parametrize("modes", [[False], [True], [True, False]],
                         ids=["buffered", "direct", "alternating"])
def test_requests_of_any_size_and_offset_append_exactly(tmp_path: Path,
                                                        modes: list[bool]) -> None:
    """Each request a new Appender at the file's end (as PATCHes are); the alternating case
    is a restart with another ``upload_direct_io`` between requests."""
    rng = random.Random(7)
    path = tmp_path / "partial"
    sizes = [1, BLOCK - 1, BATCH + 123, 3 * MiB, 17, 2 * BATCH, BLOCK, 5]
    want = b""
    for i, size in enumerate(sizes):
        data = rng.randbytes(size)
        out = append(path, data, modes[i % len(modes)], rng)
        want += data
        assert out.written == size
        assert out.direct is False  # closed
        assert path.read_bytes() == want, f"after a {size}-byte request"


def test_direct_writes_leave_the_page_cache_alone(tmp_path: Path) -> None:
    rng = random.Random(1)
    data = rng.randbytes(4 * BATCH)  # block-aligned: no tail goes through the cache
    direct, buffered = tmp_path / "direct", tmp_path / "buffered"
    append(direct, data, True, rng)
    append(buffered, data, False, rng)
    assert resident(buffered) >= len(data) // 2
    assert resident(direct) <= BLOCK
    assert direct.read_bytes() == data


def test_a_full_ext4_disk_is_insufficient_storage(tmp_path: Path, ext4) -> None:  # type: ignore[no-untyped-def]
    disk = ext4(tmp_path / "disk", "16M")
    path = disk / "big"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        out = Appender(path, fd, 0, direct=True)
        assert out.direct
        with pytest.raises(DiskFull):
            for _ in range(8):
                out.write([os.urandom(4 * MiB)])
            out.flush()
        out.close()
    finally:
        os.close(fd)
    os.unlink(path)
    assert os.statvfs(disk).f_bfree * os.statvfs(disk).f_frsize > 8 * MiB  # space is back


def test_auto_uses_direct_io_for_big_bodies_on_local_disks_only(tmp_path: Path, ext4,  # type: ignore[no-untyped-def]
                                                                 tmpfs) -> None:
    disk = ext4(tmp_path / "disk")
    ram = tmpfs(tmp_path / "ram", "8m")
    assert filesystem_type(disk) == "ext4" and filesystem_type(ram) == "tmpfs"
    assert use_direct("auto", disk, 64 * MiB)
    assert not use_direct("auto", disk, MiB)        # small bodies: not worth it
    assert not use_direct("auto", disk, None)       # unknown length
    assert not use_direct("auto", ram, 64 * MiB)    # not a local disk filesystem
    assert use_direct("on", ram, 1)
    assert not use_direct("off", disk, 64 * MiB)
