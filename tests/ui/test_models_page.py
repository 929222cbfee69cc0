"""The Models page in chromium against the ModelZoo API and a Civitai stand-in on
loopback (``tests/modelzoo/standins``, reached through ``ATELIER_CIVITAI_URL``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from ..conftest import Server
from ..modelzoo.standins.civitai import CFile, CImage, CivitaiStandIn, CModel, CVersion
from ..modelzoo.standins.files import lora_kohya_sdxl, sha
from .conftest import login, shot

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
       b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe"
       b"\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82")


@pytest.fixture
def civitai() -> Iterator[CivitaiStandIn]:
    stand = CivitaiStandIn()
    data = lora_kohya_sdxl(pad=3 * 1024 * 1024)
    stand.add(CModel(id=4201, name="Pixel Forest", type="LORA", versions=[
        CVersion(id=130072, name="v2.0", base_model="SDXL 1.0",
                 files=[CFile(id=9001, name="pixel_forest_v2.safetensors", data=data)],
                 trained_words=["pxforest", "pixel art"],
                 images=[CImage(name="p1.png", data=PNG)])]))
    yield stand
    stand.stop()


def test_resolve_then_fetch_a_lora_from_the_civitai_stand_in(
        make_server, civitai: CivitaiStandIn, open_page, monkeypatch) -> None:
    monkeypatch.setenv("ATELIER_CIVITAI_URL", civitai.url)
    srv: Server = make_server()
    page = open_page(srv).page
    login(page, srv.url)
    page.get_by_test_id("nav-models").click()
    page.get_by_test_id("model-ref").fill(f"{civitai.url}/models/4201?modelVersionId=130072")
    page.get_by_test_id("model-resolve").click()
    card = page.get_by_test_id("resolved")
    expect(card.get_by_test_id("resolved-name")).to_contain_text("Pixel Forest")
    expect(card.get_by_test_id("resolved-type")).to_have_text("LORA")
    expect(card).to_contain_text("SDXL 1.0")
    expect(card.get_by_test_id("triggers")).to_contain_text("pxforest")
    expect(card.get_by_test_id("resolved-dest")).to_contain_text("models/Lora/")
    expect(card.locator("img.preview")).to_be_visible()
    shot(page, "models-resolved-en")
    dest = card.get_by_test_id("resolved-dest").inner_text().strip()
    page.get_by_test_id("model-fetch").click()
    job = page.get_by_test_id("job").first
    expect(job).to_have_attribute("data-state", "done", timeout=120_000)
    expect(job.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "100")
    got = (srv.root / dest).read_bytes()
    want = civitai.versions[130072].files[0].data
    assert sha(got) == sha(want)
    page.get_by_test_id("mtab-library").click()
    expect(page.get_by_test_id("lib-model").filter(has_text="pixel_forest")).to_be_visible()
    shot(page, "models-jobs-en")


def test_a_bad_reference_says_what_is_accepted(make_server, open_page) -> None:
    srv: Server = make_server()
    w = open_page(srv)
    w.allow("400")
    page = w.page
    login(page, srv.url)
    page.get_by_test_id("nav-models").click()
    page.get_by_test_id("model-ref").fill("not a model reference at all")
    page.get_by_test_id("model-resolve").click()
    expect(page.get_by_test_id("model-error")).to_contain_text("Not a reference we understand")
