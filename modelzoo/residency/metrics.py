"""Switch metrics for Prometheus (``prometheus_client``).

Counted per acquisition: the tier the model came from (``gpu`` is a hit, ``ram`` a warm
switch, ``disk`` a cold one) and the seconds it took; evictions by path; CUDA
out-of-memory retries. Gauges (free memory, resident bytes, queue lengths) and the hit
ratio are read at scrape time: the service hands :meth:`ResidencyMetrics.sample_with` a
function that yields them. Each manager has its own registry; the service edge adds it
to the app's, which ``/metrics`` serves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

prometheus_client.disable_created_metrics()  # no "_created" timestamp per series

BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
Labels = tuple[tuple[str, str], ...]
Gauges = Iterable[tuple[str, str, Labels, float]]  # (name, help, labels, value)


class ResidencyMetrics:
    def __init__(self, prefix: str = "atelier_gpu") -> None:
        self.prefix = prefix
        self.registry = CollectorRegistry(auto_describe=True)
        self._switches = Counter(f"{prefix}_switches", "Model acquisitions by device and "
                                 "the tier the model came from (gpu = hit).",
                                 ["device", "source"], registry=self.registry)
        self._seconds = Histogram(f"{prefix}_switch_seconds",
                                  "Seconds to make a model resident, by source tier.",
                                  ["source"], buckets=BUCKETS, registry=self.registry)
        self._evictions = Counter(f"{prefix}_evictions", "Models moved down a tier to make "
                                  "room.", ["from", "to"], registry=self.registry)
        self._oom = Counter(f"{prefix}_oom_retries", "CUDA out-of-memory errors answered by "
                            "one eviction and a retry.", registry=self.registry)
        self._counts: dict[tuple[str, str], int] = {}  # (device, source): for hit ratios
        self._lock = threading.Lock()
        self._sampler: Callable[[], Gauges] | None = None
        self.registry.register(_Sampled(self))

    def record_switch(self, device: str, source: str, seconds: float) -> None:
        self._switches.labels(device, source).inc()
        self._seconds.labels(source).observe(seconds)
        with self._lock:
            self._counts[(device, source)] = self._counts.get((device, source), 0) + 1

    def record_eviction(self, src: str, dst: str) -> None:
        self._evictions.labels(src, dst).inc()

    def record_oom(self) -> None:
        self._oom.inc()

    def sample_with(self, sampler: Callable[[], Gauges]) -> None:
        """Gauges read at each scrape (free memory, resident bytes, queues)."""
        self._sampler = sampler

    def switches(self) -> dict[str, int]:
        """Total acquisitions by source tier."""
        out: dict[str, int] = {}
        with self._lock:
            for (_, source), n in self._counts.items():
                out[source] = out.get(source, 0) + n
        return out

    def hit_rate(self, device: str | None = None) -> float | None:
        with self._lock:
            rows = list(self._counts.items())
        total = sum(n for (dev, _), n in rows if device in (None, dev))
        hits = sum(n for (dev, src), n in rows if device in (None, dev) and src == "gpu")
        return hits / total if total else None

    @property
    def oom_retries(self) -> int:
        return int(self._oom._value.get())

    def devices(self) -> list[str]:
        with self._lock:
            return sorted({dev for dev, _ in self._counts})

    def render(self, gauges: Gauges = ()) -> str:
        """The exposition text (with ``gauges`` as well, if given)."""
        text = generate_latest(self.registry).decode()
        extra = list(gauges)
        if extra:
            one_off = CollectorRegistry(auto_describe=False)
            one_off.register(_Fixed(self.prefix, extra))
            text += generate_latest(one_off).decode()
        return text


class _Sampled(Collector):
    """The hit ratio per device, and the service's gauges, read when scraped."""

    def __init__(self, metrics: ResidencyMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        ratio = GaugeMetricFamily(f"{self.m.prefix}_hit_ratio", "Share of acquisitions "
                                  "whose model was already on the device.", labels=["device"])
        for dev in self.m.devices():
            ratio.add_metric([dev], self.m.hit_rate(dev) or 0.0)
        yield ratio
        if self.m._sampler is not None:
            yield from _families(self.m.prefix, self.m._sampler())


class _Fixed(Collector):
    def __init__(self, prefix: str, gauges: list[tuple[str, str, Labels, float]]) -> None:
        self.prefix = prefix
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        yield from _families(self.prefix, self.gauges)


def _families(prefix: str, gauges: Gauges) -> Iterator[Metric]:
    families: dict[str, GaugeMetricFamily] = {}
    for name, text, labels, value in gauges:
        fam = families.get(name)
        if fam is None:
            fam = families[name] = GaugeMetricFamily(f"{prefix}_{name}", text,
                                                     labels=[k for k, _ in labels])
        fam.add_metric([v for _, v in labels], value)
    yield from families.values()
