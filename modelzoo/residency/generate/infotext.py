"""The A1111 ``parameters`` text written into every PNG and returned as ``infotexts``::

    <prompt>
    Negative prompt: <negative prompt>          (only when there is one)
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, ...

Values holding a comma, colon or newline are JSON-quoted, as the WebUI's
``infotext_utils.quote`` does, so ``Lora hashes: "a: 1234, b: 5678"`` parses back;
``None`` values are left out. FileBrowser's image index reads this text (search by
prompt, model, LoRA).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def quote(value: Any) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return quote(value)


def infotext(prompt: str, negative: str, params: Iterable[tuple[str, Any]]) -> str:
    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{k}: {_fmt(v)}" for k, v in params if v is not None))
    return "\n".join(lines).strip()
