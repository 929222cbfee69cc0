"""The piece scheduler on its own: no server, no files."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelzoo.fetch.segments import Scheduler, bitmap_from_ranges


def test_initial_split_covers_the_file_in_aligned_segments() -> None:
    s = Scheduler(size=10 * 100 + 37, piece_size=100, connections=4)
    segs = [s.take(w) for w in range(4)]
    assert all(seg is not None for seg in segs)
    spans = sorted((seg.start, seg.end) for seg in segs if seg)
    assert spans[0][0] == 0 and spans[-1][1] == 1037
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert all(lo % 100 == 0 for lo, _ in spans)


def test_idle_worker_steals_half_of_the_largest_remaining_segment() -> None:
    s = Scheduler(size=1600, piece_size=100, connections=2)
    a, b = s.take(0), s.take(1)
    assert a is not None and b is not None
    assert s.commit(a, s.claim(a, 800)) == list(range(8))  # worker 0 finished its half
    s.claim(b, 200)  # worker 1 has 200 bytes in flight
    thief = s.take(0)
    assert thief is not None
    # b had 600 unclaimed bytes from 1000: the thief takes the upper half, piece-aligned
    assert (thief.start, thief.end) == (1300, 1600)
    assert b.end == 1300
    # bytes already claimed by b are never stolen
    assert s.claim(b, 500) == 300 and s.claim(b, 1) == 0


def test_no_steal_below_two_pieces() -> None:
    s = Scheduler(size=300, piece_size=100, connections=1)
    a = s.take(0)
    assert a is not None
    s.claim(a, 150)
    assert s.take(1) is None  # 150 left: splitting would leave less than a piece each


def test_resume_schedules_only_missing_pieces() -> None:
    done = bitmap_from_ranges(1000, 100, [(0, 300), (500, 1000)])
    s = Scheduler(1000, 100, 1, done)
    assert s.done_bytes == 800 and s.prefix_bytes == 300
    seg = s.take(0)
    assert seg is not None and (seg.start, seg.end) == (300, 500)
    thief = s.take(1)  # the only work left is half of that segment
    assert thief is not None and (thief.start, thief.end) == (400, 500)
    s.commit(seg, s.claim(seg, 200))
    assert not s.complete and s.prefix_bytes == 400
    s.commit(thief, s.claim(thief, 100))
    assert s.complete and s.prefix_bytes == 1000


def test_release_hands_back_the_unwritten_rest() -> None:
    s = Scheduler(1000, 100, 1)
    a = s.take(0)
    assert a is not None
    s.commit(a, s.claim(a, 250))
    s.release(a)
    b = s.take(1)
    assert b is not None and (b.start, b.end) == (250, 1000)
    assert s.commit(b, s.claim(b, 50)) == [2]  # piece 2 = 200..300: done by two owners


def test_bad_bitmap_is_refused() -> None:
    with pytest.raises(ValueError):
        Scheduler(1000, 100, 2, [False] * 3)


@settings(max_examples=150, deadline=None)
@given(size=st.integers(0, 5000), piece=st.integers(1, 700), conns=st.integers(1, 6),
       ops=st.lists(st.tuples(st.integers(0, 5), st.integers(1, 900), st.booleans()),
                    max_size=200),
       done=st.lists(st.booleans(), max_size=50))
def test_every_byte_is_written_exactly_once(size: int, piece: int, conns: int,
                                            ops: list[tuple[int, int, bool]],
                                            done: list[bool]) -> None:
    pieces = -(-size // piece)
    bitmap = (done + [False] * pieces)[:pieces]
    s = Scheduler(size, piece, conns, bitmap)
    written = bytearray(size)
    for i, d in enumerate(bitmap):
        if d:
            written[i * piece:(i + 1) * piece] = b"\x01" * len(written[i * piece:(i + 1) * piece])
    owned: dict[int, object] = {}

    def step(worker: int, n: int, fail: bool) -> None:
        seg = owned.get(worker)
        if seg is None or seg.finished:  # type: ignore[attr-defined]
            seg = s.take(worker)
            if seg is None:
                return
            owned[worker] = seg
        if fail:
            s.release(seg)  # type: ignore[arg-type]
            owned.pop(worker)
            return
        at = seg.claimed  # type: ignore[attr-defined]
        got = s.claim(seg, n)  # type: ignore[arg-type]
        for b in range(at, at + got):
            assert written[b] == 0, "byte written twice"
            written[b] = 1
        s.commit(seg, got)  # type: ignore[arg-type]

    for worker, n, fail in ops:
        step(worker % conns, n, fail)
    for _ in range(10 * (pieces + 2) + 100):  # drain without failures
        if s.complete:
            break
        for w in range(conns):
            step(w, 1000, False)
    assert s.complete
    assert all(written)
    assert all(s.done) and s.done_bytes == size


def test_chunks_are_carved_off_in_file_order() -> None:
    s = Scheduler(size=1050, piece_size=100, connections=1)
    segs = [s.take(w, chunk=250) for w in range(4)]
    # piece-aligned, and no sliver under a piece left behind: the last takes the rest
    assert [(g.start, g.end) for g in segs if g] == [(0, 300), (300, 600), (600, 900),
                                                      (900, 1050)]
    assert s.take(4, chunk=250) is not None  # nothing free: a thief splits the largest


def test_a_thief_leaves_the_owner_what_has_already_arrived_for_it() -> None:
    s = Scheduler(size=2000, piece_size=100, connections=1)
    owner = s.take(0)
    assert owner is not None
    s.claim(owner, 200)
    s.arrived = lambda seg: 1000 if seg is owner else 0  # unread in its socket
    thief = s.take(1)
    assert thief is not None
    # 1800 unclaimed, 1000 of them already here: the thief halves the other 800
    assert (thief.start, thief.end) == (1600, 2000) and owner.end == 1600
    s.arrived = lambda seg: 1400 if seg is not None else 0  # everyone's rest is here
    assert s.take(2) is None and not s.has_work()
