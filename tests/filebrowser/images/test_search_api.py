"""``GET /api/search`` on a real server: every filter, pagination, sorting and scope."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from ...conftest import Server
from .conftest import CHINESE_TEXT, comfy_png, wait_until, write_exif_image, write_png

DAY = 86400.0
T0 = 1_700_000_000.0  # 2023-11-14


def text(prompt: str, *, neg: str = "blurry", sampler: str = "Euler a", model: str = "m1",
         lora: str | None = None, seed: int = 1) -> str:
    if lora:
        prompt += f", <lora:{lora}:0.8>"
    return (f"{prompt}\nNegative prompt: {neg}\nSteps: 20, Sampler: {sampler}, CFG scale: 7, "
            f"Seed: {seed}, Model hash: abcdef1234, Model: {model}")


def _at(p: Path, t: float) -> None:
    os.utime(p, (t, t))


@pytest.fixture
def srv(make_server: Callable[..., Server], tmp_path: Path) -> Server:
    root = tmp_path / "nas"
    ann = root / "users" / "ann" / "outputs"
    _at(write_png(ann / "2024" / "red.png", text("red hair girl, forest", lora="add_detail",
                                                 model="anything-v5")), T0)
    _at(write_png(ann / "2024" / "blue.png", text("blue hair boy", neg="red eyes",
                                                  sampler="DPM++ 2M Karras")), T0 + DAY)
    _at(write_exif_image(ann / "zh.jpg", CHINESE_TEXT), T0 + 2 * DAY)
    _at(comfy_png(ann / "comfy.png"), T0 + 3 * DAY)
    for i in range(5):
        _at(write_png(ann / "batch" / f"{i:05d}-cat.png", text(f"cat number{i}", seed=i)),
            T0 + 10 * DAY + i)
    bob = root / "users" / "bob" / "outputs"
    _at(write_png(bob / "secret.png", text("red hair secret", model="anything-v5")), T0)
    (root / "models" / "Lora").mkdir(parents=True)
    (root / "models" / "Lora" / "add_detail.safetensors").write_bytes(b"\0" * 2048)
    s = make_server(root=root)
    s.add_user("ann")
    s.add_user("bob")
    wait_until(lambda: s.session().get(f"{s.url}/api/search/status").json()["counts"]
               .get("image") == 10, what="initial index")
    return s


def q(session: requests.Session, srv: Server, **params: Any) -> dict[str, Any]:
    r = session.get(f"{srv.url}/api/search", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def names(result: dict[str, Any]) -> set[str]:
    return {x["name"] for x in result["results"]}


def test_filters(srv: Server) -> None:
    ann = srv.session("ann", "user-pass-123")
    assert names(q(ann, srv, prompt="red hair")) == {"red.png"}
    # "red" is in blue.png's negative prompt: q covers both, prompt= only the prompt
    assert names(q(ann, srv, q="red hair")) == {"red.png", "blue.png"}
    assert names(q(ann, srv, q="red")) == {"red.png", "blue.png"}
    assert names(q(ann, srv, prompt="red")) == {"red.png"}
    assert names(q(ann, srv, negative="red")) == {"blue.png"}
    assert names(q(ann, srv, q='"hair girl"')) == {"red.png"}
    assert names(q(ann, srv, q='"girl hair"')) == set()
    assert names(q(ann, srv, q="hair -blue")) == {"red.png"}
    assert names(q(ann, srv, q="numb*")) == {f"{i:05d}-cat.png" for i in range(5)}
    assert names(q(ann, srv, q="红发")) == {"zh.jpg"}
    assert names(q(ann, srv, q="glass bottle")) == {"comfy.png"}
    assert names(q(ann, srv, model="ANYTHING")) == {"red.png"}
    assert len(names(q(ann, srv, model="abcdef"))) == 7  # by hash prefix
    assert names(q(ann, srv, lora="add_det")) == {"red.png"}
    assert names(q(ann, srv, lora="GLASSY")) == {"comfy.png"}  # ComfyUI's LoraLoader
    assert names(q(ann, srv, lora="detail_x")) == set()
    assert names(q(ann, srv, sampler="dpm++ 2m")) == {"blue.png"}
    assert names(q(ann, srv, name="0000[12]-*.png")) == {"00001-cat.png", "00002-cat.png"}
    assert names(q(ann, srv, folder="users/ann/outputs/2024")) == {"red.png", "blue.png"}
    assert names(q(ann, srv, after=T0 + DAY, before="2023-11-17T00:00:00")) == {
        "blue.png", "zh.jpg"}
    size = (srv.root / "users/ann/outputs/zh.jpg").stat().st_size
    assert "zh.jpg" in names(q(ann, srv, min_size=size, max_size=size))
    assert names(q(ann, srv, kind="model")) == {"add_detail.safetensors"}


def test_result_fields(srv: Server) -> None:
    ann = srv.session("ann", "user-pass-123")
    r = q(ann, srv, prompt="red hair")["results"][0]
    assert r["path"] == "users/ann/outputs/2024/red.png"
    assert (r["model"], r["sampler"], r["steps"], r["cfg_scale"]) == ("anything-v5", "Euler a",
                                                                       20, 7.0)
    assert r["loras"] == [{"name": "add_detail", "weight": 0.8, "hash": None}]
    assert r["mtime"] == T0 and (r["width"], r["height"]) == (64, 48)
    thumb = ann.get(srv.url + r["thumb"])
    assert thumb.status_code == 200 and "max-age" in thumb.headers["cache-control"]


def test_scope(srv: Server) -> None:
    ann = srv.session("ann", "user-pass-123")
    bob = srv.session("bob", "user-pass-123")
    admin = srv.session()
    assert names(q(ann, srv, q="secret")) == set()
    assert names(q(bob, srv, prompt="red hair")) == {"secret.png"}
    assert names(q(admin, srv, prompt="red hair")) == {"red.png", "secret.png"}
    assert names(q(bob, srv, kind="model")) == {"add_detail.safetensors"}  # models are shared
    r = ann.get(f"{srv.url}/api/search", params={"folder": "users/bob/outputs"})
    assert r.status_code == 404
    r = ann.get(f"{srv.url}/api/search", params={"folder": "users/ann/../bob"})
    assert r.status_code == 400
    # a name that sorts like a prefix of another user's home is no way in
    srv.add_user("bo")
    assert names(q(srv.session("bo", "user-pass-123"), srv, q="secret")) == set()
    assert requests.get(f"{srv.url}/api/search", params={"q": "red"}).status_code == 401


def test_pagination_and_sorting(srv: Server) -> None:
    ann = srv.session("ann", "user-pass-123")
    got: list[str] = []
    page = q(ann, srv, q="cat", limit=2)
    assert page["total"] == 5
    while True:
        got += [x["name"] for x in page["results"]]
        if not page["next"]:
            break
        page = q(ann, srv, q="cat", limit=2, cursor=page["next"])
    assert got == [f"{i:05d}-cat.png" for i in (4, 3, 2, 1, 0)]  # newest first
    asc = q(ann, srv, q="cat", order="asc", sort="name", limit=10)
    assert [x["name"] for x in asc["results"]] == [f"{i:05d}-cat.png" for i in range(5)]
    rel = q(ann, srv, q="number3 cat", sort="relevance")
    assert [x["name"] for x in rel["results"]] == ["00003-cat.png"]
    rel_pages = q(ann, srv, q="cat", sort="relevance", limit=3)
    rest = q(ann, srv, q="cat", sort="relevance", limit=3, cursor=rel_pages["next"])
    assert len(names(rel_pages) | names(rest)) == 5
    bad = ann.get(f"{srv.url}/api/search", params={"cursor": "!!!"})
    assert bad.status_code == 400
    bad = ann.get(f"{srv.url}/api/search", params={"after": "last tuesday"})
    assert bad.status_code == 400
    for junk in ('"', "AND", "NOT OR", "*", "-", "a:b", "NEAR(a b)", "^x"):
        assert ann.get(f"{srv.url}/api/search", params={"q": junk}).status_code == 200, junk


def test_status_and_reindex(srv: Server) -> None:
    admin = srv.session()
    st = admin.get(f"{srv.url}/api/search/status").json()
    assert st["enabled"] and st["counts"] == {"image": 10, "model": 1} and st["watching"]
    ann = srv.session("ann", "user-pass-123")
    assert ann.post(f"{srv.url}/api/search/reindex").status_code == 403
    assert admin.post(f"{srv.url}/api/search/reindex", params={"reset": "true"}
                      ).status_code == 202
    wait_until(lambda: names(q(ann, srv, prompt="red hair")) == {"red.png"},
               what="rebuilt index")


def test_kill9_mid_index_leaves_usable_index(spawn_server: Callable[..., Server],
                                             tmp_path: Path) -> None:
    root = tmp_path / "nas"
    n = 400
    for i in range(n):
        write_png(root / "outputs" / f"d{i % 4}" / f"{i}.png", text(f"otter{i}"), size=(8, 8))
    srv = spawn_server(root=root)
    srv.kill9()  # most likely in the middle of the first scan
    srv = spawn_server(root=root)
    s = srv.session()
    wait_until(lambda: q(s, srv, q="otter*", limit=1)["total"] == n, what="complete index")
    assert names(q(s, srv, q="otter123")) == {"123.png"}
    with sqlite3.connect(tmp_path / "state" / "atelier.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
