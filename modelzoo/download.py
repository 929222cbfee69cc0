"""Resolve -> place -> engine: the one code path of ``atelier fetch`` and the job queue.

    plan(resolution, folder)   each file's destination; an identical file already there
                               (same sha256, at the destination or anywhere the caller
                               can read) is reused, another file under the name is
                               renamed around (x-2.safetensors) unless told otherwise
    execute(plan)              every file not reused through ``modelzoo.fetch.fetch``
                               (multi-connection, resumable, sha256-verified, one
                               download per file across replicas); then a file whose type
                               could only be read after the download moves to its folder,
                               the sidecars are written and the library learns the hashes

Destinations are always whole file paths: the engine never picks a name, so a redirect
target's hash can never become one (``naming.py`` has the order).
"""

from __future__ import annotations

import os
import posixpath
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import naming, placement, sidecars
from .errors import DestinationExists, NotAModel, RemoteAuthRequired
from .sniff import OTHER, sniff_bytes
from .sources.model import RemoteFile, Resolution

if TYPE_CHECKING:  # the library (SQLAlchemy) loads only when a fetch records into it:
    from .library.index import Index  # `atelier fetch URL --to DIR` starts 0.13 s sooner

Conflict = str  # "rename" | "overwrite" | "fail"
TOKEN_SETTINGS = {
    "civitai": "ATELIER_CIVITAI_TOKEN (or CIVITAI_TOKEN, or the Models settings page)",
    "hf": "HF_TOKEN (or ATELIER_HF_TOKEN, or the Models settings page)",
    "modelscope": "ATELIER_MODELSCOPE_TOKEN",
}


@dataclass
class Target:
    file: RemoteFile
    path: str                     # real destination path
    vpath: str | None = None      # the same, relative to the NAS root (when under it)
    reuse: str | None = None      # an identical file already there (virtual or real path)
    same_name: bool = False       # reuse is the destination itself

    @property
    def shown(self) -> str:
        return self.vpath or self.path


@dataclass
class Plan:
    resolution: Resolution
    folder: str                   # real folder
    vfolder: str | None
    targets: list[Target]
    relocate: dict[str, Any] | None = None   # {"models_root", "base_subfolder"}
    existing: dict[str, Any] | None = None

    @property
    def primary(self) -> Target:
        return next((t for t in self.targets if t.file.primary), self.targets[0])

    @property
    def single(self) -> bool:
        return self.resolution.folder is None

    @property
    def reused(self) -> bool:
        return all(t.reuse is not None for t in self.targets)

    @property
    def destination(self) -> str:
        if not self.single:
            return self.vfolder or self.folder
        t = self.primary
        return t.reuse if t.reuse is not None else t.shown

    @property
    def size(self) -> int | None:
        """Bytes still to download (None when a size is unknown)."""
        sizes = [t.file.size for t in self.targets if t.reuse is None]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolution"] = self.resolution.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        targets = [Target(RemoteFile.from_dict(t["file"]), t["path"], t.get("vpath"),
                          t.get("reuse"), bool(t.get("same_name")))
                   for t in d["targets"]]
        return cls(Resolution.from_dict(d["resolution"]), d["folder"], d.get("vfolder"),
                   targets, d.get("relocate"), d.get("existing"))


def _virtual(root: Path | None, path: Path) -> str | None:
    if root is None:
        return None
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def _rel_parts(path: str) -> list[str]:
    parts = [naming.sanitize(p) for p in path.split("/")]
    if not parts or any(p is None for p in parts):
        raise NotAModel(f"cannot make a safe file name of {path!r}")
    return [p for p in parts if p]


def _identical(dest: Path, vpath: str | None, f: RemoteFile, index: Index | None) -> bool:
    try:
        st = dest.stat()
    except OSError:
        return False
    if f.size is not None and f.size_exact and st.st_size != f.size:
        return False
    if f.sha256:
        from .library.index import hash_file

        digest = index.sha256(vpath) if (index is not None and vpath) else hash_file(dest)
        return digest == f.sha256
    return f.size is not None and f.size_exact and st.st_size == f.size


def plan(res: Resolution, folder: Path, *, root: Path | None = None,
         index: Index | None = None, readable: Sequence[str] = (),
         conflict: Conflict = "rename", name: str | None = None,
         relocate: dict[str, Any] | None = None) -> Plan:
    """Where each file of ``res`` goes below ``folder`` (a real path)."""
    if not res.files:
        raise NotAModel(f"{res.ref}: nothing to download")
    if res.folder:
        folder = folder.joinpath(*_rel_parts(res.folder))
    targets: list[Target] = []
    existing: dict[str, Any] | None = None
    for f in res.files:
        rel = _rel_parts(f.path if res.folder else (name or f.name))
        dest = folder.joinpath(*rel)
        vpath = _virtual(root, dest)
        t = Target(f, str(dest), vpath)
        if dest.exists():
            if dest.is_file() and _identical(dest, vpath, f, index):
                t.reuse, t.same_name = t.shown, True
                existing = existing or {"path": t.shown, "same_sha256": bool(f.sha256)}
            elif res.folder is None:
                existing = existing or {"path": t.shown, "same_sha256": False}
                if conflict == "fail":
                    raise DestinationExists(
                        f"{t.shown} exists and is another file; choose another destination "
                        f"or conflict=rename/overwrite")
                if conflict == "rename":
                    n = 2
                    while dest.exists():
                        dest = dest.with_name(naming.alternative(rel[-1], n))
                        n += 1
                    t.path, t.vpath = str(dest), _virtual(root, dest)
            # a repo's file that changed upstream is simply replaced (an update)
        elif f.sha256 and index is not None and res.folder is None and readable:
            found = index.find(f.sha256, readable, f.size if f.size_exact else None)
            if found is not None:
                t.reuse = found
                existing = existing or {"path": found, "same_sha256": True}
        targets.append(t)
    return Plan(res, str(folder), _virtual(root, folder), targets,
                relocate if res.sniff_after else None, existing)


class NotAPage:
    """For config files (JSON, YAML, text) of a repo: anything but an HTML page."""

    def check_content_type(self, content_type: str, name: str, head: bytes = b"") -> None:
        if content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
            raise NotAModel(f"{name}: the server sent an HTML page instead of the file")

    def check_start(self, head: bytes, name: str, size: int | None) -> None:
        if head[:512].lstrip().lower().startswith((b"<!doctype html", b"<html")):
            raise NotAModel(f"{name}: the body is an HTML page, not the file")

    def check_file(self, path: Path, name: str) -> None:
        return None


def engine_headers(origin_headers: Mapping[str, Mapping[str, str]]
                   ) -> dict[str, dict[str, str]]:
    """Our origin-keyed token headers in the form ``modelzoo.fetch.fetch`` takes."""
    out: dict[str, dict[str, str]] = {}
    for origin, headers in origin_headers.items():
        host = (urlsplit(origin).hostname or "").lower()
        out.setdefault(host, {}).update(headers)
    return out


@dataclass
class Progress:
    done: int
    total: int | None
    speed: float
    connections: int
    file: str


@dataclass
class Outcome:
    plan: Plan
    paths: list[str] = field(default_factory=list)      # shown (virtual or real)
    sha256: dict[str, str] = field(default_factory=dict)
    fetched: int = 0
    resumed: int = 0
    reused: bool = False
    found: set[str] = field(default_factory=set)   # targets another process had fetched


def execute(p: Plan, *, origin_headers: Callable[[Any], Mapping[str, Mapping[str, str]]],
            fetch_settings: Any = None, progress: Callable[[Progress], None] | None = None,
            cancel: threading.Event | None = None, index: Index | None = None,
            root: Path | None = None, preview_png: Callable[[str], bytes | None] | None = None,
            extra_headers: Mapping[str, Mapping[str, str]] | None = None,
            session_factory: Callable[[], Any] | None = None) -> Outcome:
    """Download what the plan needs; KeyboardInterrupt when ``cancel`` is set (the
    partial file stays for a resume). ``session_factory``: the engine's sessions (the
    resolver's warm one first, in ``atelier fetch``)."""
    from .fetch import fetch

    out = Outcome(p, reused=p.reused)
    todo = [t for t in p.targets if t.reuse is None]
    total = p.size
    done_before = 0
    reused_all = bool(todo)
    for t in todo:
        f = t.file
        headers = dict(origin_headers(f.auth))
        for o, h in (extra_headers or {}).items():
            headers[o] = {**headers.get(o, {}), **h}
        Path(t.path).parent.mkdir(parents=True, exist_ok=True)

        def report(fp: Any, base: int = done_before, name: str = Path(t.path).name) -> None:
            if progress is not None:
                whole = total if total is not None else (
                    base + fp.total if fp.total is not None and len(todo) == 1 else None)
                progress(Progress(base + fp.done, whole, fp.speed, fp.connections, name))

        try:
            result = fetch(f.urls, t.path, size=f.size if f.size_exact else None,
                           sha256=f.sha256, headers=engine_headers(headers), progress=report,
                           settings=fetch_settings,
                           validator=True if f.model else NotAPage(),
                           compute_sha256=True, cancel=cancel,
                           session_factory=session_factory)
        except RemoteAuthRequired as e:
            where = TOKEN_SETTINGS.get(f.auth or "")
            if where is None:
                raise
            raise RemoteAuthRequired(f"{e.message}; the token is set in {where}",
                                     url=e.url) from None
        done_before += result.size
        reused_all = reused_all and result.reused
        if result.reused:
            out.found.add(t.path)
        out.fetched += result.fetched
        out.resumed += result.resumed
        if result.sha256:
            out.sha256[t.path] = result.sha256
    if todo and reused_all:  # another replica fetched them while we waited on the lock
        out.reused = True
    if p.relocate is not None and todo:
        _relocate(p, root)
    for t in p.targets:
        if t.reuse is None or t.same_name:
            out.paths.append(t.vpath or t.path)
        else:
            out.paths.append(t.reuse)
    complete(p, out, index, preview_png)
    return out


def _relocate(p: Plan, root: Path | None) -> None:
    """The header could not be read before: read it now, and move the file to the
    folder of its type (same filesystem: a rename)."""
    t = p.primary
    path = Path(t.path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            if 0 < n <= 100_000_000:
                head += fh.read(n)
    except OSError:
        return
    sniffed = sniff_bytes(head)
    if sniffed is None or sniffed.type == OTHER or p.relocate is None:
        return
    res = p.resolution
    res.type, res.base_model, res.sniffed = sniffed.type, sniffed.base_model, sniffed.why
    models_root = str(p.relocate.get("models_root") or "models")
    vfolder = placement.folder_for(sniffed.type, sniffed.base_model, models_root,
                                   bool(p.relocate.get("base_subfolder")))
    if root is None:
        return
    folder = root / vfolder
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / path.name
    n = 2
    while dest.exists():
        dest = folder / naming.alternative(path.name, n)
        n += 1
    os.rename(path, dest)
    t.path, t.vpath = str(dest), _virtual(root, dest)
    p.folder, p.vfolder = str(folder), vfolder


def complete(p: Plan, out: Outcome, index: Index | None,
            preview_png: Callable[[str], bytes | None] | None) -> None:
    """Sidecars for a single model file; hashes and what we know into the library."""
    res = p.resolution
    t = p.primary
    # a plain URL has no catalogue entry to describe: its file stays alone
    if (p.single and t.file.model and res.source != "url"
            and (t.reuse is None or t.same_name)):
        model = Path(t.path)
        png = preview_png(res.preview_url) if (preview_png and res.preview_url) else None
        digest = out.sha256.get(t.path) or t.file.sha256
        try:
            sidecars.write(model, res, sha256=digest, preview_png=png)
        except OSError:
            pass  # a model without its card is still a model
    if index is None:
        return
    for target in p.targets:
        if target.vpath is None or (target.reuse is not None and not target.same_name):
            continue
        if not Path(target.path).is_file() or not target.file.model:
            continue
        meta: dict[str, Any] = {"type": res.type, "base_model": res.base_model,
                                "name": res.name if p.single else posixpath.basename(
                                    target.vpath)}
        if p.single:
            meta["trigger_words"] = res.trigger_words
            preview = sidecars.stem_path(Path(target.path), ".preview.png")
            if preview.is_file():
                meta["preview"] = _virtual(index.root, preview)
            if res.source == "civitai":
                meta.update(civitai_model_id=res.model_id, civitai_version_id=res.version_id,
                            identified=time.time())
                if res.update:
                    meta.update(update_version_id=res.update.get("version_id"),
                                update_name=res.update.get("name"))
        index.record(target.vpath, out.sha256.get(target.path) or target.file.sha256, **meta)
