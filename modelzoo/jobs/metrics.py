"""The download queue's figures for Prometheus, read from the database at each scrape, so
every replica reports the same numbers: jobs per state and the bytes they have fetched."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .store import JobStore

STATES = ("queued", "running", "paused", "done", "failed", "cancelled")


class JobsCollector(Collector):
    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[Metric]:
        counts = self.jobs.counts()
        jobs = GaugeMetricFamily("atelier_model_jobs", "Model downloads by state.",
                                 labels=["state"])
        done = GaugeMetricFamily("atelier_model_jobs_bytes",
                                 "Bytes the model downloads in each state have fetched.",
                                 labels=["state"])
        for state in (*STATES, *sorted(set(counts) - set(STATES))):
            n, nbytes = counts.get(state, (0, 0))
            jobs.add_metric([state], n)
            done.add_metric([state], nbytes)
        yield jobs
        yield done
