"""Resolve -> place -> engine on real files and loopback catalogues: the right folder and
name, the WebUI's sidecars, reuse of what is already there, repos, signed URLs that
expire mid-download, a type known only after the download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image

from modelzoo import db, download, placement
from modelzoo.errors import DestinationExists
from modelzoo.fetch import FetchSettings
from modelzoo.library.index import Index
from modelzoo.settings import ZooSettings
from modelzoo.sources import remote
from modelzoo.sources.resolve import Sources

from .standins import files
from .standins.civitai import CFile, CImage, CivitaiStandIn, CModel, CVersion
from .standins.huggingface import HFile, HfStandIn, HRepo


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = (tmp_path / "nas").resolve()
    (r / "models").mkdir(parents=True)
    return r


@pytest.fixture
def index(tmp_path: Path, root: Path) -> Index:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    db.create(engine)
    return Index(engine, root)


def quick() -> FetchSettings:
    return FetchSettings(connections=4, piece_size=64 * 1024, backoff_initial=0.05,
                         backoff_max=0.5, retries=6, reserve_bytes=0, lock_heartbeat=0.5,
                         sync_interval=0.5)


def fetch(sources: Sources, text: str, root: Path, index: Index | None, **plan_kw: object
          ) -> download.Outcome:
    res = sources.resolve(text)
    folder = root / placement.folder_for(res.type, res.base_model)
    plan = download.plan(res, folder, root=root, index=index, readable=["models", "users"],
                         relocate={"models_root": "models"}, **plan_kw)  # type: ignore[arg-type]
    return download.execute(plan, origin_headers=sources.origin_headers,
                            fetch_settings=quick(), index=index, root=root,
                            preview_png=lambda u: _png(sources, u))


def _png(sources: Sources, url: str) -> bytes | None:
    from modelzoo.previews import fetch_image, to_png

    return to_png(fetch_image(sources.sess, url, 10_000_000, [sources.settings.civitai_url]),
                  32)


def civitai_sources(civ: CivitaiStandIn, token: str | None = None) -> Sources:
    return Sources.from_settings(ZooSettings(civitai_url=civ.url, civitai_token=token))


def add_lora(civ: CivitaiStandIn) -> bytes:
    data = files.lora_kohya_sdxl(pad=300_000)
    civ.add(CModel(4201, "Detail Tweaker", "LORA", [CVersion(
        130072, "v2", "SDXL 1.0", [CFile(1, "detail_tweaker.safetensors", data)],
        trained_words=["detailed", "sharp"],
        images=[CImage("n.png", files.png(color=(0, 0, 0)), nsfw_level=16),
                CImage("p.jpg", files.png(400, 300, fmt="JPEG"), content_type="image/jpeg")])]))
    return data


def test_civitai_lora_lands_in_lora_with_its_sidecars(civitai: CivitaiStandIn, root: Path,
                                                      index: Index) -> None:
    data = add_lora(civitai)
    out = fetch(civitai_sources(civitai), "civitai:4201", root, index)
    model = root / "models/Lora/detail_tweaker.safetensors"
    assert model.read_bytes() == data and out.paths == ["models/Lora/detail_tweaker.safetensors"]
    assert out.sha256[str(model)] == files.sha(data)
    with Image.open(model.with_name("detail_tweaker.preview.png")) as im:
        assert im.format == "PNG" and max(im.size) == 32 and im.getpixel((0, 0))[0] > 150
    info = json.loads(model.with_name("detail_tweaker.civitai.info").read_text())
    assert info["id"] == 130072 and info["files"][0]["hashes"]["SHA256"] == files.sha(data).upper()
    meta = json.loads(model.with_name("detail_tweaker.json").read_text())
    assert meta["activation text"] == "detailed, sharp" and meta["sd version"] == "SDXL"
    assert meta["base model"] == "SDXL 1.0" and meta["description"] == "A test model."
    assert meta["sha256"] == files.sha(data)
    row = index.current("models/Lora/detail_tweaker.safetensors")
    assert row is not None and row.sha256 == files.sha(data) and row.civitai_version_id == "130072"
    assert row.trigger_words == ["detailed", "sharp"] and row.preview.endswith(".preview.png")
    assert sorted(p.name for p in model.parent.iterdir()) == [
        "detail_tweaker.civitai.info", "detail_tweaker.json", "detail_tweaker.preview.png",
        "detail_tweaker.safetensors"]


def test_edited_user_metadata_is_kept(civitai: CivitaiStandIn, root: Path) -> None:
    add_lora(civitai)
    meta = root / "models/Lora/detail_tweaker.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"activation text": "my words", "notes": "mine",
                                "preferred weight": 0.7}))
    fetch(civitai_sources(civitai), "civitai:4201", root, None)
    got = json.loads(meta.read_text())
    assert got["activation text"] == "my words" and got["notes"] == "mine"
    assert got["preferred weight"] == 0.7 and got["sd version"] == "SDXL"


def test_the_same_sha256_is_reused_never_downloaded_twice(civitai: CivitaiStandIn, root: Path,
                                                          index: Index) -> None:
    data = add_lora(civitai)
    sources = civitai_sources(civitai)
    fetch(sources, "civitai:4201", root, index)
    sent = civitai.traffic.sent
    again = fetch(sources, "civitai:4201", root, index)
    assert again.reused and again.fetched == 0
    assert civitai.traffic.sent - sent < 2 * 64 * 1024          # the probe, no download
    # the same bytes under another name, never hashed before: found by size, then hash
    (root / "models/Lora/detail_tweaker.safetensors").rename(root / "models/Lora/mine.bin")
    (root / "models/Lora/mine.bin").rename(root / "models/Lora/mine.safetensors")
    res = sources.resolve("civitai:4201")
    plan = download.plan(res, root / "models/Lora", root=root, index=index,
                         readable=["models"])
    assert plan.reused and plan.destination == "models/Lora/mine.safetensors"
    assert plan.existing == {"path": "models/Lora/mine.safetensors", "same_sha256": True}
    # a caller who cannot read that folder does not get it
    other = download.plan(res, root / "users/ann/models/Lora", root=root, index=index,
                          readable=["users/ann"])
    assert not other.reused and files.sha(data)


def test_another_file_under_the_name_is_renamed_around_or_refused(
        civitai: CivitaiStandIn, root: Path, index: Index) -> None:
    data = add_lora(civitai)
    folder = root / "models/Lora"
    folder.mkdir(parents=True)
    (folder / "detail_tweaker.safetensors").write_bytes(b"someone else's model")
    sources = civitai_sources(civitai)
    res = sources.resolve("civitai:4201")
    with pytest.raises(DestinationExists):
        download.plan(res, folder, root=root, index=index, conflict="fail")
    plan = download.plan(res, folder, root=root, index=index)
    assert plan.existing == {"path": "models/Lora/detail_tweaker.safetensors",
                             "same_sha256": False}
    assert plan.destination == "models/Lora/detail_tweaker-2.safetensors"
    download.execute(plan, origin_headers=sources.origin_headers, fetch_settings=quick(),
                     root=root)
    assert (folder / "detail_tweaker.safetensors").read_bytes() == b"someone else's model"
    assert (folder / "detail_tweaker-2.safetensors").read_bytes() == data


def test_textual_inversion_takes_the_name_civitai_gives(civitai: CivitaiStandIn,
                                                        root: Path) -> None:
    data = files.ti_sdxl()
    civitai.add(CModel(9, "Neg", "TextualInversion", [CVersion(
        90, "v1", "SDXL 1.0", [CFile(91, "neg_v1.safetensors", data)],
        trained_words=["bad-x"])]))
    out = fetch(civitai_sources(civitai), f"{civitai.url}/api/download/models/90", root, None)
    assert out.paths == ["models/embeddings/bad-x.safetensors"]
    assert (root / "models/embeddings/bad-x.safetensors").read_bytes() == data


def test_a_signed_url_that_expires_mid_download_is_minted_again(civitai: CivitaiStandIn,
                                                                root: Path) -> None:
    data = add_lora(civitai)
    civitai.signed_ttl = 0.4
    civitai.rate = 200_000          # ~1.5 s per connection for this file
    out = fetch(civitai_sources(civitai), "civitai:4201", root, None)
    assert (root / out.paths[0]).read_bytes() == data
    mints = civitai.traffic.requests("/api/download/models/130072")
    assert len(mints) >= 3   # the probe, the first download, and at least one re-mint


def test_a_token_reaches_civitai_and_never_the_storage_host(civitai: CivitaiStandIn,
                                                            root: Path) -> None:
    data = add_lora(civitai)
    civitai.versions[130072].require_auth = True
    out = fetch(civitai_sources(civitai, civitai.token), "civitai:4201", root, None)
    assert (root / out.paths[0]).read_bytes() == data
    signed = civitai.traffic.requests("/signed/")
    assert len(signed) >= 2 and all("authorization" not in r["headers"] for r in signed)


def test_a_whole_diffusers_repo_from_an_endpoint_and_its_mirror(
        hf: HfStandIn, hf_mirror: HfStandIn, root: Path, index: Index) -> None:
    unet = files.safetensors({"conv_in.weight": ("F16", [320, 4, 3, 3])}, pad=400_000)
    repo = hf.add(HRepo("acme/tiny-sdxl", [
        HFile("model_index.json", b'{"_class_name": "StableDiffusionXLPipeline"}', lfs=False),
        HFile("unet/config.json", b'{"in_channels": 4}', lfs=False),
        HFile("unet/diffusion_pytorch_model.safetensors", unet),
        HFile("unet/diffusion_pytorch_model.fp16.safetensors", unet[:-1] + b"\x00"),
    ], tags=["diffusers:StableDiffusionXLPipeline"]))
    sources = Sources.from_settings(ZooSettings(hf_endpoint=hf.url, hf_mirrors=[hf_mirror.url]))
    res = sources.resolve("hf:acme/tiny-sdxl", exclude=["*.fp16.*"])
    folder = root / placement.folder_for(res.type, res.base_model)
    plan = download.plan(res, folder, root=root, index=index)
    assert plan.destination == "models/diffusers/acme/tiny-sdxl"
    out = download.execute(plan, origin_headers=sources.origin_headers,
                           fetch_settings=quick(), index=index, root=root)
    base = root / "models/diffusers/acme/tiny-sdxl"
    assert sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) == [
        "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"]
    assert (base / "unet/diffusion_pytorch_model.safetensors").read_bytes() == unet
    assert (base / "model_index.json").read_bytes() == repo.files[0].data
    assert out.sha256[str(base / "unet/diffusion_pytorch_model.safetensors")] == files.sha(unet)
    row = index.current("models/diffusers/acme/tiny-sdxl/unet/diffusion_pytorch_model"
                        ".safetensors")
    assert row is not None and row.sha256 == files.sha(unet)
    assert not list(base.glob("*.preview.png"))   # no card sidecars for a repo


def test_a_type_read_only_after_the_download_moves_the_file(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from .sources.test_modelscope_url import Site

    site = Site(files.controlnet_sd15(pad=100_000))
    try:
        monkeypatch.setattr(remote, "FIRST_BYTES", 16)   # too few for the header ...
        monkeypatch.setattr(remote, "MAX_SNIFF", 16)     # ... and no second look
        sources = Sources.from_settings(ZooSettings())
        res = sources.resolve(f"{site.url}/plain/x.safetensors")
        assert res.type == "Other" and res.sniff_after
        out = fetch(sources, f"{site.url}/plain/x.safetensors", root, None)
        assert out.paths == ["models/ControlNet/served-name.safetensors"]
        assert (root / "models/ControlNet/served-name.safetensors").read_bytes() == site.data
        assert not list((root / "models/Other").iterdir())
    finally:
        site.running.stop()


def test_a_token_refused_at_download_time_names_its_setting(civitai: CivitaiStandIn,
                                                            root: Path) -> None:
    from modelzoo.errors import RemoteAuthRequired

    add_lora(civitai)
    civitai.versions[130072].require_auth = True
    sources = civitai_sources(civitai, civitai.token)
    res = sources.resolve("civitai:4201")
    plan = download.plan(res, root / "models/Lora", root=root)
    civitai.token = "rotated"            # the key was revoked after the resolve
    with pytest.raises(RemoteAuthRequired, match="ATELIER_CIVITAI_TOKEN"):
        download.execute(plan, origin_headers=sources.origin_headers, fetch_settings=quick(),
                         root=root)
    assert not [p for p in (root / "models/Lora").iterdir()]
