"""schemathesis hooks for test_api_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

Every generated request carries a bearer token of the account under test. The fuzzer
may revoke its own token (``DELETE /api/tokens/{id}`` with a lucky id): a 401 then
fetches a fresh one and replays the request (schemathesis' ``retry_on``).
"""

from __future__ import annotations

import os
from typing import Any

import requests
import schemathesis


@schemathesis.auth(retry_on=[401])
class FreshToken:
    def get(self, case: Any, ctx: Any) -> str:
        r = requests.post(os.environ["FUZZ_URL"] + "/api/tokens", timeout=30,
                          auth=(os.environ["FUZZ_USER"], os.environ["FUZZ_PASSWORD"]),
                          json={"name": "fuzz"})
        r.raise_for_status()
        return str(r.json()["token"])

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
