"""``atelier fetch``: exit codes, messages, Ctrl-C and resume."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atelier_io.progress import parse_size
from modelzoo.fetch.cli import _mirrors_for, register

MB = 1024 * 1024


def test_register_adds_the_fetch_subcommand(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="atelier")
    register(parser.add_subparsers())
    args = parser.parse_args(["fetch", "http://h/a.safetensors", "--to", str(tmp_path),
                              "--connections", "4", "--sha256", "ab" * 32,
                              "--mirror", "https://mirror.example", "--piece-size", "2M"])
    assert args.connections == 4 and args.piece_size == 2 * MB and callable(args.func)
    args = parser.parse_args(["fetch", "civitai:1", "hf:org/repo", "--root", str(tmp_path),
                              "--exclude", "*.bin", "--exclude", "*.fp16.*", "--dry-run"])
    assert args.refs == ["civitai:1", "hf:org/repo"] and args.to is None
    assert args.exclude == ["*.bin", "*.fp16.*"] and args.dry_run
    with pytest.raises(SystemExit):
        parser.parse_args(["fetch"])  # a reference is required


def test_sizes_and_mirror_rewriting() -> None:
    assert parse_size("512K") == 512 * 1024 and parse_size("1.5m") == 3 * MB // 2
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("fast")
    url = "https://huggingface.co/org/repo/resolve/main/m.safetensors?download=1"
    assert _mirrors_for(url, ["https://hf-mirror.com"], single=False) == [
        "https://hf-mirror.com/org/repo/resolve/main/m.safetensors?download=1"]
    assert _mirrors_for(url, ["http://x/other.bin"], single=True) == ["http://x/other.bin"]


def test_fetch_verifies_and_prints_the_path(make_server, tools, tmp_path: Path,
                                            child_env) -> None:
    data = tools.make_safetensors(1 * MB)
    srv = make_server(data)
    out = subprocess.run(
        tools.fetch_cmd(srv.url(), "--to", str(tmp_path), "--sha256", tools.sha(data),
                        "-H", "Authorization: Bearer T", "-q"),
        env=child_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{tmp_path / 'model.safetensors'}  sha256 {tools.sha(data)}"
    assert all(r["headers"].get("Authorization") == "Bearer T" for r in srv.log)


def test_failure_gives_a_message_and_exit_1(make_server, tools, tmp_path: Path,
                                            child_env) -> None:
    srv = make_server(tools.make_safetensors(1000))
    srv.knobs.html = True
    out = subprocess.run(tools.fetch_cmd(srv.url(), "--to", str(tmp_path), "-q"),
                         env=child_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "error:" in out.stderr and "login" in out.stderr
    assert list(tmp_path.iterdir()) == []
    bad = subprocess.run(tools.fetch_cmd("http://a/x", "http://b/y", "--to", str(tmp_path),
                                         "--sha256", "00" * 32),
                         env=child_env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "one URL" in bad.stderr


def test_ctrl_c_keeps_a_partial_and_the_same_command_resumes(make_server, tools,
                                                             tmp_path: Path,
                                                             child_env) -> None:
    data = tools.make_safetensors(3 * MB)
    srv = make_server(data)
    srv.knobs.throttle = 256 * 1024
    cmd = tools.fetch_cmd(srv.url(), "--to", str(tmp_path), "-x", "4", "--piece-size",
                          "64K", "--sha256", tools.sha(data))
    child = subprocess.Popen(cmd, env=child_env, stderr=subprocess.PIPE, text=True)
    part = tmp_path / ".model.safetensors.part.ctl"
    deadline = time.monotonic() + 60
    while srv.sent < MB and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130
    assert "resume" in err
    assert part.exists() and not (tmp_path / "model.safetensors").exists()
    srv.knobs.throttle = 0
    done = subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "model.safetensors").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


_WATCH = '''
import atexit, os, sys

def _note(text):
    with open(os.environ["WATCH_OUT"], "a") as f:
        f.write(text + "\\n")

atexit.register(lambda: _note("atexit " + " ".join(sorted(
    m for m in ("requests", "pydantic", "sqlalchemy") if m in sys.modules))))

_fd = os.open(os.environ["WATCH_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)

class _Teardown:  # bound names: the module's own are gone by the time this runs
    def __del__(self, write=os.write, fd=_fd):
        write(fd, b"teardown\\n")

_marker = _Teardown()
'''


def _watched(tmp_path: Path, child_env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """An environment whose python notes, in the returned file, its atexit handlers (with
    the heavy modules loaded by then) and its interpreter teardown."""
    site = tmp_path / "watch"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_WATCH)
    out = tmp_path / "watch.txt"
    env = {**child_env, "WATCH_OUT": str(out),
           "PYTHONPATH": str(site) + os.pathsep + child_env["PYTHONPATH"]}
    return env, out


def test_a_finished_fetch_ends_without_the_interpreter_teardown(make_server, tools,
                                                               tmp_path: Path,
                                                               child_env) -> None:
    """Module teardown and the last garbage collections cost a fetch 30-40 ms; the
    atexit handlers (logging's flush) still run and the output is all there."""
    data = tools.make_safetensors(300_000)
    srv = make_server(data)
    env, watch = _watched(tmp_path, child_env)
    for cmd in (tools.fetch_cmd(srv.url(), "--to", str(tmp_path / "a"), "-q"),
                [sys.executable, "-m", "atelier", "fetch", srv.url(), "--to",
                 str(tmp_path / "b"), "-q"]):
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.endswith(f"sha256 {tools.sha(data)}\n")
    assert (tmp_path / "a/model.safetensors").read_bytes() == data
    assert (tmp_path / "b/model.safetensors").read_bytes() == data
    notes = watch.read_text().splitlines()
    assert [n.split()[0] for n in notes] == ["atexit", "atexit"]
    # a failed fetch exits the same way, with its code
    srv.knobs.html = True
    out = subprocess.run(tools.fetch_cmd(srv.url(), "--to", str(tmp_path / "c"), "-q"),
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "login" in out.stderr
    assert [n.split()[0] for n in watch.read_text().splitlines()[2:]] == ["atexit"]


def test_a_plain_url_fetch_loads_no_requests(make_server, tools, tmp_path: Path,
                                             child_env) -> None:
    """A plain URL is probed through the engine's own HTTP: requests (30 ms of the start
    a 128 MiB LoRA's download is measured against) loads only for the catalogues."""
    data = tools.make_safetensors(300_000)
    srv = make_server(data)
    env, watch = _watched(tmp_path, child_env)
    out = subprocess.run(tools.fetch_cmd(srv.redirect_url, "--to", str(tmp_path / "a"),
                                         "-H", "Authorization: Bearer T", "-q"),
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a/model.safetensors").read_bytes() == data
    assert watch.read_text().splitlines() == ["atexit pydantic"]
    # the token went to the URL's origin only, never to the signed URL it redirects to
    asked = [r["path"].split("/")[1] for r in srv.log if "Authorization" in r["headers"]]
    assert set(asked) == {"redirect"}
    assert any(r["path"].startswith("/signed/") for r in srv.log)


def test_the_download_goes_on_over_the_resolvers_connection(make_server, tools,
                                                            tmp_path: Path,
                                                            child_env) -> None:
    """The resolver's probe of a plain URL leaves its connection open for the engine's
    probe: no second connect (on https, no second TLS handshake) before the first byte."""
    data = tools.make_safetensors(300_000)
    srv = make_server(data)
    out = subprocess.run(tools.fetch_cmd(srv.url(), "--to", str(tmp_path), "-q"),
                         env=child_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "model.safetensors").read_bytes() == data
    resolver, engine = srv.log[0], srv.log[1]
    assert resolver["headers"]["Range"] == "bytes=0-65535"
    assert engine["headers"]["Range"].startswith("bytes=0-")
    assert engine["client"] == resolver["client"]
