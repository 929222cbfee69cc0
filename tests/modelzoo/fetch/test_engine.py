"""The engine against the knob server on loopback: speed paths, faults, bad input."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from modelzoo.errors import (
    ChecksumMismatch,
    InsufficientSpace,
    NotAModel,
    RateLimited,
    RemoteAuthRequired,
    RemoteError,
    RemoteNotFound,
    SizeMismatch,
)
from modelzoo.fetch import FetchProgress, fetch
from modelzoo.fetch.control import ControlFile

MB = 1024 * 1024


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def ranges(srv) -> list[str]:
    return [r["headers"].get("Range") for r in srv.requests("/f/") if r["headers"].get("Range")]


def test_multi_connection_download_is_exact_and_verified(make_server, settings, tools,
                                                         tmp_path: Path) -> None:
    data = tools.make_safetensors(3 * MB)
    srv = make_server(data)
    seen: list[FetchProgress] = []
    dest = tmp_path / "m.safetensors"
    r = fetch(srv.url(), dest, sha256=tools.sha(data), settings=settings, progress=seen.append)
    assert dest.read_bytes() == data
    assert r.sha256 == tools.sha(data) and r.size == len(data) and not r.reused
    assert leftovers(tmp_path) == []
    assert len({q["client"] for q in srv.requests("/f/")}) >= settings.connections
    assert seen and seen[-1].done == len(data) and seen[-1].total == len(data)
    # the engine asks for identity bodies and identifies as a non-browser
    ua = srv.requests("/f/")[0]["headers"]["User-Agent"]
    assert "Mozilla" not in ua and srv.requests("/f/")[0]["headers"]["Accept-Encoding"] \
        == "identity"


def test_with_a_hash_to_compute_segments_follow_the_file_order(make_server, settings, tools,
                                                               tmp_path: Path) -> None:
    """The hasher reads the done prefix: short segments in file order keep it moving."""
    data = tools.make_safetensors(8 * MB)
    srv = make_server(data)
    srv.knobs.throttle = 4 * MB  # a request's round trip costs little at this speed
    r = fetch(srv.url(), tmp_path / "m.safetensors", sha256=tools.sha(data), settings=settings)
    assert r.sha256 == tools.sha(data)
    # the probe's bytes start the first chunk; the other connections take the next ones
    asked = [tuple(int(x) for x in rng.split("=")[1].split("-")) for rng in ranges(srv)[1:5]]
    chunk = 16 * settings.piece_size  # 1 MiB, not 2 (a quarter of the file each)
    assert sorted(asked) == [(settings.probe_bytes, chunk - 1),
                             *((i * chunk, (i + 1) * chunk - 1) for i in range(1, 4))]


def test_idle_connections_steal_work_until_the_end(make_server, settings, tools,
                                                   tmp_path: Path) -> None:
    data = tools.make_safetensors(2 * MB)
    srv = make_server(data)
    srv.knobs.throttle = 4 * MB
    srv.knobs.slow, srv.knobs.slow_rate = 2, 256 * 1024  # the probe and the first segment
    fetch(srv.url(), tmp_path / "m.safetensors", sha256=tools.sha(data), settings=settings)
    starts = [int(r.split("=")[1].split("-")[0]) for r in ranges(srv)]
    # the probe, four initial segments, then steals starting on piece boundaries
    assert len(starts) > 1 + settings.connections
    assert all(s % settings.piece_size == 0 for s in starts)


def test_server_ignoring_range_gets_a_single_stream(make_server, settings, tools,
                                                    tmp_path: Path) -> None:
    data = tools.make_safetensors(1 * MB)
    srv = make_server(data)
    srv.knobs.ignore_range = True
    r = fetch(srv.url(), tmp_path / "m.safetensors", settings=settings, compute_sha256=True)
    assert (tmp_path / "m.safetensors").read_bytes() == data
    assert r.sha256 == tools.sha(data)
    assert len(srv.requests("/f/")) == 1  # the probe's answer is the stream, read on
    assert leftovers(tmp_path) == []


def test_the_probe_answer_is_the_first_request_not_asked_again(make_server, settings, tools,
                                                               tmp_path: Path) -> None:
    data = tools.make_safetensors(3 * MB)
    srv = make_server(data)
    fetch(srv.url(), tmp_path / "m.safetensors", sha256=tools.sha(data), settings=settings)
    assert (tmp_path / "m.safetensors").read_bytes() == data
    starts = [int(r.split("=")[1].split("-")[0]) for r in ranges(srv)]
    assert starts.count(0) == 1  # offset 0 was asked for once, by the probe
    assert settings.probe_bytes in starts  # the first worker went on from its end


def test_an_empty_file_is_fetched(make_server, settings, tmp_path: Path) -> None:
    """A range of an empty file is unsatisfiable (416): that is the answer, not an error."""
    srv = make_server(b"", name="__init__.py")
    r = fetch(srv.url(), tmp_path / "__init__.py", settings=settings, compute_sha256=True)
    assert (tmp_path / "__init__.py").read_bytes() == b""
    assert r.size == 0 and r.sha256 == hashlib.sha256(b"").hexdigest()
    assert len(srv.requests("/f/")) == 2  # the probe's 416, then the whole (empty) body


def test_missing_content_length_is_fine(make_server, settings, tools, tmp_path: Path) -> None:
    data = tools.make_safetensors(700_000)
    srv = make_server(data)
    srv.knobs.chunked = True
    srv.knobs.ignore_range = True
    fetch(srv.url(), tmp_path / "m.safetensors", sha256=tools.sha(data), settings=settings)
    assert (tmp_path / "m.safetensors").read_bytes() == data


def test_dropped_connections_are_retried(make_server, settings, tools, tmp_path: Path) -> None:
    data = tools.make_safetensors(2 * MB)
    srv = make_server(data)
    srv.knobs.drop_after = 100_000
    srv.knobs.drops = 6  # the probe and five ranges die after 100 kB
    fetch(srv.url(), tmp_path / "m.safetensors", sha256=tools.sha(data), settings=settings)
    assert (tmp_path / "m.safetensors").read_bytes() == data
    assert srv.knobs.drops == 0


def test_stalled_connection_is_dropped_and_retried(make_server, settings, tools,
                                                   tmp_path: Path) -> None:
    data = tools.make_safetensors(1 * MB)
    srv = make_server(data)
    settings = settings.model_copy(update={"stall_timeout": 0.5})
    srv.knobs.stall_after = 70_000
    srv.knobs.stalls = 3  # the probe and two segments go silent mid-body
    fetch(srv.url(), tmp_path / "m.safetensors", sha256=tools.sha(data), settings=settings)
    assert (tmp_path / "m.safetensors").read_bytes() == data
    assert srv.knobs.stalls == 0


def test_retry_after_on_429_and_503_is_honoured(make_server, settings, tools,
                                                tmp_path: Path) -> None:
    data = tools.make_safetensors(1 * MB)
    srv = make_server(data)
    srv.knobs.fail = [(503, 0.2), (429, 0.2), (503, None), (429, 0.1)]
    fetch(srv.url(), tmp_path / "m.safetensors", sha256=tools.sha(data), settings=settings)
    assert (tmp_path / "m.safetensors").read_bytes() == data
    assert srv.knobs.fail == []


def test_endless_429_ends_in_a_rate_limit_error(make_server, settings, tools,
                                                tmp_path: Path) -> None:
    srv = make_server(tools.make_safetensors(100_000))
    srv.knobs.fail_forever = (429, 0)
    with pytest.raises(RateLimited, match="429"):
        fetch(srv.url(), tmp_path / "m.safetensors", settings=settings)
    assert list(tmp_path.iterdir()) == []


def test_auth_goes_to_the_origin_only_and_expired_signed_urls_are_renewed(
        make_server, settings, tools, tmp_path: Path) -> None:
    data = tools.make_safetensors(2 * MB)
    srv = make_server(data)
    srv.knobs.throttle = 1 * MB
    srv.knobs.slow, srv.knobs.slow_rate = 2, 256 * 1024  # later ranges steal from this one
    srv.knobs.signed_ttl = 0.4  # requests made after 0.4 s meet an expired URL
    headers = {"127.0.0.1": {"Authorization": "Bearer SECRET"}}
    fetch(srv.redirect_url, tmp_path / "m.safetensors", sha256=tools.sha(data),
          settings=settings, headers=headers)
    assert (tmp_path / "m.safetensors").read_bytes() == data
    origin, storage = srv.requests("/redirect/"), srv.requests("/signed/")
    assert all(r["headers"].get("Authorization") == "Bearer SECRET" for r in origin)
    assert all("Authorization" not in r["headers"] for r in storage)
    assert all(r["headers"]["Host"].startswith("localhost") for r in storage)
    assert len(origin) > 1  # resolved again after the signed URL expired


def test_corrupted_bytes_fail_the_checksum_and_leave_nothing(make_server, settings, tools,
                                                             tmp_path: Path) -> None:
    data = tools.make_safetensors(1 * MB)
    srv = make_server(data)
    srv.knobs.corrupt_at = 500_000
    with pytest.raises(ChecksumMismatch, match="expected " + tools.sha(data)):
        fetch(srv.url(), tmp_path / "m.safetensors", sha256=tools.sha(data), settings=settings)
    assert list(tmp_path.iterdir()) == []


def test_html_login_page_is_refused_with_a_clear_message(make_server, settings, tools,
                                                         tmp_path: Path) -> None:
    srv = make_server(tools.make_safetensors(1 * MB))
    srv.knobs.html = True
    with pytest.raises(NotAModel, match="text/html.*login"):
        fetch(srv.url(), tmp_path / "m.safetensors", settings=settings)
    assert list(tmp_path.iterdir()) == []


def test_html_page_disguised_as_octet_stream_is_refused(make_server, settings, tools,
                                                        tmp_path: Path) -> None:
    page = tools.login_page * 2000  # big enough to be downloaded in segments
    srv = make_server(page)
    with pytest.raises(NotAModel, match="HTML page"):
        fetch(srv.url(), tmp_path / "m.safetensors", settings=settings)
    assert list(tmp_path.iterdir()) == []  # not even a partial: nothing to resume


def test_truncated_safetensors_is_refused_after_download(make_server, settings, tools,
                                                         tmp_path: Path) -> None:
    data = tools.make_safetensors(1 * MB)[:-1000]  # the server itself has a cut file
    srv = make_server(data)
    with pytest.raises(NotAModel, match="incomplete download"):
        fetch(srv.url(), tmp_path / "m.safetensors", settings=settings)
    assert list(tmp_path.iterdir()) == []


def test_content_length_longer_than_the_body_fails_cleanly(make_server, settings, tools,
                                                           tmp_path: Path) -> None:
    data = tools.make_safetensors(300_000)
    srv = make_server(data)
    srv.knobs.ignore_range = True
    srv.knobs.length_delta = 5000  # announces more than it sends, then closes
    settings = settings.model_copy(update={"retries": 2})
    with pytest.raises(RemoteError, match="300000|got"):
        fetch(srv.url(), tmp_path / "m.safetensors", settings=settings)
    assert list(tmp_path.iterdir()) == []


def test_expected_size_differs_nothing_is_written(make_server, settings, tools,
                                                  tmp_path: Path) -> None:
    srv = make_server(tools.make_safetensors(300_000))
    with pytest.raises(SizeMismatch, match="expected 123"):
        fetch(srv.url(), tmp_path / "m.safetensors", size=123, settings=settings)
    assert list(tmp_path.iterdir()) == []


def test_not_found_and_auth_errors_are_clear(make_server, settings, tools,
                                             tmp_path: Path) -> None:
    srv = make_server(tools.make_safetensors(1000))
    with pytest.raises(RemoteNotFound, match="File not found"):
        fetch(srv.url("/nope"), tmp_path / "m.safetensors", settings=settings)
    srv.knobs.fail_forever = (401, None)
    with pytest.raises(RemoteAuthRequired, match="token"):
        fetch(srv.url(), tmp_path / "m.safetensors", settings=settings)
    assert list(tmp_path.iterdir()) == []


def test_free_space_is_checked_before_anything_is_written(make_server, settings, tools,
                                                         tmp_path: Path) -> None:
    srv = make_server(tools.make_safetensors(300_000))
    settings = settings.model_copy(update={"reserve_bytes": 1 << 60})
    with pytest.raises(InsufficientSpace, match="headroom"):
        fetch(srv.url(), tmp_path / "m.safetensors", settings=settings)
    assert list(tmp_path.iterdir()) == []


def test_cancel_leaves_a_resumable_partial_and_resume_fetches_only_the_rest(
        make_server, settings, tools, tmp_path: Path) -> None:
    data = tools.make_safetensors(3 * MB)
    srv = make_server(data)
    srv.knobs.throttle = 512 * 1024
    dest = tmp_path / "m.safetensors"
    cancel = threading.Event()

    def stop_halfway(p: FetchProgress) -> None:
        if p.done >= len(data) // 2:
            cancel.set()

    with pytest.raises(KeyboardInterrupt):
        fetch(srv.url(), dest, settings=settings, progress=stop_halfway, cancel=cancel)
    assert leftovers(tmp_path) == [".m.safetensors.part", ".m.safetensors.part.ctl"]
    ctl = ControlFile.load(tmp_path / ".m.safetensors.part.ctl")
    assert ctl is not None
    kept = sum(min(ctl.piece_size, len(data) - i * ctl.piece_size)
               for i, d in enumerate(ctl.done) if d)
    ctl.close()
    assert kept >= len(data) // 2 - settings.connections * settings.piece_size
    srv.knobs.throttle = 0
    r = fetch(srv.url(), dest, sha256=tools.sha(data), settings=settings)
    assert dest.read_bytes() == data
    assert r.resumed == kept
    # only what was not recorded is fetched again (plus the probe's small read)
    assert r.fetched <= len(data) - kept + settings.probe_bytes
    assert leftovers(tmp_path) == []


def test_remote_change_between_runs_starts_over(make_server, settings, tools,
                                                tmp_path: Path) -> None:
    old = tools.make_safetensors(2 * MB, seed=1)
    srv = make_server(old)
    srv.knobs.throttle = 512 * 1024
    dest = tmp_path / "m.safetensors"
    cancel = threading.Event()
    with pytest.raises(KeyboardInterrupt):
        fetch(srv.url(), dest, settings=settings, cancel=cancel,
              progress=lambda p: cancel.set() if p.done > MB // 2 else None)
    new = tools.make_safetensors(2 * MB, seed=2)
    srv.set_data(new)  # same size, other bytes, other ETag
    srv.knobs.throttle = 0
    r = fetch(srv.url(), dest, sha256=tools.sha(new), settings=settings)
    assert dest.read_bytes() == new and r.resumed == 0


def test_remote_change_mid_download_restarts_cleanly(make_server, settings, tools,
                                                     tmp_path: Path) -> None:
    old, new = tools.make_safetensors(2 * MB, seed=1), tools.make_safetensors(2 * MB, seed=2)
    srv = make_server(old)
    srv.knobs.throttle = 1 * MB
    srv.knobs.slow, srv.knobs.slow_rate = 2, 64 * 1024  # later ranges steal from this one
    swapped = threading.Event()

    def swap(p: FetchProgress) -> None:  # first report: before any segment is done
        if p.done > 0 and not swapped.is_set():
            swapped.set()
            srv.set_data(new)  # If-Range no longer matches: 200s arrive

    r = fetch(srv.url(), tmp_path / "m.safetensors", settings=settings, progress=swap,
              compute_sha256=True)
    assert swapped.is_set()
    assert (tmp_path / "m.safetensors").read_bytes() == new and r.sha256 == tools.sha(new)
    assert any(r["headers"].get("If-Range") for r in srv.requests("/f/"))


def test_folder_destination_takes_the_name_from_content_disposition(
        make_server, settings, tools, tmp_path: Path) -> None:
    data = tools.make_safetensors(200_000)
    srv = make_server(data, name="dreamshaper_8.safetensors")
    r = fetch(srv.redirect_url, tmp_path, settings=settings)
    assert r.path == tmp_path / "dreamshaper_8.safetensors"
    assert r.path.read_bytes() == data


def test_existing_file_is_reused_when_it_matches(make_server, settings, tools,
                                                 tmp_path: Path) -> None:
    data = tools.make_safetensors(200_000)
    srv = make_server(data)
    dest = tmp_path / "m.safetensors"
    fetch(srv.url(), dest, settings=settings)
    n = len(srv.log)
    r = fetch(srv.url(), dest, sha256=tools.sha(data), settings=settings)
    assert r.reused and r.sha256 == tools.sha(data) and len(srv.log) == n
    dest.write_bytes(b"x" * len(data))  # same size, wrong bytes: fetched again
    r = fetch(srv.url(), dest, sha256=tools.sha(data), settings=settings)
    assert not r.reused and dest.read_bytes() == data


def test_bandwidth_limit_and_one_connection_still_arrive_intact(make_server, settings, tools,
                                                               tmp_path: Path) -> None:
    data = tools.make_safetensors(600_000)
    srv = make_server(data)
    settings = settings.model_copy(update={"bandwidth_limit": 4 * MB})
    fetch(srv.url(), tmp_path / "m.safetensors", sha256=tools.sha(data), settings=settings,
          connections=1)
    assert (tmp_path / "m.safetensors").read_bytes() == data
    assert len({q["client"] for q in srv.requests("/f/")}) <= 2  # probe + one connection


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 4 MiB filesystem (tmpfs; needs root, as in CI)."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_file_bigger_than_the_disk_is_refused_up_front(make_server, settings, tools,
                                                       small_disk: Path) -> None:
    srv = make_server(tools.make_safetensors(6 * MB))
    with pytest.raises(InsufficientSpace, match="free"):
        fetch(srv.url(), small_disk / "m.safetensors", settings=settings)
    assert list(small_disk.iterdir()) == []


def test_disk_filling_up_mid_stream_leaves_nothing(make_server, settings, tools,
                                                   small_disk: Path) -> None:
    srv = make_server(tools.make_safetensors(6 * MB))
    srv.knobs.chunked = True  # no size known: the disk fills up while writing
    srv.knobs.ignore_range = True
    with pytest.raises(InsufficientSpace, match="filled up"):
        fetch(srv.url(), small_disk / "m.safetensors", settings=settings)
    assert list(small_disk.iterdir()) == []


def test_proxy_from_settings_carries_every_request(make_server, settings, tools,
                                                   tmp_path: Path) -> None:
    data = tools.make_safetensors(500_000)
    srv = make_server(data)  # it also speaks the proxy form of HTTP requests
    settings = settings.model_copy(update={"proxy": srv.url("")})
    # a host that does not resolve: only the proxy can get us there
    fetch("http://files.invalid/f/model.safetensors", tmp_path / "m.safetensors",
          sha256=tools.sha(data), settings=settings)
    assert (tmp_path / "m.safetensors").read_bytes() == data
    assert srv.log and all(r["proxied"] for r in srv.log)


def test_proxy_from_the_environment(make_server, settings, tools, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = tools.make_safetensors(200_000)
    srv = make_server(data)
    monkeypatch.setenv("HTTP_PROXY", srv.url(""))
    fetch("http://files.invalid/f/model.safetensors", tmp_path / "m.safetensors",
          sha256=tools.sha(data), settings=settings)
    assert all(r["proxied"] for r in srv.log)


# ---- pages posing as files, whatever the name ---------------------------------------

def test_login_page_saved_under_a_bare_name_is_refused(make_server, settings, tools,
                                                       tmp_path: Path) -> None:
    """Civitai's /api/download/models/1002 answering 200 with its login page."""
    srv = make_server(tools.make_safetensors(1 * MB), name="1002")
    srv.knobs.html = True
    with pytest.raises(NotAModel, match="HTML page.*Sign in"):
        fetch(srv.url("/f/1002"), tmp_path, settings=settings)
    assert list(tmp_path.iterdir()) == []


def test_json_error_body_is_refused_with_its_message(make_server, settings, tools,
                                                     tmp_path: Path) -> None:
    srv = make_server(tools.make_safetensors(1 * MB), name="1002")
    srv.knobs.page = ("application/json", b'{"error": "Unauthorized: this model needs a key"}')
    with pytest.raises(NotAModel, match="Unauthorized: this model needs a key"):
        fetch(srv.url("/f/1002"), tmp_path / "1002", settings=settings)
    srv.knobs.page = ("application/octet-stream", b'{"error": "Model is archived"}')
    with pytest.raises(NotAModel, match="Model is archived"):
        fetch(srv.url("/f/1002"), tmp_path / "1002", settings=settings)
    assert list(tmp_path.iterdir()) == []


def test_a_model_under_a_bare_name_and_a_config_json_are_fetched(make_server, settings,
                                                                 tools, tmp_path: Path) -> None:
    data = tools.make_safetensors(1 * MB)
    srv = make_server(data, name="1002")
    fetch(srv.url("/f/1002"), tmp_path, settings=settings)
    assert (tmp_path / "1002").read_bytes() == data
    config = b'{"_class_name": "AutoencoderKL", "latent_channels": 4}'
    cfg = make_server(config, name="config.json")
    cfg.knobs.content_type = "application/json"
    fetch(cfg.url(), tmp_path / "vae", settings=settings, validator="json")
    fetch(cfg.url(), tmp_path / "config.json", settings=settings)
    assert (tmp_path / "vae").read_bytes() == (tmp_path / "config.json").read_bytes() == config
    with pytest.raises(NotAModel, match="JSON"):  # the same body where a model is expected
        fetch(cfg.url(), tmp_path / "model.ckpt", settings=settings)
    assert not (tmp_path / "model.ckpt").exists()


# ---- answers that contradict themselves fail at once --------------------------------

def test_content_length_disagreeing_with_content_range_fails_fast(make_server, settings,
                                                                  tools, tmp_path: Path) -> None:
    srv = make_server(tools.make_safetensors(2 * MB))
    srv.knobs.range_length_delta = 100
    with pytest.raises(RemoteError, match="Content-Range"):
        fetch(srv.url(), tmp_path / "m.safetensors", settings=settings)
    assert len(srv.requests("/f/")) == 1  # no retry can fix it
    assert list(tmp_path.iterdir()) == []


def test_server_without_range_lying_about_its_length_fails_after_one_check(
        make_server, settings, tools, tmp_path: Path) -> None:
    data = tools.make_safetensors(300_000)
    srv = make_server(data)
    srv.knobs.ignore_range = True
    srv.knobs.length_delta = 5000  # announces more than it has, every time
    with pytest.raises(RemoteError, match=r"got \d+ of \d+ bytes, twice"):
        fetch(srv.url(), tmp_path / "m.safetensors", settings=settings)  # retries=6
    assert len(srv.requests("/f/")) <= 3  # the probe, the download and one check
    assert list(tmp_path.iterdir()) == []


def test_whole_file_answer_to_a_mid_file_range_fails_fast(make_server, settings, tools,
                                                          tmp_path: Path) -> None:
    srv = make_server(tools.make_safetensors(2 * MB))
    srv.knobs.ranges_from_zero_only = True  # 206 to bytes=0-..., 200 to anything else
    with pytest.raises(RemoteError, match="whole file"):
        fetch(srv.url(), tmp_path / "m.safetensors", settings=settings)
    # the probe and a request or two per connection (the one starting at 0 succeeds and
    # may take another segment before the failure stops it): no retries, no restart
    assert len(srv.requests("/f/")) <= 1 + 2 * settings.connections
    assert not (tmp_path / "m.safetensors").exists()
