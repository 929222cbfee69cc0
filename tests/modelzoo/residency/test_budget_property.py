"""Many random traces: the budget is never exceeded, whatever happens in between."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelzoo.errors import ModelBusy, ModelTooLarge, OutOfDeviceMemory
from modelzoo.residency.backends.tensors import TensorsBackend
from modelzoo.residency.catalog import ModelCatalog
from modelzoo.residency.devices import SimulatedDevice
from modelzoo.residency.footprint import ReserveRule
from modelzoo.residency.manager import ResidencyManager
from modelzoo.residency.plan import Tier

K = 1024
SIZES = [8, 12, 16, 24, 32, 40, 48, 64]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory, write_ckpt) -> ModelCatalog:
    root: Path = tmp_path_factory.mktemp("models")
    for i, kib in enumerate(SIZES):
        write_ckpt(root / f"m{i}.safetensors", {"unet": kib * K * 3 // 4,
                                                     "vae": kib * K // 4}, seed=i)
    return ModelCatalog(root)


op = st.one_of(
    st.tuples(st.just("acquire"), st.integers(0, len(SIZES) - 1), st.integers(0, 1),
              st.sampled_from([(64, 64), (128, 128), (256, 128)])),
    st.tuples(st.just("external"), st.integers(0, 1), st.integers(0, 100)),
    st.tuples(st.just("pin"), st.integers(0, len(SIZES) - 1), st.booleans()),
    st.tuples(st.just("unload"), st.integers(0, len(SIZES) - 1), st.sampled_from(["ram", "disk"])),
    st.tuples(st.just("prefetch"), st.integers(0, len(SIZES) - 1)),
    st.tuples(st.just("run"), st.integers(0, len(SIZES) - 1), st.integers(0, 1),
              st.integers(0, 40)),
)


class Watched(SimulatedDevice):
    """Counts allocations refused outside a job: a planning bug, never a racing process."""

    in_job = False
    refused = 0

    def allocate(self, nbytes: int) -> None:
        try:
            super().allocate(nbytes)
        except Exception:
            if not self.in_job:
                self.refused += 1
            raise


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(gpus=st.lists(st.integers(40, 160), min_size=2, max_size=2),
       ram=st.integers(40, 200), policy=st.sampled_from(["cost", "lru"]),
       trace=st.lists(op, min_size=1, max_size=40))
def test_budgets_hold_on_random_traces(catalog: ModelCatalog, gpus: list[int], ram: int,
                                       policy: str, trace: list[tuple]) -> None:
    devs = [Watched(f"sim:{i}", c * K) for i, c in enumerate(gpus)]
    host = Watched("ram", ram * K, kind="ram")
    # reserve grows with the image: 2 KiB per 4096 pixels
    rule = ReserveRule(base=4 * K, extra=0, per_megapixel=512 * K)
    m = ResidencyManager(TensorsBackend(), devs, host, catalog, reserve=rule, policy=policy)
    for step in trace:
        kind = step[0]
        try:
            if kind == "acquire":
                _, i, g, (w, h) = step
                with m.acquire(f"m{i}", f"sim:{g}", width=w, height=h) as lease:
                    d = devs[g]
                    # the decision left the inference reserve free
                    assert d.used + d.external + m.reserve_for(w, h) <= d.capacity
                    assert lease.handle and d.name in m.locations(f"m{i}")
            elif kind == "external":
                _, g, pct = step
                d = devs[g]
                d.set_external(min(d.capacity - d.used, d.capacity * pct // 100))
            elif kind == "pin":
                m.pin(f"m{step[1]}", step[2])
            elif kind == "unload":
                m.unload(f"m{step[1]}", Tier(step[2]))
            elif kind == "prefetch":
                m.prefetch(f"m{step[1]}")
            elif kind == "run":
                _, i, g, act = step

                def job(handle: object, device: Watched, act: int = act) -> None:
                    device.in_job = True
                    try:
                        device.allocate(act * K)
                        device.release(act * K)
                    finally:
                        device.in_job = False

                m.run(f"m{i}", job, f"sim:{g}")  # type: ignore[arg-type]
        except (ModelTooLarge, ModelBusy, OutOfDeviceMemory):
            pass
        for d in [*devs, host]:
            assert d.refused == 0, "a planned move ran out of memory"
        for d in devs:
            assert d.peak <= d.capacity
            assert d.used == m.ours(d.name)
        assert host.peak <= host.capacity
        assert host.used == m.ours("ram")
        assert all(e.in_use == 0 and not e.moving for e in m.entries())
