"""Forwarded headers are believed only from ``ATELIER_TRUSTED_PROXIES``.

Against the real ``atelier serve`` process: the hole was in how uvicorn was started
(it believed ``X-Forwarded-For`` from 127.0.0.1 and rewrote the client address).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import requests

from filebrowser.access.peers import Peers

from ...conftest import ADMIN_PASSWORD, Server


def _login(srv: Server, name: str, password: str, forwarded_for: str | None = None,
           ) -> requests.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return requests.post(f"{srv.url}/api/login", json={"username": name, "password": password},
                         headers=headers, timeout=10)


def test_a_local_client_cannot_pose_as_the_gateway(spawn_server: Callable[..., Server]) -> None:
    srv = spawn_server(env={"ATELIER_TRUSTED_PROXIES": json.dumps(["10.9.8.7"])})
    for xff in ("10.9.8.7", "1.2.3.4, 10.9.8.7", "10.9.8.7, 10.9.8.7"):
        r = requests.get(f"{srv.url}/api/me", timeout=10,
                         headers={"X-Forwarded-For": xff, "X-Forwarded-User": "admin"})
        assert r.status_code == 401, (xff, r.status_code, r.text)
        assert r.json()["error"] == "unauthorized"
    # the same through WebDAV, which names the caller the same way
    r = requests.request("PROPFIND", f"{srv.url}/dav/", timeout=10, headers={
        "X-Forwarded-For": "10.9.8.7", "X-Forwarded-User": "admin", "Depth": "0"})
    assert r.status_code == 401


def test_forwarded_addresses_do_not_dodge_the_login_limit(
        spawn_server: Callable[..., Server]) -> None:
    srv = spawn_server(env={"ATELIER_TRUSTED_PROXIES": json.dumps(["10.9.8.7"]),
                            "ATELIER_LOGIN_MAX_FAILURES_ADDR": "3",
                            "ATELIER_LOGIN_MAX_FAILURES_USER": "100"})
    for i in range(3):
        r = _login(srv, f"guess{i}", "wrong", forwarded_for=f"10.9.8.7, 203.0.113.{i}")
        assert r.status_code == 401
    # a new forwarded address each time is still the same local peer: limited
    r = _login(srv, "admin", ADMIN_PASSWORD, forwarded_for="10.9.8.7, 203.0.113.99")
    assert r.status_code == 429, r.text
    assert r.json()["error"] == "too_many_requests"


def test_behind_a_trusted_proxy_the_forwarded_client_counts(
        spawn_server: Callable[..., Server]) -> None:
    srv = spawn_server(env={"ATELIER_TRUSTED_PROXIES": json.dumps(["127.0.0.1"]),
                            "ATELIER_LOGIN_MAX_FAILURES_ADDR": "3",
                            "ATELIER_LOGIN_MAX_FAILURES_USER": "100"})
    # the gateway names the user
    r = requests.get(f"{srv.url}/api/me", headers={"X-Forwarded-User": "gwuser"}, timeout=10)
    assert r.status_code == 200 and r.json()["name"] == "gwuser"
    # one client behind the proxy is limited by its own address...
    for i in range(3):
        # the left-most hop is what that client wrote itself: it proves nothing
        r = _login(srv, f"g{i}", "wrong", forwarded_for=f"198.51.100.{i}, 203.0.113.5")
        assert r.status_code == 401
    assert _login(srv, "admin", ADMIN_PASSWORD, "203.0.113.5").status_code == 429
    # ...and another client behind the same proxy is not locked out with it
    r = _login(srv, "admin", ADMIN_PASSWORD, forwarded_for="203.0.113.6")
    assert r.status_code == 200, r.text


def test_client_address_rule() -> None:
    """The pure rule: right-most untrusted hop, only when the peer is trusted."""
    from starlette.requests import Request

    def req(peer: str, xff: str | None) -> Request:
        headers = [(b"x-forwarded-for", xff.encode())] if xff else []
        return Request({"type": "http", "client": (peer, 1), "headers": headers})

    peers = Peers(["10.0.0.0/8", "::1"])
    assert peers.client(req("192.0.2.1", "10.0.0.1")) == "192.0.2.1"
    assert peers.client(req("10.0.0.2", "192.0.2.7, 198.51.100.3")) == "198.51.100.3"
    assert peers.client(req("10.0.0.2", "198.51.100.3, 10.0.0.9")) == "198.51.100.3"
    assert peers.client(req("10.0.0.2", "not-an-ip")) == "10.0.0.2"
    assert peers.client(req("10.0.0.2", None)) == "10.0.0.2"
    assert peers.client(req("::1", "[2001:db8::5]:443")) == "2001:db8::5"
    assert not peers.trusted("garbage") and peers.trusted("10.200.0.1")
