"""Who gets which headers: tokens are bound to an origin (scheme, host, port)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelzoo.errors import RemoteError
from modelzoo.fetch import fetch
from modelzoo.fetch.transport import bind_headers, headers_for, open_url, origin_of

MB = 1024 * 1024


def test_origins_are_scheme_host_and_port() -> None:
    assert origin_of("https://HF.co/a/b?c") == "https://hf.co:443"
    assert origin_of("http://hf.co:8080/x") == "http://hf.co:8080"
    assert origin_of("http://[::1]/x") == "http://[::1]:80"
    bound = bind_headers({"https://hf.co": {"Authorization": "Bearer A"},
                          "civitai.com": {"Authorization": "Bearer C"}},
                         ["https://civitai.com/api/download/models/1",
                          "http://civitai.com:8080/x", "https://hf.co/r/resolve/main/f"])
    # a bare host name means the origins of the given URLs with that host, no others
    assert bound == {"https://hf.co:443": {"Authorization": "Bearer A"},
                     "https://civitai.com:443": {"Authorization": "Bearer C"},
                     "http://civitai.com:8080": {"Authorization": "Bearer C"}}


def test_a_redirect_to_another_port_of_the_same_host_gets_no_token_or_cookie(
        make_server, settings, tools, tmp_path: Path) -> None:
    data = tools.make_safetensors(1 * MB)
    origin, storage = make_server(data), make_server(data)
    origin.knobs.redirect_to = f"http://127.0.0.1:{storage.port}"  # same host, other port
    origin.knobs.set_cookie = "session=SECRET-COOKIE; Path=/"
    for headers in ({"127.0.0.1": {"Authorization": "Bearer SECRET"}},
                    {f"http://127.0.0.1:{origin.port}": {"Authorization": "Bearer SECRET"}}):
        fetch(origin.redirect_url, tmp_path / "m.safetensors", sha256=tools.sha(data),
              settings=settings, headers=headers)
        assert (tmp_path / "m.safetensors").read_bytes() == data
        (tmp_path / "m.safetensors").unlink()
    sent = [r["headers"] for r in origin.requests("/redirect/")]
    assert sent and all(h.get("Authorization") == "Bearer SECRET" for h in sent)
    got = [r["headers"] for r in storage.requests("/signed/")]
    assert got and not any("Authorization" in h or "Cookie" in h for h in got)


def test_headers_for_another_origin_are_not_sent(make_server, settings, tools,
                                                 tmp_path: Path) -> None:
    data = tools.make_safetensors(200_000)
    srv = make_server(data)
    fetch(srv.url(), tmp_path / "m.safetensors", settings=settings,
          headers={f"https://127.0.0.1:{srv.port}": {"Authorization": "Bearer X"},
                   "http://127.0.0.1:1": {"Authorization": "Bearer Y"}})
    assert not any("Authorization" in r["headers"] for r in srv.log)


def test_https_checks_the_certificate_and_takes_a_private_ca_bundle(
        make_server, settings, tools, tmp_path: Path, tls_cert,
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = tools.make_safetensors(1 * MB)
    srv = make_server(data, tls=tls_cert)
    with pytest.raises(RemoteError, match="certificate is not trusted.*REQUESTS_CA_BUNDLE"):
        fetch(srv.url(), tmp_path / "m.safetensors", settings=settings)
    assert srv.log == [] and list(tmp_path.iterdir()) == []  # no request got through
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_cert[0]))
    headers = {f"https://127.0.0.1:{srv.port}": {"Authorization": "Bearer T"}}
    r = fetch(srv.url(), tmp_path / "m.safetensors", sha256=tools.sha(data),
              settings=settings, headers=headers)
    assert (tmp_path / "m.safetensors").read_bytes() == data and r.connections > 1
    assert all(q["headers"].get("Authorization") == "Bearer T" for q in srv.log)
    # the same host and port over plain http is another origin: no token there
    plain = srv.url().replace("https:", "http:")
    assert "Authorization" not in headers_for(plain, settings, bind_headers(headers, [plain]))


def test_a_socks_proxy_carries_every_request(make_server, settings, tools, tmp_path: Path,
                                             socks_proxy) -> None:
    data = tools.make_safetensors(500_000)
    srv = make_server(data)
    settings = settings.model_copy(update={"proxy": f"socks5h://127.0.0.1:{socks_proxy.port}"})
    # socks5h: the proxy resolves the name, and only it knows files.invalid
    fetch(srv.url(host="files.invalid"), tmp_path / "m.safetensors", sha256=tools.sha(data),
          settings=settings)
    assert (tmp_path / "m.safetensors").read_bytes() == data
    assert len(socks_proxy.connects) >= 2  # the probe and the ranges
    assert {h for h, _ in socks_proxy.connects} == {"files.invalid"}


class _Hop:
    """One canned answer of a stub session (a transport handler for unit tests)."""

    def __init__(self, status: int, location: str | None = None) -> None:
        self.status = status
        self.headers = {"location": location} if location else {}

    def release(self, fully_read: bool) -> None:
        pass


class _Session:
    def __init__(self, answers: dict[str, _Hop]) -> None:
        self.answers = answers
        self.sent: list[tuple[str, dict[str, str]]] = []

    def get(self, url: str, headers: dict[str, str]) -> _Hop:
        self.sent.append((url, headers))
        return self.answers[url]


def test_once_a_redirect_chain_leaves_the_origin_it_never_carries_the_token_again(
        settings) -> None:
    chain = _Session({
        "https://hub.example/m": _Hop(302, "/renamed/m"),  # same origin: keeps the token
        "https://hub.example/renamed/m": _Hop(302, "https://cdn.example/sig"),
        "https://cdn.example/sig": _Hop(302, "https://hub.example/back"),  # and back again
        "https://hub.example/back": _Hop(200),
    })
    bound = bind_headers({"https://hub.example": {"Authorization": "Bearer T"}},
                         ["https://hub.example/m"])
    opened = open_url(chain, "https://hub.example/m", settings, bound)
    assert opened.url == "https://hub.example/back"
    tokens = [h.get("Authorization") for _, h in chain.sent]
    assert tokens == ["Bearer T", "Bearer T", None, None]
    with pytest.raises(RemoteError, match="not an http"):
        open_url(_Session({"https://hub.example/m": _Hop(302, "file:///etc/passwd")}),
                 "https://hub.example/m", settings, bound)
