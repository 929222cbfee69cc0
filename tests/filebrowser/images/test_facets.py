"""Search over everything, facets with counts, OR/NOT/exact filters, bounded totals and
facet counts, random order: ``/api/search`` and ``/api/search/facets`` on a real server
over images of every generator."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from ...conftest import Server
from . import generators as gen
from .conftest import wait_until

PASSWORD = "user-pass-123"


def _t(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


def _at(p: Path, day: str) -> Path:
    os.utime(p, (_t(day), _t(day)))
    return p


RED = ("red hair girl, forest, <lora:add_detail:0.8>, embedding:EasyNegative\n"
       "Negative prompt: lowres\n"
       "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 111, Size: 512x768, "
       "Model hash: 45dee52b, Model: anything-v5, VAE: vae-ft-mse-840000.safetensors, "
       "Hires upscaler: 4x-UltraSharp, ADetailer model: face_yolov8n.pt, "
       'TI hashes: "EasyNegative: c74b4e810b03", Version: v1.10.1')
BLUE = ("blue sky over the sea\nSteps: 30, Sampler: DPM++ 2M, CFG scale: 5, Seed: 222, "
        "Size: 768x512, Model hash: 45dee52b, Model: anything-v5, Version: v1.10.1")
SECRET = ("red hair secret, <lora:secretLora:1>\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
          "Seed: 333, Model: anything-v5")
ANN_IMAGES = 8


def build(root: Path) -> None:
    ann = root / "users" / "ann" / "outputs"
    _at(gen.a1111_png(ann / "a1111" / "red.png", RED, size=(64, 48)), "2024-05-01T10:00")
    _at(gen.a1111_png(ann / "a1111" / "blue.png", BLUE, size=(96, 64)), "2024-05-02T10:00")
    _at(gen.comfy_png(ann / "comfy" / "flux.png", gen.FLUX_PROMPT, gen.FLUX_WORKFLOW),
        "2024-06-10T10:00")
    _at(gen.novelai_png(ann / "nai" / "nai.png"), "2024-06-11T10:00")
    _at(gen.swarm_jpeg(ann / "swarm" / "teapot.jpg"), "2024-06-12T10:00")
    day = ann / "fooocus" / "2024-06-13"
    gen.fooocus_log(day, [("2024-06-13_10-00-00_42.png", gen.FOOOCUS_FIELDS)])
    Image.new("RGB", (64, 48)).save(day / "2024-06-13_10-00-00_42.png")
    _at(day / "2024-06-13_10-00-00_42.png", "2024-06-13T10:00")
    _at(gen.a1111_png(ann / "misc" / "unknown.png", '{"some_tool": {"prompt": "zzzword"}}'),
        "2024-06-14T10:00")
    plain = ann / "misc" / "plain.png"
    Image.new("RGB", (64, 48)).save(plain)
    _at(plain, "2024-06-15T23:30")
    bob = root / "users" / "bob" / "outputs"
    _at(gen.a1111_png(bob / "secret.png", SECRET), "2024-05-01T10:00")


@pytest.fixture
def srv(make_server: Callable[..., Server], tmp_path: Path) -> Server:
    root = tmp_path / "nas"
    build(root)
    s = make_server(root=root)
    s.add_user("ann")
    s.add_user("bob")
    wait_until(lambda: s.session().get(f"{s.url}/api/search/status").json()["counts"]
               .get("image") == ANN_IMAGES + 1, what="initial index")
    return s


def get(session: requests.Session, srv: Server, route: str = "/api/search",
        **params: Any) -> dict[str, Any]:
    r = session.get(srv.url + route, params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def names(out: dict[str, Any]) -> set[str]:
    return {x["name"] for x in out["results"]}


def counts(out: dict[str, Any], field: str) -> dict[str, int]:
    return {str(v["value"]): v["count"] for v in out["facets"][field]["values"]}


def test_search_box_finds_every_parameter_the_file_name_and_folder(srv: Server) -> None:
    ann = srv.session("ann", PASSWORD)

    def q(text: str) -> set[str]:
        return names(get(ann, srv, q=text))

    assert q("111") == {"red.png"}  # seed
    assert q("anything-v5") == {"red.png", "blue.png"}  # model
    assert q("45dee52b") == {"red.png", "blue.png"}  # model hash
    assert q("add_detail") == {"red.png"}  # LoRA
    assert q("realism_lora") == {"flux.png"}  # a ComfyUI LoRA
    assert q("EasyNegative") == {"red.png"}  # embedding
    assert q('"DPM++ 2M"') == {"blue.png", "nai.png"}  # sampler (NovelAI's, named by A1111)
    assert q("512x768") == {"red.png"}  # the size asked for
    assert q("96x64") == {"blue.png"}  # the size of the file
    assert q("face_yolov8n") == {"red.png"}  # ADetailer
    assert q("UltraSharp") == {"red.png"}  # hires
    assert q("vae-ft-mse-840000") == {"red.png"}  # VAE
    assert q("juggernautXL_v8Rundiffusion") == {"2024-06-13_10-00-00_42.png"}  # from log.html
    assert q("sd_xl_base_1.0") == {"teapot.jpg"}  # SwarmUI's model, no folder
    assert q("blue") == {"blue.png"}  # the file name
    assert q("nai") == {"nai.png"}  # the folder
    assert q("novelai") == {"nai.png"}  # the generator
    assert q("zzzword") == set()  # JSON not recognised is not prompt text
    assert q("secret") == set()  # bob's
    assert names(get(ann, srv, prompt="111")) == set()  # prompt= is the prompt only
    r = get(ann, srv, q="111")["results"][0]
    assert r["source"] == "a1111" and r["embeddings"] == ["EasyNegative"]


def test_facets_count_within_the_scope(srv: Server) -> None:
    ann = srv.session("ann", PASSWORD)
    f = get(ann, srv, "/api/search/facets")
    assert f["exact"] and f["scanned"] == ANN_IMAGES
    assert counts(f, "source") == {"a1111": 2, "comfyui": 1, "novelai": 1, "swarmui": 1,
                                   "fooocus": 1, "unknown": 1, "none": 1}
    assert counts(f, "model") == {"anything-v5": 2, "flux1-dev": 1,
                                  "NovelAI Diffusion V4.5": 1, "sd_xl_base_1.0": 1,
                                  "juggernautXL_v8Rundiffusion": 1}
    assert counts(f, "model")["anything-v5"] == 2  # bob's anything-v5 not counted
    assert counts(f, "lora") == {"add_detail": 1, "realism_lora": 1, "film_grain": 1,
                                 "detail": 1, "teapot_style": 1,
                                 "sd_xl_offset_example-lora_1.0": 1}
    assert counts(f, "sampler")["DPM++ 2M"] == 2 and counts(f, "sampler")["Euler a"] == 1
    assert counts(f, "size") == {"64x48": 7, "96x64": 1}
    assert counts(f, "folder")["users/ann/outputs/a1111"] == 2
    assert counts(f, "date") == {"2024-06": 6, "2024-05": 2}
    assert [v["value"] for v in f["facets"]["date"]["values"]] == ["2024-06", "2024-05"]
    days = get(ann, srv, "/api/search/facets", fields="date", date_by="day")
    assert counts(days, "date")["2024-06-15"] == 1
    # the same moment is the next day east of UTC+0:30
    tokyo = get(ann, srv, "/api/search/facets", fields="date", date_by="day", tz=540)
    assert "2024-06-16" in counts(tokyo, "date") and "2024-06-15" not in counts(tokyo, "date")
    admin = get(srv.session(), srv, "/api/search/facets", fields="model,lora")
    assert counts(admin, "model")["anything-v5"] == 3 and "secretLora" in counts(admin, "lora")


def test_filters_or_not_exact(srv: Server) -> None:
    ann = srv.session("ann", PASSWORD)

    def f(**params: Any) -> set[str]:
        return names(get(ann, srv, **params))

    assert f(model='"anything-v5"') == {"red.png", "blue.png"}
    assert f(model='"anything"') == set()  # exact
    assert f(model="anything") == {"red.png", "blue.png"}  # a part
    assert f(model=['"flux1-dev"', '"sd_xl_base_1.0"']) == {"flux.png", "teapot.jpg"}  # OR
    assert f(source=["a1111", "comfyui"], model="-anything-v5") == {"flux.png"}  # AND NOT
    assert f(source="a1111", not_model="anything") == set()
    assert f(lora='"detail"') == {"teapot.jpg"}  # exact: not add_detail
    assert f(lora="detail") == {"red.png", "teapot.jpg"}
    assert f(not_lora="detail", source="a1111") == {"blue.png"}  # no LoRA: kept by a NOT
    assert f(embedding="easyneg") == {"red.png"}
    assert f(sampler='"euler"') == {"flux.png"}
    assert f(size="96x64") == {"blue.png"}
    assert f(source="none") == {"plain.png"}
    assert f(source="unknown") == {"unknown.png"}
    assert f(source="fooocus") == {"2024-06-13_10-00-00_42.png"}
    assert f(date="2024-05") == {"red.png", "blue.png"}
    assert f(date=["2024-05-02", "2024-06-10"]) == {"blue.png", "flux.png"}
    assert f(date="2024-06-15") == {"plain.png"}
    assert f(date="2024-06-16", tz=540) == {"plain.png"}  # 23:30 UTC is the 16th in Tokyo
    assert f(folder="users/ann/outputs/misc") == {"unknown.png", "plain.png"}
    assert f(folder='"users/ann/outputs/fooocus"') == set()  # exactly that folder: empty
    assert f(folder="users/ann/outputs/fooocus") == {"2024-06-13_10-00-00_42.png"}
    assert f(not_folder="users/ann/outputs/misc", source=["none", "unknown", "novelai"]) == {
        "nai.png"}
    assert f(q="red", source="-a1111") == {"flux.png", "nai.png"}  # a red fox, red hair


def test_facets_of_a_filtered_search_keep_the_other_values_of_its_field(srv: Server) -> None:
    ann = srv.session("ann", PASSWORD)
    f = get(ann, srv, "/api/search/facets", model='"anything-v5"')
    # the model facet ignores the model filter: the other models show what OR would add
    assert counts(f, "model")["flux1-dev"] == 1 and counts(f, "model")["anything-v5"] == 2
    # the other facets count the filtered images only
    assert counts(f, "sampler") == {"Euler a": 1, "DPM++ 2M": 1}
    assert counts(f, "source") == {"a1111": 2}
    both = get(ann, srv, "/api/search/facets", model='"anything-v5"', sampler='"Euler a"')
    assert counts(both, "model") == {"anything-v5": 1}  # the sampler filter applies here
    assert counts(both, "sampler") == {"Euler a": 1, "DPM++ 2M": 1}
    words = get(ann, srv, q="anything-v5", facets="source,size")
    assert names(words) == {"red.png", "blue.png"}
    assert counts(words, "source") == {"a1111": 2} and "model" not in words["facets"]


def test_totals_and_facets_are_bounded(make_server: Callable[..., Server],
                                       tmp_path: Path) -> None:
    root = tmp_path / "nas"
    build(root)
    s = make_server(root=root, index_count_limit=3, index_facet_limit=5)
    wait_until(lambda: s.session().get(f"{s.url}/api/search/status").json()["counts"]
               .get("image") == ANN_IMAGES + 1, what="index")
    admin = s.session()
    page = get(admin, s, limit=2)
    assert (page["total"], page["total_exact"]) == (3, False)  # "3+"
    exact = get(admin, s, limit=2, exact_total=True)
    assert (exact["total"], exact["total_exact"]) == (ANN_IMAGES + 1, True)
    assert get(admin, s, limit=50)["total_exact"]  # all in one page: counted exactly
    f = get(admin, s, "/api/search/facets")
    assert f["scanned"] == 5 and not f["exact"]
    assert sum(counts(f, "source").values()) == 5  # the five looked at
    assert all(not f["facets"][k]["exact"] for k in f["facets"])
    small = get(admin, s, "/api/search/facets", source="a1111", fields="model,sampler")
    assert small["exact"] and counts(small, "model") == {"anything-v5": 3}
    # the source facet ignores its own filter, so it looks at everything again
    mixed = get(admin, s, "/api/search/facets", source="a1111", fields="model,source")
    assert mixed["facets"]["model"]["exact"] and not mixed["facets"]["source"]["exact"]


def test_sorts_random_stable_across_pages(srv: Server) -> None:
    ann = srv.session("ann", PASSWORD)

    def all_pages(**params: Any) -> tuple[list[str], int | None]:
        out, page = [], get(ann, srv, limit=3, **params)
        seed = page.get("seed")
        while True:
            out += [x["name"] for x in page["results"]]
            if not page["next"]:
                return out, seed
            page = get(ann, srv, limit=3, cursor=page["next"], **params)

    first, seed = all_pages(sort="random", seed=12345)
    assert seed == 12345 and sorted(first) == sorted(set(first)) and len(first) == ANN_IMAGES
    assert all_pages(sort="random", seed=12345)[0] == first  # the same seed, the same order
    others = {tuple(all_pages(sort="random", seed=s)[0]) for s in (1, 2, 3, 4)}
    assert len(others | {tuple(first)}) > 1
    drawn, chosen = all_pages(sort="random")  # no seed: one is drawn and answered
    assert chosen is not None and all_pages(sort="random", seed=chosen)[0] == drawn
    by_date, _ = all_pages(sort="date", order="asc")
    assert by_date[:2] == ["red.png", "blue.png"] and by_date[-1] == "plain.png"
    by_name, _ = all_pages(sort="name", order="asc")
    assert by_name == sorted(by_name)
    mixed = ann.get(srv.url + "/api/search", params={
        "sort": "name", "cursor": get(ann, srv, sort="random", seed=1, limit=2)["next"]})
    assert mixed.status_code == 400


def test_bad_filters_are_clear_errors(srv: Server) -> None:
    ann = srv.session("ann", PASSWORD)
    for params in ({"size": "big"}, {"date": "2024-13"}, {"date": "yesterday"},
                   {"model": ["x"] * 51}, {"tz": "99999"}, {"lora": ["a", "b" * 1001]},
                   {"not_size": "x" * 1001}):
        r = ann.get(srv.url + "/api/search", params=params)
        assert r.status_code in (400, 422), (params, r.text)
        assert r.json()["error"]
    r = ann.get(srv.url + "/api/search/facets", params={"fields": "model,colour"})
    assert r.status_code == 400 and "colour" in r.json()["message"]
    r = ann.get(srv.url + "/api/search/facets", params={"folder": "users/bob/outputs"})
    assert r.status_code == 404  # another user's folder answers like a missing one
    r = ann.get(srv.url + "/api/search", params={"not_folder": "users/bob"})
    assert r.status_code == 404
    assert requests.get(srv.url + "/api/search/facets").status_code == 401
    assert json.loads(ann.get(srv.url + "/api/search/facets",
                              params={"q": '"'}).text)["facets"] is not None


def test_the_same_on_postgresql(make_server: Callable[..., Server], postgres_db: str,
                                tmp_path: Path) -> None:
    root = tmp_path / "nas"
    build(root)
    s = make_server(root=root, db_url=postgres_db, index_count_limit=3)
    s.add_user("ann")
    wait_until(lambda: s.session().get(f"{s.url}/api/search/status").json()["counts"]
               .get("image") == ANN_IMAGES + 1, what="index on PostgreSQL")
    ann = s.session("ann", PASSWORD)
    # words in parameters, file names and folders (ILIKE there: no FTS5)
    assert names(get(ann, s, q="face_yolov8n")) == {"red.png"}
    assert names(get(ann, s, q="nai")) == {"nai.png"}
    f = get(ann, s, "/api/search/facets", model='"anything-v5"')
    assert counts(f, "model")["flux1-dev"] == 1 and counts(f, "source") == {"a1111": 2}
    everything = get(ann, s, "/api/search/facets")
    assert counts(everything, "lora")["add_detail"] == 1
    assert counts(everything, "date") == {"2024-06": 6, "2024-05": 2}
    assert counts(everything, "size") == {"64x48": 7, "96x64": 1}
    assert counts(everything, "source")["none"] == 1
    assert names(get(ann, s, model=["-anything", '"flux1-dev"'])) == {"flux.png"}
    assert names(get(ann, s, lora='"DETAIL"')) == {"teapot.jpg"}  # case is ignored
    assert names(get(ann, s, date="2024-06-16", tz=540)) == {"plain.png"}
    page = get(ann, s, limit=2, sort="random", seed=9)
    assert (page["total"], page["total_exact"]) == (3, False)
    seen = [x["name"] for x in page["results"]]
    while page["next"]:
        page = get(ann, s, limit=2, sort="random", seed=9, cursor=page["next"])
        seen += [x["name"] for x in page["results"]]
    assert len(seen) == len(set(seen)) == ANN_IMAGES


def test_info_reads_the_fooocus_log_and_stealth_when_enabled(
        make_server: Callable[..., Server], tmp_path: Path) -> None:
    from .conftest import A1111_TEXT

    root = tmp_path / "nas"
    build(root)
    gen.stealth_png(root / "users" / "ann" / "outputs" / "stealth.png", A1111_TEXT)
    for stealth in (False, True):
        s = make_server(root=root, state=tmp_path / f"state-{stealth}",
                        images_stealth_pnginfo=stealth)
        s.add_user("ann")
        ann = s.session("ann", PASSWORD)
        log = get(ann, s, "/api/fs/info",
                  path="users/ann/outputs/fooocus/2024-06-13/2024-06-13_10-00-00_42.png")
        assert log["meta"]["params_from"] == "fooocus:log.html"
        assert log["meta"]["params"]["model"] == "juggernautXL_v8Rundiffusion"
        info = get(ann, s, "/api/fs/info", path="users/ann/outputs/stealth.png")
        assert info["meta"]["params"]["source"] == ("a1111" if stealth else "none")
        wait_until(lambda a=ann, v=s: get(a, v, name="stealth.png")["total"] == 1,
                   what="index")
        assert (get(ann, s, q="3141592653")["total"] == 1) is stealth
