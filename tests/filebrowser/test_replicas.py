"""Two replicas on one NAS sharing state in PostgreSQL behave as one service."""

from __future__ import annotations

from collections.abc import Callable

import requests

from ..conftest import ADMIN_PASSWORD, Server


def test_two_replicas_share_users_sessions_tokens_and_trash(
        make_server: Callable[..., Server], postgres_db: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = make_server(root=tmp_path / "nas", db_url=postgres_db)
    b = make_server(root=tmp_path / "nas", db_url=postgres_db)

    # one admin, created once, whichever replica started first
    ann_a = a.add_user("ann")
    r = requests.post(f"{b.url}/api/login", json={"username": "ann", "password": "user-pass-123"})
    assert r.status_code == 200

    # a token made on A works on B; revoked on B, A refuses it at once
    tok = requests.post(f"{a.url}/api/tokens", auth=("ann", "user-pass-123"), json={}).json()
    h = {"Authorization": f"Bearer {tok['token']}"}
    assert requests.get(f"{b.url}/api/me", headers=h).json()["name"] == "ann"
    assert requests.delete(f"{b.url}/api/tokens/{tok['id']}", headers=h).status_code == 200
    assert requests.get(f"{a.url}/api/me", headers=h).status_code == 401

    # a browser session opened on B is valid on A, and logout on A ends it on B
    s = requests.Session()
    csrf = s.post(f"{b.url}/api/login",
                  json={"username": "admin", "password": ADMIN_PASSWORD}).json()["csrf_token"]
    cookie = s.cookies.get("atelier_session")
    assert requests.get(f"{a.url}/api/me", cookies={"atelier_session": cookie}).ok
    requests.post(f"{a.url}/api/logout", cookies={"atelier_session": cookie},
                  headers={"X-CSRF-Token": csrf})
    assert requests.get(f"{b.url}/api/me", cookies={"atelier_session": cookie}
                        ).status_code == 401

    # an upload through A, deleted through B, restored through A
    r = ann_a.post(f"{a.url}/api/fs/upload", params={"path": "users/ann/outputs"},
                   files=[("files", ("x.png", b"png-bytes"))])
    assert r.status_code == 201
    ann_b = b.session("ann", "user-pass-123")
    item = ann_b.post(f"{b.url}/api/fs/delete", json={"path": "users/ann/outputs/x.png"}).json()
    assert [t["id"] for t in ann_a.get(f"{a.url}/api/fs/trash").json()] == [item["id"]]
    r = ann_a.post(f"{a.url}/api/fs/trash/{item['id']}/restore", json={})
    assert r.status_code == 200 and (tmp_path / "nas/users/ann/outputs/x.png").exists()

    # usage recorded on both replicas adds up in one report
    report = {u["user"]: u for u in ann_b.get(f"{b.url}/api/usage").json()}
    assert report["ann"]["uploaded_bytes"] == len(b"png-bytes")


def test_failed_login_limit_is_shared(make_server: Callable[..., Server], postgres_db: str,
                                      tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = make_server(root=tmp_path / "nas", db_url=postgres_db, login_max_failures_user=4)
    b = make_server(root=tmp_path / "nas", db_url=postgres_db, login_max_failures_user=4)
    for srv in (a, b, a, b):
        requests.post(f"{srv.url}/api/login", json={"username": "admin", "password": "bad"})
    r = requests.post(f"{b.url}/api/login", json={"username": "admin",
                                                  "password": ADMIN_PASSWORD})
    assert r.status_code == 429


def test_search_works_on_postgresql(make_server: Callable[..., Server], postgres_db: str,
                                    tmp_path) -> None:  # type: ignore[no-untyped-def]
    from .images.conftest import wait_until, write_png

    root = tmp_path / "nas"
    ann = root / "users/ann/outputs"
    write_png(ann / "red.png", "red hair girl, <lora:add_detail:0.8>\nNegative prompt: blurry\n"
              "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Model: anything-v5")
    write_png(ann / "blue.png", "blue hair boy\nNegative prompt: red eyes\n"
              "Steps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 2, Model: other")
    write_png(root / "users/bob/outputs/secret.png", "red hair secret\n"
              "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 3, Model: anything-v5")
    a = make_server(root=root, db_url=postgres_db)
    b = make_server(root=root, db_url=postgres_db)  # a second replica indexing the same NAS
    s = a.add_user("ann")
    b.add_user("bob")
    wait_until(lambda: a.session().get(f"{a.url}/api/search/status").json()["counts"]
               .get("image") == 3, what="index on PostgreSQL")

    def names(srv: Server, **params: str) -> list[str]:
        r = s.get(f"{srv.url}/api/search", params=params)
        assert r.status_code == 200, r.text
        return sorted(h["name"] for h in r.json()["results"])

    assert names(a, q="red") == ["blue.png", "red.png"]  # prompt or negative prompt
    assert names(b, prompt="red") == ["red.png"]
    assert names(a, model="anything") == ["red.png"]
    assert names(b, lora="add_detail") == ["red.png"]
    assert names(a, sampler="DPM++ 2M") == ["blue.png"]
    assert names(b, name="b*.png") == ["blue.png"]
