"""FetchSettings: environment prefix and documented fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelzoo.fetch import FetchSettings


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_FETCH_CONNECTIONS", "3")
    monkeypatch.setenv("ATELIER_FETCH_PROXY", "socks5h://127.0.0.1:1080")
    s = FetchSettings()
    assert s.connections == 3 and s.proxy == "socks5h://127.0.0.1:1080"


def test_every_setting_is_documented_and_checked() -> None:
    assert all(f.description for f in FetchSettings.model_fields.values())
    with pytest.raises(ValidationError):
        FetchSettings(piece_size=10)
