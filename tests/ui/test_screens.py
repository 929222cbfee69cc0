"""Screenshots of every page at 1366x768, in English and Chinese (Files also in both
themes), under test-output/screens/; each page also must load without console errors.
A person looks at these before a release (see README, "Web pages")."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin
from playwright.sync_api import expect

from ..conftest import Server
from .conftest import SCREENS, login, shot

PAGES = ["files", "images", "models", "gpu", "admin"]


@pytest.fixture
def furnished(make_server, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setenv("ATELIER_GPU_DEVICES", "sim:8GiB")
    srv = make_server()
    home = srv.root / "users" / "admin"
    out = home / "outputs" / "txt2img-images" / "2026-11-30"
    out.mkdir(parents=True)
    for i in range(36):
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", f"landscape {i}, mountains, sunset, 中文提示词 {i}\n"
                      f"Negative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
                      f"Seed: {i}, Size: 96x96, Model: scenic-v{i % 3}")
        img = Image.new("RGB", (96, 96), ((i * 37) % 255, (i * 91) % 255, (i * 53) % 255))
        img.save(out / f"{i:05d}-{i}.png", pnginfo=info)
    (home / "models-to-sort").mkdir()
    (home / "一个中文名字的文件夹").mkdir()
    (home / "notes.txt").write_text("hello")
    long = "a_very_long_file_name_for_a_checkpoint_that_someone_downloaded_from_civitai_v2"
    (home / f"{long}.safetensors").write_bytes(b"x" * 1000)


    (home / "realisticVision_v60B1_vae.safetensors").write_bytes(os.urandom(300_000))
    srv.add_user("ann", quota=5 * 1024 ** 3)
    s = srv.session()
    deadline = time.monotonic() + 60
    while s.get(f"{srv.url}/api/search", params={"kind": "image"}, timeout=10).json()[
            "total"] < 36:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return srv


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_page_screenshot(furnished: Server, open_page, lang: str) -> None:
    w = open_page(furnished, lang="zh-CN" if lang == "zh" else "en-US")
    page = w.page
    page.goto(furnished.url + "/ui/login")
    expect(page.locator("h1")).to_have_text("登录 Atelier" if lang == "zh" else
                                            "Sign in to Atelier")
    shot(page, f"login-{lang}")
    login(page, furnished.url)
    for name in PAGES:
        page.goto(f"{furnished.url}/ui/{name}")
        expect(page.get_by_test_id("nav-" + name)).to_have_attribute("aria-current", "page")
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(300)
        shot(page, f"{name}-{lang}")
    page.goto(f"{furnished.url}/ui/files/users/admin")
    page.wait_for_load_state("networkidle")
    shot(page, f"files-home-{lang}")
    page.get_by_test_id("view-grid").click()
    page.goto(f"{furnished.url}/ui/files/users/admin/outputs/txt2img-images/2026-11-30")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(300)
    shot(page, f"files-grid-{lang}")
    page.get_by_test_id("view-list").click()
    page.goto(f"{furnished.url}/ui/images")
    page.get_by_test_id("image-cell").first.click()
    expect(page.get_by_test_id("viewer-prompt")).to_contain_text("landscape")
    page.wait_for_timeout(300)
    shot(page, f"viewer-{lang}")
    page.keyboard.press("Escape")
    page.goto(f"{furnished.url}/ui/admin")
    page.get_by_test_id("tab-access").click()
    page.wait_for_load_state("networkidle")
    shot(page, f"admin-access-{lang}")
    page.get_by_test_id("tab-usage").click()
    expect(page.get_by_test_id("usage-chart")).to_be_visible()  # not the spinner before it
    expect(page.get_by_test_id("usage-row").first).to_be_visible()
    page.wait_for_load_state("networkidle")
    shot(page, f"admin-usage-{lang}")
    # the trash, an upload finished, a share dialog and the public share page
    page.goto(f"{furnished.url}/ui/files/users/admin")
    page.locator("[data-testid=item][data-path='users/admin/notes.txt']").click()
    page.keyboard.press("Delete")
    page.get_by_test_id("ask-ok").click()
    page.get_by_test_id("file-input").set_input_files(
        [str(furnished.root / "users/admin/realisticVision_v60B1_vae.safetensors")])
    w.allow("409")  # the name exists: the panel offers Replace / Keep both
    expect(page.locator("[data-testid=upload-item][data-state=conflict]")).to_be_visible()
    shot(page, f"upload-conflict-{lang}")
    page.get_by_test_id("up-keep-both").click()
    expect(page.locator("[data-testid=upload-item][data-state=done]")).to_have_count(1)
    assert len(list((furnished.root / "users/admin").glob("realisticVision_v60B1_vae*"))) == 2
    page.locator("[data-testid=item][data-path='users/admin/models-to-sort']").click()
    page.get_by_test_id("share-sel").click()
    page.get_by_test_id("share-password").fill("pass-1234")
    page.get_by_test_id("share-create").click()
    link = page.get_by_test_id("share-link").input_value()
    shot(page, f"share-dialog-{lang}")
    page.keyboard.press("Escape")
    page.get_by_test_id("open-trash").click()
    expect(page.get_by_test_id("trash-item")).to_have_count(1)
    shot(page, f"trash-{lang}")
    page.get_by_test_id("trash-back").click()
    stranger = open_page(furnished, lang="zh-CN" if lang == "zh" else "en-US")
    stranger.allow("401")
    stranger.page.goto(link)
    expect(stranger.page.get_by_test_id("share-unlock")).to_be_visible()
    shot(stranger.page, f"share-locked-{lang}")
    page.get_by_test_id("theme-toggle").click()
    page.goto(f"{furnished.url}/ui/files/users/admin")
    page.wait_for_load_state("networkidle")
    shot(page, f"files-dark-{lang}")
    page.goto(f"{furnished.url}/ui/images")
    page.wait_for_load_state("networkidle")
    shot(page, f"images-dark-{lang}")
    assert len(list(SCREENS.glob(f"*-{lang}.png"))) >= 11


def test_inside_a_webui_sized_frame(furnished: Server, open_page) -> None:
    page = open_page(furnished, viewport={"width": 1200, "height": 700}).page
    login(page, furnished.url)
    parent = f"{furnished.url}/webui-tab.html"
    page.route(parent, lambda route: route.fulfill(content_type="text/html", body=(
        "<!doctype html><body style='margin:0'><iframe id=f src='ui/files/users/admin' "
        "style='width:1200px;height:700px;border:0'></iframe></body>")))
    page.goto(parent)
    frame = page.frame_locator("#f")
    expect(frame.get_by_test_id("listing")).to_be_visible()
    shot(page, "files-in-webui-frame")
    assert Path(SCREENS / "files-in-webui-frame.png").stat().st_size > 10_000
