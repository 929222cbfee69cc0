"""Rows of the image index, built from a file's metadata: what indexing spends its time on.

Kept apart from :mod:`.index` (the tables, the walk and the database) so that worker
processes that parse images in parallel load only this and the format parsers, not
SQLAlchemy and the web stack.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import multiprocessing
import os
import select
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

from .formats.fooocus import FolderLog, parse_a1111_scheme
from .infotext import GenParams, parse_infotext
from .meta import read_meta
from .terms import terms_of

log = logging.getLogger("atelier.index")

# image_index's columns as make_row fills them
_INSERT_COLS = ("path", "folder", "name", "kind", "size", "mtime", "mtime_ns", "width",
                "height", "source", "prompt", "negative", "model", "model_hash", "sampler",
                "steps", "cfg", "seed", "loras", "embeddings", "params", "terms")

_JSON = json.JSONEncoder(ensure_ascii=False)  # json.dumps(ensure_ascii=False) without
                                              # building an encoder per call
# ...nor the C encoder the one above builds at every encode() (a third of its cost):
# made once, without the cycle check (a params dict is a tree).
_C_ENCODER = c_make_encoder(None, _JSON.default, encode_basestring, None, ": ", ", ",
                            False, False, True) if c_make_encoder is not None else None


def _encode(d: dict[str, Any]) -> str:
    if _C_ENCODER is None:
        return _JSON.encode(d)
    return "".join(_C_ENCODER(d, 0))


# GenParams fields that go into the params JSON as they are, when set
_PLAIN_PARAMS = ("scheduler", "width", "height", "vae", "vae_hash", "clip_skip",
                 "denoising_strength", "version")


def params_dict(g: GenParams) -> dict[str, Any]:
    """The fields of ``g`` that have no column of their own."""
    d: dict[str, Any] = {}
    for key in _PLAIN_PARAMS:  # (a loop: 0.2 us more per image than eight ifs)
        v = getattr(g, key)
        if v is not None:
            d[key] = v
    if g.loras:
        d["loras"] = [{"name": lo.name, "weight": lo.weight, "hash": lo.hash} for lo in g.loras]
    if g.embeddings:
        d["embeddings"] = g.embeddings
    if g.hires:
        d["hires"] = g.hires
    if g.adetailer:
        d["adetailer"] = g.adetailer
    if g.extra:
        d["extra"] = g.extra
    return d


def params_value(g: GenParams) -> str | None:
    """The ``params`` column: A1111's own parameter line(s) when the image has them (a
    compact form already, parsed again for the few rows a page shows; encoding a JSON
    of them cost a fifth of indexing an image), else a JSON of :func:`params_dict`."""
    if g.source == "none":
        return None
    if g.params_text:
        return g.params_text
    d = params_dict(g)
    return _encode(d) if d else None


def params_of(r: Any) -> dict[str, Any]:
    """:func:`params_dict` of a row, whichever form its ``params`` column holds."""
    value = r.params
    if not value:
        return {}
    if value[0] == "{":
        out: dict[str, Any] = json.loads(value)
        return out
    text = "\n".join(x for x in (r.prompt or "", f"Negative prompt: {r.negative}"
                                 if r.negative else "", value) if x)
    return params_dict(parse_a1111_scheme(text) if r.source == "fooocus"
                       else parse_infotext(text))


_I32 = 1 << 31
_I64 = 1 << 63


def _i32(v: int | None) -> int | None:
    """An INTEGER column's value, or None when it does not fit 32 bits."""
    return v if v is None or -_I32 <= v < _I32 else None


def _names(names: list[str]) -> str | None:
    """``|a|b|``: a name matches exactly as ``%|name|%`` (a ``|`` in a name: dropped)."""
    return "|" + "|".join([n.replace("|", "") for n in names]) + "|" if names else None


def make_row(real: Path | str, vpath: str, folder: str, name: str, kind: str,
             size: int | None, mtime_ns: int | None, sidecar: Path | str | None,
             log: Path | str | FolderLog | None = None, *, stealth: bool = False
             ) -> tuple[Any, ...] | None:
    """One ``image_index`` row (in :data:`_INSERT_COLS` order); never raises on content.
    ``sidecar``/``log``: the image's .txt and its folder's Fooocus log.html, if any.
    ``size``/``mtime_ns`` None: the file's own, taken as it is read (None if it is gone)."""
    meta = None
    if kind == "image":
        try:
            meta = read_meta(real, sidecar=sidecar or False, log=log or False, stealth=stealth,
                             follow_symlinks=False)
        except OSError as exc:
            if exc.errno in _NOT_A_FILE:  # swapped for a link, a FIFO...: not indexed
                return None
    if size is None or mtime_ns is None:
        try:
            s = meta.stat if meta is not None and meta.stat is not None else os.lstat(real)
        except OSError:
            return None
        size, mtime_ns = s.st_size, s.st_mtime_ns
    if meta is None:
        return (vpath, folder, name, kind, size, mtime_ns / 1e9, mtime_ns) + _NO_PARAMS
    width, height, g = meta.width, meta.height, meta.params
    # (the hottest lines of indexing: each call and list here is paid per image)
    seed, steps = g.seed, g.steps
    if seed is not None and not -_I64 <= seed < _I64:
        seed = None
    if steps is not None and not -_I32 <= steps < _I32:
        steps = None
    model_hash = g.model_hash[:80] or None if g.model_hash else None
    loras = _names([lo.name for lo in g.loras]) if g.loras else None
    embeddings = _names(g.embeddings) if g.embeddings else None
    return (vpath, folder, name, kind, size, mtime_ns / 1e9, mtime_ns, _i32(width),
            _i32(height), g.source if g.source != "none" else None, g.prompt or None,
            g.negative_prompt or None, g.model, model_hash, g.sampler, steps, g.cfg_scale,
            seed, loras, embeddings, params_value(g), terms_of(g, width, height) or None)


# read_meta's refusals of what is no longer the regular file the walk listed (gone, a
# symlink, a FIFO or device) (EACCES and the like still give a row, without parameters)
_NOT_A_FILE = frozenset({errno.ENOENT, errno.ELOOP, errno.EINVAL, errno.ENOTDIR})
# the columns from ``width`` on of a file without parameters
_NO_PARAMS: tuple[Any, ...] = (None,) * (len(_INSERT_COLS) - 7)


def make_rows(tasks: list[tuple[bool, tuple[Any, ...]]], stealth: bool
              ) -> list[tuple[bool, tuple[Any, ...]]]:
    """(new, row) of each (new, :func:`make_row` arguments) task, leaving out the files
    gone since their folder was listed. What a parsing worker runs."""
    out = []
    for new, args in tasks:
        row = make_row(*args, stealth=stealth)
        if row is not None:
            out.append((new, row))
    return out


def default_workers() -> int:
    """Parsing workers for a large scan: one per CPU this process may use, at most
    four (past that the one writing thread is the limit); none on one CPU."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(cpus, 4) if cpus > 1 else 0


def _worker_start(owner: int) -> None:
    with contextlib.suppress(OSError):
        os.nice(5)  # behind the requests the service answers
    threading.Thread(target=_exit_with, args=(owner,), name="exit-with-owner",
                     daemon=True).start()


def _exit_with(owner: int) -> None:
    """End this worker when the process that started it ends. After a kill -9 of the
    service nobody reads the workers' results: they would block writing them for ever,
    and keep the fork server alive too."""
    try:
        fd = os.pidfd_open(owner)  # readable once the process has exited
    except (AttributeError, OSError):  # (no pidfd, or already gone)
        while True:
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                break
            except OSError:
                pass
            time.sleep(1.0)
    else:
        select.select([fd], [], [])
    os._exit(1)


class Parsers:
    """Worker processes that run :func:`make_rows`, for one large scan.

    Forked from a fork server that has loaded only this module and the parsers: a
    service's other threads (and the locks they may hold) are not copied into them,
    and they start in milliseconds. Files are opened and checked in the workers
    exactly as in the indexing thread (:func:`make_row`). A worker ends with the
    process that started it, even one killed with SIGKILL.

    As with every multiprocessing start method but fork, each worker imports the
    program's main module, without running its ``if __name__ == "__main__":`` block
    (``python -m atelier`` and the ``atelier`` script are light)."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self.pool = pool

    @classmethod
    def start(cls, workers: int) -> Parsers | None:
        """None (and a warning) if no process can be started: the scan reads in-thread."""
        try:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload([__name__])
            return cls(ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_start,
                                           initargs=(os.getpid(),)))
        except (OSError, ValueError, NotImplementedError, ImportError) as exc:  # (no sem_open:
            # a container without /dev/shm)
            log.warning("index: no parsing workers (%s); reading in the indexing thread", exc)
            return None

    def submit(self, tasks: list[tuple[bool, tuple[Any, ...]]], stealth: bool
               ) -> Future[list[tuple[bool, tuple[Any, ...]]]]:
        return self.pool.submit(make_rows, tasks, stealth)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
