"""Share links against filebrowser's share bug classes (research/filebrowser.md §1.8)."""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest
import requests

from ...conftest import Server
from ..images.conftest import wait_until, write_png

PW = "user-pass-123"


@pytest.fixture
def srv(server: Server) -> Server:
    server.add_user("ann")
    home = server.root / "users" / "ann"
    write_png(home / "outputs" / "album" / "a.png")
    write_png(home / "outputs" / "album" / "sub" / "b.png")
    (home / "outputs" / "album" / "notes.txt").write_text("hello album")
    write_png(home / "outputs" / "album2" / "private.png")  # a sibling with a prefix name
    (home / "outputs" / "secret.txt").write_text("sibling secret")
    return server


def share(s: requests.Session, srv: Server, path: str, **kw: object) -> dict:
    r = s.post(f"{srv.url}/api/shares", json={"path": path, **kw})
    assert r.status_code == 201, r.text
    return dict(r.json())


def pub(srv: Server, token: str, what: str = "", **params: object) -> requests.Response:
    url = f"{srv.url}/s/{token}" + (f"/{what}" if what else "")
    return requests.get(url, params=params, timeout=10)  # type: ignore[arg-type]


def test_file_share_and_usage_counted_to_owner(srv: Server) -> None:
    ann = srv.session("ann", PW)
    sh = share(ann, srv, "users/ann/outputs/album/a.png")
    token = sh["token"]
    assert len(token) >= 32 and re.fullmatch(r"[A-Za-z0-9_-]+", token)  # >= 192 bits
    info = pub(srv, token).json()
    assert info["name"] == "a.png" and info["type"] == "file"
    assert "users/ann" not in str(info)  # the owner's folders are not revealed
    r = pub(srv, token, "file")
    data = (srv.root / "users/ann/outputs/album/a.png").read_bytes()
    assert r.status_code == 200 and r.content == data
    assert r.headers["x-content-type-options"] == "nosniff"
    assert pub(srv, token, "thumb").headers["content-type"] == "image/webp"
    assert pub(srv, token, "info").json()["meta"]["params"]["seed"] == 3141592653
    assert pub(srv, token, "file", path="x").status_code == 404  # a file share has no inside

    def downloaded() -> int:
        rep = ann.get(f"{srv.url}/api/usage").json()[0]
        return int(rep["downloaded_bytes"])

    wait_until(lambda: downloaded() == len(data), what="usage recorded")
    assert ann.get(f"{srv.url}/api/shares").json()[0]["downloads"] == 1


def test_folder_share_exposes_that_folder_only(srv: Server) -> None:
    ann = srv.session("ann", PW)
    token = share(ann, srv, "users/ann/outputs/album")["token"]
    listing = pub(srv, token, "list").json()
    assert {e["name"] for e in listing["entries"]} == {"a.png", "sub", "notes.txt"}
    assert pub(srv, token, "list", path="sub").json()["entries"][0]["path"] == "sub/b.png"
    assert pub(srv, token, "file", path="sub/b.png").status_code == 200
    assert pub(srv, token, "file", path="notes.txt").text == "hello album"
    # every spelling of "the parent" or "a sibling" is refused (GHSA-mr74, GHSA-9f3r)
    for bad in ("../secret.txt", "../album2/private.png", "sub/../../secret.txt",
                "/etc/passwd", "..", "..\\secret.txt", "%2e%2e/secret.txt",
                "users/ann/outputs/secret.txt", ".atelier", "sub/./b.png/../../../secret.txt"):
        for what in ("file", "list", "thumb", "info"):
            r = pub(srv, token, what, path=bad)
            assert r.status_code in (400, 404), (bad, what, r.status_code)
            assert "sibling secret" not in r.text
    # raw, un-normalised URLs too (the client must not clean them up for us)
    s = requests.Session()
    for raw in ("/file?path=..%2Fsecret.txt", "/file?path=%2E%2E/secret.txt",
                "/../album2/list", "/file?path=..%252Fsecret.txt"):
        req = requests.Request("GET", f"{srv.url}/s/{token}{raw}").prepare()
        req.url = f"{srv.url}/s/{token}{raw}"
        r = s.send(req)
        assert r.status_code in (400, 404) and "sibling secret" not in r.text, raw


def test_symlink_inside_share_cannot_leave_it(srv: Server) -> None:
    ann = srv.session("ann", PW)
    album = srv.root / "users/ann/outputs/album"
    os.symlink(srv.root / "users/ann/outputs/secret.txt", album / "link.txt")
    os.symlink(srv.root / "users/ann/outputs/album2", album / "linkdir")
    token = share(ann, srv, "users/ann/outputs/album")["token"]
    names = {e["name"] for e in pub(srv, token, "list").json()["entries"]}
    assert "link.txt" not in names and "linkdir" not in names
    assert pub(srv, token, "file", path="link.txt").status_code == 404
    assert pub(srv, token, "list", path="linkdir").status_code == 404


def test_expired(srv: Server) -> None:
    ann = srv.session("ann", PW)
    # 4 s: the first look must land before the expiry even on a loaded CI machine (1 s
    # did not, once)
    sh = share(ann, srv, "users/ann/outputs/album/a.png", expires_in=4.0)
    assert pub(srv, sh["token"]).status_code == 200
    wait_until(lambda: pub(srv, sh["token"]).status_code == 410, timeout=30, what="expiry")
    assert pub(srv, sh["token"], "file").status_code == 410
    assert ann.get(f"{srv.url}/api/shares").json()[0]["expired"] is True
    r = ann.post(f"{srv.url}/api/shares", json={"path": "users/ann/outputs/album",
                                                "expires_at": time.time() - 5})
    assert r.status_code == 400


def test_revoked(srv: Server) -> None:
    ann = srv.session("ann", PW)
    sh = share(ann, srv, "users/ann/outputs/album")
    srv.add_user("bob")
    bob = srv.session("bob", PW)
    assert bob.delete(f"{srv.url}/api/shares/{sh['id']}").status_code == 404  # not his
    assert bob.get(f"{srv.url}/api/shares").json() == []  # listed per user
    mine = ann.get(f"{srv.url}/api/shares").json()
    assert [x["id"] for x in mine] == [sh["id"]] and "token" not in mine[0]
    assert ann.delete(f"{srv.url}/api/shares/{sh['id']}").status_code == 200
    assert pub(srv, sh["token"]).status_code == 404
    assert pub(srv, sh["token"], "file", path="a.png").status_code == 404


def test_password(srv: Server) -> None:
    ann = srv.session("ann", PW)
    token = share(ann, srv, "users/ann/outputs/album", password="open sesame")["token"]
    r = pub(srv, token, "list")
    assert r.status_code == 401 and r.json()["error"] == "share_password_required"
    assert "a.png" not in r.text
    bad = requests.get(f"{srv.url}/s/{token}/list", headers={"X-Share-Password": "nope"})
    assert bad.status_code == 401
    ok = requests.get(f"{srv.url}/s/{token}/list", headers={"X-Share-Password": "open sesame"})
    assert ok.status_code == 200
    assert requests.post(f"{srv.url}/s/{token}/unlock", json={"password": "x"}
                         ).status_code == 401
    u = requests.post(f"{srv.url}/s/{token}/unlock", json={"password": "open sesame"})
    assert u.status_code == 200
    key = u.json()["key"]
    assert pub(srv, token, "file", path="a.png", key=key).status_code == 200
    s = requests.Session()  # the cookie works for <img src> in a browser
    s.cookies.update(u.cookies)
    assert s.get(f"{srv.url}/s/{token}/thumb", params={"path": "a.png"}).status_code == 200
    # a key of one share does not open another
    other = share(ann, srv, "users/ann/outputs/album/sub", password="another pw")["token"]
    assert pub(srv, other, "list", key=key).status_code == 401
    # the password hash is not the password
    assert "open sesame" not in str(srv.app.state.fb.shares.list(
        srv.app.state.fb.auth.principal(srv.fb.users.get("ann"), "token")))


def test_password_guessing_is_limited(make_server: object) -> None:
    srv = make_server(login_max_failures_user=3)  # type: ignore[operator]
    srv.add_user("ann")
    write_png(srv.root / "users/ann/outputs/x.png")
    token = share(srv.session("ann", PW), srv, "users/ann/outputs/x.png",
                  password="right one")["token"]
    codes = [requests.post(f"{srv.url}/s/{token}/unlock", json={"password": f"w{i}"}
                           ).status_code for i in range(4)]
    assert codes == [401, 401, 401, 429]
    # even the right password waits out the window
    assert requests.post(f"{srv.url}/s/{token}/unlock", json={"password": "right one"}
                         ).status_code == 429


def test_owner_lost_permission(srv: Server) -> None:
    admin = srv.session()
    srv.add_user("boss", role="admin")
    boss = srv.session("boss", PW)
    token = share(boss, srv, "users/ann/outputs/album/a.png")["token"]
    assert pub(srv, token, "file").status_code == 200
    r = admin.patch(f"{srv.url}/api/users/boss", json={"role": "user"})
    assert r.status_code == 200, r.text
    assert pub(srv, token).status_code == 404
    assert pub(srv, token, "file").status_code == 404


def test_owner_deleted(srv: Server) -> None:
    ann = srv.session("ann", PW)
    token = share(ann, srv, "users/ann/outputs/album")["token"]
    assert srv.session().delete(f"{srv.url}/api/users/ann").status_code in (200, 204)
    assert pub(srv, token).status_code == 404
    assert pub(srv, token, "file", path="a.png").status_code == 404


def test_replaced_file_is_not_exposed(srv: Server) -> None:
    ann = srv.session("ann", PW)
    p = srv.root / "users/ann/outputs/album/a.png"
    token = share(ann, srv, "users/ann/outputs/album/a.png")["token"]
    p.unlink()
    assert pub(srv, token).status_code == 404
    shutil.copy(srv.root / "users/ann/outputs/album2/private.png", p)  # a new file, same name
    assert pub(srv, token, "file").status_code == 404


def test_cannot_share_what_you_cannot_read(srv: Server) -> None:
    srv.add_user("bob")
    bob = srv.session("bob", PW)
    r = bob.post(f"{srv.url}/api/shares", json={"path": "users/ann/outputs/album"})
    assert r.status_code == 404
    r = srv.session().post(f"{srv.url}/api/shares", json={"path": ""})
    assert r.status_code == 400
    assert requests.post(f"{srv.url}/api/shares", json={"path": "x"}).status_code == 401


def test_public_routes_are_exactly_the_share_routes(srv: Server) -> None:
    spec = requests.get(f"{srv.url}/openapi.json").json()
    public = sorted(p for p in spec["paths"] if p.startswith("/s/"))
    assert public == ["/s/{token}", "/s/{token}/file", "/s/{token}/info", "/s/{token}/list",
                      "/s/{token}/thumb", "/s/{token}/unlock"]
    for p in public:
        for op in spec["paths"][p].values():
            assert op["tags"] == ["public-shares"]
