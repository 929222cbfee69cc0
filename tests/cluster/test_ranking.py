"""The router's order as a plain function: GPU tier > RAM tier > room > queue."""

from __future__ import annotations

from atelier.cluster.ranking import DISK, GPU, RAM, ReplicaState, overlay, rank

MB = 1 << 20


def ids(states: list[ReplicaState]) -> list[str]:
    return [s.id for s in states]


def test_gpu_beats_ram_beats_room_beats_queue() -> None:
    on_gpu = ReplicaState("gpu", gpu=frozenset({"m"}), room=0, queue=2)
    in_ram = ReplicaState("ram", ram=frozenset({"m"}), room=10 * MB, queue=1)
    roomy = ReplicaState("roomy", room=100 * MB, queue=2)
    short = ReplicaState("short", room=50 * MB, queue=0)
    assert ids(rank([short, roomy, in_ram, on_gpu], "m")) == ["gpu", "ram", "roomy", "short"]


def test_room_then_queue_decide_among_equals() -> None:
    a = ReplicaState("a", room=5 * MB, queue=2)
    b = ReplicaState("b", room=5 * MB, queue=1)
    c = ReplicaState("c", room=9 * MB, queue=2)
    assert ids(rank([a, b, c], "new")) == ["c", "b", "a"]
    # two replicas holding the model on their GPU: the one with more room, then queue
    g1 = ReplicaState("g1", gpu=frozenset({"m"}), room=1 * MB, queue=0)
    g2 = ReplicaState("g2", gpu=frozenset({"m"}), room=2 * MB, queue=1)
    assert ids(rank([g1, g2], "m")) == ["g2", "g1"]


def test_no_model_ranks_by_room_and_queue() -> None:
    holder = ReplicaState("holder", gpu=frozenset({"m"}), room=0)
    roomy = ReplicaState("roomy", room=MB)
    assert ids(rank([holder, roomy], None)) == ["roomy", "holder"]
    assert rank([], "m") == []


def test_a_long_queue_loses_the_tier() -> None:
    busy = ReplicaState("busy", gpu=frozenset({"m"}), room=0, queue=3)
    idle = ReplicaState("idle", room=MB, queue=0)
    assert ids(rank([busy, idle], "m", spread_queue=3)) == ["idle", "busy"]
    assert ids(rank([busy, idle], "m", spread_queue=4)) == ["busy", "idle"]
    assert ids(rank([busy, idle], "m", spread_queue=0)) == ["busy", "idle"]  # never spread


def test_stats_parse_and_the_live_queue_wins() -> None:
    stats = {"gpu": ["a"], "ram": ["b"], "room": 7, "queue": 3, "at": 5.0, "sizes": {"c": 3}}
    s = ReplicaState.from_stats("r", stats, queue=0)
    assert (s.tier("a"), s.tier("b"), s.tier("c")) == (GPU, RAM, DISK)
    assert (s.room, s.queue, s.at) == (7, 0, 5.0)
    assert ReplicaState.from_stats("r", stats).queue == 3  # no live count: the report
    empty = ReplicaState.from_stats("new", None)  # before its first report
    assert (empty.gpu, empty.room, empty.queue) == (frozenset(), 0, 0)


def test_requests_sent_after_the_report_count_as_loaded() -> None:
    s = ReplicaState("r", room=10 * MB, at=100.0, sizes={"m": 4 * MB, "n": 2 * MB})
    seen = overlay(s, [("m", 101.0), ("m", 102.0), ("n", 99.0)])
    assert seen.tier("m") == GPU and seen.tier("n") == DISK  # n was sent before the report
    assert seen.room == 6 * MB  # m's bytes counted once
    assert overlay(s, []) is s
    # a burst for one new model stays on the replica the first request went to
    other = ReplicaState("o", room=12 * MB, at=100.0)
    assert ids(rank([other, seen], "m")) == ["r", "o"]
