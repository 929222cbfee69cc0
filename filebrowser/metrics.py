"""The file service's own figures for Prometheus (``prometheus_client``), and ``/metrics``.

Per request, by route template (``/api/fs/download``, never the path asked for, so the
label set stays small), method and status: a count and a latency histogram, and the body
bytes received (uploads) and sent (downloads). At scrape time: tus PATCHes receiving
now, unfinished resumable uploads, and the image index's progress and state.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (tests run many apps
in one process; the global registry would mix them). The service edge adds the other
packages' registries with :meth:`FileMetrics.include`; ``GET /metrics`` serves them all
to any signed-in caller (a scraper uses an API token).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import prometheus_client
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import db
from .access.auth import CurrentUser

if TYPE_CHECKING:
    from .core import FileBrowser
    from .images.service import Images

# "_created" series (a timestamp per label set) double what a scrape carries for nothing
prometheus_client.disable_created_metrics()

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class FileMetrics:
    """The request figures (updated by :class:`MetricsMiddleware`) and the registry that
    ``/metrics`` serves."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("atelier_http_requests", "HTTP requests answered.",
                                ["route", "method", "status"], registry=registry)
        self.seconds = Histogram("atelier_http_request_seconds",
                                 "Time to answer a request, body included.",
                                 ["route", "method"], buckets=BUCKETS, registry=registry)
        self.received = Counter("atelier_http_received_bytes",
                                "Request body bytes received (uploads).", ["route"],
                                registry=registry)
        self.sent = Counter("atelier_http_sent_bytes",
                            "Response body bytes sent (downloads).", ["route"],
                            registry=registry)
        self.tus_patches = Gauge("atelier_tus_patches_in_progress",
                                 "tus PATCH requests receiving data now.", registry=registry)

    def watch(self, fb: FileBrowser, images: Images) -> None:
        """Add the figures read at scrape time: uploads and the index."""
        self.registry.register(_StateCollector(fb, images))

    def include(self, other: CollectorRegistry | Collector) -> None:
        """Serve another package's figures at ``/metrics`` too."""
        self.registry.register(_Forward(other) if isinstance(other, CollectorRegistry)
                               else other)


def _route_of(scope: Scope) -> str:
    path = getattr(scope.get("route"), "path", None)
    return str(path) if path is not None else "unmatched"


class MetricsMiddleware:
    """Pure ASGI (a ``BaseHTTPMiddleware`` would buffer streamed bodies): counts each
    request when its answer ends, however it ends."""

    def __init__(self, app: ASGIApp, metrics: FileMetrics) -> None:
        self.app = app
        self.m = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = sent = 0
        status = 0
        tus_patch = scope["method"] == "PATCH" and scope["path"].startswith("/api/tus/")
        if tus_patch:
            self.m.tus_patches.inc()

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal sent, status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        t0 = time.monotonic()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            if tus_patch:
                self.m.tus_patches.dec()
            route = _route_of(scope)
            method = scope["method"]
            self.m.requests.labels(route, method, str(status or 500)).inc()
            self.m.seconds.labels(route, method).observe(time.monotonic() - t0)
            if received:
                self.m.received.labels(route).inc(received)
            if sent:
                self.m.sent.labels(route).inc(sent)


class _StateCollector(Collector):
    def __init__(self, fb: FileBrowser, images: Images) -> None:
        self.fb = fb
        self.images = images

    def collect(self) -> Iterator[Metric]:
        with self.fb.engine.connect() as conn:
            unfinished = conn.execute(
                sa.select(sa.func.count()).select_from(db.tus_uploads)
                .where(db.tus_uploads.c.final_path.is_(None))).scalar_one()
        yield GaugeMetricFamily("atelier_tus_uploads_unfinished",
                                "Resumable uploads started and not yet complete.",
                                value=unfinished)
        index, service = self.images.index, self.images.service
        if index is None or service is None:
            return
        status = index.status  # flags before counts: once scanning is 0, counts are final
        yield GaugeMetricFamily("atelier_index_scanning", "1 while the image index scans.",
                                value=int(status.scanning))
        yield GaugeMetricFamily("atelier_index_watching",
                                "1 while filesystem events are followed.",
                                value=int(status.watching))
        yield GaugeMetricFamily("atelier_index_errors", "Files the index could not read.",
                                value=status.errors)
        if status.last_scan is not None:
            yield GaugeMetricFamily("atelier_index_last_scan_timestamp_seconds",
                                    "When the last scan ended.", value=status.last_scan)
        files = GaugeMetricFamily("atelier_index_files", "Indexed files by kind.",
                                  labels=["kind"])
        for kind, n in index.counts().items():
            files.add_metric([str(kind)], n)
        yield files


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


def install(app: FastAPI, fb: FileBrowser, images: Images) -> FileMetrics:
    """Count every request of ``app``, serve ``/metrics``, keep the figures on
    ``app.state.metrics``."""
    metrics = FileMetrics(CollectorRegistry(auto_describe=True))
    metrics.watch(fb, images)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.metrics = metrics
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", response_class=Response,
                responses={200: {"description": "Prometheus text exposition format",
                                 "content": {"text/plain": {}}}})
    async def scrape(_: CurrentUser) -> Response:
        """Every package's figures in the Prometheus text format."""
        body = await run_in_threadpool(prometheus_client.generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
    return metrics
