"""Civitai through its API shapes on a loopback stand-in: resolve every way, the right
file with its hash, size, name, preview and trigger words, and each refusal as a clear
error (401 naming the token setting, 403 early access, 410 archived, 429 backing off,
an HTML login page)."""

from __future__ import annotations

import pytest

from modelzoo.errors import (
    Archived,
    EarlyAccess,
    RateLimited,
    RemoteAuthRequired,
    RemoteNotFound,
)
from modelzoo.sources.civitai import Civitai, plain_text
from modelzoo.sources.refs import parse

from ..standins import files
from ..standins.civitai import CFile, CImage, CivitaiStandIn, CModel, CVersion


def add_lora(civ: CivitaiStandIn, model_id: int = 4201, version_id: int = 130072,
             **version_kw: object) -> bytes:
    data = files.lora_kohya_sdxl(pad=3000)
    old = CVersion(version_id - 1, "v1", "SDXL 1.0", [CFile(900 + version_id, "old.safetensors",
                                                             files.lora_kohya_sdxl())])
    new = CVersion(version_id, "v2", "SDXL 1.0",
                   [CFile(version_id * 10, "detail_tweaker.safetensors", data)],
                   trained_words=["detailed", " sharp "],
                   images=[CImage("nsfw.png", files.png(color=(1, 2, 3)), nsfw_level=8),
                           CImage("clip.mp4", b"video", type="video"),
                           CImage("safe.png", files.png())], **version_kw)  # type: ignore[arg-type]
    civ.add(CModel(model_id, "Detail Tweaker", "LORA", [new, old],
                   description="<p>Adds <b>detail</b>.</p><p>Use 0.5&ndash;1.</p>"))
    return data


def client(civ: CivitaiStandIn, token: str | None = None) -> Civitai:
    return Civitai(civ.url, token)


def test_resolve_every_form_to_the_same_file(civitai: CivitaiStandIn) -> None:
    data = add_lora(civitai)
    forms = ["civitai:4201", "civitai:4201@130072", "civitai:@130072",
             "urn:air:sdxl:lora:civitai:4201@130072",
             f"{civitai.url}/models/4201/detail-tweaker?modelVersionId=130072",
             f"{civitai.url}/api/download/models/130072"]
    for text in forms:
        ref = parse(text, civitai_urls=[civitai.url])
        res = client(civitai).resolve(ref)  # type: ignore[arg-type]
        assert (res.ref, res.source, res.type, res.base_model) == (
            "civitai:4201@130072", "civitai", "LORA", "SDXL 1.0"), text
        f = res.primary
        assert f.name == "detail_tweaker.safetensors"
        assert f.sha256 == files.sha(data) and f.size == len(data) and f.size_exact
        assert f.urls == [f"{civitai.url}/api/download/models/130072?fileId=1300720"]
    assert res.name == "Detail Tweaker" and res.version == "v2"
    assert res.trigger_words == ["detailed", "sharp"]
    assert res.description == "Adds detail.\nUse 0.5–1."
    assert res.preview_url == f"{civitai.url}/images/safe.png"   # nsfw 8 and video skipped
    assert res.info is not None and res.info["id"] == 130072
    assert res.update is None


def test_an_older_version_reports_the_newer_one(civitai: CivitaiStandIn) -> None:
    add_lora(civitai)
    res = client(civitai).resolve(parse("civitai:4201@130071"))  # type: ignore[arg-type]
    assert res.update == {"version_id": "130072", "name": "v2"}
    assert res.primary.name == "old.safetensors"


def test_textual_inversion_is_named_after_its_trigger_word(civitai: CivitaiStandIn) -> None:
    data = files.ti_sd15()
    civitai.add(CModel(7, "Bad Hands", "TextualInversion", [
        CVersion(70, "v1", "SD 1.5", [CFile(700, "badhands_v1.safetensors", data)],
                 trained_words=["bad-hands-5"])]))
    res = client(civitai).resolve(parse("civitai:7"))  # type: ignore[arg-type]
    assert res.primary.name == "bad-hands-5.safetensors"   # Content-Disposition wins
    assert res.type == "TextualInversion"


def test_a_requested_file_of_a_version(civitai: CivitaiStandIn) -> None:
    model = files.sd15_checkpoint()
    civitai.add(CModel(8, "RV", "Checkpoint", [CVersion(80, "v6", "SD 1.5", [
        CFile(801, "rv.safetensors", model), CFile(802, "rv.yaml", b"model: {}\n",
                                                   primary=False, type="Config")])]))
    c = client(civitai)
    assert c.resolve(parse("civitai:8")).primary.name == "rv.safetensors"  # type: ignore[arg-type]
    res = c.resolve(parse("civitai:8"), file="rv.yaml")  # type: ignore[arg-type]
    assert res.primary.name == "rv.yaml" and res.primary.urls[0].endswith("fileId=802")
    with pytest.raises(RemoteNotFound, match="rv.safetensors, rv.yaml"):
        c.resolve(parse("civitai:8"), file="nope.bin")  # type: ignore[arg-type]


def test_login_required_names_the_token_setting_and_the_token_stays_home(
        civitai: CivitaiStandIn) -> None:
    add_lora(civitai, require_auth=True)
    ref = parse("civitai:4201")
    with pytest.raises(RemoteAuthRequired) as e:
        client(civitai).resolve(ref)  # type: ignore[arg-type]
    assert e.value.status == 401 and "ATELIER_CIVITAI_TOKEN" in str(e.value)
    with pytest.raises(RemoteAuthRequired, match="refused the API key"):
        client(civitai, "wrong").resolve(ref)  # type: ignore[arg-type]
    res = client(civitai, civitai.token).resolve(ref)  # type: ignore[arg-type]
    assert res.primary.size is not None
    api = civitai.traffic.requests("/api/")
    signed = civitai.traffic.requests("/signed/")
    assert signed and all("authorization" not in r["headers"] for r in signed)
    assert any(r["headers"].get("authorization") == f"Bearer {civitai.token}" for r in api)
    assert all("mozilla" not in r["headers"].get("user-agent", "").lower()
               for r in civitai.traffic.log)


def test_early_access_archived_and_missing(civitai: CivitaiStandIn) -> None:
    add_lora(civitai, early_access=True)
    with pytest.raises(EarlyAccess) as e:
        client(civitai).resolve(parse("civitai:4201"))  # type: ignore[arg-type]
    assert e.value.status == 403 and e.value.code == "early_access" and "2031" in str(e.value)
    add_lora(civitai, 5000, 50001, archived=True)
    with pytest.raises(Archived) as a:
        client(civitai).resolve(parse("civitai:5000"))  # type: ignore[arg-type]
    assert a.value.status == 410
    with pytest.raises(RemoteNotFound) as n:
        client(civitai).resolve(parse("civitai:999"))  # type: ignore[arg-type]
    assert n.value.status == 404 and "No model with id 999" in str(n.value)


def test_an_html_login_page_is_a_clear_error(civitai: CivitaiStandIn) -> None:
    add_lora(civitai, 1, 1002)
    civitai.login_page.add(1002)
    with pytest.raises(RemoteAuthRequired) as e:
        client(civitai).resolve(parse(f"{civitai.url}/api/download/models/1002",  # type: ignore[arg-type]
                                      civitai_urls=[civitai.url]))
    assert "HTML page" in str(e.value) and "Sign in | Civitai" in str(e.value)
    assert "ATELIER_CIVITAI_TOKEN" in str(e.value)


def test_429_backs_off_for_retry_after_then_gives_up(civitai: CivitaiStandIn) -> None:
    add_lora(civitai)
    civitai.api_429 = [1.0]
    res = client(civitai).resolve(parse("civitai:4201@130072"))  # type: ignore[arg-type]
    assert res.version_id == "130072"
    calls = civitai.traffic.requests("/api/v1/model-versions/130072")
    assert len(calls) == 2 and calls[1]["t"] - calls[0]["t"] >= 1.0
    civitai.api_429 = [0.05] * 10
    with pytest.raises(RateLimited) as e:
        client(civitai).resolve(parse("civitai:4201@130072"))  # type: ignore[arg-type]
    assert e.value.status == 429


def test_by_hash_single_and_in_batches_of_100(civitai: CivitaiStandIn) -> None:
    data = add_lora(civitai)
    c = client(civitai)
    v = c.by_hash(files.sha(data))
    assert v is not None and v["id"] == 130072
    assert c.by_hash(files.sha(data)[:10]) is not None       # AutoV2 too
    assert c.by_hash("00" * 32) is None
    hashes = [f"{i:064x}" for i in range(150)] + [files.sha(data)]
    found = c.by_hashes(hashes)
    assert [x["id"] for x in found] == [130072]
    posts = [r for r in civitai.traffic.requests("/api/v1/model-versions/by-hash")
             if r["method"] == "POST"]
    assert len(posts) == 2
    models = c.models(["4201", "31337"])
    assert [m["id"] for m in models] == [4201]


def test_plain_text_of_descriptions() -> None:
    assert plain_text("<h1>T</h1><p>a &amp; b<br>c</p><script>x</script>") == "T\na & b\nc"
    assert plain_text(None) == ""
