"""A Hugging Face Hub stand-in: the routes huggingface_hub and our engine call.

    GET  /api/models/{org}/{repo}[/revision/{rev}][?blobs=true]   model info: sha (the
         commit), siblings (with size and lfs.sha256 when blobs=true), cardData, tags
    HEAD/GET /{org}/{repo}/resolve/{rev}/{path}   X-Repo-Commit, X-Linked-Etag (the
         sha256 of an LFS file), X-Linked-Size, ETag; an LFS file answers 302 to the CDN
         on another origin (``localhost``), a small file is served directly
    GET  /cdn/{sha256}                            the bytes, Range, Content-Disposition
Errors as the Hub sends them: 401 ``X-Error-Code: RepoNotFound`` (unknown or private),
401/403 ``GatedRepo`` (no token / a token without access), 404 ``RevisionNotFound`` and
``EntryNotFound``. Two instances sharing ``repos`` make an endpoint and its mirror.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .files import sha
from .server import Running, Traffic, send_bytes


@dataclass
class HFile:
    path: str
    data: bytes
    lfs: bool = True


@dataclass
class HRepo:
    id: str
    files: list[HFile]
    gated: bool = False
    card: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    commit: str = ""

    def __post_init__(self) -> None:
        if not self.commit:
            self.commit = hashlib.sha1(self.id.encode()).hexdigest()


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HfStandIn:
    def __init__(self, repos: dict[str, HRepo] | None = None) -> None:
        self.repos: dict[str, HRepo] = repos if repos is not None else {}
        self.token = "hf_good_token"
        self.traffic = Traffic()
        self.rate = 0
        self.app = Starlette(routes=[
            Route("/api/models/{org}/{name}", self.info),
            Route("/api/models/{org}/{name}/revision/{rev:path}", self.info),
            Route("/{org}/{name}/resolve/{rev}/{path:path}", self.resolve,
                  methods=["GET", "HEAD"]),
            Route("/cdn/{digest}", self.cdn, methods=["GET", "HEAD"]),
        ])
        self.running = Running(self.app)

    @property
    def url(self) -> str:
        return self.running.url()

    def stop(self) -> None:
        self.running.stop()

    def add(self, repo: HRepo) -> HRepo:
        self.repos[repo.id] = repo
        return repo

    def _error(self, status: int, code: str, message: str) -> Response:
        return JSONResponse({"error": message}, status_code=status,
                            headers={"X-Error-Code": code, "X-Error-Message": message})

    def _access(self, request: Request, repo_id: str, rev: str | None
                ) -> HRepo | Response:
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(401, "RepoNotFound", "Repository not found")
        if repo.gated:
            auth = request.headers.get("authorization", "")
            if not auth:
                return self._error(401, "GatedRepo", f"Access to model {repo_id} is "
                                   "restricted. You must have access to it and be "
                                   "authenticated to access it. Please log in.")
            if auth != f"Bearer {self.token}":
                return self._error(403, "GatedRepo", f"Access to model {repo_id} is "
                                   "restricted and you are not in the authorized list.")
        if rev not in (None, "main", repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo

    async def info(self, request: Request) -> Response:
        self.traffic.record(request)
        p = request.path_params
        repo = self._access(request, f"{p['org']}/{p['name']}", p.get("rev"))
        if isinstance(repo, Response):
            return repo
        blobs = request.query_params.get("blobs", "").lower() == "true"
        siblings = []
        for f in repo.files:
            s: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                s["size"] = len(f.data)
                s["blobId"] = _git_oid(f.data)
                if f.lfs:
                    s["lfs"] = {"size": len(f.data), "sha256": sha(f.data), "pointerSize": 134}
            siblings.append(s)
        return JSONResponse({"id": repo.id, "modelId": repo.id, "sha": repo.commit,
                             "private": False, "gated": "auto" if repo.gated else False,
                             "tags": repo.tags, "cardData": repo.card, "siblings": siblings})

    async def resolve(self, request: Request) -> Response:
        self.traffic.record(request)
        p = request.path_params
        repo = self._access(request, f"{p['org']}/{p['name']}", p["rev"])
        if isinstance(repo, Response):
            return repo
        f = next((x for x in repo.files if x.path == p["path"]), None)
        if f is None:
            return self._error(404, "EntryNotFound", f"{p['path']} does not exist")
        common = {"X-Repo-Commit": repo.commit}
        if f.lfs:
            digest = sha(f.data)
            name = quote(f.path.rsplit("/", 1)[-1])
            location = f"{self.running.url('localhost')}/cdn/{digest}?name={name}"
            return Response(status_code=302, headers={
                **common, "Location": location, "X-Linked-Etag": f'"{digest}"',
                "X-Linked-Size": str(len(f.data)), "ETag": f'"{_git_oid(f.data)}"',
                "Content-Length": "0"})
        return send_bytes(request, f.data, traffic=self.traffic,
                          etag=f'"{_git_oid(f.data)}"', content_type="application/json"
                          if f.path.endswith(".json") else "text/plain", extra=common,
                          disposition=None)

    async def cdn(self, request: Request) -> Response:
        self.traffic.record(request)
        digest = request.path_params["digest"]
        for repo in self.repos.values():
            for f in repo.files:
                if f.lfs and sha(f.data) == digest:
                    name = f.path.rsplit("/", 1)[-1]
                    disp = f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"
                    return send_bytes(request, f.data, traffic=self.traffic,
                                      etag=f'"{digest}"', disposition=disp, rate=self.rate)
        return Response(status_code=404)
