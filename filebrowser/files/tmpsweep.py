"""Sweeping what killed writers left behind: stale ``.atelier-tmp-*`` files.

Every write goes to a hidden temporary name in its target folder and is renamed into
place (``fs.tmp_name``); the writer removes it in ``finally``. A kill -9, an OOM kill
or a power cut skips that, and the file stays: hidden from listings, refused by the
jail (nobody can delete it through the API), taking disk space. Those are removed at
start and every ``tmp_sweep_seconds``::

    <folder>/.atelier-tmp-<hex>-<name>       multipart upload, WebDAV PUT, copy (a folder
                                             for a copied tree)
    <folder>/.atelier-tmp-tus-<id>.part      a resumable upload's bytes: belongs to its
                                             row in tus_uploads (expired by the tus sweep);
                                             removed here only when no row names it

Never one a live request is writing:

- writers hold an exclusive ``flock`` on the file while they write (WebDAV PUT, multipart
  upload); the sweeper skips any file it cannot lock, and deletes the others while holding
  the lock. ``flock`` on NFS is a POSIX lock the server arbitrates, so replicas sharing
  the NAS respect each other's; the kernel (or the NFS lease) drops it when a process dies;
- only entries untouched for ``tmp_stale_seconds``: for a folder (a copy in progress)
  the newest mtime of anything inside it.

Temporary files never count in quotas or usage (``usage/ledger.py`` skips them);
resumable uploads count by their stored offsets instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import stat as st
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from ..access.jail import INTERNAL_PREFIX
from .fs import TMP_PREFIX, TUS_PARTIAL_PREFIX

log = logging.getLogger("atelier.tmpsweep")


@dataclass
class SweepReport:
    removed: int = 0
    bytes: int = 0
    busy: int = 0      # locked by a live writer
    young: int = 0     # touched within the stale window
    seconds: float = 0.0


def _temps(root: Path) -> Iterator[os.DirEntry[str]]:
    """Every ``.atelier-tmp-*`` entry under ``root``, not following symlinks and not
    entering them (a temporary folder is one entry) nor the service's ``.atelier`` folder."""
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    if e.name.startswith(TMP_PREFIX):
                        yield e
                    elif e.name.startswith(INTERNAL_PREFIX):
                        continue
                    else:
                        with contextlib.suppress(OSError):
                            if e.is_dir(follow_symlinks=False):
                                stack.append(e.path)
        except OSError:
            continue


def _newest_mtime(path: str, s: os.stat_result) -> tuple[float, int]:
    """(newest mtime, bytes) of a file, or of a folder and everything in it."""
    if not st.S_ISDIR(s.st_mode):
        return s.st_mtime, s.st_size if st.S_ISREG(s.st_mode) else 0
    newest, total = s.st_mtime, 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                cs = os.lstat(os.path.join(dirpath, name))
                newest = max(newest, cs.st_mtime)
                if st.S_ISREG(cs.st_mode):
                    total += cs.st_size
    return newest, total


class TempSweeper:
    def __init__(self, root: Path, stale_seconds: float,
                 tus_upload_exists: Callable[[str], bool]) -> None:
        self.root = root
        self.stale_seconds = stale_seconds
        self.tus_upload_exists = tus_upload_exists

    def sweep(self, now: float | None = None) -> SweepReport:
        t0 = time.monotonic()
        now = time.time() if now is None else now
        report = SweepReport()
        for entry in _temps(self.root):
            try:
                self._consider(entry, now, report)
            except OSError as exc:  # gone meanwhile, or not ours to remove: next round
                log.debug("tmpsweep: %s: %s", entry.path, exc)
        report.seconds = time.monotonic() - t0
        if report.removed:
            log.info("removed %d stale temporary files (%d bytes)", report.removed,
                     report.bytes)
        return report

    def _consider(self, entry: os.DirEntry[str], now: float, report: SweepReport) -> None:
        name = entry.name
        if name.startswith(TUS_PARTIAL_PREFIX):
            uid = name[len(TUS_PARTIAL_PREFIX):].removesuffix(".part")
            if self.tus_upload_exists(uid):
                return  # a resumable upload's bytes: the tus expiry decides
        s = entry.stat(follow_symlinks=False)
        newest, size = _newest_mtime(entry.path, s)
        if now - newest < self.stale_seconds:
            report.young += 1
            return
        if st.S_ISREG(s.st_mode):
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    report.busy += 1
                    return
                os.unlink(entry.path)  # while holding the lock: no writer in between
            finally:
                os.close(fd)
        elif st.S_ISDIR(s.st_mode):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
        report.removed += 1
        report.bytes += size


async def sweep_forever(sweeper: TempSweeper, every_seconds: float) -> None:
    """Sweep now (service start), then every ``every_seconds`` (0: only now)."""
    while True:
        try:
            await run_in_threadpool(sweeper.sweep)
        except Exception:  # a failed sweep is retried next round
            log.exception("the temporary-file sweep failed")
        if every_seconds <= 0:
            return
        await asyncio.sleep(every_seconds)
