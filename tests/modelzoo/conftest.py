"""Stand-ins of Civitai, Hugging Face (an endpoint and a mirror) and ModelScope on
loopback, one per test that asks; nothing reaches the internet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .standins.civitai import CivitaiStandIn
from .standins.huggingface import HfStandIn
from .standins.modelscope import ModelScopeStandIn


@pytest.fixture
def civitai() -> Iterator[CivitaiStandIn]:
    s = CivitaiStandIn()
    yield s
    s.stop()


@pytest.fixture
def hf_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite runs with HF_HUB_OFFLINE=1 so nothing reaches the real Hub; tests against
    the loopback stand-in turn huggingface_hub's (import-time) constant off."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


@pytest.fixture
def hf(hf_online: None) -> Iterator[HfStandIn]:
    s = HfStandIn()
    yield s
    s.stop()


@pytest.fixture
def hf_mirror(hf: HfStandIn) -> Iterator[HfStandIn]:
    """A second endpoint serving the same repos (hf-mirror.com's role)."""
    s = HfStandIn(hf.repos)
    yield s
    s.stop()


@pytest.fixture
def modelscope() -> Iterator[ModelScopeStandIn]:
    s = ModelScopeStandIn()
    yield s
    s.stop()
