"""Downloads never reach the networks they may not: the instance-metadata services by
default, any configured range, on the first hop or after a redirect, for the engine, the
catalogue probes and the HTTP API alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelzoo.errors import BlockedAddress
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
