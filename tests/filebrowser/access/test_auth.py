"""Sessions, CSRF, tokens, Basic, the failed-login limit and the trusted gateway."""

from __future__ import annotations

from collections.abc import Callable

import requests
import sqlalchemy as sa

from filebrowser import db

from ...conftest import ADMIN_PASSWORD, Server


def login(srv: Server, user: str = "admin", password: str = ADMIN_PASSWORD
          ) -> tuple[requests.Session, str]:
    s = requests.Session()
    r = s.post(f"{srv.url}/api/login", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return s, r.json()["csrf_token"]


def test_login_sets_httponly_samesite_cookie(server: Server) -> None:
    r = requests.post(f"{server.url}/api/login",
                      json={"username": "admin", "password": ADMIN_PASSWORD})
    cookies = r.headers["set-cookie"].lower()
    assert "atelier_session=" in cookies and "httponly" in cookies and "samesite=lax" in cookies
    assert r.json()["role"] == "admin"


def test_wrong_password_is_401_with_json(server: Server) -> None:
    r = requests.post(f"{server.url}/api/login", json={"username": "admin", "password": "nope"})
    assert r.status_code == 401
    assert r.json() == {"error": "unauthorized", "message": "wrong user name or password"}


def test_session_needs_csrf_header_for_writes(server: Server) -> None:
    s, csrf = login(server)
    assert s.get(f"{server.url}/api/me").json()["via"] == "session"
    r = s.post(f"{server.url}/api/fs/mkdir", json={"path": "outputs/a"})
    assert r.status_code == 403 and r.json()["error"] == "csrf_failed"
    assert not (server.root / "outputs/a").exists()
    r = s.post(f"{server.url}/api/fs/mkdir", json={"path": "outputs/a"},
               headers={"X-CSRF-Token": "wrong"})
    assert r.status_code == 403
    r = s.post(f"{server.url}/api/fs/mkdir", json={"path": "outputs/a"},
               headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201 and (server.root / "outputs/a").is_dir()


def test_logout_revokes_the_session_at_once(server: Server) -> None:
    s, csrf = login(server)
    stolen = s.cookies.get("atelier_session")
    assert s.post(f"{server.url}/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    r = requests.get(f"{server.url}/api/me", cookies={"atelier_session": stolen})
    assert r.status_code == 401


def test_idle_session_expires(make_server: Callable[..., Server]) -> None:
    srv = make_server(session_idle_hours=1.0)
    s, _ = login(srv)
    assert s.get(f"{srv.url}/api/me").status_code == 200
    with srv.fb.engine.begin() as conn:  # the session was last used two hours ago
        conn.execute(db.sessions.update().values(last_seen=db.now() - 7200))
    assert s.get(f"{srv.url}/api/me").status_code == 401


def test_session_slides_with_use(make_server: Callable[..., Server]) -> None:
    srv = make_server(session_idle_hours=1.0)
    s, _ = login(srv)
    with srv.fb.engine.begin() as conn:
        conn.execute(db.sessions.update().values(last_seen=db.now() - 3000))
    assert s.get(f"{srv.url}/api/me").status_code == 200  # 50 min idle: still valid, touched
    with srv.fb.engine.connect() as conn:
        last = conn.execute(sa.select(db.sessions.c.last_seen)).scalar_one()
    assert db.now() - last < 60


def test_tokens_from_basic_and_revocation(server: Server) -> None:
    r = requests.post(f"{server.url}/api/tokens", auth=("admin", ADMIN_PASSWORD),
                      json={"name": "laptop"})
    assert r.status_code == 200
    tok = r.json()
    h = {"Authorization": f"Bearer {tok['token']}"}
    assert requests.get(f"{server.url}/api/me", headers=h).json()["via"] == "token"
    listed = requests.get(f"{server.url}/api/tokens", headers=h).json()
    assert [t["name"] for t in listed] == ["laptop"] and "token" not in listed[0]
    assert requests.delete(f"{server.url}/api/tokens/{tok['id']}", headers=h).status_code == 200
    r = requests.get(f"{server.url}/api/me", headers=h)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def test_basic_is_not_accepted_on_ordinary_routes(server: Server) -> None:
    r = requests.get(f"{server.url}/api/me", auth=("admin", ADMIN_PASSWORD))
    assert r.status_code == 401


def test_bearer_writes_need_no_csrf(server: Server) -> None:
    r = server.session().post(f"{server.url}/api/fs/mkdir", json={"path": "outputs/b"})
    assert r.status_code == 201


def test_failed_logins_are_limited_per_user(make_server: Callable[..., Server]) -> None:
    srv = make_server(login_max_failures_user=3)
    for _ in range(3):
        r = requests.post(f"{srv.url}/api/login", json={"username": "admin", "password": "x"})
        assert r.status_code == 401
    r = requests.post(f"{srv.url}/api/login",
                      json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    # Basic on token creation is limited the same way
    r = requests.post(f"{srv.url}/api/tokens", auth=("admin", ADMIN_PASSWORD), json={})
    assert r.status_code == 429


def test_failed_logins_are_limited_per_address(make_server: Callable[..., Server]) -> None:
    srv = make_server(login_max_failures_addr=4)
    for i in range(4):
        requests.post(f"{srv.url}/api/login", json={"username": f"u{i}", "password": "x"})
    r = requests.post(f"{srv.url}/api/login",
                      json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 429


def test_trusted_proxy_header(make_server: Callable[..., Server]) -> None:
    untrusted = make_server()
    r = requests.get(f"{untrusted.url}/api/me", headers={"X-Forwarded-User": "admin"})
    assert r.status_code == 401
    trusted = make_server(trusted_proxies=["127.0.0.0/8"])
    r = requests.get(f"{trusted.url}/api/me", headers={"X-Forwarded-User": "gwuser"})
    assert r.status_code == 200
    assert r.json()["name"] == "gwuser" and r.json()["role"] == "user"
    assert (trusted.root / "users/gwuser/outputs").is_dir()
    elsewhere = make_server(trusted_proxies=["10.1.2.3"])
    r = requests.get(f"{elsewhere.url}/api/me", headers={"X-Forwarded-User": "admin"})
    assert r.status_code == 401


def test_password_change_revokes_sessions_and_tokens(server: Server) -> None:
    ann = server.add_user("ann")
    s, csrf = login(server, "ann", "user-pass-123")
    r = s.patch(f"{server.url}/api/users/ann", json={"password": "new-pass-456"},
                headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    assert s.get(f"{server.url}/api/me").status_code == 401
    assert ann.get(f"{server.url}/api/me").status_code == 401
    login(server, "ann", "new-pass-456")


def test_users_admin_only(server: Server) -> None:
    ann = server.add_user("ann")
    assert ann.get(f"{server.url}/api/users").status_code == 403
    r = ann.post(f"{server.url}/api/users", json={"name": "eve", "password": "pass-1234"})
    assert r.status_code == 403
    r = ann.patch(f"{server.url}/api/users/ann", json={"role": "admin"})
    assert r.status_code == 403
    admin = server.session()
    names = [u["name"] for u in admin.get(f"{server.url}/api/users").json()]
    assert names == ["admin", "ann"]
    r = admin.post(f"{server.url}/api/users", json={"name": "../x", "password": "pass-1234"})
    assert r.status_code == 400
    r = admin.post(f"{server.url}/api/users", json={"name": "ann", "password": "pass-1234"})
    assert r.status_code == 409
    assert admin.delete(f"{server.url}/api/users/ann").status_code == 200
    assert ann.get(f"{server.url}/api/me").status_code == 401


def test_sessions_listed_and_ended_by_owner_or_admin(server: Server) -> None:
    server.add_user("ann")
    server.add_user("bob")
    ann, ann_csrf = login(server, "ann", "user-pass-123")
    bob, bob_csrf = login(server, "bob", "user-pass-123")
    mine = ann.get(f"{server.url}/api/sessions").json()
    assert [(s["user"], s["current"]) for s in mine] == [("ann", True)]
    handle = mine[0]["id"]
    assert len(handle) == 16 and ann.cookies["atelier_session"] not in handle
    # a user sees only their own, even when asking for all, and cannot end another's
    assert {s["user"] for s in bob.get(f"{server.url}/api/sessions",
                                       params={"all_users": "true"}).json()} == {"bob"}
    r = bob.delete(f"{server.url}/api/sessions/{handle}", headers={"X-CSRF-Token": bob_csrf})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert ann.get(f"{server.url}/api/me").status_code == 200
    # an admin lists everyone's and ends ann's: her cookie stops working at once
    admin = server.session()
    everyone = admin.get(f"{server.url}/api/sessions", params={"all_users": "true"}).json()
    assert {"ann", "bob"} <= {s["user"] for s in everyone}
    assert admin.delete(f"{server.url}/api/sessions/{handle}").json() == {"ok": True}
    assert ann.get(f"{server.url}/api/me").status_code == 401
    assert admin.delete(f"{server.url}/api/sessions/{handle}").status_code == 404
    assert admin.delete(f"{server.url}/api/sessions/..%2f").status_code == 404


def test_admins_list_and_revoke_any_token(server: Server) -> None:
    ann = server.add_user("ann")
    own = ann.get(f"{server.url}/api/tokens", params={"all_users": "true"}).json()
    assert own and all("user" not in t for t in own)  # a user: only their own rows
    admin = server.session()
    rows = admin.get(f"{server.url}/api/tokens", params={"all_users": "true"}).json()
    anns = [t for t in rows if t["user"] == "ann"]
    assert len(anns) == 1
    other = [t for t in rows if t["user"] == "admin"][0]
    assert ann.delete(f"{server.url}/api/tokens/{other['id']}").status_code == 404
    assert admin.delete(f"{server.url}/api/tokens/{anns[0]['id']}").json() == {"ok": True}
    assert ann.get(f"{server.url}/api/me").status_code == 401
