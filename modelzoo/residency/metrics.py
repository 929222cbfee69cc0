"""Switch metrics, rendered in the Prometheus text exposition format (version 0.0.4).

Counted per acquisition: the tier the model came from (``gpu`` is a hit, ``ram`` a warm
switch, ``disk`` a cold one) and the seconds it took; evictions by path; CUDA
out-of-memory retries. Gauges (free memory, resident bytes, queue lengths) are sampled
at scrape time by whoever renders, through ``gauges``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _num(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    return repr(float(v)) if isinstance(v, float) and not v.is_integer() else str(int(v))


class ResidencyMetrics:
    def __init__(self, prefix: str = "atelier_gpu") -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._switches: dict[Labels, int] = {}
        self._hist: dict[Labels, list[float]] = {}  # bucket counts..., sum, count
        self._evictions: dict[Labels, int] = {}
        self._oom = 0

    def record_switch(self, device: str, source: str, seconds: float) -> None:
        key = (("device", device), ("source", source))
        with self._lock:
            self._switches[key] = self._switches.get(key, 0) + 1
            h = self._hist.setdefault((("source", source),), [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def record_eviction(self, src: str, dst: str) -> None:
        key = (("from", src), ("to", dst))
        with self._lock:
            self._evictions[key] = self._evictions.get(key, 0) + 1

    def record_oom(self) -> None:
        with self._lock:
            self._oom += 1

    def switches(self) -> dict[str, int]:
        """Total acquisitions by source tier."""
        out: dict[str, int] = {}
        with self._lock:
            for labels, n in self._switches.items():
                source = dict(labels)["source"]
                out[source] = out.get(source, 0) + n
        return out

    def hit_rate(self, device: str | None = None) -> float | None:
        with self._lock:
            rows = [(dict(k), n) for k, n in self._switches.items()]
        total = sum(n for k, n in rows if device in (None, k["device"]))
        hits = sum(n for k, n in rows if device in (None, k["device"]) and k["source"] == "gpu")
        return hits / total if total else None

    @property
    def oom_retries(self) -> int:
        return self._oom

    def render(self, gauges: Iterable[tuple[str, str, Labels, float]] = ()) -> str:
        """Prometheus text; ``gauges`` yields (name, help, labels, value) sampled by the caller."""
        p = self.prefix
        lines: list[str] = []

        def head(name: str, kind: str, text: str) -> None:
            lines.append(f"# HELP {p}_{name} {text}")
            lines.append(f"# TYPE {p}_{name} {kind}")

        with self._lock:
            switches = dict(self._switches)
            hist = {k: list(v) for k, v in self._hist.items()}
            evictions = dict(self._evictions)
            oom = self._oom
        head("switches_total", "counter",
             "Model acquisitions by device and the tier the model came from (gpu = hit).")
        for labels, n in sorted(switches.items()):
            lines.append(f"{p}_switches_total{_labels(labels)} {n}")
        head("switch_seconds", "histogram", "Seconds to make a model resident, by source tier.")
        for labels, h in sorted(hist.items()):
            for i, bound in enumerate(BUCKETS):
                le = (("le", repr(float(bound))),)
                lines.append(f"{p}_switch_seconds_bucket{_labels(labels, le)} {int(h[i])}")
            lines.append(f"{p}_switch_seconds_bucket{_labels(labels, (('le', '+Inf'),))}"
                         f" {int(h[-1])}")
            lines.append(f"{p}_switch_seconds_sum{_labels(labels)} {h[-2]!r}")
            lines.append(f"{p}_switch_seconds_count{_labels(labels)} {int(h[-1])}")
        head("hit_ratio", "gauge", "Share of acquisitions whose model was already on the device.")
        devices = sorted({dict(k)["device"] for k in switches})
        for dev in devices:
            rate = self.hit_rate(dev)
            lines.append(f"{p}_hit_ratio{_labels((('device', dev),))} {rate or 0.0!r}")
        head("evictions_total", "counter", "Models moved down a tier to make room.")
        for labels, n in sorted(evictions.items()):
            lines.append(f"{p}_evictions_total{_labels(labels)} {n}")
        head("oom_retries_total", "counter",
             "CUDA out-of-memory errors answered by one eviction and a retry.")
        lines.append(f"{p}_oom_retries_total {oom}")
        seen: set[str] = set()
        for name, text, labels, value in gauges:
            if name not in seen:
                head(name, "gauge", text)
                seen.add(name)
            lines.append(f"{p}_{name}{_labels(labels)} {_num(value)}")
        return "\n".join(lines) + "\n"
