"""Keeps the standalone service running beside the WebUI, and tied to the WebUI's life.

``ensure_running()`` looks at what answers on the configured port first:

- nothing: start the recorded command (the service's own venv python, ``-I -m atelier
  serve ...``) with ``--parent-fd``: the read end of a pipe whose write end only this
  process holds. A1111 and Forge leave with ``os._exit`` (Ctrl-C, "Restart"), so no exit
  hook runs; the kernel closes the pipe however the WebUI ends, and the service stops
  itself (``atelier/lifeline.py``). The child is started from a thread that lives as
  long as it, so its ``PR_SET_PDEATHSIG`` (the second line) fires with the process, not
  with a short-lived thread.
- our service (it proves it holds our gateway secret: an HMAC of a fresh nonce, so the
  secret is never sent to an impostor on the port): when it has the settings we want
  (the pid file records them) or another WebUI still holds it, adopt it: hold a lifeline
  request open, so it lives while we do. A leftover nobody holds with other settings,
  or one already stopping, is stopped and replaced.
- an Atelier service that cannot prove it (started by hand without the secret): used as
  it is, with a warning; the proxy then names no user (the service's own login applies).
- anything else: an error naming the port.

A service left hung (pid file, process running our command line, port silent) is killed
before a new one starts. ``stop()`` ends only a process this supervisor started, and
releases an adopted one (which then stops once nobody holds it).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import procs, state
from .config import ServiceConfig

GATEWAY_HEADER = "X-Atelier-Gateway"
USER_HEADER = "X-Forwarded-User"  # passed to the service as ATELIER_PROXY_USER_HEADER

# The WebUI environment may carry http_proxy (common where hubs need one); the service is
# on loopback, so requests to it never go through a proxy.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Variables that would make the service's interpreter see the WebUI's packages.
_LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")


class ServiceError(RuntimeError):
    """The service could not be started; the message carries the end of its log."""


class _LostRace(Exception):
    """Our child could not bind the port because another WebUI's service did."""


def is_answering(base_url: str, timeout: float = 1.0) -> bool:
    """True if the Atelier service answers its health check at ``base_url``."""
    try:
        with _opener.open(f"{base_url}/api/health", timeout=timeout) as resp:
            if resp.status != 200:
                return False
            body = json.loads(resp.read(4096))
    except (OSError, ValueError):  # URLError and timeouts are OSErrors
        return False
    return isinstance(body, dict) and body.get("status") == "ok"


def expected_proof(secret: str, nonce: str, pid: int) -> str:
    """The service's answer to a nonce (``atelier/lifeline.py: proof``)."""
    msg = f"atelier-gateway-proof\0{nonce}\0{pid}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Probe:
    """What answers on the service's port."""

    kind: str  # "none" | "other" | "foreign" | "ours"
    pid: int | None = None
    tied: bool = False
    holders: int = 0
    stopping: bool = False


class _Lifeline:
    """An open ``POST /api/gateway/lifeline``: the service lives while it stays open, and
    the kernel closes it when this process dies."""

    def __init__(self, host: str, port: int, secret: str,
                 on_lost: Callable[[], None]) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=10)
        self.secret = secret
        self.on_lost = on_lost
        self.closed = False

    def open(self) -> bool:
        try:
            self.conn.request("POST", "/api/gateway/lifeline", body=b"",
                              headers={GATEWAY_HEADER: self.secret})
            resp = self.conn.getresponse()
            if resp.status != 200 or resp.read(5) != b"held\n":
                self.conn.close()
                return False
        except OSError:
            self.conn.close()
            return False
        assert self.conn.sock is not None
        self.conn.sock.settimeout(None)
        threading.Thread(target=self._hold, args=(resp,), name="atelier-lifeline",
                         daemon=True).start()
        return True

    def _hold(self, resp: http.client.HTTPResponse) -> None:
        try:
            while resp.read(1):
                pass
        except Exception:  # noqa: BLE001 (close() from another thread: any of http.client's)
            pass
        if not self.closed:
            self.on_lost()

    def close(self) -> None:
        self.closed = True
        sock = self.conn.sock
        if sock is not None:
            try:  # wakes the thread blocked reading it; close() alone may not
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conn.close()


class Supervisor:
    def __init__(self, config: ServiceConfig, *, env: Mapping[str, str] | None = None,
                 nas_root: str | None = None, grace: float = 10.0,
                 admin_password: str | None = None, start_timeout: float = 60.0,
                 poll_interval: float = 0.1, log: Callable[[str], Any] = print) -> None:
        self.config = config
        self.extra_env = dict(env or {})
        self.nas_root = nas_root
        self.grace = grace
        self.admin_password = admin_password
        self.start_timeout = start_timeout
        self.poll_interval = poll_interval
        self.log = log
        self.secret = state.gateway_secret(config.secret_file)
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.verified = False
        self.outcome: str | None = None
        self._pipe: int | None = None
        self._lifeline: _Lifeline | None = None
        self._lock = threading.RLock()

    # -- what to run ----------------------------------------------------------------

    def argv(self) -> list[str]:
        return list(self.config.argv_for(self.nas_root))

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
        env.update(self.extra_env)
        env["ATELIER_GATEWAY_SECRET"] = self.secret
        env["ATELIER_PROXY_USER_HEADER"] = USER_HEADER
        if self.admin_password:
            env["ATELIER_ADMIN_PASSWORD"] = self.admin_password
        return env

    def digest(self) -> str:
        """Identifies the settings a service was started with (never the secrets)."""
        data = {"argv": self.argv(), "env": sorted(self.extra_env.items())}
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()

    def configure(self, env: Mapping[str, str], nas_root: str | None) -> bool:
        """New settings from the WebUI; True if the service must restart for them."""
        with self._lock:
            before = self.digest()
            self.extra_env, self.nas_root = dict(env), nas_root
            return self.digest() != before

    # -- what answers ---------------------------------------------------------------

    def probe(self) -> Probe:
        cfg = self.config
        host = cfg.base_url.split("//", 1)[1].rsplit(":", 1)[0]
        if not is_answering(cfg.base_url):
            return Probe("other" if _port_open(host, cfg.port) else "none")
        nonce = secrets.token_hex(16)
        req = urllib.request.Request(
            f"{cfg.base_url}/api/gateway/proof", data=json.dumps({"nonce": nonce}).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        try:
            with _opener.open(req, timeout=5) as resp:
                body = json.loads(resp.read(65536))
        except (OSError, ValueError):  # 404: no secret, or a service older than proofs
            return Probe("foreign")
        pid = body.get("pid") if isinstance(body, dict) else None
        if not isinstance(pid, int) or not hmac.compare_digest(
                str(body.get("proof", "")), expected_proof(self.secret, nonce, pid)):
            return Probe("foreign")
        return Probe("ours", pid, bool(body.get("tied")), int(body.get("holders") or 0),
                     bool(body.get("stopping")))

    def recorded(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.config.pid_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- keeping it running ---------------------------------------------------------

    def ensure_running(self) -> str:
        """Make sure a service answers; how: started, running, adopted, shared, foreign,
        or replaced (a leftover was stopped and a new one started)."""
        with self._lock:
            for _ in range(2):
                try:
                    self.outcome = self._ensure()
                    return self.outcome
                except _LostRace:
                    continue  # adopt the winner's service
            raise ServiceError(f"another process keeps taking {self.config.base_url}")

    def _ensure(self) -> str:
        alive = self.process is not None and self.process.poll() is None
        if (alive or self._lifeline is not None) and self.verified:
            if is_answering(self.config.base_url):
                return "running"
        self._drop_child()
        self._forget()
        probe = self.probe()
        if probe.kind in ("none", "other") and self._clear_hung():
            probe = self.probe()
        if probe.kind == "none":
            self.config.pid_file.unlink(missing_ok=True)
            self._start()
            return "started"
        if probe.kind == "other":
            raise ServiceError(f"{self.config.base_url} answers, but not as the Atelier "
                               f"service: another program uses port {self.config.port}")
        if probe.kind == "foreign":
            self.log(f"Atelier: the service on {self.config.base_url} was not started by "
                     "this WebUI (it cannot prove the gateway secret): WebUI users are not "
                     "mapped to Atelier users; its own login applies")
            return "foreign"
        assert probe.pid is not None
        if not probe.tied:  # run by hand with our secret: it runs until stopped
            self.pid, self.verified = probe.pid, True
            return "shared"
        rec = self.recorded() or {}
        same = rec.get("pid") == probe.pid and rec.get("digest") == self.digest()
        if not probe.stopping and (same or probe.holders > 0) and self._adopt(probe.pid):
            if not same:
                self.log("Atelier: the running service has other settings, and another "
                         "WebUI still uses it: they apply once that one stops")
            self._record(probe.pid)
            return "adopted"
        self.log(f"Atelier: replacing the service left by an earlier WebUI (pid {probe.pid}"
                 f"{', other settings' if not same else ''})")
        if procs.terminate([probe.pid]):
            raise ServiceError(f"cannot stop the earlier service (pid {probe.pid})")
        self._wait_port_free()
        self._start()
        return "replaced"

    def _drop_child(self) -> None:
        """Let go of a child that died or stopped answering."""
        proc, self.process = self.process, None
        pipe, self._pipe = self._pipe, None
        if proc is not None and proc.poll() is None:
            self._terminate(proc, 5.0)
        if pipe is not None:
            os.close(pipe)

    def _forget(self) -> None:
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None
        self.pid, self.verified = None, False

    def _adopt(self, pid: int) -> bool:
        host = self.config.base_url.split("//", 1)[1].rsplit(":", 1)[0]
        lifeline = _Lifeline(host, self.config.port, self.secret, self._lost)
        if not lifeline.open():
            return False
        self._lifeline, self.pid, self.verified = lifeline, pid, True
        return True

    def _lost(self) -> None:
        self.log(f"Atelier: the service on {self.config.base_url} went away")
        with self._lock:
            self.verified = False

    def _clear_hung(self) -> bool:
        """Kill the recorded service if it runs but does not answer; True if it did."""
        rec = self.recorded()
        pid = rec.get("pid") if rec else None
        if not isinstance(pid, int) or not procs.alive(pid):
            return False
        argv = procs.cmdline(pid)
        if not argv or not procs.is_service(argv, self.config.argv):
            return False  # the pid was reused by another program
        self.log(f"Atelier: stopping the service that no longer answers (pid {pid})")
        procs.terminate([pid], timeout=5.0)
        self.config.pid_file.unlink(missing_ok=True)
        return True

    def _wait_port_free(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while is_answering(self.config.base_url, timeout=0.5):
            if time.monotonic() > deadline:
                raise ServiceError(f"the earlier service still answers on "
                                   f"{self.config.base_url}")
            time.sleep(self.poll_interval)

    def _record(self, pid: int) -> None:
        data = {"pid": pid, "parent": os.getpid(), "digest": self.digest(),
                "port": self.config.port, "started": time.time()}
        state.write_private(self.config.pid_file, (json.dumps(data) + "\n").encode())

    def _spawn(self, argv: list[str], read_fd: int) -> subprocess.Popen[bytes]:
        """Start the child from a thread that then waits for it: PR_SET_PDEATHSIG follows
        the thread that forked, which must not end before the child does."""
        cfg = self.config
        box: dict[str, Any] = {}
        ready = threading.Event()

        def keeper() -> None:
            try:
                with open(cfg.log_file, "ab") as log:
                    log.write(f"--- atelier: starting {' '.join(argv)}\n".encode())
                    log.flush()
                    box["proc"] = subprocess.Popen(
                        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        env=self.child_env(), cwd=cfg.state_dir, pass_fds=(read_fd,),
                        start_new_session=True)  # a Ctrl-C in the terminal reaches the WebUI
            except BaseException as exc:  # noqa: BLE001 (handed to the caller)
                box["error"] = exc
            finally:
                ready.set()
            proc = box.get("proc")
            if proc is not None:
                rc = proc.wait()
                if self.process is proc:
                    self.verified = False  # the secret goes nowhere until one proves it again
                    self.log(f"Atelier: the service exited with code {rc}; see {cfg.log_file}")

        threading.Thread(target=keeper, name="atelier-service", daemon=True).start()
        ready.wait()
        if "error" in box:
            raise ServiceError(f"cannot start {argv[0]}: {box['error']}")
        proc: subprocess.Popen[bytes] = box["proc"]
        return proc

    def _start(self) -> None:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        cfg.log_file.parent.mkdir(parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        argv = [*self.argv(), "--parent-fd", str(read_fd), "--orphan-grace", f"{self.grace:g}"]
        try:
            proc = self._spawn(argv, read_fd)
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        deadline = time.monotonic() + self.start_timeout
        while not is_answering(cfg.base_url):
            rc = proc.poll()
            if rc is not None:
                os.close(write_fd)
                if is_answering(cfg.base_url):
                    raise _LostRace()
                raise ServiceError(f"the Atelier service exited with code {rc}; "
                                   f"{cfg.log_file} ends with:\n{_tail(cfg.log_file)}")
            if time.monotonic() > deadline:
                self._terminate(proc, 10.0)
                os.close(write_fd)
                raise ServiceError(f"the Atelier service did not answer on {cfg.base_url} "
                                   f"within {self.start_timeout:.0f} s; see {cfg.log_file}")
            time.sleep(self.poll_interval)
        probe = self.probe()
        if probe.kind != "ours" or probe.pid != proc.pid:
            # another WebUI won the race for the port: ours exits on its own (bind error)
            self._terminate(proc, 10.0)
            os.close(write_fd)
            raise _LostRace()
        self.process, self._pipe, self.pid, self.verified = proc, write_fd, proc.pid, True
        self._record(proc.pid)

    # -- stopping -------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the service if this supervisor started it and no other WebUI holds it
        (True if it did so); otherwise only let go of it (it stops once nobody holds it)."""
        with self._lock:
            shared = self.process is not None and self._held_by_others()
            proc, self.process = self.process, None
            pipe, self._pipe = self._pipe, None
            self._forget()
        stopped = False
        if proc is not None and proc.poll() is None and not shared:
            self._terminate(proc, timeout)
            stopped = True
        if pipe is not None:
            os.close(pipe)
        rec = self.recorded()
        if stopped and proc is not None and rec and rec.get("pid") == proc.pid:
            self.config.pid_file.unlink(missing_ok=True)
        return stopped

    def _held_by_others(self) -> bool:
        probe = self.probe()
        return probe.kind == "ours" and probe.holders > 1

    def restart(self) -> str:
        """Apply new settings: stop the service we run (or the adopted one, if we are its
        only holder) and start it again."""
        with self._lock:
            if self.process is not None:
                self.stop()
                return self.ensure_running()
            if self._lifeline is not None and self.pid is not None:
                probe = self.probe()
                if probe.kind == "ours" and probe.holders <= 1:
                    self._forget()
                    procs.terminate([probe.pid] if probe.pid else [])
                    self._wait_port_free()
                self.log("Atelier: another WebUI uses the service: the new settings apply "
                         "once it stops")
            return self.ensure_running()

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
        proc.send_signal(signal.SIGTERM)  # uvicorn finishes open requests on SIGTERM
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def login_works(base_url: str, user: str, password: str) -> bool | None:
    """Does ``user`` log in with ``password``? None when the service cannot tell now."""
    req = urllib.request.Request(
        f"{base_url}/api/login", data=json.dumps({"username": user, "password": password})
        .encode(), headers={"Content-Type": "application/json"}, method="POST")
    try:
        with _opener.open(req, timeout=10) as resp:
            body = json.loads(resp.read(65536))
            cookies = [c.split(";", 1)[0] for c in resp.headers.get_all("Set-Cookie") or []]
    except urllib.error.HTTPError as exc:
        return False if exc.code in (400, 401, 403) else None
    except (OSError, ValueError):
        return None
    out = urllib.request.Request(f"{base_url}/api/logout", data=b"", method="POST", headers={
        "Cookie": "; ".join(cookies), "X-CSRF-Token": str(body.get("csrf_token", ""))})
    try:  # end the session this check opened
        _opener.open(out, timeout=10).close()
    except OSError:
        pass
    return True
