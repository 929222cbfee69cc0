"""Every error is the documented JSON ``{error, message}`` with a 4xx/5xx status: never a
plain-text 500, never a dropped connection (filebrowser/guards.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import requests

from filebrowser.guards import non_finite

from ..conftest import Server


def assert_json_error(r: requests.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.headers.get("content-type"), r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) >= {"error", "message"} and body["message"], body
    if code is not None:
        assert body["error"] == code, body
    return body


def test_an_unhandled_error_is_a_logged_json_500(server: Server,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise RuntimeError("a bug nobody caught")

    server.app.add_api_route("/api/test-boom", boom)
    with caplog.at_level(logging.ERROR, logger="atelier.errors"):
        r = requests.get(f"{server.url}/api/test-boom", timeout=10)
    body = assert_json_error(r, 500, "internal_error")
    assert "a bug nobody caught" not in body["message"]  # no internals to the client
    logged = [rec for rec in caplog.records if rec.name == "atelier.errors"]
    assert logged and logged[0].exc_info and "a bug nobody caught" in str(logged[0].exc_info[1])


def test_an_unhandled_error_in_webdav_is_a_json_500(server: Server,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from filebrowser.transfers import dav

    # in WsgiDAV (which renders its own HTML 500 page) ...
    def broken(self: object, path: str, environ: dict) -> None:
        raise RuntimeError("provider bug")

    monkeypatch.setattr(dav.JailProvider, "get_resource_inst", broken)
    r = requests.request("PROPFIND", f"{server.url}/dav/", auth=("admin", "admin-pass-123"),
                         headers={"Depth": "0"}, timeout=10)
    assert_json_error(r, 500, "internal_error")
    monkeypatch.undo()
    # ... and in our layer in front of it
    monkeypatch.setattr(dav.DavApp, "_guard", lambda *a: 1 / 0)
    r = requests.request("MKCOL", f"{server.url}/dav/x", auth=("admin", "admin-pass-123"),
                         timeout=10)
    assert_json_error(r, 500, "internal_error")


def test_framework_answers_have_our_shape(server: Server) -> None:
    s = server.session()
    assert_json_error(s.get(f"{server.url}/api/no-such-route"), 404, "not_found")
    r = s.delete(f"{server.url}/api/health")
    assert_json_error(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"]
    # WsgiDAV's HTML error pages
    r = requests.request("PROPFIND", f"{server.url}/dav/users/admin/missing",
                         auth=("admin", "admin-pass-123"), headers={"Depth": "0"}, timeout=10)
    assert_json_error(r, 404, "not_found")


def test_range_errors_are_json(server: Server) -> None:
    s = server.session()
    (server.root / "users/admin/f.bin").write_bytes(b"x" * 100)
    url = f"{server.url}/api/fs/download?path=users/admin/f.bin"
    r = s.get(url, headers={"Range": "bytes=500-600"})
    assert_json_error(r, 416, "range_not_satisfiable")
    assert r.headers["content-range"] == "bytes */100"
    assert_json_error(s.get(url, headers={"Range": "lines=1-2"}), 400, "bad_request")
    assert s.get(url, headers={"Range": "bytes=0-9"}).content == b"x" * 10


def test_tus_headers_with_unicode_digits_are_400(server: Server) -> None:
    s = server.session()
    tus = {"Tus-Resumable": "1.0.0", "Upload-Metadata": "filename YQ=="}
    # requests sends str headers as Latin-1: "²" is the single byte 0xB2, a digit to
    # str.isdigit() that int() refuses
    for value in ("²", "³", "1¹"):
        r = s.post(f"{server.url}/api/tus/", headers={**tus, "Upload-Length": value})
        assert_json_error(r, 400, "bad_request")
    r = s.post(f"{server.url}/api/tus/", headers={**tus, "Upload-Length": "4"})
    assert r.status_code == 201
    r = s.patch(server.url + r.headers["Location"], data=b"abcd", headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": "²",
        "Content-Type": "application/offset+octet-stream"})
    assert_json_error(r, 400, "bad_request")


@pytest.mark.parametrize("name", ["a\r\nX-Evil: 1.zip", "nul\x00.zip", "tab\tand\x7f.zip",
                                  "q\"uote\\back.zip"])
def test_zip_names_with_control_characters(server: Server, name: str) -> None:
    s = server.session()
    (server.root / "users/admin/a.txt").write_text("hello")
    for r in (s.get(f"{server.url}/api/fs/zip", params={"path": "users/admin", "name": name}),
              s.post(f"{server.url}/api/fs/zip", json={"paths": ["users/admin"],
                                                       "name": name})):
        assert r.status_code == 200, r.text
        cd = r.headers["content-disposition"]
        assert "X-Evil" not in r.headers
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in cd), cd
        assert cd.startswith('attachment; filename="') and cd.count('"') == 2, cd
        assert r.content[:4] == b"PK\x03\x04"


BAD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]


@pytest.mark.parametrize("number", BAD_NUMBERS)
def test_non_finite_json_numbers_are_422(server: Server, number: str) -> None:
    s = server.session()
    headers = {"Content-Type": "application/json"}
    for path, body in (
        ("/api/tokens", f'{{"name": "t", "ttl_days": {number}}}'),
        ("/api/shares", f'{{"path": "users/admin", "expires_at": {number}}}'),
        ("/api/generate", f'{{"prompt": "a cat", "cfg_scale": {number}}}'),
        ("/api/generate", f'{{"prompt": "a cat", "seed": {number}}}'),
    ):
        r = s.post(server.url + path, data=body, headers=headers)
        msg = assert_json_error(r, 422, "invalid_input")["message"]
        assert "finite" in msg, msg
    # FastAPI reads a body without Content-Type as JSON too
    r = s.post(f"{server.url}/api/tokens", data=f'{{"name": "t", "ttl_days": {number}}}')
    assert_json_error(r, 422, "invalid_input")
    # no token was created by any of these
    assert [t["name"] for t in s.get(f"{server.url}/api/tokens").json()] == ["t"]


def test_finite_numbers_still_pass(make_server: Callable[..., Server]) -> None:
    srv = make_server()
    s = srv.session()
    r = s.post(f"{srv.url}/api/tokens", json={"name": "t2", "ttl_days": 1.5e1})
    assert r.status_code == 200, r.text
    assert non_finite(b'{"a": [1, 2.5e3, -0.0, "NaN", {"b": 1e308}]}') is None
    assert non_finite(b"not json at all") is None  # the route says so in its own words
    assert non_finite(b'{"a": 1e309}') and non_finite(b"[NaN]")
    assert non_finite(b"[" * 100_000 + b"]" * 100_000)


def test_integers_beyond_a_database_column_are_422(server: Server) -> None:
    """Found by schemathesis: SQLite raised OverflowError (a 500) for ids and sizes that
    no BIGINT column holds."""
    s = server.session()
    huge = str(2**70)
    for r in (s.delete(f"{server.url}/api/tokens/{huge}"),
              s.delete(f"{server.url}/api/shares/{huge}"),
              s.get(f"{server.url}/api/search", params={"min_size": huge}),
              s.post(f"{server.url}/api/users", json={"name": "q", "password": "pass-1234567",
                                                     "quota_bytes": 2**70}),
              s.post(f"{server.url}/api/tokens", json={"name": "t", "ttl_days": 1e308})):
        assert_json_error(r, 422, "invalid_input")
    assert_json_error(s.delete(f"{server.url}/api/tokens/{2**63 - 1}"), 404, "not_found")


def test_requests_the_http_parser_refuses_get_json_too(server: Server) -> None:
    """uvicorn answers an oversized request line itself, before the app (found by
    schemathesis): atelier/protocol.py gives that answer our shape as well."""
    r = server.session().get(f"{server.url}/api/fs/list", params={"cursor": "x" * 120_000})
    assert_json_error(r, 400, "bad_request")
