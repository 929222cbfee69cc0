"""The GPU and Admin pages in chromium, on a simulated 8 GiB GPU with a tiny real
diffusers pipeline (built from configs, nothing downloaded)."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from ..conftest import Server
from ..modelzoo.residency.conftest import build_tiny_pipeline
from .conftest import login


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.fixture
def gpu_server(make_server, tiny: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Server:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("ATELIER_GPU_DEVICES", "sim:8GiB")
    monkeypatch.setenv("ATELIER_GPU_DTYPE", "fp32")
    root = tmp_path / "nas"
    shutil.copytree(tiny, root / "models" / "Stable-diffusion" / "tiny")
    return make_server(root=root)


def test_gpu_page_memory_bar_load_and_pin(gpu_server: Server, open_page) -> None:
    page = open_page(gpu_server).page
    login(page, gpu_server.url)
    page.get_by_test_id("nav-gpu").click()
    bar = page.locator("[data-testid=memory-bar][data-device='sim:0']")
    expect(bar).to_be_visible()
    expect(bar).to_have_attribute("aria-label", "sim:0: 0 B of 8.0 GB used")
    # nothing resident yet: reserve and free only
    expect(bar.locator(".memseg.seg-free")).to_have_count(1)
    page.get_by_test_id("load-model").select_option("tiny")
    page.get_by_test_id("load-go").click()
    row = page.get_by_test_id("resident-model")
    expect(row).to_contain_text("tiny", timeout=60_000)
    expect(row).to_contain_text("sim:0")
    # the model now has its own segment in the device's bar
    seg = bar.locator(".memseg[title^='tiny:']")
    expect(seg).to_have_count(1)
    assert float(seg.evaluate("e => e.getBoundingClientRect().width")) > 0
    row.get_by_role("button", name="Pin").click()
    expect(row).to_contain_text("Unpin")
    expect(page.get_by_test_id("mem-chart")).to_be_visible()
    # GET /api/gpu/webui exists (the WebUI extension reports there); no WebUI here
    expect(page.get_by_test_id("webui-section")).to_contain_text("The WebUI holds no checkpoint")


def test_admin_users_quota_usage_chart_and_csv(gpu_server: Server, open_page) -> None:
    s = gpu_server.session()
    r = s.post(f"{gpu_server.url}/api/generate?wait=true", json={
        "model": "tiny", "prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 1},
        timeout=300)
    assert r.status_code == 200, r.text
    page = open_page(gpu_server).page
    login(page, gpu_server.url)
    page.get_by_test_id("nav-admin").click()
    # create a user with a quota
    page.get_by_test_id("add-user").click()
    dlg = page.get_by_test_id("add-user-dialog")
    dlg.get_by_test_id("new-name").fill("carol")
    dlg.get_by_test_id("new-password").fill("carol-pass-123")
    dlg.get_by_test_id("new-quota").fill("2")
    dlg.get_by_test_id("create-user").click()
    row = page.locator("[data-testid=user-row][data-name=carol]")
    expect(row).to_contain_text("2.0 GB")
    assert gpu_server.fb.users.get("carol").quota_bytes == 2 * 1024 ** 3
    # role change and quota change
    row.get_by_test_id("role").select_option("viewer")
    page.wait_for_function("() => true")
    expect(row.get_by_test_id("role")).to_have_value("viewer")
    row.get_by_test_id("set-quota").click()
    page.get_by_test_id("ask").locator("input").fill("0.5")
    page.get_by_test_id("ask-ok").click()
    expect(row).to_contain_text("512 MB")
    assert gpu_server.fb.users.get("carol").role == "viewer"
    # usage: bytes moved by day, GPU seconds, CSV
    (gpu_server.root / "users" / "admin").mkdir(parents=True, exist_ok=True)
    up = s.post(f"{gpu_server.url}/api/fs/upload", params={"path": "users/admin"},
                files={"files": ("u.bin", b"x" * 300_000)}, timeout=30)
    assert up.status_code == 201
    # the generated image counts as written bytes too, like an upload
    outputs = gpu_server.root / "users" / "admin" / "outputs"
    uploaded = 300_000 + (outputs / r.json()["path"]).stat().st_size
    page.get_by_test_id("tab-usage").click()
    usage = page.get_by_test_id("usage")
    admin_row = usage.locator("[data-testid=usage-row]", has_text="admin")
    expect(admin_row).to_contain_text(f"{round(uploaded / 1024)} KB")
    gpu_cell = admin_row.locator("td").nth(4)
    assert float(gpu_cell.inner_text()) >= 0
    expect(page.get_by_test_id("usage-chart").locator("rect")).not_to_have_count(0)
    with page.expect_download() as info:
        page.get_by_test_id("export-csv").click()
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    mine = [r for r in rows if r["user"] == "admin"]
    total = [r for r in mine if r["day"] == "total"][0]
    assert int(total["uploaded_bytes"]) == uploaded
    assert float(total["gpu_seconds"]) > 0 and total["generations"] == "1"
    days = [r for r in mine if r["day"] != "total"]
    assert days and sum(int(r["uploaded_bytes"]) for r in days) == uploaded
    # GPU seconds and generations per day add up to the total
    assert sum(int(r["generations"] or 0) for r in days) == 1
    assert sum(float(r["gpu_seconds"] or 0) for r in days) == float(total["gpu_seconds"])


def test_admin_page_is_for_admins_only(gpu_server: Server, open_page) -> None:
    gpu_server.add_user("dave")
    page: Any = open_page(gpu_server).page
    login(page, gpu_server.url, "dave", "user-pass-123")
    expect(page.get_by_test_id("nav-admin")).to_have_count(0)
    page.goto(gpu_server.url + "/ui/admin")
    expect(page.locator("h1")).to_have_text("This page does not exist")
