"""``/api/gpu/webui``: the WebUI's own checkpoints as its extension reports them, and the
command queue the extension long-polls (modelzoo/residency/webui.py), on the real service.

A thread plays the extension's poller: it takes commands with the gateway secret and
answers them, as ``atelier_ext/link.py`` does inside the WebUI.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from ...conftest import Server

SECRET = "w" * 43
GW = {"X-Atelier-Gateway": SECRET}

REPORT = {
    "webui": {"generation": "a1111", "single_model": False, "notice": None, "pid": 1,
              "device": "cuda:0"},
    "checkpoints": [{"title": "a.safetensors [abc]", "current": True, "device": "cuda:0",
                     "bytes": 2 << 30, "pinned": False}],
    "devices": [{"name": "cuda:0", "free": 10 << 30, "total": 24 << 30},
                {"name": "ram", "free": 50 << 30, "total": 64 << 30}],
    "limits": {"sd_checkpoints_limit": 4, "sd_checkpoints_keep_in_cpu": False},
}


@pytest.fixture
def srv(make_server: Callable[..., Server]) -> Server:
    return make_server(gateway_secret=SECRET)


class Adapter:
    """The extension's side: long-poll, answer, report."""

    def __init__(self, url: str, answer: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.url, self.answer = url, answer
        self.seen: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            r = requests.get(f"{self.url}/api/gpu/webui/poll", params={"wait": 2}, headers=GW,
                             timeout=10)
            for cmd in r.json()["commands"]:
                self.seen.append(cmd)
                requests.post(f"{self.url}/api/gpu/webui/commands/{cmd['id']}/result",
                              headers=GW, json=self.answer(cmd), timeout=10)


@pytest.fixture
def adapter(srv: Server) -> Iterator[Callable[..., Adapter]]:
    made: list[Adapter] = []

    def start(answer: Callable[[dict[str, Any]], dict[str, Any]] = lambda c: {
            "ok": True, "message": f"did {c['action']} {c['model']}"}) -> Adapter:
        a = Adapter(srv.url, answer)
        a.thread.start()
        made.append(a)
        return a

    yield start
    for a in made:
        a.stop.set()
        a.thread.join(15)


def test_report_is_gateway_only_and_shown_to_users(srv: Server) -> None:
    viewer = srv.add_user("vic", role="viewer")
    state = viewer.get(f"{srv.url}/api/gpu/webui", timeout=10).json()
    assert state == {"connected": False, "report_age": None, "report": None, "commands": [],
                     "checkpoints": [], "current": None}
    r = requests.post(f"{srv.url}/api/gpu/webui/report", json=REPORT, timeout=10)
    assert r.status_code == 401, "a user may not pose as the WebUI"
    assert viewer.post(f"{srv.url}/api/gpu/webui/report", json=REPORT,
                       timeout=10).status_code == 401
    assert requests.post(f"{srv.url}/api/gpu/webui/report", json=REPORT, headers=GW,
                         timeout=10).json() == {"ok": True}
    state = viewer.get(f"{srv.url}/api/gpu/webui", timeout=10).json()
    assert state["connected"] is True and state["report"]["checkpoints"] == REPORT["checkpoints"]
    assert state["checkpoints"] == REPORT["checkpoints"], "on top, as the GPU page lists them"
    assert state["current"]["title"] == "a.safetensors [abc]"
    assert state["report"]["limits"]["sd_checkpoints_limit"] == 4
    assert requests.get(f"{srv.url}/api/gpu/webui", timeout=10).status_code == 401
    assert requests.get(f"{srv.url}/api/gpu/webui/poll", timeout=10).status_code == 401


def test_commands_reach_the_webui_and_their_results_come_back(
        srv: Server, adapter: Callable[..., Adapter]) -> None:
    admin = srv.session()
    user = srv.add_user("ann")
    r = user.post(f"{srv.url}/api/gpu/webui/load", json={"model": "a"}, timeout=10)
    assert r.status_code == 503 and r.json()["error"] == "webui_not_connected"
    a = adapter()
    deadline = time.monotonic() + 10
    while not admin.get(f"{srv.url}/api/gpu/webui", timeout=10).json()["connected"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = user.post(f"{srv.url}/api/gpu/webui/load", json={"model": "b.safetensors", "wait": 20},
                  timeout=30)
    assert r.status_code == 202 and r.json()["status"] == "done", r.text
    assert r.json()["message"] == "did load b.safetensors" and r.json()["user"] == "ann"
    assert a.seen[-1] == {"id": r.json()["id"], "action": "load", "model": "b.safetensors",
                          "pinned": None, "user": "ann"}
    # without wait: queued now, done a moment later
    r = admin.post(f"{srv.url}/api/gpu/webui/pin", json={"model": "c", "pinned": True},
                   timeout=10)
    assert r.status_code == 202 and r.json()["status"] in ("queued", "running", "done")
    cid = r.json()["id"]
    deadline = time.monotonic() + 20
    while admin.get(f"{srv.url}/api/gpu/webui/commands/{cid}", timeout=10).json()[
            "status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert a.seen[-1]["pinned"] is True
    # roles, as /api/gpu: users load, admins unload and pin; viewers only look
    assert user.post(f"{srv.url}/api/gpu/webui/unload", json={"model": "b"},
                     timeout=10).status_code == 403
    assert user.post(f"{srv.url}/api/gpu/webui/pin", json={"model": "b"},
                     timeout=10).status_code == 403
    viewer = srv.add_user("vic", role="viewer")
    assert viewer.post(f"{srv.url}/api/gpu/webui/load", json={"model": "b"},
                       timeout=10).status_code == 403
    assert admin.get(f"{srv.url}/api/gpu/webui/commands/999", timeout=10).status_code == 404
    history = admin.get(f"{srv.url}/api/gpu/webui", timeout=10).json()["commands"]
    assert [c["action"] for c in history] == ["pin", "load"]


def test_a_refusal_is_an_error_with_the_webuis_message(
        srv: Server, adapter: Callable[..., Adapter]) -> None:
    adapter(lambda c: {"ok": False, "message": "the WebUI knows no checkpoint 'x'",
                       "error": "unknown_model", "status": 404})
    admin = srv.session()
    deadline = time.monotonic() + 10
    while not admin.get(f"{srv.url}/api/gpu/webui", timeout=10).json()["connected"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = admin.post(f"{srv.url}/api/gpu/webui/unload", json={"model": "x", "wait": 20},
                   timeout=30)
    assert r.status_code == 409 and r.json()["error"] == "webui_refused"
    assert "knows no checkpoint" in r.json()["message"]
    assert r.json()["command"]["status"] == "failed"


def test_forge_refuses_pins_at_once(srv: Server) -> None:
    forge = {**REPORT, "webui": {**REPORT["webui"], "generation": "forge", "single_model": True,
                                 "notice": "Forge keeps a single checkpoint"}}
    requests.post(f"{srv.url}/api/gpu/webui/report", json=forge, headers=GW, timeout=10)
    r = srv.session().post(f"{srv.url}/api/gpu/webui/pin", json={"model": "a"}, timeout=10)
    assert r.status_code == 409 and "single checkpoint" in r.json()["message"]


def test_events_stream_every_change(srv: Server) -> None:
    s = srv.session()
    with s.get(f"{srv.url}/api/gpu/webui/events", stream=True, timeout=20) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        lines = r.iter_lines(decode_unicode=True)
        assert next(lines) == "id: 0" and next(lines) == "event: state"
        first = json.loads(next(lines).removeprefix("data: "))
        assert first["report"] is None
        requests.post(f"{srv.url}/api/gpu/webui/report", json=REPORT, headers=GW, timeout=10)
        got = [next(lines) for _ in range(4)]
        assert got[0] == "" and got[1] == "id: 1" and got[2] == "event: state"
        assert json.loads(got[3].removeprefix("data: "))["report"]["limits"][
            "sd_checkpoints_limit"] == 4
