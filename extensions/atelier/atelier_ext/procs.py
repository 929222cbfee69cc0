"""Find and stop this installation's service processes, from ``/proc`` (Linux).

A service belongs to this installation when its command line runs ``atelier serve``
(``<python> -I -m atelier serve``, or the ``atelier`` script) with the recorded
``--state-dir``: one state folder, one database. That holds for a service the WebUI
started, one started by hand with ``.atelier/atelier-serve``, and one left over by an
earlier WebUI. Used by the supervisor
(a hung leftover) and by ``install.py --uninstall`` (never delete a running venv).

Standard library only, Python 3.10 compatible (install.py may run under the WebUI's).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

PROC = Path("/proc")


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0")[:-1]] or None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses
    return text[text.rindex(")") + 2:].split()


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def _option(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _runs_atelier_serve(argv: Sequence[str]) -> bool:
    """``... -m atelier serve ...`` or ``.../bin/atelier serve ...``, by any interpreter."""
    return any(arg == "serve" and i > 0 and os.path.basename(argv[i - 1]) == "atelier"
               for i, arg in enumerate(argv))


def is_service(argv: Sequence[str], recorded: Sequence[str]) -> bool:
    """``argv`` runs the Atelier service on the recorded command's state folder."""
    state = _option(recorded, "--state-dir")
    return state is not None and _runs_atelier_serve(argv) and \
        _option(argv, "--state-dir") == state


def find_services(recorded: Sequence[str], *, exclude: Iterable[int] = ()) -> list[int]:
    """Pids of running services of this installation."""
    skip = {os.getpid(), *exclude}
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        argv = cmdline(int(entry.name))
        if argv and is_service(argv, recorded) and alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def wait_gone(pids: Iterable[int], timeout: float, poll: float = 0.05) -> list[int]:
    """Wait until the processes are gone; those still running at the timeout."""
    left = [p for p in pids if alive(p)]
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        time.sleep(poll)
        left = [p for p in left if alive(p)]
    return left


def terminate(pids: Iterable[int], timeout: float = 15.0) -> list[int]:
    """SIGTERM, then SIGKILL what is left after ``timeout``; the pids that could not be
    stopped (another user's: PermissionError)."""
    pids = list(pids)
    refused = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        except PermissionError:
            refused.append(pid)
    left = wait_gone([p for p in pids if p not in refused], timeout)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return refused + wait_gone(left, 5.0)
