"""The Images page in chromium: a windowed grid over the real index, search by a prompt
word, the viewer with its parameters, copy, and "send to txt2img" from inside a frame."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import requests
from PIL import Image, PngImagePlugin
from playwright.sync_api import expect

from ..conftest import Server
from .conftest import login, shot

FOX = ("a majestic red fox in deep snow, <lora:winterStyle:0.8>\n"
       "Negative prompt: blurry, lowres\n"
       "Steps: 24, Sampler: DPM++ 2M, CFG scale: 6.5, Seed: 777, Size: 64x64, "
       "Model hash: 1234abcd, Model: dreamscape-v2, Version: v1.10.1")
N = 420  # more than one page of results (300)


def _png(path: Path, text: str, color: tuple[int, int, int], mtime: float) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), color).save(path, pnginfo=info)
    os.utime(path, (mtime, mtime))


def _gallery(server: Server) -> Path:
    out = server.root / "users" / "admin" / "outputs" / "txt2img-images"
    t0 = time.time() - 10_000
    for i in range(N):
        _png(out / f"{i:05d}.png", f"sample number {i}, forest path\nSteps: 20, Sampler: Euler a,"
             f" CFG scale: 7, Seed: {i}, Size: 64x64, Model: basic-v1", (i % 255, 80, 160),
             t0 + i)
    _png(out / "fox.png", FOX, (220, 90, 30), t0 + N + 100)  # the newest
    s = server.session()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = s.get(f"{server.url}/api/search", params={"kind": "image", "limit": 1}, timeout=10)
        if r.status_code == 200 and r.json()["total"] >= N + 1 and not r.json()["indexing"]:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the index did not catch up")
    return out


def test_grid_is_windowed_search_and_viewer(server: Server, open_page) -> None:
    _gallery(server)
    w = open_page(server)
    page = w.page
    w.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    login(page, server.url)
    page.get_by_test_id("nav-images").click()
    expect(page.get_by_test_id("image-count")).to_contain_text(f"{N + 1} images")
    cells = page.get_by_test_id("image-cell")
    expect(cells.first).to_be_visible()
    in_dom = cells.count()
    assert 10 < in_dom < 150, in_dom  # only the rows in view (and a few around) exist
    expect(cells.first).to_have_attribute("data-path", "users/admin/outputs/txt2img-images/fox.png")
    # scroll to the end: the next page is fetched, the DOM stays small
    gallery = page.get_by_test_id("gallery")
    last = page.locator("[data-testid=image-cell][data-path$='/00000.png']")
    for _ in range(40):
        gallery.evaluate("el => el.scrollTop = el.scrollHeight")
        page.wait_for_timeout(150)
        if last.count():
            break
    expect(last).to_be_visible()
    assert cells.count() < 150
    # the viewer: arrows move, parameters beside the image
    gallery.evaluate("el => el.scrollTop = 0")
    cells.first.click()
    viewer = page.get_by_test_id("viewer")
    expect(viewer.get_by_test_id("viewer-prompt")).to_contain_text("a majestic red fox")
    expect(viewer.get_by_test_id("viewer-params")).to_contain_text("dreamscape-v2")
    expect(viewer.get_by_test_id("viewer-params")).to_contain_text("winterStyle")
    img = viewer.get_by_test_id("viewer-image")
    page.wait_for_function("el => el.complete && el.naturalWidth === 64", arg=img.element_handle())
    viewer.get_by_test_id("copy-prompt").click()
    assert page.evaluate("navigator.clipboard.readText()").startswith("a majestic red fox")
    viewer.get_by_test_id("copy-all").click()
    assert page.evaluate("navigator.clipboard.readText()") == FOX
    page.keyboard.press("ArrowRight")
    expect(viewer.get_by_test_id("viewer-prompt")).to_contain_text(f"sample number {N - 1}")
    page.keyboard.press("ArrowLeft")
    expect(viewer.get_by_test_id("viewer-prompt")).to_contain_text("red fox")
    viewer.get_by_test_id("viewer-zoom").click()
    expect(viewer.get_by_test_id("viewer-zoom")).to_have_text("100%")
    assert viewer.get_by_test_id("send-txt2img").count() == 0  # not inside the WebUI
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("viewer")).to_have_count(0)
    # search by a prompt word
    page.get_by_test_id("image-search").fill("fox")
    page.get_by_test_id("image-search").press("Enter")
    expect(page.get_by_test_id("image-count")).to_contain_text("1 image")
    expect(cells).to_have_count(1)
    # a filter: the model
    page.get_by_test_id("image-search").fill("")
    page.get_by_test_id("toggle-filters").click()
    page.get_by_test_id("f-model").fill("basic-v1")
    page.get_by_test_id("f-model").press("Enter")
    expect(page.get_by_test_id("image-count")).to_contain_text(f"{N} images")


def test_send_to_txt2img_posts_the_infotext_to_the_parent(server: Server, open_page) -> None:
    out = server.root / "users" / "admin" / "outputs"
    _png(out / "fox.png", FOX, (220, 90, 30), time.time())
    s = server.session()
    deadline = time.monotonic() + 60
    while s.get(f"{server.url}/api/search", params={"q": "fox"}, timeout=10).json()["total"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    w = open_page(server)
    page = w.page
    login(page, server.url)
    # a same-origin parent page standing in for the WebUI tab
    parent = f"{server.url}/webui-stand-in.html"
    page.route(parent, lambda route: route.fulfill(content_type="text/html", body=(
        "<!doctype html><body><iframe id=f src='ui/images' style='width:1200px;height:700px'>"
        "</iframe><script>window.got=[];addEventListener('message',e=>window.got.push(e.data))"
        "</script></body>")))
    page.goto(parent)
    frame: Any = page.frame_locator("#f")
    frame.get_by_test_id("image-cell").first.click()
    frame.get_by_test_id("send-txt2img").click()
    page.wait_for_function("window.got.length > 0")
    got = page.evaluate("window.got[0]")
    assert got == {"source": "atelier", "type": "send-to-txt2img", "parameters": FOX}


def test_images_need_a_session(server: Server) -> None:
    r = requests.get(f"{server.url}/api/search", timeout=10)
    assert r.status_code == 401


def test_facets_filter_the_grid(server: Server, open_page) -> None:
    out = server.root / "users" / "admin" / "outputs" / "facets"
    t0 = time.time() - 5000
    for i in range(5):
        model = "alpha-v1" if i < 3 else "beta-v2"
        _png(out / f"{model}-{i}.png", f"a lighthouse number {i}\nSteps: 20, Sampler: Euler a, "
             f"CFG scale: 7, Seed: {i}, Size: 64x64, Model: {model}", (40 * i, 90, 120), t0 + i)
    comfy = PngImagePlugin.PngInfo()
    comfy.add_text("prompt", json.dumps({
        "1": {"class_type": "KSampler", "inputs": {
            "seed": 5, "steps": 10, "cfg": 4, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["2", 0], "negative": ["2", 0], "model": ["3", 0]}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dawn"}},
        "3": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "SDXL/gamma.safetensors"}}}))
    Image.new("RGB", (64, 64), (10, 10, 10)).save(out / "comfy.png", pnginfo=comfy)
    s = server.session()
    deadline = time.monotonic() + 60
    while s.get(f"{server.url}/api/search", params={"q": "lighthouse"},
                timeout=10).json()["total"] < 6:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    w = open_page(server)
    page = w.page
    login(page, server.url)
    page.get_by_test_id("nav-images").click()
    page.get_by_test_id("image-search").fill("lighthouse")
    page.get_by_test_id("image-search").press("Enter")
    expect(page.get_by_test_id("image-count")).to_contain_text("6 images")
    page.get_by_test_id("toggle-filters").click()
    models = page.get_by_test_id("facet-model")
    beta = models.locator("[data-testid=facet-value][data-value='beta-v2']")
    expect(beta.get_by_test_id("facet-count")).to_have_text("2")
    expect(models.locator("[data-value='gamma']")).to_be_visible()  # ComfyUI's, no folder
    expect(page.get_by_test_id("facet-source").locator("[data-value='comfyui']")).to_be_visible()
    beta.click()
    expect(page.get_by_test_id("image-count")).to_contain_text("2 images")
    expect(page.get_by_test_id("facet-chip")).to_have_count(1)
    # a second model of the same facet: either of them
    models.locator("[data-testid=facet-value][data-value='gamma']").click()
    expect(page.get_by_test_id("image-count")).to_contain_text("3 images")
    # the other facets count what is shown: the sampler of those three
    samplers = page.get_by_test_id("facet-sampler")
    expect(samplers.locator("[data-value='Euler a'] [data-testid=facet-count]")).to_have_text("2")
    shot(page, "images-filters-en")
    # leave a generator out
    page.get_by_test_id("facet-source").locator("li", has=page.locator(
        "[data-value='comfyui']")).hover()
    page.get_by_test_id("facet-source").locator("li", has=page.locator(
        "[data-value='comfyui']")).get_by_test_id("facet-exclude").click()
    expect(page.get_by_test_id("image-count")).to_contain_text("2 images")
    expect(page.get_by_test_id("image-cell")).to_have_count(2)
    # the chips undo
    for _ in range(3):
        page.get_by_test_id("facet-chip").first.locator("button").click()
    expect(page.get_by_test_id("facet-chip")).to_have_count(0)
    expect(page.get_by_test_id("image-count")).to_contain_text("6 images")
