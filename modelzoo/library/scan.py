"""The library scan: every model file hashed once, identified on Civitai, completed.

    walk      models/ and users/*/models/ (hidden entries and symlinks out skipped)
    hash      files whose (size, mtime) changed or were never seen (index.py caches)
    sniff     the type and base model from the safetensors header, for what no
              catalogue will tell
    identify  POST /api/v1/model-versions/by-hash, 100 hashes a call; a hit gives the
              Civitai ids, type, base model, trigger words
    complete  missing sidecars: x.preview.png, x.civitai.info, x.json
    updates   GET /api/v1/models?ids=..., 100 models a call: a newer first version is
              recorded as update_available

Files that vanished lose their rows. One scan at a time per replica; progress is in
``status`` for ``GET /api/models/library/status``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .. import db, sidecars
from ..errors import ModelZooError
from ..sniff import sniff_bytes

if TYPE_CHECKING:
    from ..zoo import ModelZoo

log = logging.getLogger("atelier.modelzoo.library")


def read_head(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        if 0 < n <= 100_000_000:
            head += f.read(n)
    return head


class Scanner:
    def __init__(self, zoo: ModelZoo) -> None:
        self.zoo = zoo
        self.status: dict[str, Any] = {"state": "idle", "files": 0, "hashed": 0,
                                       "identified": 0, "updates": 0, "error": None,
                                       "finished": None}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> bool:
        """Scan in the background; False when one is already running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._stop.clear()
            self.status.update(state="scanning", files=0, hashed=0, identified=0, updates=0,
                               error=None)
            self._thread = threading.Thread(target=self._run, name="modelzoo-scan",
                                            daemon=True)
            self._thread.start()
            return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        try:
            self.scan()
        except Exception as e:
            log.exception("library scan failed")
            self.status["error"] = str(e)
        finally:
            self.status.update(state="idle", finished=time.time())

    def prefixes(self) -> list[str]:
        out = ["models"]
        users = self.zoo.root / "users"
        if users.is_dir():
            out += [f"users/{p.name}/models" for p in sorted(users.iterdir())
                    if p.is_dir() and not p.name.startswith(".")]
        return out

    # -- the scan -----------------------------------------------------------------------

    def scan(self) -> dict[str, Any]:
        index = self.zoo.index
        seen: set[str] = set()
        for vpath, st in index.walk(self.prefixes()):
            if self._stop.is_set():
                return self.status
            seen.add(vpath)
            self.status["files"] += 1
            row = index.current(vpath, st)
            if row is not None and row.sha256:
                continue
            full = index.real(vpath)
            meta: dict[str, Any] = {}
            try:
                sniffed = sniff_bytes(read_head(full)) if vpath.lower().endswith(
                    (".safetensors", ".sft")) else None
            except OSError:
                sniffed = None
            if sniffed is not None:
                meta.update(type=sniffed.type, base_model=sniffed.base_model)
            known = sidecars.read(full)
            if known.get("trigger_words"):
                meta["trigger_words"] = known["trigger_words"]
            if known.get("base_model"):
                meta["base_model"] = known["base_model"]
            if known.get("preview") is not None:
                meta["preview"] = index.virtual(known["preview"])
            meta.setdefault("name", full.name)
            try:
                digest = index.sha256(vpath)
            except OSError:
                continue
            index.record(vpath, digest, **meta)
            self.status["hashed"] += 1
        self._forget_missing(seen)
        self.identify()
        self.check_updates()
        return self.status

    def _forget_missing(self, seen: set[str]) -> None:
        with self.zoo.engine.connect() as conn:
            paths = [r.path for r in conn.execute(sa.select(db.files.c.path))]
        for p in paths:
            if p not in seen and not self.zoo.index.real(p).is_file():
                self.zoo.index.forget(p)

    def identify(self) -> None:
        """Ask Civitai about hashes it was never asked about, 100 at a time."""
        with self.zoo.engine.connect() as conn:
            rows = conn.execute(sa.select(db.files.c.path, db.files.c.sha256).where(
                db.files.c.sha256.is_not(None) & db.files.c.identified.is_(None))).all()
        if not rows:
            return
        civitai = self.zoo.sources().civitai
        by_hash: dict[str, list[str]] = {}
        for r in rows:
            by_hash.setdefault(r.sha256, []).append(r.path)
        try:
            versions = civitai.by_hashes(sorted(by_hash))
        except ModelZooError as e:
            self.status["error"] = f"Civitai: {e}"
            return
        now = time.time()
        found: set[str] = set()
        models: dict[str, dict[str, Any]] = {}
        ids = {str(v.get("modelId")) for v in versions if v.get("modelId")}
        try:
            models = {str(m.get("id")): m for m in civitai.models(ids)} if ids else {}
        except ModelZooError as e:
            self.status["error"] = f"Civitai: {e}"
        for v in versions:
            for f in v.get("files") or []:
                digest = str((f.get("hashes") or {}).get("SHA256") or "").lower()
                for vpath in by_hash.get(digest, []):
                    found.add(vpath)
                    self._identified(vpath, digest, v, models.get(str(v.get("modelId"))))
        for vpath in {p for paths in by_hash.values() for p in paths} - found:
            with self.zoo.engine.begin() as conn:
                conn.execute(db.files.update().where(db.files.c.path == vpath)
                             .values(identified=now))

    def _identified(self, vpath: str, digest: str, version: dict[str, Any],
                    model: dict[str, Any] | None) -> None:
        civitai = self.zoo.sources().civitai
        try:
            res = civitai.resolution(version, model, probe=False)
        except ModelZooError:
            return
        full = self.zoo.index.real(vpath)
        png = None
        if res.preview_url and not sidecars.read(full).get("preview"):
            png = self.zoo.preview_png(res.preview_url)
        try:
            sidecars.write(full, res, sha256=digest, preview_png=png)
        except OSError:
            pass
        preview = sidecars.read(full).get("preview")
        self.zoo.index.record(
            vpath, digest, type=res.type, base_model=res.base_model,
            name=res.name, trigger_words=res.trigger_words,
            preview=self.zoo.index.virtual(preview) if preview else None,
            civitai_model_id=res.model_id, civitai_version_id=res.version_id,
            update_version_id=(res.update or {}).get("version_id"),
            update_name=(res.update or {}).get("name"), identified=time.time())
        self.status["identified"] += 1

    def check_updates(self) -> None:
        with self.zoo.engine.connect() as conn:
            rows = conn.execute(sa.select(db.files.c.path, db.files.c.civitai_model_id,
                                          db.files.c.civitai_version_id).where(
                db.files.c.civitai_model_id.is_not(None))).all()
        if not rows:
            return
        try:
            models = self.zoo.sources().civitai.models({r.civitai_model_id for r in rows})
        except ModelZooError as e:
            self.status["error"] = f"Civitai: {e}"
            return
        latest = {}
        for m in models:
            versions = [v for v in m.get("modelVersions") or [] if isinstance(v, dict)]
            if versions:
                latest[str(m.get("id"))] = versions[0]
        for r in rows:
            newest = latest.get(str(r.civitai_model_id))
            newer = newest is not None and str(newest.get("id")) != str(r.civitai_version_id)
            values = ({"update_version_id": str(newest["id"]), "update_name": newest.get("name")}
                      if newer and newest is not None else
                      {"update_version_id": None, "update_name": None})
            if newer:
                self.status["updates"] += 1
            with self.zoo.engine.begin() as conn:
                conn.execute(db.files.update().where(db.files.c.path == r.path).values(**values))
