"""The connection count: grown while each step adds speed, kept where it stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelzoo.fetch import fetch
from modelzoo.fetch.tuning import Tuner

MB = 1024 * 1024


def drive(tuner: Tuner, rate_of, seconds: float = 20.0, dt: float = 0.05) -> list[int]:
    """Run the tuner against a server model: ``rate_of(n)`` bytes/s for n connections."""
    now, got, counts = 0.0, 0.0, []
    while now < seconds:
        n = tuner.update(now, int(got), warmed=tuner.target)
        counts.append(n)
        got += rate_of(n) * dt
        now += dt
    return counts


def test_a_cdn_capping_each_connection_gets_connections_up_to_the_cap() -> None:
    t = Tuner(start=4, cap=32, window=0.5)
    counts = drive(t, lambda n: n * 16e6)
    assert counts[0] == 4 and counts[-1] == 32 and t.steady
    assert [n for n, _ in t.steps] == [4, 8, 16, 32]


def test_growth_stops_where_the_link_is_full_and_useless_connections_go() -> None:
    t = Tuner(start=4, cap=64, window=0.5)
    drive(t, lambda n: min(n * 16e6, 200e6))  # 12.5 connections fill the link
    assert t.steady and t.target == 16  # 8 -> 16 still paid (+56 %), 32 added nothing
    t = Tuner(start=4, cap=64, window=0.5)
    drive(t, lambda n: 50e6)  # one shared uplink: more connections never help
    assert t.steady and t.target == 4


def test_waits_for_new_connections_to_deliver_before_measuring() -> None:
    t = Tuner(start=2, cap=8, window=0.5, settle_max=3.0)
    assert t.update(0.0, 0, warmed=0) == 2
    assert t.update(2.0, 0, warmed=1) == 2  # one still connecting: no measurement yet
    assert t.update(2.1, 0, warmed=2) == 2  # both deliver: measuring starts now
    assert t.update(2.3, 100, warmed=2) == 2
    assert t.update(2.7, 1_000_000, warmed=2) == 4  # 0.6 s measured: step up
    with pytest.raises(ValueError):
        Tuner(start=0, cap=4)


@pytest.fixture
def auto(settings):
    """Automatic connection count: start with 2, at most 8, short steps."""
    return settings.model_copy(update={"connections": None, "initial_connections": 2,
                                       "max_connections": 8, "tuning_window": 0.25})


def test_per_connection_throttle_makes_the_engine_add_connections(make_server, auto, tools,
                                                                  tmp_path: Path) -> None:
    data = tools.make_safetensors(5 * MB)
    srv = make_server(data)
    srv.knobs.throttle = 256 * 1024  # per connection, like nginx limit_rate
    r = fetch(srv.url(), tmp_path / "m.safetensors", sha256=tools.sha(data), settings=auto)
    assert (tmp_path / "m.safetensors").read_bytes() == data
    assert r.connections >= 4  # grew from 2
    assert len({q["client"] for q in srv.requests("/f/")}) >= 4


def test_a_shared_uplink_keeps_the_count_low(make_server, auto, tools, tmp_path: Path) -> None:
    data = tools.make_safetensors(3 * MB)
    srv = make_server(data)
    srv.knobs.total_rate = 1 * MB  # all connections together
    r = fetch(srv.url(), tmp_path / "m.safetensors", sha256=tools.sha(data), settings=auto)
    assert (tmp_path / "m.safetensors").read_bytes() == data
    assert r.connections <= 4  # one step tried, nothing gained, not grown further


def test_a_fixed_count_is_not_tuned(make_server, settings, tools, tmp_path: Path) -> None:
    data = tools.make_safetensors(1 * MB)
    srv = make_server(data)
    srv.knobs.throttle = 256 * 1024
    r = fetch(srv.url(), tmp_path / "m.safetensors", settings=settings, connections=3)
    assert r.connections == 3
