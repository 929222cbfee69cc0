"""How many connections a download runs: start with a few, add while each adds speed.

A CDN that caps each connection (nginx ``limit_rate``, hf-mirror's throttling) gives N
connections N times the speed of one, until the link, the server or this machine runs
out; a server behind one shared uplink gives N connections the speed of one. Only
measuring tells which, so the tuner grows the count in steps, like TCP's slow start:

    begin   ``start`` connections; once each has delivered bytes (past the request's
            latency, its TCP window open), measure the total rate for ``window`` seconds
    step    double the count (at most ``cap``), wait the same way, measure again:
              gain = (new rate - old rate) / (added connections x old rate per connection)
            gain >= ``grow`` (0.5)   the new connections paid: keep them, step again
            gain >= ``keep`` (0.15)  keep them, stop growing
            else                     retire them (they would only load the server), stop

Pure logic: the engine feeds it the clock, the bytes received so far and how many
connections are moving bytes, and starts or retires workers to match ``target``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Tuner:
    start: int
    cap: int
    window: float = 0.5        # seconds of measurement per step
    settle_max: float = 3.0    # stop waiting for slow starters after this long
    grow: float = 0.5
    keep: float = 0.15
    target: int = field(init=False)
    steady: bool = field(init=False)
    steps: list[tuple[int, float]] = field(init=False)  # (connections, bytes/s) measured
    _phase: str = field(init=False, default="settle")
    _since: float | None = field(init=False, default=None)
    _mark: int = field(init=False, default=0)
    _base: tuple[int, float] | None = field(init=False, default=None)  # count, rate

    def __post_init__(self) -> None:
        if not 1 <= self.start <= self.cap:
            raise ValueError("1 <= start <= cap required")
        self.target = self.start
        self.steady = self.start >= self.cap
        self.steps = []

    def update(self, now: float, received: int, warmed: int) -> int:
        """``received``: bytes so far; ``warmed``: connections that delivered bytes since
        the count last changed. Returns the number of connections wanted now."""
        if self.steady:
            return self.target
        if self._since is None:
            self._since = now
        if self._phase == "settle":
            if warmed >= self.target or now - self._since >= self.settle_max:
                self._phase, self._since, self._mark = "measure", now, received
            return self.target
        elapsed = now - self._since
        if elapsed < self.window:
            return self.target
        rate = (received - self._mark) / elapsed
        self.steps.append((self.target, rate))
        self._decide(rate)
        self._phase, self._since = "settle", now
        return self.target

    def _decide(self, rate: float) -> None:
        if self._base is not None:
            count, before = self._base
            added = self.target - count
            expected = added * before / count
            gain = (rate - before) / expected if expected > 0 else 0.0
            if gain < self.keep:
                self.target, self.steady = count, True  # retire what was added
                return
            if gain < self.grow:
                self.steady = True
                return
        self._base = (self.target, rate)
        if self.target >= self.cap or rate <= 0:
            self.steady = True
            return
        self.target = min(self.cap, self.target * 2)
