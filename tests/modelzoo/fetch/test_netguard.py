"""Downloads never reach the networks they may not: the instance-metadata services by
default, any configured range, on the first hop or after a redirect, for the engine, the
catalogue probes and the HTTP API alike."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelzoo.errors import BlockedAddress, RemoteError
from modelzoo.fetch import FetchSettings, fetch
from modelzoo.fetch.netguard import DEFAULT_BLOCKED, check
from modelzoo.sources import remote

from .conftest import FileServer, make_safetensors


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://100.100.100.200/latest/meta-data/ram/security-credentials/",
    "http://[fe80::1]/x", "http://[fd00:ec2::254]/x",
    "http://[::ffff:169.254.169.254]/x",          # IPv4-mapped IPv6
    "http://169.254.169.254:8080/x.safetensors",
])
def test_metadata_services_are_refused_by_default(url: str) -> None:
    with pytest.raises(BlockedAddress) as e:
        check(url, DEFAULT_BLOCKED)
    assert e.value.status == 403 and "ATELIER_FETCH_BLOCKED_NETWORKS" in e.value.message


def test_names_are_resolved_and_ranges_configurable() -> None:
    check("http://127.0.0.1:9/x", DEFAULT_BLOCKED)  # loopback mirrors are fine by default
    check("http://localhost/x", DEFAULT_BLOCKED)
    with pytest.raises(BlockedAddress):
        check("http://localhost:9/x", ["127.0.0.0/8", "::1/128"])  # resolved, then checked
    check("http://169.254.169.254/x", [])  # [] turns the guard off


def test_a_redirect_into_a_blocked_network_fails_at_once_and_leaves_nothing(
        make_server: Callable[..., FileServer], settings: FetchSettings,
        tmp_path: Path) -> None:
    srv = make_server(make_safetensors(300_000))
    srv.knobs.redirect_to = "http://169.254.169.254"  # a signed URL on the metadata service
    t0 = time.monotonic()
    with pytest.raises(BlockedAddress):
        fetch(srv.redirect_url, tmp_path / "m.safetensors", settings=settings)
    assert time.monotonic() - t0 < settings.connect_timeout  # refused, never connected
    assert list(tmp_path.iterdir()) == []


def test_configured_ranges_bind_the_engine_and_the_probes(
        make_server: Callable[..., FileServer], settings: FetchSettings,
        tmp_path: Path) -> None:
    srv = make_server(make_safetensors(100_000))
    closed = settings.model_copy(update={"blocked_networks": ["127.0.0.0/8"]})
    with pytest.raises(BlockedAddress):
        fetch(srv.url(), tmp_path / "m.safetensors", settings=closed)
    assert not srv.log and list(tmp_path.iterdir()) == []
    with pytest.raises(BlockedAddress):
        remote.probe(remote.session(["127.0.0.0/8"]), srv.url(), what="a model")
    assert not srv.log


# -- the engine connects to the addresses it checked ----------------------------------


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A DNS of our own for names under .test: each lookup of a name takes the next of
    its answers (the last one repeats), as a rebinding attacker's server answers."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        if isinstance(host, str) and host in answers:
            queue = answers[host]
            ip = queue.pop(0) if len(queue) > 1 else queue[0]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port or 0)))]
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def cert_for(name: str, folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` (openssl), and its key."""
    folder.mkdir()
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_dns_rebinding_gets_nothing(make_server: Callable[..., FileServer],
                                    settings: FetchSettings, tmp_path: Path,
                                    resolver: dict[str, list[str]]) -> None:
    """The name answers a harmless address to the check, then the guarded network to
    the connect: the connection is refused (it would have reached the server here)."""
    srv = make_server(make_safetensors(100_000))
    resolver["rebind.test"] = ["192.0.2.10", "127.0.0.1"]  # (TEST-NET-1, then loopback)
    guarded = settings.model_copy(update={"blocked_networks": ["127.0.0.0/8"]})
    with pytest.raises(BlockedAddress, match=r"rebind\.test \(127\.0\.0\.1\)"):
        fetch(srv.url(host="rebind.test"), tmp_path / "m.safetensors", settings=guarded)
    assert not srv.log and list(tmp_path.iterdir()) == []


@pytest.fixture
def named_tls(make_server: Callable[..., FileServer], resolver: dict[str, list[str]],
              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FileServer, bytes]:
    """An HTTPS server whose certificate (trusted) names models.test; models.test and
    other.test both resolve to it."""
    cert, key = cert_for("models.test", tmp_path / "tls")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    data = make_safetensors(300_000)
    resolver["models.test"] = ["127.0.0.1"]
    resolver["other.test"] = ["127.0.0.1"]
    return make_server(data, tls=(cert, key)), data


def test_a_name_is_resolved_once_per_connection_and_tls_still_checks_it(
        named_tls: tuple[FileServer, bytes], settings: FetchSettings, tmp_path: Path) -> None:
    """Connecting to the checked address keeps HTTPS honest: the certificate is checked
    against the name in the URL (SNI too), not the address."""
    srv, data = named_tls
    out = tmp_path / "out"
    fetch(srv.url(host="models.test"), out / "m.safetensors", settings=settings)
    assert (out / "m.safetensors").read_bytes() == data
    with pytest.raises(RemoteError, match="certificate is not trusted"):
        fetch(srv.url(host="other.test"), out / "n.safetensors", settings=settings)
    assert not (out / "n.safetensors").exists()


def test_a_name_with_several_addresses_uses_the_one_that_answers(
        make_server: Callable[..., FileServer], settings: FetchSettings,
        tmp_path: Path) -> None:
    """``localhost`` is ::1 and 127.0.0.1; the server listens on the second only."""
    data = make_safetensors(200_000)
    srv = make_server(data)
    fetch(srv.url(host="localhost"), tmp_path / "m.safetensors", settings=settings)
    assert (tmp_path / "m.safetensors").read_bytes() == data


def test_dns_rebinding_gets_nothing_from_the_catalogue_probes(
        make_server: Callable[..., FileServer], resolver: dict[str, list[str]]) -> None:
    """The catalogues' requests session connects to the addresses it checked too."""
    data = make_safetensors(100_000)
    srv = make_server(data)
    resolver["rebind.test"] = ["192.0.2.10", "127.0.0.1"]
    with pytest.raises(BlockedAddress, match=r"rebind\.test \(127\.0\.0\.1\)"):
        remote.probe(remote.session(["127.0.0.0/8"]), srv.url(host="rebind.test"),
                     what="a model")
    assert not srv.log
    # the same session, names that resolve as they should: a real probe, errors as before
    resolver["models.test"] = ["127.0.0.1"]
    found = remote.probe(remote.session(["169.254.0.0/16"]), srv.url(host="models.test"),
                         what="a model")
    assert found.total == len(data) and found.head == data[:len(found.head)] != b""
    assert len(srv.log) == 1
    srv.close()
    with pytest.raises(RemoteError, match="cannot reach"):
        remote.probe(remote.session(["169.254.0.0/16"]), srv.url(host="models.test"),
                     what="a model")


def test_catalogue_probes_over_https_check_the_name(
        named_tls: tuple[FileServer, bytes]) -> None:
    srv, data = named_tls
    found = remote.probe(remote.session(), srv.url(host="models.test"), what="a model")
    assert found.total == len(data)
    with pytest.raises(RemoteError, match="cannot reach.*(?i:certificate)"):
        remote.probe(remote.session(), srv.url(host="other.test"), what="a model")
