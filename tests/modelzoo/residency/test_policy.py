"""Eviction policies, on their own: speeds, GreedyDual-Size-Frequency, tier choices."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from modelzoo.residency.backends.base import ModelSpec
from modelzoo.residency.devices import GIB
from modelzoo.residency.footprint import Footprint
from modelzoo.residency.policy import Policy, Speeds


@dataclass
class Model:
    spec: ModelSpec
    uses: int = 0
    last_used: int = 0
    value: float = 0.0

    @property
    def nbytes(self) -> int:
        return self.spec.nbytes


def model(gib: float, disk_gib: float | None = None) -> Model:
    n = int(gib * GIB)
    d = int((disk_gib if disk_gib is not None else gib) * GIB)
    return Model(ModelSpec(f"m{gib}-{d}", Path("/x"), Footprint({"unet": n}, d)))


def test_speeds_follow_measures_and_assume_copies_down_like_copies_up() -> None:
    s = Speeds()
    assert s.seconds("d2h", GIB) == s.seconds("h2d", GIB) == pytest.approx(0.1)
    s.observe("h2d", GIB, 0.5)  # the first measure replaces the assumption
    assert s.seconds("d2h", GIB) == pytest.approx(0.5)
    s.observe("h2d", GIB, 1.0)  # then an exponential average
    assert s.seconds("h2d", GIB) == pytest.approx(1 / (0.7 * 2 + 0.3 * 1))
    s.observe("d2h", GIB, 0.25)
    assert s.seconds("d2h", GIB) == pytest.approx(0.25)
    s.observe("disk", 1000, 0.0)  # too small or instant: ignored
    assert "disk" not in s.measured


def test_greedy_dual_size_frequency_orders_by_uses_per_byte_and_ages() -> None:
    p = Policy("cost", Speeds())
    big, small, wide = model(12), model(2), model(2, disk_gib=4)  # wide: fp32 on disk
    for m in (big, small, wide):
        p.touch(m)
    p.touch(small)
    assert p.rank(big) < p.rank(wide) < p.rank(small)  # per byte, uses, bytes on disk
    p.evicted(small)  # L rises to the evicted priority: the next use outranks the past
    p.touch(big)
    assert p.rank(big) > p.rank(small)
    assert p.rank_if_used(wide) > p.rank(wide)


def test_lru_orders_by_recency_only() -> None:
    p = Policy("lru", Speeds())
    a, b = model(2), model(12)
    p.touch(a)
    p.touch(a)
    p.touch(b)
    assert p.rank(a) < p.rank(b)
    assert p.worth_copying_down(a) and not p.keeps_ram_copies()


def test_copying_down_depends_on_measured_speeds() -> None:
    s = Speeds()
    p = Policy("cost", s)
    m = model(6.5)
    s.bps.update(disk=1.0 * GIB, h2d=12.0 * GIB)  # a NAS beside PCIe
    assert p.worth_copying_down(m) and p.keeps_ram_copies()
    s.bps.update(disk=3.0 * GIB, h2d=3.0 * GIB)  # a page cache as fast as the copy
    assert not p.worth_copying_down(m)


def test_unknown_policy() -> None:
    with pytest.raises(ValueError, match="cost, lru"):
        Policy("mru", Speeds())
