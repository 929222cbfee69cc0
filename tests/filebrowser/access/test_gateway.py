"""The trusted-gateway contract with the WebUI extension: ``X-Atelier-Gateway: <secret>``
makes a request a gateway whatever its address, and only then is the user it names in
``X-Forwarded-User`` believed (a local process on loopback is not a gateway by address)."""

from __future__ import annotations

from collections.abc import Callable

import requests

from ...conftest import Server

SECRET = "s3cret-" + "x" * 40


def test_the_secret_makes_a_gateway_whatever_the_address(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(gateway_secret=SECRET)
    me = f"{srv.url}/api/me"
    r = requests.get(me, headers={"X-Atelier-Gateway": SECRET, "X-Forwarded-User": "ann"},
                     timeout=10)
    assert r.status_code == 200 and r.json()["name"] == "ann" and r.json()["role"] == "user"
    assert srv.fb.users.get("ann").role == "user", "auto-created (proxy_auto_create)"
    # loopback alone is not trusted, nor a header without the secret
    assert requests.get(me, headers={"X-Forwarded-User": "admin"}, timeout=10).status_code == 401
    wrong = requests.get(me, headers={"X-Atelier-Gateway": SECRET[:-1] + "y",
                                      "X-Forwarded-User": "admin"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["message"] == "wrong gateway secret"
    # the gateway naming no user: the service's own credentials apply
    assert requests.get(me, headers={"X-Atelier-Gateway": SECRET}, timeout=10).status_code == 401
    s = srv.session()
    r = s.get(me, headers={"X-Atelier-Gateway": SECRET}, timeout=10)
    assert r.status_code == 200 and r.json()["name"] == "admin"


def test_no_secret_configured_means_no_gateway(make_server: Callable[..., Server]) -> None:
    srv = make_server()
    r = requests.get(f"{srv.url}/api/me", headers={"X-Atelier-Gateway": "", "X-Forwarded-User":
                                                   "admin"}, timeout=10)
    assert r.status_code == 401
    r = requests.get(f"{srv.url}/api/me", headers={"X-Atelier-Gateway": "anything",
                                                   "X-Forwarded-User": "admin"}, timeout=10)
    assert r.status_code == 401 and r.json()["message"] == "wrong gateway secret"


def test_no_auto_create_refuses_unknown_names(make_server: Callable[..., Server]) -> None:
    srv = make_server(gateway_secret=SECRET, proxy_auto_create=False)
    h = {"X-Atelier-Gateway": SECRET, "X-Forwarded-User": "stranger"}
    assert requests.get(f"{srv.url}/api/me", headers=h, timeout=10).status_code == 401
    h["X-Forwarded-User"] = "admin"
    assert requests.get(f"{srv.url}/api/me", headers=h, timeout=10).json()["name"] == "admin"
