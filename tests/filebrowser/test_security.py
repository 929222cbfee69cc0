"""Every route authenticated; a traversal corpus against every path-taking route."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
import requests

from ..conftest import Server

# Routes meant to be public. Anything else answering without credentials is a hole.
PUBLIC = {("POST", "/api/login"), ("GET", "/api/health"),
          ("POST", "/api/gateway/proof")}  # an HMAC for a nonce: reveals nothing
PUBLIC_PREFIXES = ("/s/",)  # share links: protected by their unguessable token


def test_every_route_needs_credentials(server: Server) -> None:
    spec = requests.get(f"{server.url}/openapi.json").json()
    checked = 0
    for path, methods in spec["paths"].items():
        for method in methods:
            m = method.upper()
            if (m, path) in PUBLIC or path.startswith(PUBLIC_PREFIXES):
                continue
            url = server.url + re.sub(r"\{[^}]+\}", "1", path)
            r = requests.request(m, url, timeout=10)
            assert r.status_code == 401, f"{m} {path} answered {r.status_code} without credentials"
            assert r.json()["error"] == "unauthorized"
            checked += 1
    assert checked >= 15
    assert requests.get(f"{server.url}/openapi.json").status_code == 200


def test_wrong_token_is_401(server: Server) -> None:
    r = requests.get(f"{server.url}/api/fs/list", headers={"Authorization": "Bearer atl_nope"})
    assert r.status_code == 401


# Raw query-string values, sent exactly as written (pre-encoded where it says so).
CORPUS = [
    "..", "../..", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd",
    "%252e%252e%252fetc%252fpasswd", "..%5c..%5cetc%5cpasswd", "users%5c..%5c..%5c",
    "%2Fetc%2Fpasswd", "/etc/passwd", "C:%5CWindows", "users/ann/..%2F..%2F..%2F",
    "users/ann/%00.png", "users/ann/a%00/../../x", "users/ann/" + "A" * 300,
    "users/ann/" + "d/" * 2100, "users/bob/secret.txt", "users/bob", "users/ann/out/secret.txt",
    "users/ann/bob-link/secret.txt", "users/ann/%E2%80%A5/x", "users/ann/%EF%BC%8E%EF%BC%8E/x",
    "users/ann/.atelier/x", "users%2Fbob%2Fsecret.txt", "users/ann/CON", "outputs",
]


@pytest.fixture
def jail_world(server: Server, tmp_path: Path) -> tuple[Server, requests.Session, Path]:
    ann = server.add_user("ann")
    server.add_user("bob")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside secret")
    (server.root / "users/bob/secret.txt").write_text("bob secret")
    os.symlink(outside, server.root / "users/ann/out")
    os.symlink(server.root / "users/bob", server.root / "users/ann/bob-link")
    return server, ann, outside


def snapshot(*folders: Path) -> dict[str, str]:
    out = {}
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for f in files:
                p = Path(dirpath) / f
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def attempts(url: str, raw: str) -> list[tuple[str, str, dict]]:
    q = f"path={raw}"
    return [
        ("GET", f"{url}/api/fs/list?{q}", {}),
        ("GET", f"{url}/api/fs/stat?{q}", {}),
        ("GET", f"{url}/api/fs/download?{q}", {}),
        ("POST", f"{url}/api/fs/upload?{q}", {"files": [("files", ("x.txt", b"x"))]}),
    ]


def json_attempts(url: str, value: str) -> list[tuple[str, str, dict]]:
    return [
        ("POST", f"{url}/api/fs/mkdir", {"json": {"path": value}}),
        ("POST", f"{url}/api/fs/delete", {"json": {"path": value}}),
        ("POST", f"{url}/api/fs/move", {"json": {"src": value, "dst": "users/ann/moved"}}),
        ("POST", f"{url}/api/fs/move", {"json": {"src": "users/ann/mine.txt", "dst": value}}),
        ("POST", f"{url}/api/fs/copy", {"json": {"src": value, "dst": "users/ann/copied"}}),
        ("POST", f"{url}/api/fs/copy", {"json": {"src": "users/ann/mine.txt", "dst": value}}),
    ]


def test_traversal_corpus_touches_nothing_outside(
        jail_world: tuple[Server, requests.Session, Path]) -> None:
    srv, ann, outside = jail_world
    (srv.root / "users/ann/mine.txt").write_text("mine")
    before = snapshot(outside, srv.root / "users/bob", srv.root / "models")
    decoded = [requests.utils.unquote(raw) for raw in CORPUS]
    tries = [t for raw in CORPUS for t in attempts(srv.url, raw)]
    tries += [t for value in decoded for t in json_attempts(srv.url, value)]
    refused = 0
    for method, url, kw in tries:
        (srv.root / "users/ann/mine.txt").write_text("mine")
        r = ann.request(method, url, **kw)
        assert b"secret" not in r.content, (method, url)
        if r.status_code < 300:
            # Look-alikes such as U+2025 are legal names: they may only land in ann's home.
            body = r.json()
            for entry in body.get("files", [body]):
                where = entry.get("path") or entry["orig_path"]
                assert where.startswith("users/ann/"), (method, url, kw, r.text)
            continue
        assert r.status_code in (400, 403, 404, 409, 422), (method, url, kw, r.status_code, r.text)
        refused += 1
    assert refused >= len(tries) - 12
    assert snapshot(outside, srv.root / "users/bob", srv.root / "models") == before
    assert sorted(os.listdir(outside)) == ["secret.txt"]


def test_out_of_scope_answers_exactly_like_missing(
        jail_world: tuple[Server, requests.Session, Path]) -> None:
    srv, ann, _ = jail_world
    for route in ("stat", "download", "list"):
        hidden = ann.get(f"{srv.url}/api/fs/{route}", params={"path": "users/bob/secret.txt"})
        missing = ann.get(f"{srv.url}/api/fs/{route}", params={"path": "users/ann/nope.txt"})
        assert (hidden.status_code, hidden.content) == (missing.status_code, missing.content)
        assert hidden.status_code == 404
