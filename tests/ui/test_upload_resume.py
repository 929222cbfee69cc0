"""Resumable uploads in chromium: a reload mid-upload, and a server killed mid-upload.

The browser's upload is slowed with Chrome's own network throttling (DevTools protocol),
so that there is time to interrupt it; the server and the tus protocol are real.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from ..conftest import Server
from .conftest import login

MB = 1024 * 1024


def _throttle(page: Any, bytes_per_second: int) -> Any:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1,
        "uploadThroughput": bytes_per_second})
    return cdp


def _progress(item: Any) -> int:
    return int(item.get_attribute("data-progress") or 0)


def _wait_progress(page: Any, item: Any, low: int) -> int:
    page.wait_for_function(
        "([sel, low]) => { const e = document.querySelector(sel);"
        " return e && Number(e.dataset.progress) >= low; }",
        arg=["[data-testid=upload-item]", low], timeout=60_000)
    return _progress(item)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reload_mid_upload_then_pick_the_file_again_resumes(server: Server, open_page,
                                                             tmp_path: Path) -> None:
    src = tmp_path / "checkpoint.safetensors"
    src.write_bytes(os.urandom(24 * MB))
    w = open_page(server)
    page = w.page
    login(page, server.url)
    page.goto(server.url + "/ui/files/users/admin")
    cdp = _throttle(page, 3 * MB)
    page.get_by_test_id("file-input").set_input_files(str(src))
    item = page.locator("[data-testid=upload-item]")
    before = _wait_progress(page, item, 15)
    assert before < 100
    requests: list[tuple[str, str]] = []
    page.on("request", lambda r: requests.append((r.method, r.url)) if "/api/tus/" in r.url
            else None)
    page.reload()
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    # the page says what is unfinished here, and how far it got
    pending = page.get_by_test_id("unfinished-item")
    expect(pending).to_contain_text("checkpoint.safetensors")
    held = int(re.search(r"\((\d+) %\)", pending.inner_text()).group(1))
    assert held >= 10
    with page.expect_file_chooser() as chooser:
        pending.get_by_test_id("resume-pick").click()
    chooser.value.set_files(str(src))
    done = page.locator("[data-testid=upload-item][data-state=done]")
    expect(done).to_have_count(1, timeout=60_000)
    expect(page.get_by_test_id("resumed")).to_contain_text("resumed from")
    final = server.root / "users" / "admin" / "checkpoint.safetensors"
    assert _sha(final) == _sha(src)
    # it continued the same upload: asked for the offset, never created a new one
    methods = [m for m, u in requests if "/api/tus/" in u]
    assert "HEAD" in methods and "PATCH" in methods
    assert not [u for m, u in requests if m == "POST" and u.rstrip("/").endswith("/api/tus")]
    expect(page.locator("[data-testid=item][data-path='users/admin/checkpoint.safetensors']")
           ).to_be_visible()
    expect(page.get_by_test_id("unfinished")).to_have_count(0)


def test_server_killed_mid_upload_the_page_carries_on_after_restart(
        spawn_server, open_page, tmp_path: Path) -> None:
    srv: Server = spawn_server()
    src = tmp_path / "lora.safetensors"
    src.write_bytes(os.urandom(20 * MB))
    w = open_page(srv)
    page = w.page
    login(page, srv.url)
    page.goto(srv.url + "/ui/files/users/admin")
    _throttle(page, 3 * MB)
    creations: list[str] = []
    page.on("request", lambda r: creations.append(r.url) if r.method == "POST"
            and r.url.rstrip("/").endswith("/api/tus") else None)
    heads: list[str] = []
    page.on("request", lambda r: heads.append(r.url) if r.method == "HEAD" else None)
    page.get_by_test_id("file-input").set_input_files(str(src))
    item = page.locator("[data-testid=upload-item]")
    _wait_progress(page, item, 15)
    srv.kill9()
    # the browser sees the connection drop: tus-js-client retries with its delays
    w.allow("ERR_CONNECTION_REFUSED")
    w.allow("ERR_CONNECTION_RESET")
    w.allow("ERR_EMPTY_RESPONSE")
    w.allow("Failed to load resource")
    page.wait_for_timeout(1500)
    again: Server = spawn_server(root=srv.root, state=srv.state, port=srv.port)
    done = page.locator("[data-testid=upload-item][data-state=done]")
    expect(done).to_have_count(1, timeout=90_000)
    assert _sha(srv.root / "users" / "admin" / "lora.safetensors") == _sha(src)
    assert len(creations) == 1  # one upload, continued: never created again
    assert heads, "the client asked the restarted server for its offset"
    again.stop()
