"""release_all (an idle scale-down) and the recently used models warmed at start."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from modelzoo.residency import db
from modelzoo.residency.placement import Placement
from modelzoo.residency.plan import Tier
from modelzoo.residency.recent import RecentModels, warm

K = 1024


def test_release_all_empties_gpus_and_ram_but_not_a_model_in_use(world, make_model) -> None:
    for name in ("a", "b", "c", "d"):
        make_model(name, 40 * K)
    w = world([100 * K, 100 * K], 400 * K)
    m = w.manager
    m.load("a", "sim:0")
    m.load("b", "sim:1")
    m.load("c", tier=Tier.RAM)
    m.load("d", "sim:1")
    m.pin("a")                                  # an admin's pin does not hold memory here
    with m.acquire("d", "sim:1"):                # a job runs on d: d stays where it is
        plans = m.release_all()
        assert sorted(p.target for p in plans) == ["a", "b", "c"]
        assert w.tiers() == {"d": ("gpu", "sim:1")}
        w.check_ledgers()
    assert [e.pinned for e in m.entries() if e.name == "a"] == [True]
    m.release_all()
    assert w.tiers() == {}
    assert [g.used for g in w.gpus] == [0, 0] and w.ram.used == 0
    w.check_ledgers()


def test_a_use_is_written_once_per_interval_unless_the_order_changes(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    db.create(engine)
    recent = RecentModels(engine, every=30)
    assert recent.touch("a", now=100)
    assert not recent.touch("a", now=110)        # the same head, within the interval
    assert recent.touch("b", now=111)
    assert recent.touch("a", now=112)            # the order changed: written at once
    assert recent.names() == ["a", "b"]
    assert recent.touch("a", now=143)            # the interval passed
    # another replica (another object on the same database) inserts the same model
    other = RecentModels(engine)
    assert other.touch("b", now=150)
    assert recent.names() == ["b", "a"] and recent.names(1) == ["b"]
    engine.dispose()


def test_warm_loads_most_recent_onto_the_gpu_then_ram_and_skips_the_unknown(
        world, make_model) -> None:
    for name in ("a", "b", "c"):
        make_model(name, 40 * K)
    w = world([60 * K], 90 * K)          # the GPU holds one, RAM two
    placement = Placement(w.manager, prefetch=False)
    try:
        done = warm(w.manager, placement, ["b", "gone", "a", "c"])
    finally:
        placement.close()
    # c fits nowhere without evicting a model used more recently: the warm-up ends there
    assert done == [("b", "gpu"), ("a", "ram")]
    assert w.tiers()["b"] == ("gpu", "sim:0") and w.tiers()["a"] == ("ram", None)
    assert "c" not in w.tiers()
