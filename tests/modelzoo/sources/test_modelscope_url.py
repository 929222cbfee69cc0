"""ModelScope's listing with sha256, and plain URLs: name from Content-Disposition (never
the redirect target), kind from the first bytes, web pages refused before any write."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from modelzoo.errors import NotAModel, RemoteNotFound
from modelzoo.sources.modelscope import ModelScope
from modelzoo.sources.refs import ModelScopeRef, UrlRef
from modelzoo.sources.url import resolve

from ..standins import files
from ..standins.modelscope import ModelScopeStandIn
from ..standins.server import Running, Traffic, send_bytes


def test_modelscope_file_with_sha256(modelscope: ModelScopeStandIn) -> None:
    data = files.lora_kohya_sd15(pad=2000)
    modelscope.repos["acme/loras"] = {"styles/ink.safetensors": data, "README.md": b"# hi"}
    ms = ModelScope(modelscope.url)
    res = ms.resolve(ModelScopeRef("acme/loras", "styles/ink.safetensors", None))
    f = res.primary
    assert (f.name, f.sha256, f.size) == ("ink.safetensors", files.sha(data), len(data))
    assert f.urls == [f"{modelscope.url}/api/v1/models/acme/loras/repo?Revision=master&"
                      f"FilePath=styles%2Fink.safetensors"]
    assert (res.type, res.base_model) == ("LORA", "SD 1.5")
    whole = ms.resolve(ModelScopeRef("acme/loras", None, None), exclude=["*.md"])
    assert [x.path for x in whole.files] == ["styles/ink.safetensors"]
    with pytest.raises(RemoteNotFound):
        ms.resolve(ModelScopeRef("acme/none", "x.safetensors", None))
    with pytest.raises(RemoteNotFound, match="no file"):
        ms.resolve(ModelScopeRef("acme/loras", "x.safetensors", None))


class Site:
    """A download site: a redirect to a hashed storage key, pages, odd names."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.traffic = Traffic()
        self.app = Starlette(routes=[
            Route("/dl/{id}", self.dl), Route("/store/{key}", self.store),
            Route("/page", self.page), Route("/plain/{name}", self.plain),
            Route("/norange/{name}", self.norange),
        ])
        self.running = Running(self.app)
        self.url = self.running.url()

    async def dl(self, request: Request) -> Response:
        self.traffic.record(request)
        return RedirectResponse(f"{self.running.url('localhost')}/store/9f86d081884c7d65",
                                status_code=302)

    async def store(self, request: Request) -> Response:
        self.traffic.record(request)
        return send_bytes(request, self.data, traffic=self.traffic)

    async def page(self, request: Request) -> Response:
        return HTMLResponse("<!DOCTYPE html><html><title>Download</title></html>")

    async def plain(self, request: Request) -> Response:
        self.traffic.record(request)
        return send_bytes(request, self.data, traffic=self.traffic,
                          name="served-name.safetensors")

    async def norange(self, request: Request) -> Response:
        self.traffic.record(request)
        return Response(self.data, media_type="application/octet-stream")


@pytest.fixture
def site() -> Site:
    s = Site(files.controlnet_sd15(pad=200_000))
    yield s
    s.running.stop()


def test_url_name_never_comes_from_the_redirect_target(site: Site) -> None:
    res = resolve(UrlRef(f"{site.url}/dl/42"))
    assert res.primary.name == "42.safetensors"   # the user's URL + the sniffed suffix
    assert (res.type, res.base_model) == ("Controlnet", "SD 1.5")
    assert res.primary.size == len(site.data)
    res = resolve(UrlRef(f"{site.url}/plain/whatever.bin"))
    assert res.primary.name == "served-name.safetensors"   # Content-Disposition first


def test_url_first_bytes_only(site: Site) -> None:
    resolve(UrlRef(f"{site.url}/plain/x.safetensors"))
    assert site.traffic.sent <= 2 * 64 * 1024   # a probe, not a download
    resolve(UrlRef(f"{site.url}/norange/y.safetensors"))  # no Range: hang up early
    assert site.traffic.requests("/norange/")


def test_url_pages_are_refused(site: Site) -> None:
    with pytest.raises(NotAModel, match="HTML page"):
        resolve(UrlRef(f"{site.url}/page"))


def test_headers_go_to_the_given_origin_only(site: Site) -> None:
    resolve(UrlRef(f"{site.url}/dl/42"), headers={"Authorization": "Bearer T"})
    first = site.traffic.requests("/dl/")[0]
    stored = site.traffic.requests("/store/")[0]
    assert first["headers"].get("authorization") == "Bearer T"
    assert "authorization" not in stored["headers"]
