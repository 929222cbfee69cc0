"""Browser fixtures: Debian's chromium driven by Playwright against the real service.

``browser`` is one headless chromium per test session; ``open_page(server)`` gives a
page at 1366x768 whose console errors and uncaught exceptions fail the test at teardown
(a page that logs an error is broken even if its checks pass). ``login(page, ...)``
signs in through the real login form. Screenshots go to ``test-output/screens/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ADMIN_PASSWORD, Server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]
ROOT = Path(__file__).resolve().parents[2]
SCREENS = ROOT / "test-output" / "screens"
VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed (bash .ci/run installs it from Debian)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Watched:
    """A page and everything it complained about."""

    page: Any
    context: Any
    errors: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    def allow(self, fragment: str) -> None:
        """An expected error (e.g. a request the test itself made fail on purpose)."""
        self.allowed.append(fragment)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in self.allowed)]


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Watched]]:
    opened: list[Watched] = []

    def make(server: Server | None = None, *, lang: str = "en-US", dark: bool = False,
             viewport: dict[str, int] | None = None, context: Any = None) -> Watched:
        ctx = context or browser.new_context(
            viewport=viewport or VIEWPORT, locale=lang, accept_downloads=True,
            color_scheme="dark" if dark else "light", service_workers="block")
        page = ctx.new_page()
        w = Watched(page, ctx)
        page.on("console", lambda m: w.errors.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "assert") else None)
        page.on("pageerror", lambda e: w.errors.append(f"pageerror: {e}"))
        page.set_default_timeout(20_000)
        opened.append(w)
        return w

    yield make
    problems = []
    for w in opened:
        problems += w.unexpected()
        try:
            w.context.close()
        except Exception:  # already closed by the test
            pass
    assert not problems, "the pages logged errors:\n" + "\n".join(problems)


def login(page: Any, base: str, user: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    """Sign in through the form at ``base`` (the service root, may hold a prefix)."""
    page.goto(f"{base.rstrip('/')}/ui/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/files**")
    page.wait_for_selector("[data-testid=nav-files]")


def shot(page: Any, name: str) -> Path:
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = SCREENS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
