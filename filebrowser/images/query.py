"""Search filters: repeatable values, OR within a field, AND across fields, NOT.

Each filter field takes any number of values (``model=a&model=b``: a or b). A value
starting with ``-`` (or given as ``not_model=``) excludes; a value in double quotes is
exact (what the facets list), otherwise it is a part::

    model      part of the name, or the start of the hash | "exact name" (or hash)
    lora       part of a LoRA's name                      | "exact LoRA name"
    embedding  part of an embedding's name                | "exact name"
    sampler    part of the sampler's name                 | "exact name"
    size       WxH of the image in pixels ("512x768")
    source     the generator: a1111, forge, comfyui, novelai, invokeai, swarmui,
               fooocus, unknown, none (no parameters)
    date       a year, month or day ("2024", "2024-05", "2024-05-01") in the caller's
               time zone (``tz``: minutes east of UTC)
    folder     the folder and everything below it         | "exactly that folder"

Case is ignored. A NOT keeps rows where the field is empty (an image without a LoRA is
"not lora X"). :func:`condition` builds one field's SQL; the search and the facets
share it, the facets leaving a field's own filter out when they count that field.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

FIELDS = ("model", "lora", "embedding", "sampler", "size", "source", "date", "folder")
MAX_VALUES = 50  # per field and request
_RE_SIZE = re.compile(r"^\s*(\d{1,6})\s*[x×]\s*(\d{1,6})\s*$")
_RE_DATE = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?$")
# random order: id * M mod P, a permutation of ids for each multiplier M (P is prime)
RANDOM_P = 2_147_483_647


class BadQuery(ValueError):
    pass


@dataclass(frozen=True)
class Value:
    text: str
    neg: bool = False
    exact: bool = False

    def __str__(self) -> str:
        s = f'"{self.text}"' if self.exact else self.text
        return "-" + s if self.neg else s


def parse_value(raw: str) -> Value:
    """``-x`` excludes, ``"x"`` is exact (``"-x"``: exactly "-x")."""
    s = raw.strip()
    neg = s.startswith("-")
    if neg:
        s = s[1:].strip()
    exact = len(s) >= 2 and s[0] == '"' and s[-1] == '"'
    if exact:
        s = s[1:-1]
    return Value(s, neg, exact)


def values_of(v: str | Sequence[str] | None) -> list[Value]:
    """The values of one field, as given (one string or several)."""
    if v is None:
        return []
    raw = [v] if isinstance(v, str) else list(v)
    if len(raw) > MAX_VALUES:
        raise BadQuery(f"at most {MAX_VALUES} values per filter")
    out = [parse_value(x) for x in raw if x is not None and x.strip()]
    return [x for x in out if x.text or x.exact]


def like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def size_of(text: str) -> tuple[int, int]:
    m = _RE_SIZE.match(text)
    if not m:
        raise BadQuery(f"not a size: {text!r}; use WIDTHxHEIGHT, e.g. 512x768")
    return int(m.group(1)), int(m.group(2))


def date_range(text: str, tz_minutes: int = 0) -> tuple[float, float]:
    """[start, end) in epoch seconds of a year, month or day in the given zone."""
    m = _RE_DATE.match(text.strip())
    try:
        if not m:
            raise ValueError
        y, mo, d = int(m.group(1)), m.group(2), m.group(3)
        zone = timezone(timedelta(minutes=tz_minutes)) if tz_minutes else UTC
        if d is not None:
            start = datetime(y, int(mo), int(d), tzinfo=zone)
            end = start + timedelta(days=1)
        elif mo is not None:
            start = datetime(y, int(mo), 1, tzinfo=zone)
            end = datetime(y + (int(mo) == 12), int(mo) % 12 + 1, 1, tzinfo=zone)
        else:
            start, end = datetime(y, 1, 1, tzinfo=zone), datetime(y + 1, 1, 1, tzinfo=zone)
    except (ValueError, OverflowError):
        raise BadQuery(f"not a date: {text!r}; use YYYY, YYYY-MM or YYYY-MM-DD") from None
    return start.timestamp(), end.timestamp()


def _part(col: Any, text: str) -> Any:
    return sa.func.lower(col).like(f"%{like_escape(text.lower())}%", escape="\\")


def _one(t: Any, field: str, v: Value, under: Callable[[str], Any], tz: int) -> Any:
    """The condition one (positive) value stands for."""
    c = t.c
    text = v.text
    low = text.lower()
    if field == "model":
        if v.exact:
            return sa.or_(sa.func.lower(c.model) == low, sa.func.lower(c.model_hash) == low)
        return sa.or_(_part(c.model, text), sa.func.lower(c.model_hash).like(
            f"{like_escape(low)}%", escape="\\"))
    if field in ("lora", "embedding"):
        col = c.loras if field == "lora" else c.embeddings
        pattern = f"%|{like_escape(low)}|%" if v.exact else f"%{like_escape(low)}%"
        return sa.func.lower(col).like(pattern, escape="\\")
    if field == "sampler":
        return sa.func.lower(c.sampler) == low if v.exact else _part(c.sampler, text)
    if field == "size":
        w, h = size_of(text)
        return sa.and_(c.width == w, c.height == h)
    if field == "source":
        return c.source.is_(None) if low == "none" else sa.func.lower(c.source) == low
    if field == "date":
        start, end = date_range(text, tz)
        return sa.and_(c.mtime >= start, c.mtime < end)
    if field == "folder":
        return c.folder == text if v.exact else under(text)(c.path)
    raise BadQuery(f"unknown filter {field!r}")


def condition(t: Any, field: str, vals: Sequence[Value], under: Callable[[str], Any],
              tz: int = 0) -> Any | None:
    """(any positive value) AND NOT (each negative value) for one field; None if none."""
    pos = [_one(t, field, v, under, tz) for v in vals if not v.neg]
    parts = [sa.or_(*pos)] if pos else []
    parts += [sa.not_(sa.func.coalesce(_one(t, field, v, under, tz), sa.false()))
              for v in vals if v.neg]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else sa.and_(*parts)


def random_key(t: Any, seed: int) -> Any:
    """A stable pseudo-random order for ``seed``: id times a multiplier drawn from the
    seed, modulo a prime: a permutation of the ids (below 2**31). The multiplier is
    large, so that even ids 1, 2, 3... wrap around the prime at once (a small one
    would leave them in order)."""
    mult = random.Random(seed).randrange(RANDOM_P // 4, RANDOM_P - 1)
    return (sa.cast(t.c.id, sa.BigInteger) * mult) % RANDOM_P  # 64-bit on PostgreSQL


def day_expr(t: Any, sqlite: bool, tz: int = 0) -> Any:
    """The day number (days since 1970-01-01 in the zone) of each row's mtime."""
    shifted = t.c.mtime + tz * 60
    if sqlite:
        # CAST truncates toward zero: right for the years after 1970 a file has
        return sa.cast(shifted / 86400, sa.Integer)
    return sa.func.floor(shifted / 86400)


def day_label(day: int, by: str) -> str:
    d = datetime(1970, 1, 1) + timedelta(days=int(day))
    return d.strftime("%Y-%m-%d" if by == "day" else "%Y-%m" if by == "month" else "%Y")
