"""The service's tie to the WebUI that started it: it stops when no WebUI holds it.

A1111 and Forge end on Ctrl-C, on "Restart" from the settings page and on their own
errors with ``os._exit(0)`` (``modules/initialize_util.py``, ``modules/restart.py``), so
no exit hook of theirs ever runs; a SIGKILL runs nothing at all. The service therefore
watches its parent itself, with two lines that need no cooperation from a dying process:

1. ``--parent-fd N``: the read end of a pipe whose only write end the WebUI holds. The
   kernel closes it when the WebUI process ends, however it ends: ``read()`` returns EOF.
2. ``PR_SET_PDEATHSIG``: the kernel signals the service (SIGUSR1) when the thread that
   started it dies; the WebUI's supervisor starts it from a thread that lives as long as
   the child, so this fires with the process. It catches a write end leaked into a
   forked grandchild, which would keep the pipe open.

Holders: the parent is the first; another WebUI process (a second one on this install,
or the WebUI restarted by "Restart") becomes one by ``POST /api/gateway/lifeline`` with
the gateway secret and keeps that request open, so its death closes the connection just
as it closes a pipe. When the last holder goes, the service waits ``--orphan-grace``
seconds for a restarted WebUI to adopt it, then stops: SIGTERM to itself (uvicorn
finishes what it can), and ``os._exit`` after ``hard_stop_after`` seconds at the latest.

``POST /api/gateway/proof {nonce}`` lets a WebUI check that the service on the port is
the one holding its secret before it sends the secret there: the answer is an HMAC of
the nonce and the service's pid (public; it tells nothing without the secret).
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import itertools
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from filebrowser import Conflict, NotFound, require_gateway

PR_SET_PDEATHSIG = 1
PARENT = "parent"


def proof(secret: str, nonce: str, pid: int) -> str:
    """What only a holder of ``secret`` can answer to ``nonce`` (the WebUI side computes
    the same in extensions/atelier/atelier_ext/supervisor.py)."""
    msg = f"atelier-gateway-proof\0{nonce}\0{pid}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def _terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def set_pdeathsig(sig: int) -> bool:
    """Ask the kernel for ``sig`` when our parent (thread) dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class Lifeline:
    """Who holds the service; stops it once nobody has for ``grace`` seconds."""

    def __init__(self, grace: float, *, hard_stop_after: float = 15.0,
                 stop: Callable[[], None] = _terminate_self,
                 hard_exit: Callable[[int], Any] = os._exit) -> None:
        self.grace = grace
        self.hard_stop_after = hard_stop_after
        self._stop = stop
        self._hard_exit = hard_exit
        self._holders: set[str] = set()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.stopping = False

    # -- holders --------------------------------------------------------------------

    def hold(self, name: str | None = None) -> str | None:
        """Add a holder; its name, or None if the service is already stopping."""
        with self._lock:
            if self.stopping:
                return None
            name = name or f"webui-{next(self._ids)}"
            self._holders.add(name)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                print("atelier: adopted by a WebUI; not stopping", file=sys.stderr,
                      flush=True)
            return name

    def release(self, name: str) -> None:
        with self._lock:
            if name not in self._holders:
                return  # the pipe and PDEATHSIG both report the parent's death
            self._holders.discard(name)
            if self._holders or self.stopping:
                return
            print(f"atelier: no WebUI holds the service any more; stopping in "
                  f"{self.grace:g} s unless one adopts it", file=sys.stderr, flush=True)
            self._timer = threading.Timer(self.grace, self._expire)
            self._timer.daemon = True
            self._timer.start()

    @property
    def holders(self) -> int:
        with self._lock:
            return len(self._holders)

    def _expire(self) -> None:
        with self._lock:
            if self._holders or self.stopping:
                return
            self.stopping = True
            self._timer = None
        print("atelier: stopping (the WebUI that started it is gone)", file=sys.stderr,
              flush=True)
        deadline = threading.Timer(self.hard_stop_after, self._hard_exit, args=(0,))
        deadline.daemon = True
        deadline.start()
        self._stop()

    # -- the parent -----------------------------------------------------------------

    def tie_to_parent(self, fd: int) -> None:
        """Hold for the parent until ``fd`` reaches EOF or the parent thread dies.

        Call from the main thread (signal handlers can only be set there)."""
        self.hold(PARENT)
        threading.Thread(target=self._watch, args=(fd,), name="atelier-parent-pipe",
                         daemon=True).start()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, lambda *_: self._parent_gone("PR_SET_PDEATHSIG"))
            set_pdeathsig(signal.SIGUSR1)

    def _watch(self, fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        self._parent_gone("pipe closed")

    def _parent_gone(self, how: str) -> None:
        if PARENT in self._holders:
            print(f"atelier: the WebUI that started the service is gone ({how})",
                  file=sys.stderr, flush=True)
        # a signal handler runs on the main thread, possibly inside hold(): never block it
        threading.Thread(target=self.release, args=(PARENT,), daemon=True).start()


# -- routes ---------------------------------------------------------------------------


class ProofBody(BaseModel):
    nonce: str = Field(min_length=16, max_length=128)


class _Hold(Response):
    """A response that stays open until the client goes: the adopter's lifeline."""

    def __init__(self, lifeline: Lifeline, name: str) -> None:
        super().__init__()
        self.lifeline = lifeline
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain"),
                                    (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": b"held\n", "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            self.lifeline.release(self.name)


def build_router() -> APIRouter:
    router = APIRouter()

    @router.post("/api/gateway/proof")
    def gateway_proof(body: ProofBody, request: Request) -> dict[str, Any]:
        """Public: proves this service holds the gateway secret, without revealing it."""
        secret = request.app.state.fb.settings.gateway_secret
        if not secret:
            raise NotFound("this service has no gateway secret")
        lifeline: Lifeline | None = getattr(request.app.state, "lifeline", None)
        pid = os.getpid()
        return {"proof": proof(secret, body.nonce, pid), "pid": pid,
                "tied": lifeline is not None,
                "holders": lifeline.holders if lifeline else None,
                "stopping": bool(lifeline and lifeline.stopping)}

    @router.post("/api/gateway/lifeline")
    def gateway_lifeline(request: Request,
                         _: Annotated[None, Depends(require_gateway)]) -> Any:
        """The gateway (a WebUI) holds the service while this request stays open."""
        lifeline: Lifeline | None = getattr(request.app.state, "lifeline", None)
        if lifeline is None:
            raise Conflict("this service was not started by a WebUI: it runs until stopped")
        name = lifeline.hold()
        if name is None:
            raise Conflict("the service is stopping")
        return _Hold(lifeline, name)

    return router
