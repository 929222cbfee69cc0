"""A ModelScope stand-in: the file listing with Sha256 and the file endpoint.

    GET /api/v1/models/{org}/{repo}/repo/files?Revision=&Recursive=
        {"Code": 200, "Data": {"Files": [{"Name", "Path", "Size", "Sha256", "Type",
        "Revision"}]}, "Success": true}; an unknown repo: HTTP 404 with Code 10010205001
    GET /api/v1/models/{org}/{repo}/repo?Revision=&FilePath=    the bytes, with Range
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .files import sha
from .server import Running, Traffic, send_bytes


class ModelScopeStandIn:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}   # repo -> path -> bytes (master)
        self.traffic = Traffic()
        self.app = Starlette(routes=[
            Route("/api/v1/models/{org}/{name}/repo/files", self.files),
            Route("/api/v1/models/{org}/{name}/repo", self.file, methods=["GET", "HEAD"]),
        ])
        self.running = Running(self.app)

    @property
    def url(self) -> str:
        return self.running.url()

    def stop(self) -> None:
        self.running.stop()

    def _missing(self, repo: str) -> Response:
        return JSONResponse({"Code": 10010205001, "Message": f"model {repo} not found",
                             "Success": False}, status_code=404)

    async def files(self, request: Request) -> Response:
        self.traffic.record(request)
        repo = f"{request.path_params['org']}/{request.path_params['name']}"
        files = self.repos.get(repo)
        if files is None or request.query_params.get("Revision", "master") != "master":
            return self._missing(repo)
        listing = [{"Name": p.rsplit("/", 1)[-1], "Path": p, "Size": len(d),
                    "Sha256": sha(d), "Type": "blob", "Revision": "abc123"}
                   for p, d in files.items()]
        return JSONResponse({"Code": 200, "Data": {"Files": listing}, "Success": True})

    async def file(self, request: Request) -> Response:
        self.traffic.record(request)
        repo = f"{request.path_params['org']}/{request.path_params['name']}"
        files = self.repos.get(repo)
        path = request.query_params.get("FilePath", "")
        if files is None or path not in files:
            return self._missing(repo)
        data = files[path]
        return send_bytes(request, data, traffic=self.traffic, name=path.rsplit("/", 1)[-1],
                          etag=f'"{sha(data)[:16]}"')
