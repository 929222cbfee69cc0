"""The README documents every setting and every route; CHANGELOG keeps its form."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from .conftest import Server

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _settings_classes() -> list[type]:
    from atelier.cluster.settings import ClusterSettings
    from atelier.idle import IdleSettings
    from filebrowser.settings import Settings
    from modelzoo.fetch.settings import FetchSettings
    from modelzoo.residency.settings import ResidencySettings
    from modelzoo.settings import ZooSettings

    return [Settings, FetchSettings, ResidencySettings, ZooSettings, IdleSettings,
            ClusterSettings]


@pytest.mark.parametrize("cls", _settings_classes(), ids=lambda c: c.__name__)
def test_every_setting_is_documented(cls: type) -> None:
    prefix = cls.model_config["env_prefix"]  # type: ignore[attr-defined]
    for name, field in cls.model_fields.items():  # type: ignore[attr-defined]
        assert field.description, f"{name} has no help text"
        env = f"{prefix}{name.upper()}"
        assert env in README, f"{env} is not in README.md"


def test_every_route_is_documented(server: Server) -> None:
    paths = list(requests.get(f"{server.url}/openapi.json", timeout=10).json()["paths"])
    text = re.sub(r"\{[^}/]*\}", "{}", README)
    for path in paths:
        wanted = re.sub(r"\{[^}/]*\}", "{}", path)
        assert re.search(re.escape(wanted) + r"(?![\w/{])", text), f"{path} is not in README.md"


def test_changelog_has_an_unreleased_section() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text and "Keep a Changelog" in text
