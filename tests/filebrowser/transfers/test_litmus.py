"""The WebDAV server against litmus (the Debian package), the reference conformance suite:
all five suites (basic, copymove, props, locks, http), 104 tests, must pass.

Run against the real ``atelier serve`` process, as a user in their home, so the jail and
our native PUT (which must evaluate ``If:`` itself) are what litmus talks to.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ...conftest import Server

SUITES = ("basic", "copymove", "props", "locks", "http")
EXPECTED_TESTS = 104
SUMMARY = re.compile(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")


def test_litmus_passes_everything(spawn_server: Callable[..., Server], tmp_path: Path) -> None:
    if shutil.which("litmus") is None:
        pytest.fail("litmus is not installed (bash .ci/run installs it from Debian)")
    srv = spawn_server()
    srv.add_user("lit", password="lit-pass-123")
    work = tmp_path / "litmus"
    work.mkdir()
    proc = subprocess.run(
        ["litmus", "--keep-going", f"{srv.url}/dav/users/lit/", "lit", "lit-pass-123"],
        cwd=work, capture_output=True, text=True, timeout=300,
        env={"TESTS": " ".join(SUITES), "PATH": "/usr/bin:/bin"})
    out = proc.stdout + proc.stderr
    summaries = {m[0]: (int(m[1]), int(m[2]), int(m[3])) for m in SUMMARY.findall(out)}
    failures = [line.strip() for line in out.splitlines() if "FAIL" in line]
    assert set(summaries) == set(SUITES), out[-3000:]
    assert sum(run for run, _, _ in summaries.values()) == EXPECTED_TESTS, summaries
    assert sum(failed for _, _, failed in summaries.values()) == 0, failures
    assert proc.returncode == 0, out[-3000:]
