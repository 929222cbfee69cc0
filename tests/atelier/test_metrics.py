"""``/metrics`` of the composed service: the file service's own figures (requests by route
and status, bytes up and down, uploads, the index) beside the download queue's and the
GPU residency's, in the format Prometheus reads; a signed-in caller only."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from ..conftest import Server


def scrape(srv: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = srv.session().get(f"{srv.url}/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def test_metrics_count_routes_bytes_uploads_and_the_other_packages(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    import requests

    assert requests.get(f"{srv.url}/metrics", timeout=10).status_code == 401
    s = srv.session()
    data = os.urandom(300_000)
    # a resumable upload left unfinished, and one finished
    meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                    for k, v in (("filename", "a.bin"), ("folder", "users/admin")))
    tus = {"Tus-Resumable": "1.0.0"}
    half = s.post(f"{srv.url}/api/tus/", headers={**tus, "Upload-Length": "10",
                                                  "Upload-Metadata": meta.replace("a.bin",
                                                                                  "b.bin")})
    assert half.status_code == 201
    loc = s.post(f"{srv.url}/api/tus/", headers={
        **tus, "Upload-Length": str(len(data)), "Upload-Metadata": meta}).headers["Location"]
    r = s.patch(f"{srv.url}{loc}" if loc.startswith("/") else loc, data=data, headers={
        **tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 204
    got = s.get(f"{srv.url}/api/fs/download", params={"path": "users/admin/a.bin"})
    assert got.content == data
    assert s.get(f"{srv.url}/api/fs/stat", params={"path": "users/nobody"}).status_code == 404
    m = scrape(srv)
    ok = ("atelier_http_requests_total",
          (("method", "GET"), ("route", "/api/fs/download"), ("status", "200")))
    assert m[ok] >= 1
    assert m[("atelier_http_requests_total",
              (("method", "GET"), ("route", "/api/fs/stat"), ("status", "404")))] >= 1
    assert m[("atelier_http_sent_bytes_total", (("route", "/api/fs/download"),))] >= len(data)
    assert m[("atelier_http_received_bytes_total", (("route", "/api/tus/{uid}"),))] >= len(data)
    assert m[("atelier_http_request_seconds_count",
              (("method", "GET"), ("route", "/api/fs/download")))] >= 1
    assert m[("atelier_tus_uploads_unfinished", ())] == 1
    assert m[("atelier_tus_patches_in_progress", ())] == 0
    assert ("atelier_index_scanning", ()) in m
    # the other packages' figures are served beside them
    assert m[("atelier_model_jobs", (("state", "queued"),))] == 0
    assert any(name.startswith("atelier_gpu_") for name, _ in m)
    # a path the caller asked for never becomes a label (the label set stays small)
    assert not any("users/" in v for _, labels in m for _, v in labels)
    # counted when the answer ends: a second scrape sees the first one
    time.sleep(0.05)
    assert scrape(srv)[("atelier_http_requests_total",
                        (("method", "GET"), ("route", "/metrics"), ("status", "200")))] >= 1
