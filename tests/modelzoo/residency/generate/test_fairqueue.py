"""Start-time fair queueing between users' jobs (pure)."""

from __future__ import annotations

from modelzoo.residency.generate.fairqueue import FairQueue


def _drain(q: FairQueue) -> list[str]:
    out = []
    while (item := q.pop()) is not None:
        out.append(item[1])
    return out


def test_users_alternate_whatever_they_queued() -> None:
    q = FairQueue()
    for j in ("a1", "a2", "a3", "a4"):
        q.push("ann", j)
    q.push("bob", "b1")
    q.push("bob", "b2")
    q.push("cy", "c1")
    assert q.order() == ["a1", "b1", "c1", "a2", "b2", "a3", "a4"]
    assert _drain(q) == ["a1", "b1", "c1", "a2", "b2", "a3", "a4"]


def test_a_job_that_left_at_once_still_counts_for_its_user() -> None:
    q = FairQueue()
    q.push("ann", "a1")
    assert q.pop() == ("ann", "a1")  # an idle GPU took it straight away
    for j in ("a2", "a3"):
        q.push("ann", j)
    q.push("bob", "b1")
    assert q.order() == ["b1", "a2", "a3"]  # bob first: ann has had her turn


def test_a_returning_user_does_not_claim_missed_turns() -> None:
    q = FairQueue()
    q.push("ann", "a0")
    q.pop()
    for i in range(20):  # bob alone for a long time
        q.push("bob", f"b{i}")
        q.pop()
    q.push("bob", "b20")
    q.push("bob", "b21")
    q.push("ann", "a1")
    q.push("ann", "a2")
    # ann comes back level with bob (one turn each from now), not 20 turns ahead
    assert q.order() == ["a1", "b20", "a2", "b21"]


def test_remove_and_count() -> None:
    q = FairQueue()
    q.push("ann", "a1")
    q.push("ann", "a2")
    q.push("bob", "b1")
    assert q.count("ann") == 2 and len(q) == 3
    assert q.remove("a1") and not q.remove("zz")
    assert q.order() == ["b1", "a2"]
    assert len(q) == 2
