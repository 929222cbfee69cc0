"""The running service against schemathesis (PyPI): requests generated from its own
OpenAPI document (examples, boundary values, random and hostile data), as a user and as
an admin. The bar: 0 server errors and 0 responses that break the documented schema
(body, status or content type; every error documented as ``{error, message}``).

Bounded: each role gets ``BUDGET`` seconds (schemathesis ``--max-time``) with a fixed
seed, so a run is repeatable; ``FUZZ_SEED`` / ``FUZZ_BUDGET`` override them by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from ..conftest import ADMIN_PASSWORD, Server

BUDGET = int(os.environ.get("FUZZ_BUDGET", "75"))
SEED = os.environ.get("FUZZ_SEED", "20261201")
# server errors; bodies that break the documented schema (every 4xx/5xx must be the
# ErrorBody); statuses and content types the document does not list
CHECKS = ("not_a_server_error,response_schema_conformance,status_code_conformance,"
          "content_type_conformance")
HOOKS = Path(__file__).parent


def schemathesis(srv: Server, user: str, password: str, report: Path,
                 *extra: str) -> tuple[dict, str]:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "fuzz_hooks", "FUZZ_URL": srv.url,
           "FUZZ_USER": user, "FUZZ_PASSWORD": password,
           "PYTHONPATH": os.pathsep.join([str(HOOKS), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{srv.url}/openapi.json",
           "--checks", CHECKS, "--max-examples", "10", "--seed", SEED,
           "--max-time", str(BUDGET), "--workers", "2", "--request-timeout", "30",
           "--no-color", "--report", "json", "--report-json-path", str(report), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=BUDGET + 180,
                          cwd=report.parent)
    out = proc.stdout + proc.stderr
    assert report.is_file(), out[-5000:]
    return json.loads(report.read_text()), out


@pytest.mark.timeout(2 * BUDGET + 420)
def test_schemathesis_finds_no_server_error_nor_schema_break(
        spawn_server: Callable[..., Server], tmp_path: Path) -> None:
    srv = spawn_server(env={"ATELIER_LOGIN_MAX_FAILURES_ADDR": "1000000",
                            "ATELIER_LOGIN_MAX_FAILURES_USER": "1000000"})
    srv.add_user("fuzz-user", quota=50_000_000, password="fuzz-pass-123")
    home = srv.root / "users" / "fuzz-user"
    Image.new("RGB", (32, 24), (200, 40, 40)).save(home / "a.png")
    (home / "notes.txt").write_text("hello")
    totals = []
    # the user first: the admin's run may delete anything, the user's home included
    for role, user, password, extra in (
            ("user", "fuzz-user", "fuzz-pass-123", ()),
            # an admin changing its own password or removing itself ends the run's access
            ("admin", "admin", ADMIN_PASSWORD, ("--exclude-path-regex", r"^/api/users/\{name\}$")),
    ):
        report, out = schemathesis(srv, user, password, tmp_path / f"{role}.json", *extra)
        ops, cases = report["operations"], report["test_cases"]
        totals.append(f"{role}: {ops['tested']} of {ops['selected']} operations, "
                      f"{cases['generated']} test cases, {len(report['failures'])} failures, "
                      f"{len(report['errors'])} errors, {report['running_time']:.0f} s")
        print(totals[-1])
        assert report["failures"] == [] and report["errors"] == [], out[-8000:]
        assert ops["tested"] == ops["selected"] >= 45, out[-3000:]
        assert cases["generated"] >= 200 and not report["auth"]["reauth_broke"], out[-3000:]
        assert report["exit_code"] == 0, out[-3000:]
