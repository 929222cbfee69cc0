"""ModelScope: the file listing with sha256, then the file through our engine.

    GET {site}/api/v1/models/{org}/{repo}/repo/files?Revision={rev}&Recursive=true
        {"Code": 200, "Data": {"Files": [{"Path", "Name", "Size", "Sha256", "Type"}]}}
    GET {site}/api/v1/models/{org}/{repo}/repo?Revision={rev}&FilePath={path}
        the bytes (Range-capable; the SDK checks Sha256 after download, so do we)

The site defaults to www.modelscope.cn (``ATELIER_MODELSCOPE_URL``; the international
one is www.modelscope.ai). Revisions are branches or tags; ``master`` by default.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from fnmatch import fnmatch
from typing import Any
from urllib.parse import urlencode

import requests

from .. import naming
from ..errors import BadReference, RemoteError, RemoteNotFound
from ..placement import is_model_name
from ..sniff import OTHER, sniff_bytes
from . import remote
from .model import RemoteFile, Resolution
from .refs import ModelScopeRef

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelScope:
    def __init__(self, site: str, token: str | None = None,
                 sess: requests.Session | None = None) -> None:
        self.site = site.rstrip("/")
        self.token = token or None
        self.sess = sess or remote.session()

    def origin_headers(self) -> dict[str, dict[str, str]]:
        if not self.token:
            return {}
        return {remote.origin(self.site): {"Authorization": f"Bearer {self.token}"}}

    def files(self, repo: str, revision: str) -> list[dict[str, Any]]:
        data = remote.get_json(
            self.sess, f"{self.site}/api/v1/models/{repo}/repo/files",
            params={"Revision": revision, "Recursive": "true"},
            what=f"modelscope:{repo}", origin_headers=self.origin_headers())
        if not isinstance(data, dict) or data.get("Code") not in (200, "200", None):
            msg = data.get("Message") if isinstance(data, dict) else None
            raise RemoteNotFound(f"modelscope:{repo}@{revision}: {msg or 'no file listing'}")
        files = (data.get("Data") or {}).get("Files")
        if not isinstance(files, list):
            raise RemoteError(f"modelscope:{repo}: the file listing has no Data.Files")
        return [f for f in files if isinstance(f, dict) and f.get("Type", "blob") == "blob"]

    def file_url(self, repo: str, revision: str, path: str) -> str:
        return (f"{self.site}/api/v1/models/{repo}/repo?"
                f"{urlencode({'Revision': revision, 'FilePath': path})}")

    def _remote(self, repo: str, revision: str, entry: dict[str, Any], primary: bool
                ) -> RemoteFile:
        path = str(entry.get("Path") or entry.get("Name"))
        sha = str(entry.get("Sha256") or "").lower()
        size = entry.get("Size")
        return RemoteFile(name=posixpath.basename(path), path=path,
                          urls=[self.file_url(repo, revision, path)],
                          size=int(size) if isinstance(size, int) else None,
                          sha256=sha if _SHA256.match(sha) else None, primary=primary,
                          auth="modelscope", model=is_model_name(path))

    def resolve(self, ref: ModelScopeRef, *, include: Sequence[str] | None = None,
                exclude: Sequence[str] | None = None, probe: bool = True) -> Resolution:
        revision = ref.revision or "master"
        listing = self.files(ref.repo, revision)
        page = f"{self.site}/models/{ref.repo}"
        if ref.path is None:
            chosen = [f for f in listing
                      if (not include or any(fnmatch(str(f.get("Path")), p) for p in include))
                      and not any(fnmatch(str(f.get("Path")), p) for p in exclude or [])]
            if not chosen:
                raise BadReference(f"modelscope:{ref.repo}: no file left after "
                                   f"include/exclude ({len(listing)} in the repo)")
            files = [self._remote(ref.repo, revision, f, i == 0) for i, f in enumerate(chosen)]
            diffusers = any(f.get("Path") == "model_index.json" for f in listing)
            return Resolution(ref=ModelScopeRef(ref.repo, None, ref.revision).canonical,
                              source="modelscope", name=ref.repo, version=revision,
                              model_id=ref.repo, type="Diffusers" if diffusers else OTHER,
                              files=files, page=page, folder=ref.repo)
        entry = next((f for f in listing if f.get("Path") == ref.path), None)
        if entry is None:
            raise RemoteNotFound(f"modelscope:{ref.repo}: no file {ref.path!r} at {revision}")
        rf = self._remote(ref.repo, revision, entry, True)
        mtype, base, why, sniff_after = OTHER, None, None, False
        if probe and rf.model:
            found = remote.probe(self.sess, rf.urls[0], what=f"modelscope:{ref.repo}/{ref.path}",
                                 origin_headers=self.origin_headers())
            rf.name = naming.choose(found.disposition, rf.name, None) or rf.name
            rf.size = rf.size or found.total
            sniffed = sniff_bytes(found.head)
            if sniffed is not None:
                mtype, base, why = sniffed.type, sniffed.base_model, sniffed.why
            else:
                sniff_after = rf.name.lower().endswith((".safetensors", ".sft"))
        rf.path = rf.name
        return Resolution(ref=ref.canonical, source="modelscope", name=rf.name,
                          version=revision, model_id=ref.repo, type=mtype, base_model=base,
                          files=[rf], page=page, sniffed=why, sniff_after=sniff_after)
