"""Several endpoints for the same bytes: ranking, spreading, a mirror dying mid-way."""

from __future__ import annotations

from pathlib import Path

from modelzoo.fetch import FetchProgress, fetch
from modelzoo.fetch.mirrors import probe_all, rank
from modelzoo.fetch.transport import make_session_factory

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
