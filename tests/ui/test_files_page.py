"""The Files page in chromium: sign in, upload, select with the keyboard, rename, move,
trash and restore, zip download, share with a password, theme and language."""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from pathlib import Path

from playwright.sync_api import expect

from ..conftest import Server
from .conftest import login, shot

MB = 1024 * 1024


def _names(page) -> list[str]:
    return page.locator("[data-testid=item] .name").all_inner_texts()


def test_login_lands_on_files_and_wrong_password_says_so(server: Server, open_page) -> None:
    w = open_page(server)
    page = w.page
    page.goto(server.url + "/")
    page.wait_for_url("**/ui/login**")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "wrong-password")
    w.allow("401")  # the refused login is a 401, which the browser logs
    page.click("button[type=submit]")
    expect(page.get_by_test_id("login-error")).to_contain_text("Wrong user name or password")
    login(page, server.url)
    assert "/ui/files" in page.url
    expect(page.locator("[data-testid=item]").first).to_be_visible()
    assert set(_names(page)) >= {"models", "outputs", "users"}


def test_a_deep_link_before_login_comes_back_after_it(server: Server, open_page) -> None:
    (server.root / "users" / "admin" / "deep").mkdir(parents=True)
    (server.root / "users" / "admin" / "deep" / "inside.txt").write_text("x")
    page = open_page(server).page
    page.goto(server.url + "/ui/files/users/admin/deep")
    page.wait_for_url("**/ui/login?next=**")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "admin-pass-123")
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/files/users/admin/deep")
    expect(page.locator("[data-testid=item]")).to_have_count(1)
    assert _names(page) == ["inside.txt"]


def test_upload_a_multi_mb_file_bar_reaches_100_and_it_is_listed(server: Server, open_page,
                                                                   tmp_path: Path) -> None:
    ann = server.add_user("ann")
    assert ann
    data = os.urandom(12 * MB + 12345)
    src = tmp_path / "big model.safetensors"
    src.write_bytes(data)
    page = open_page(server).page
    login(page, server.url, "ann", "user-pass-123")
    expect(page.locator(".crumbs a.current")).to_have_text("ann")
    page.get_by_test_id("file-input").set_input_files(str(src))
    item = page.locator("[data-testid=upload-item][data-name='big model.safetensors']")
    expect(item).to_have_attribute("data-state", "done", timeout=60_000)
    expect(item.get_by_test_id("upload-percent")).to_have_text("100 %")
    expect(item.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("[data-testid=item][data-path='users/ann/big model.safetensors']")
           ).to_be_visible()
    final = server.root / "users" / "ann" / "big model.safetensors"
    assert hashlib.sha256(final.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_folder_upload_keeps_the_tree(server: Server, open_page, tmp_path: Path) -> None:
    tree = tmp_path / "shoot"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.txt").write_text("bb")
    page = open_page(server).page
    login(page, server.url)
    page.goto(server.url + "/ui/files/users/admin")
    expect(page.get_by_test_id("upload-folder")).to_be_visible()
    page.get_by_test_id("dir-input").set_input_files(str(tree))
    expect(page.locator("[data-testid=upload-item][data-state=done]")).to_have_count(2,
                                                                                  timeout=30_000)
    assert (server.root / "users/admin/shoot/a.txt").read_text() == "a"
    assert (server.root / "users/admin/shoot/sub/b.txt").read_text() == "bb"
    expect(page.locator("[data-testid=item][data-path='users/admin/shoot']")).to_be_visible()


def _home_with(server: Server, names: list[str]) -> Path:
    home = server.root / "users" / "admin" / "work"
    home.mkdir(parents=True, exist_ok=True)
    for n in names:
        (home / n).write_bytes(n.encode() * 100)
    return home


def test_keyboard_multi_select_rename_move_trash_restore(server: Server, open_page) -> None:
    home = _home_with(server, ["a.txt", "b.txt", "c.txt", "d.txt"])
    (home / "box").mkdir()
    page = open_page(server).page
    login(page, server.url)
    page.goto(server.url + "/ui/files/users/admin/work")
    listing = page.get_by_test_id("listing")
    expect(page.locator("[data-testid=item]")).to_have_count(5)
    assert _names(page) == ["box", "a.txt", "b.txt", "c.txt", "d.txt"]  # folders first
    # keyboard: focus the list, go down to a.txt, shift+down twice selects a..c
    listing.focus()
    page.keyboard.press("Home")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("Shift+ArrowDown")
    expect(page.get_by_test_id("selection")).to_contain_text("3 selected")
    # space toggles the focused one off; ctrl+A selects everything
    page.keyboard.press(" ")
    expect(page.get_by_test_id("selection")).to_contain_text("2 selected")
    page.keyboard.press("Control+a")
    expect(page.get_by_test_id("selection")).to_contain_text("5 selected")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("selection")).to_have_count(0)
    # click + shift-click range, ctrl-click adds
    page.locator("[data-testid=item][data-path='users/admin/work/a.txt']").click()
    page.locator("[data-testid=item][data-path='users/admin/work/c.txt']").click(modifiers=["Shift"])
    expect(page.get_by_test_id("selection")).to_contain_text("3 selected")
    page.locator("[data-testid=item][data-path='users/admin/work/b.txt']").click(modifiers=["Control"])
    expect(page.get_by_test_id("selection")).to_contain_text("2 selected")
    # rename d.txt with F2
    page.locator("[data-testid=item][data-path='users/admin/work/d.txt']").click()
    page.keyboard.press("F2")
    dialog = page.get_by_test_id("ask")
    dialog.locator("input").fill("renamed.txt")
    dialog.get_by_test_id("ask-ok").click()
    expect(page.locator("[data-testid=item][data-path='users/admin/work/renamed.txt']")).to_be_visible()
    assert (home / "renamed.txt").exists() and not (home / "d.txt").exists()
    # move a.txt and b.txt into box
    page.locator("[data-testid=item][data-path='users/admin/work/a.txt']").click()
    page.locator("[data-testid=item][data-path='users/admin/work/b.txt']").click(modifiers=["Shift"])
    page.get_by_test_id("move-sel").click()
    page.get_by_test_id("ask").locator("input").fill("users/admin/work/box")
    page.get_by_test_id("ask-ok").click()
    expect(page.locator("[data-testid=item][data-path='users/admin/work/a.txt']")).to_have_count(0)
    assert sorted(p.name for p in (home / "box").iterdir()) == ["a.txt", "b.txt"]
    # delete c.txt to the trash with the Delete key, then restore it from the trash view
    page.locator("[data-testid=item][data-path='users/admin/work/c.txt']").click()
    page.keyboard.press("Delete")
    page.get_by_test_id("ask-ok").click()
    expect(page.locator("[data-testid=item][data-path='users/admin/work/c.txt']")).to_have_count(0)
    assert not (home / "c.txt").exists()
    page.get_by_test_id("open-trash").click()
    row = page.locator("[data-testid=trash-item]", has_text="c.txt")
    expect(row).to_be_visible()
    row.get_by_test_id("restore").click()
    expect(page.locator("[data-testid=trash-item]", has_text="c.txt")).to_have_count(0)
    assert (home / "c.txt").read_bytes() == b"c.txt" * 100
    page.get_by_test_id("trash-back").click()
    expect(page.locator("[data-testid=item][data-path='users/admin/work/c.txt']")).to_be_visible()
    # Enter opens a folder
    page.get_by_test_id("listing").focus()
    page.keyboard.press("Home")
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/files/users/admin/work/box")
    expect(page.locator("[data-testid=item]")).to_have_count(2)


def test_zip_download_of_a_selection(server: Server, open_page) -> None:
    home = _home_with(server, ["one.txt", "two.txt", "three.txt"])
    page = open_page(server).page
    login(page, server.url)
    page.goto(server.url + "/ui/files/users/admin/work")
    page.locator("[data-testid=item][data-path='users/admin/work/one.txt']").click()
    page.locator("[data-testid=item][data-path='users/admin/work/two.txt']").click(
        modifiers=["Control"])
    with page.expect_download() as info:
        page.get_by_test_id("download-sel").click()
    path = info.value.path()
    with zipfile.ZipFile(io.BytesIO(Path(path).read_bytes())) as z:
        assert sorted(z.namelist()) == ["one.txt", "two.txt"]
        assert z.read("two.txt") == (home / "two.txt").read_bytes()


def test_share_link_with_password(server: Server, open_page, browser) -> None:
    home = _home_with(server, ["report.txt"])
    page = open_page(server).page
    login(page, server.url)
    page.goto(server.url + "/ui/files/users/admin/work")
    page.locator("[data-testid=item][data-path='users/admin/work/report.txt']").click()
    page.get_by_test_id("share-sel").click()
    page.get_by_test_id("share-expiry").select_option("86400")
    page.get_by_test_id("share-password").fill("s3cret-pw")
    page.get_by_test_id("share-create").click()
    link = page.get_by_test_id("share-link").input_value()
    assert re.fullmatch(re.escape(server.url) + r"/ui/share/[\w-]{20,}", link), link
    # a stranger, in a fresh browser context with no cookies
    stranger = open_page(server)
    stranger.allow("401")  # the locked share answers 401 until the password is given
    sp = stranger.page
    sp.goto(link)
    form = sp.get_by_test_id("share-unlock")
    expect(form).to_be_visible()
    form.locator("input[type=password]").fill("wrong-one")
    form.locator("button[type=submit]").click()
    expect(form.locator(".error")).to_be_visible()
    form.locator("input[type=password]").fill("s3cret-pw")
    form.locator("button[type=submit]").click()
    expect(sp.get_by_test_id("share-page")).to_contain_text("report.txt")
    with sp.expect_download() as info:
        sp.get_by_test_id("share-download").click()
    assert Path(info.value.path()).read_bytes() == (home / "report.txt").read_bytes()


def test_theme_toggle_and_language_switch_are_remembered(server: Server, open_page) -> None:
    w = open_page(server)
    page = w.page
    login(page, server.url)
    html = page.locator("html")
    start = html.get_attribute("data-theme")
    assert start == "light"  # the context prefers light
    page.get_by_test_id("theme-toggle").click()
    expect(html).to_have_attribute("data-theme", "dark")
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(20, 22, 27)"
    shot(page, "files-dark-en-toggled")
    page.get_by_test_id("lang-zh").click()
    expect(page.get_by_test_id("nav-files")).to_have_text("文件")
    expect(page.get_by_test_id("upload-files")).to_contain_text("上传文件")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    page.reload()
    expect(page.get_by_test_id("nav-files")).to_have_text("文件")
    expect(html).to_have_attribute("data-theme", "dark")
    page.get_by_test_id("lang-en").click()
    expect(page.get_by_test_id("nav-files")).to_have_text("Files")


def test_chinese_browser_gets_chinese_by_default(server: Server, open_page) -> None:
    page = open_page(server, lang="zh-CN").page
    page.goto(server.url + "/ui/login")
    expect(page.locator("h1")).to_have_text("登录 Atelier")
    expect(page.get_by_test_id("lang-zh")).to_have_attribute("aria-pressed", "true")


def test_a_401_mid_session_goes_to_login_and_back(server: Server, open_page) -> None:
    admin = server.session()
    server.add_user("erin", password="erin-pass-123")
    w = open_page(server)
    w.allow("401")  # the request that found the session gone
    page = w.page
    login(page, server.url, "erin", "erin-pass-123")
    # an admin resets erin's password: every session of erin's ends at once
    r = admin.patch(f"{server.url}/api/users/erin", json={"password": "erin-new-pass-1"},
                    timeout=10)
    assert r.status_code == 200
    page.get_by_test_id("nav-images").click()
    page.wait_for_url("**/ui/login?next=images**")
    page.fill("input[name=username]", "erin")
    page.fill("input[name=password]", "erin-new-pass-1")
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/images")
    expect(page.get_by_test_id("image-search")).to_be_visible()


def test_drop_files_onto_the_listing_uploads_them(server: Server, open_page) -> None:
    home = _home_with(server, ["existing.txt"])
    page = open_page(server).page
    login(page, server.url)
    page.goto(server.url + "/ui/files/users/admin/work")
    expect(page.get_by_test_id("listing")).to_be_visible()
    # a drop as the browser delivers it (the files built in the page: a test cannot drag
    # from the desktop)
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File(["dropped one"], "dropped-1.txt", {type: "text/plain"}));
        dt.items.add(new File([new Uint8Array(300000)], "dropped-2.bin"));
        const target = document.querySelector(".files");
        target.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true,
                                                        cancelable: true}));
        target.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true,
                                                    cancelable: true}));
    }""")
    expect(page.locator("[data-testid=upload-item][data-state=done]")).to_have_count(2)
    assert (home / "dropped-1.txt").read_text() == "dropped one"
    assert (home / "dropped-2.bin").stat().st_size == 300000
    expect(page.locator("[data-testid=item][data-path='users/admin/work/dropped-2.bin']")
           ).to_be_visible()
