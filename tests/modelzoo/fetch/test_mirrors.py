"""Several endpoints for the same bytes: ranking, spreading, a mirror dying mid-way."""

from __future__ import annotations

from pathlib import Path

from modelzoo.fetch import FetchProgress, fetch
from modelzoo.fetch.mirrors import Endpoint, EndpointPool, probe_all, rank
from modelzoo.fetch.sessions import make_session_factory

MB = 1024 * 1024


def test_probe_ranks_fast_first_and_drops_different_or_broken_endpoints(
        make_server, settings, tools) -> None:
    data = tools.make_safetensors(1 * MB)
    slow, fast, other, html = (make_server(data), make_server(data),
                               make_server(tools.make_safetensors(MB // 2)), make_server(data))
    slow.knobs.throttle = 256 * 1024
    html.knobs.html = True
    urls = [slow.url(), fast.url(), other.url(), html.url("/nope")]
    eps = probe_all(urls, make_session_factory(settings), settings, None)
    assert eps[3].error is not None  # 404: not a candidate
    ranked = rank(eps, sha256_known=True)
    assert [e.origin for e in ranked] == [fast.url(), slow.url()]  # `other` differs in size
    assert ranked[0].throughput > ranked[1].throughput
    assert all(e.validators and e.validators.size == len(data) for e in ranked)


def test_without_a_sha256_only_identical_validators_are_mixed(make_server, settings,
                                                              tools) -> None:
    data = tools.make_safetensors(1 * MB)
    a, b = make_server(data), make_server(data)
    b.etag = '"a-different-etag"'  # same size, but the server says it is another version
    eps = probe_all([a.url(), b.url()], make_session_factory(settings), settings, None)
    assert len(rank(eps, sha256_known=False)) == 1
    assert len(rank(eps, sha256_known=True)) == 2


def test_connections_are_spread_over_equal_mirrors(make_server, settings, tools,
                                                   tmp_path: Path) -> None:
    data = tools.make_safetensors(2 * MB)
    a, b = make_server(data), make_server(data)
    a.knobs.throttle = b.knobs.throttle = 1 * MB
    r = fetch([a.url(), b.url()], tmp_path / "m.safetensors", sha256=tools.sha(data),
              settings=settings)
    assert (tmp_path / "m.safetensors").read_bytes() == data
    assert len(a.requests("/f/")) > 1 and len(b.requests("/f/")) > 1
    assert set(r.endpoints) == {a.url(), b.url()}


def test_mirror_dying_mid_way_hands_its_pieces_to_the_other(make_server, settings, tools,
                                                            tmp_path: Path) -> None:
    data = tools.make_safetensors(3 * MB)
    dying, steady = make_server(data), make_server(data)
    dying.knobs.throttle = steady.knobs.throttle = 1 * MB

    def kill_at_a_third(p: FetchProgress) -> None:
        if p.done > len(data) // 3:
            dying.knobs.dead = True  # resets in-flight bodies and every new connection

    r = fetch([dying.url(), steady.url()], tmp_path / "m.safetensors",
              sha256=tools.sha(data), settings=settings, progress=kill_at_a_third)
    assert dying.knobs.dead
    assert (tmp_path / "m.safetensors").read_bytes() == data
    assert r.endpoints == (steady.url(),)  # the dead one was demoted
    after = [q for q in steady.requests("/f/")
             if q["t"] > min(x["t"] for x in dying.requests("/f/")[-1:])]
    assert after  # the steady mirror took over the dead one's pieces


def test_a_three_times_slower_mirror_is_left_out_and_reported(make_server, settings, tools,
                                                              tmp_path: Path) -> None:
    data = tools.make_safetensors(3 * MB)
    slow, fast = make_server(data), make_server(data)
    fast.knobs.throttle = 1 * MB
    slow.knobs.throttle = MB // 3  # per connection, like fast's: each would move less
    r = fetch([slow.url(), fast.url()], tmp_path / "m.safetensors", sha256=tools.sha(data),
              settings=settings)
    assert (tmp_path / "m.safetensors").read_bytes() == data
    assert slow.sent <= settings.probe_bytes  # the probe, nothing more
    report = {m.origin: m for m in r.mirrors}
    assert report[fast.url()].used and report[fast.url()].received == len(data)
    assert not report[slow.url()].used
    assert "slower per connection" in (report[slow.url()].note or "")
    assert r.endpoints == (fast.url(),)


def test_a_mirror_with_another_etag_is_used_when_the_sha256_checks(make_server, settings,
                                                                   tools, tmp_path: Path) -> None:
    data = tools.make_safetensors(2 * MB)
    a, b = make_server(data), make_server(data)
    a.knobs.throttle = b.knobs.throttle = 1 * MB
    b.etag = '"another-etag"'  # another CDN's idea of an ETag for the same bytes
    r = fetch([a.url(), b.url()], tmp_path / "m.safetensors", sha256=tools.sha(data),
              settings=settings)
    assert (tmp_path / "m.safetensors").read_bytes() == data
    report = {m.origin: m for m in r.mirrors}
    assert report[b.url()].used and report[b.url()].received > 0
    assert "the sha256 checks every byte" in (report[b.url()].note or "")
    # without a sha256 it is not mixed in, and the report says why
    r = fetch([a.url(), b.url()], tmp_path / "n.safetensors", settings=settings)
    report = {m.origin: m for m in r.mirrors}
    assert not report[b.url()].used and "no sha256" in (report[b.url()].note or "")


def _eps(*speeds: float) -> list[Endpoint]:
    return [Endpoint(f"http://m{i}/f", per_conn=s, throughput=s) for i, s in enumerate(speeds)]


def test_connections_are_shared_in_proportion_to_speed_per_connection() -> None:
    fast, slower = _eps(3e6, 1.5e6)
    pool = EndpointPool([fast, slower], demote_after=3, keep_ratio=0.5)
    picks = [pool.pick(w) for w in range(9)]
    assert picks.count(fast) == 6 and picks.count(slower) == 3
    pool.done(fast)
    assert pool.pick(9) is fast  # the freed connection goes back where it is short


def test_live_speeds_leave_out_a_mirror_that_turns_slow_and_its_workers_move() -> None:
    a, b = _eps(1e6, 1e6)
    pool = EndpointPool([a, b], demote_after=3, keep_ratio=0.5, window=1.0)
    for w in range(4):
        pool.pick(w)
    assert a.conns == b.conns == 2 and not pool.should_leave(b)
    pool.observe(0.0)
    a.received, b.received = 2_000_000, 300_000  # one second later: b moved 0.15 MB/s each
    pool.observe(1.0)
    assert b.left_out and pool.should_leave(b) and not pool.should_leave(a)
    assert "slower per connection" in (b.note or "")
    assert pool.pick(5) is a
