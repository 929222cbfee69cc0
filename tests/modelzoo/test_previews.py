"""Preview images: only images, re-encoded as capped PNGs; a catalogue cannot make the
service fetch from the private network (only the configured catalogues may live there)."""

from __future__ import annotations

import io

import pytest
import requests
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from modelzoo.errors import RemoteError, RemoteNotFound
from modelzoo.previews import fetch_image, to_png

from .standins import files
from .standins.server import Running


@pytest.fixture
def images() -> Running:
    async def img(request: Request) -> Response:
        return Response(files.png(2000, 1000, fmt="JPEG"), media_type="image/jpeg")

    async def page(request: Request) -> Response:
        return Response("<html></html>", media_type="text/html")

    async def hop(request: Request) -> Response:
        return RedirectResponse(request.query_params["to"], status_code=302)

    r = Running(Starlette(routes=[Route("/i.jpg", img), Route("/page", page),
                                  Route("/hop", hop)]))
    yield r
    r.stop()


def test_images_are_reencoded_small_pngs(images: Running) -> None:
    data = fetch_image(requests.Session(), f"{images.url()}/i.jpg", 10_000_000, [images.url()])
    png = to_png(data, 256)
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.size == (256, 128)
    with pytest.raises(RemoteError, match="text/html"):
        fetch_image(requests.Session(), f"{images.url()}/page", 10_000_000, [images.url()])
    with pytest.raises(RemoteError, match="larger"):
        fetch_image(requests.Session(), f"{images.url()}/i.jpg", 1000, [images.url()])
    with pytest.raises(OSError):   # PIL.UnidentifiedImageError
        to_png(b"GIF89a not really", 64)


def test_private_addresses_only_for_the_configured_catalogues(images: Running) -> None:
    s = requests.Session()
    with pytest.raises(RemoteNotFound, match="private"):
        fetch_image(s, f"{images.url()}/i.jpg", 10_000_000, ["https://civitai.com"])
    # a trusted catalogue redirecting to another private origin is refused at that hop
    other = images.url("localhost")
    with pytest.raises(RemoteNotFound, match="private"):
        fetch_image(s, f"{images.url()}/hop?to={other}/i.jpg", 10_000_000, [images.url()])
    with pytest.raises(RemoteNotFound):
        fetch_image(s, "file:///etc/passwd", 10_000_000, [images.url()])
