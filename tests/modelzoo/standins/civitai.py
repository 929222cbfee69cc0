"""A Civitai stand-in: the documented shapes of API v1 and the download endpoint.

    GET  /api/v1/models/{id}, /api/v1/models?ids=..       model JSON (versions newest first)
    GET  /api/v1/model-versions/{id}                      version JSON
    GET  /api/v1/model-versions/by-hash/{hash}            SHA256 or AutoV2, any case
    POST /api/v1/model-versions/by-hash                   [sha256...] (<= 100) -> [version]
    GET  /api/download/models/{vid}?fileId=&token=        307 to a signed URL on the host
         name ``localhost`` (another origin) that expires after ``signed_ttl`` seconds;
         401 JSON without a token when the creator requires a login (a browser-looking
         User-Agent gets a 307 to the HTML /login page instead, as Civitai does);
         403 ``Early Access``; 410 archived; 429 (with Retry-After if set)
    GET  /signed/{fileId}?exp=                            the bytes, Range, Content-
         Disposition (a TextualInversion is named after its first trigger word); refuses
         any Authorization header with 400, as R2 does
    GET  /images/{name}                                   preview images

Knobs (attributes): ``token`` (the valid API key), ``api_429`` (Retry-After values for
the next API calls; None = a 429 without one), ``download_429``, ``login_page`` (version
ids answered with a 200 HTML login page), ``signed_ttl``, ``rate`` (bytes/s per response).
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .files import sha
from .server import Running, Traffic, send_bytes

LOGIN_PAGE = ("<!DOCTYPE html><html><head><title>Sign in | Civitai</title></head><body>"
              "<form action='/api/auth/signin'>Log in to download</form></body></html>")
BROWSER = ("mozilla", "chrome", "safari", "firefox", "opera", "edge")


@dataclass
class CFile:
    id: int
    name: str
    data: bytes
    primary: bool = True
    type: str = "Model"


@dataclass
class CImage:
    name: str
    data: bytes
    nsfw_level: int = 1
    type: str = "image"
    content_type: str = "image/png"


@dataclass
class CVersion:
    id: int
    name: str
    base_model: str
    files: list[CFile]
    trained_words: list[str] = field(default_factory=list)
    images: list[CImage] = field(default_factory=list)
    require_auth: bool = False
    early_access: bool = False
    archived: bool = False
    description: str | None = None
    model_id: int = 0


@dataclass
class CModel:
    id: int
    name: str
    type: str
    versions: list[CVersion]          # newest first, as Civitai lists them
    description: str = "<p>A <b>test</b> model.</p>"
    nsfw: bool = False


class CivitaiStandIn:
    def __init__(self) -> None:
        self.models: dict[int, CModel] = {}
        self.versions: dict[int, CVersion] = {}
        self.files: dict[int, tuple[CVersion, CFile]] = {}
        self.images: dict[str, CImage] = {}
        self.traffic = Traffic()
        self.token = "good-token"
        self.api_429: list[float | None] = []
        self.download_429: list[float | None] = []
        self.login_page: set[int] = set()
        self.signed_ttl = 3600.0
        self.rate = 0
        self.app = Starlette(routes=[
            Route("/api/v1/models", self.list_models),
            Route("/api/v1/models/{id:int}", self.get_model),
            Route("/api/v1/model-versions/by-hash/{hash}", self.by_hash),
            Route("/api/v1/model-versions/by-hash", self.by_hashes, methods=["POST"]),
            Route("/api/v1/model-versions/{id:int}", self.get_version),
            Route("/api/download/models/{id:int}", self.download),
            Route("/signed/{fid:int}", self.signed, methods=["GET", "HEAD"]),
            Route("/images/{name}", self.image),
            Route("/login", self.login),
        ])
        self.running = Running(self.app)

    @property
    def url(self) -> str:
        return self.running.url()

    def stop(self) -> None:
        self.running.stop()

    # -- content ------------------------------------------------------------------------

    def add(self, model: CModel) -> CModel:
        self.models[model.id] = model
        for v in model.versions:
            v.model_id = model.id
            self.versions[v.id] = v
            for f in v.files:
                self.files[f.id] = (v, f)
            for img in v.images:
                self.images[img.name] = img
        return model

    def file_json(self, v: CVersion, f: CFile) -> dict[str, Any]:
        digest = sha(f.data).upper()
        return {
            "id": f.id, "name": f.name, "type": f.type, "sizeKB": len(f.data) / 1024,
            "metadata": {"format": "SafeTensor", "size": "pruned", "fp": "fp16"},
            "pickleScanResult": "Success", "virusScanResult": "Success",
            "hashes": {"AutoV2": digest[:10], "SHA256": digest,
                       "CRC32": f"{zlib.crc32(f.data):08X}"},
            "downloadUrl": f"{self.url}/api/download/models/{v.id}?type={f.type}"
                           f"&format=SafeTensor",
            "primary": f.primary,
        }

    def version_json(self, v: CVersion) -> dict[str, Any]:
        m = self.models[v.model_id]
        out: dict[str, Any] = {
            "id": v.id, "modelId": m.id, "name": v.name, "description": v.description,
            "baseModel": v.base_model, "baseModelType": "Standard",
            "air": f"urn:air:sdxl:{m.type.lower()}:civitai:{m.id}@{v.id}",
            "status": "Published", "availability": "Archived" if v.archived else "Public",
            "trainedWords": list(v.trained_words),
            "earlyAccessConfig": {"timeframe": 7} if v.early_access else None,
            "model": {"name": m.name, "type": m.type, "nsfw": m.nsfw, "poi": False},
            "images": [{"url": f"{self.url}/images/{i.name}", "nsfwLevel": i.nsfw_level,
                        "width": 64, "height": 48, "type": i.type} for i in v.images],
            "stats": {"downloadCount": 1},
        }
        if not v.archived:
            out["files"] = [self.file_json(v, f) for f in v.files]
            out["downloadUrl"] = f"{self.url}/api/download/models/{v.id}"
        return out

    def model_json(self, m: CModel) -> dict[str, Any]:
        versions = []
        for v in m.versions:
            vj = self.version_json(v)
            vj.pop("modelId")
            vj.pop("model")
            versions.append(vj)
        return {"id": m.id, "name": m.name, "description": m.description, "type": m.type,
                "nsfw": m.nsfw, "tags": ["test"], "creator": {"username": "tester"},
                "modelVersions": versions}

    # -- API ----------------------------------------------------------------------------

    def _limited(self, queue: list[float | None]) -> Response | None:
        if not queue:
            return None
        after = queue.pop(0)
        headers = {"Retry-After": f"{after:g}"} if after is not None else {}
        return JSONResponse({"error": "Rate limited"}, status_code=429, headers=headers)

    async def list_models(self, request: Request) -> Response:
        self.traffic.record(request)
        if (r := self._limited(self.api_429)) is not None:
            return r
        ids = [int(i) for i in request.query_params.get("ids", "").split(",") if i.isdigit()]
        items = [self.model_json(self.models[i]) for i in ids if i in self.models]
        return JSONResponse({"items": items, "metadata": {"currentPage": 1,
                                                          "pageSize": len(items)}})

    async def get_model(self, request: Request) -> Response:
        self.traffic.record(request)
        if (r := self._limited(self.api_429)) is not None:
            return r
        m = self.models.get(request.path_params["id"])
        if m is None:
            return JSONResponse({"error": f"No model with id {request.path_params['id']}"},
                                status_code=404)
        return JSONResponse(self.model_json(m))

    async def get_version(self, request: Request) -> Response:
        self.traffic.record(request)
        if (r := self._limited(self.api_429)) is not None:
            return r
        v = self.versions.get(request.path_params["id"])
        if v is None:
            return JSONResponse({"error": "Version not found"}, status_code=404)
        return JSONResponse(self.version_json(v))

    def _find_hash(self, h: str) -> CVersion | None:
        h = h.upper()
        for v, f in self.files.values():
            digest = sha(f.data).upper()
            if h in (digest, digest[:10]) and not v.archived:
                return v
        return None

    async def by_hash(self, request: Request) -> Response:
        self.traffic.record(request)
        if (r := self._limited(self.api_429)) is not None:
            return r
        v = self._find_hash(request.path_params["hash"])
        if v is None:
            return JSONResponse({"error": "Model not found"}, status_code=404)
        return JSONResponse(self.version_json(v))

    async def by_hashes(self, request: Request) -> Response:
        self.traffic.record(request)
        if (r := self._limited(self.api_429)) is not None:
            return r
        body = json.loads(await request.body())
        if not isinstance(body, list) or len(body) > 100:
            return JSONResponse({"error": "Provide 1 to 100 hashes"}, status_code=400)
        found = [self._find_hash(str(h)) for h in body]
        seen: set[int] = set()
        out = []
        for v in found:
            if v is not None and v.id not in seen:
                seen.add(v.id)
                out.append(self.version_json(v))
        return JSONResponse(out)

    # -- downloads ----------------------------------------------------------------------

    def _token_ok(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        given = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else (
            request.query_params.get("token"))
        return bool(given) and given == self.token

    async def download(self, request: Request) -> Response:
        self.traffic.record(request)
        if (r := self._limited(self.download_429)) is not None:
            return r
        v = self.versions.get(request.path_params["id"])
        if v is None:
            return JSONResponse({"error": "File not found"}, status_code=404)
        if v.id in self.login_page:
            return HTMLResponse(LOGIN_PAGE)
        if v.archived:
            return JSONResponse({"error": "Model archived, not available for download"},
                                status_code=410)
        browser = any(b in request.headers.get("user-agent", "").lower() for b in BROWSER)
        if v.require_auth and not self._token_ok(request):
            if browser:
                return RedirectResponse(f"/login?returnUrl=/models/{v.model_id}"
                                        f"&reason=download-auth", status_code=307)
            return JSONResponse({"error": "Unauthorized", "message": "The creator of this "
                                 "asset requires you to be logged in to download it"},
                                status_code=401)
        if v.early_access and not self._token_ok(request):
            return JSONResponse({"error": "Early Access", "deadline": "2031-01-01T00:00:00Z"},
                                status_code=403)
        fid = request.query_params.get("fileId")
        if fid is not None:
            pair = self.files.get(int(fid)) if fid.isdigit() else None
            if pair is None or pair[0].id != v.id:
                return JSONResponse({"error": "File not found"}, status_code=404)
            f = pair[1]
        else:
            f = next((x for x in v.files if x.primary), v.files[0])
        exp = time.time() + self.signed_ttl
        location = f"{self.running.url('localhost')}/signed/{f.id}?exp={exp:.3f}&sig=abc"
        return RedirectResponse(location, status_code=307,
                                headers={"Cache-Control": "no-store"})

    async def signed(self, request: Request) -> Response:
        self.traffic.record(request)
        if "authorization" in request.headers:
            return Response("<Error><Code>InvalidArgument</Code><Message>Missing "
                            "x-amz-content-sha256</Message></Error>", status_code=400,
                            media_type="application/xml")
        try:
            exp = float(request.query_params.get("exp", "0"))
        except ValueError:
            exp = 0.0
        if time.time() > exp:
            return Response("<Error><Code>AccessDenied</Code><Message>Request has expired"
                            "</Message></Error>", status_code=403, media_type="application/xml")
        pair = self.files.get(request.path_params["fid"])
        if pair is None:
            return Response(status_code=404)
        v, f = pair
        name = f.name
        if self.models[v.model_id].type == "TextualInversion" and v.trained_words:
            name = v.trained_words[0] + "." + f.name.rsplit(".", 1)[-1]
        return send_bytes(request, f.data, traffic=self.traffic, name=name,
                          etag=f'"{sha(f.data)[:16]}"', rate=self.rate)

    async def image(self, request: Request) -> Response:
        self.traffic.record(request)
        img = self.images.get(request.path_params["name"])
        if img is None:
            return Response(status_code=404)
        return Response(img.data, media_type=img.content_type)

    async def login(self, request: Request) -> Response:
        self.traffic.record(request)
        return HTMLResponse(LOGIN_PAGE)
