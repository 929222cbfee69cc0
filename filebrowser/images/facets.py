"""Facet counts: how many matches of a search have each model, LoRA, sampler, size,
generator, folder and date, for the Images page's filters.

The counts of one field obey every filter but that field's own, so choosing a second
value of a field (an OR) still shows what each would add; a NOT on the field is left
out with it. Fields without a filter of their own share one pass.

Counting is bounded like the search's totals: at most ``index.facet_limit`` matches
are looked at, the most recently indexed first (the table's own order: no sort). Past
that, ``exact`` is false and each count is the count among those, so a lower bound of
the real one.

One SQL pass per group: the matches (their facet columns only) in a materialized CTE,
then one GROUP BY per field over it, ``UNION ALL``-ed; LoRA names sit in one column
(``|a|b|``) and are counted in Python from the same CTE.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from ..access.jail import Scope
from .index import Index, SearchQuery, conditions, image_index, select_where
from .query import FIELDS as FILTER_FIELDS
from .query import BadQuery, day_expr, day_label, values_of

FACETS = ("model", "lora", "sampler", "size", "source", "folder", "date")
DATE_BY = ("day", "month", "year")
MAX_LIMIT = 500


def _columns(fields: Iterable[str], sqlite: bool, tz: int) -> list[Any]:
    t = image_index
    cols: dict[str, Any] = {}
    for f in fields:
        if f in ("model", "sampler", "source", "folder"):
            cols[f] = getattr(t.c, f)
        elif f == "lora":
            cols["loras"] = t.c.loras
        elif f == "size":
            cols["width"], cols["height"] = t.c.width, t.c.height
        elif f == "date":
            cols["day"] = day_expr(t, sqlite, tz).label("day")
    return [c.label(name) for name, c in cols.items()]


def _group(cte: Any, field: str, limit: int | None) -> Any:
    """``SELECT field, value, value2, count`` of one field over the CTE: the top
    ``limit`` values (all when None). Values as text, so that the branches unite."""
    c = cte.c
    text = sa.Text
    label = sa.literal(field).label("f")
    n = sa.func.count().label("n")
    if field == "size":
        q = sa.select(label, sa.cast(c.width, text).label("v"), sa.cast(c.height, text)
                      .label("v2"), n).where(c.width.is_not(None), c.height.is_not(None)) \
            .group_by(c.width, c.height).order_by(sa.desc("n"), c.width, c.height)
    elif field == "date":  # newest first, not biggest first
        q = sa.select(label, sa.cast(c.day, text).label("v"), sa.cast(sa.null(), text)
                      .label("v2"), n).group_by(c.day).order_by(c.day.desc())
    else:
        col = c.loras if field == "lora" else getattr(c, field)
        q = sa.select(label, sa.cast(col, text).label("v"), sa.cast(sa.null(), text)
                      .label("v2"), n).group_by(col).order_by(sa.desc("n"), col)
        if field != "source":  # images without a model are not a model's
            q = q.where(col.is_not(None))
    return q.limit(limit + 1) if limit is not None else q


def _count_group(index: Index, scope: Scope, sq: SearchQuery, fields: list[str],
                 skip: str | None, limit: int, date_by: str,
                 out: dict[str, Any]) -> tuple[int, bool]:
    """Count ``fields`` under the conditions of ``sq`` less ``skip``; (scanned, exact).
    One statement: the CTE is evaluated once."""
    t = image_index
    where = conditions(index, scope, sq, skip=skip)
    cap = index.facet_limit
    base = select_where(where, *_columns(fields, index.fts, sq.tz)).order_by(
        t.c.id.desc()).limit(cap + 1)
    # one row past the cap tells whether there are more; the counts stop at the cap
    over = base.cte("m_all").prefix_with("MATERIALIZED")
    cte = sa.select(over).limit(cap).cte("m").prefix_with("MATERIALIZED")
    branches: list[Any] = [sa.select(sa.literal("").label("f"), sa.cast(sa.null(), sa.Text)
                                     .label("v"), sa.cast(sa.null(), sa.Text).label("v2"),
                                     sa.func.count().label("n")).select_from(over)]
    for f in fields:
        # LoRA combinations ("|a|b|") are all fetched and split here; dates are merged
        # into months or years here
        whole = f == "lora" or (f == "date" and date_by != "day")
        branches.append(_group(cte, f, None if whole else limit))
    union = sa.union_all(*[b.subquery().select() for b in branches])
    try:
        with index.engine.connect() as conn:
            rows = conn.execute(union).all()
    except sa.exc.OperationalError as exc:
        if "fts5" in str(exc).lower() or "syntax" in str(exc).lower():
            raise BadQuery("could not understand the search words") from None
        raise
    scanned = 0
    by: dict[str, list[dict[str, Any]]] = {f: [] for f in fields}
    loras: Counter[str] = Counter()
    for f, v, v2, n in rows:
        n = int(n)
        if f == "":
            scanned = n
        elif f == "size":
            by[f].append({"value": f"{v}x{v2}", "count": n})
        elif f == "date":
            by[f].append({"value": int(float(v)), "count": n})
        elif f == "lora":
            for name in set(v.split("|")):
                if name:
                    loras[name] += n
        else:
            by[f].append({"value": "none" if v is None else v, "count": n})
    exact = scanned <= cap
    scanned = min(scanned, cap)
    if "date" in fields:
        by["date"] = _dates(by["date"], date_by)
    if "lora" in fields:
        by["lora"] = _fold_case(loras)
    for f in fields:
        values = by[f]
        out[f] = {"values": values[:limit], "more": len(values) > limit, "exact": exact}
    return scanned, exact


def _dates(days: list[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    merged: dict[str, int] = {}
    for d in days:
        label = day_label(d["value"], by)
        merged[label] = merged.get(label, 0) + d["count"]
    return [{"value": k, "count": n} for k, n in sorted(merged.items(), reverse=True)]


def _fold_case(names: Counter[str]) -> list[dict[str, Any]]:
    """LoRA counts with names differing only in case merged (filters ignore case);
    the most common spelling names the group."""
    groups: dict[str, Counter[str]] = {}
    for name, n in names.items():
        groups.setdefault(name.lower(), Counter())[name] += n
    out = [(sum(c.values()), c.most_common(1)[0][0]) for c in groups.values()]
    out.sort(key=lambda x: (-x[0], x[1]))
    return [{"value": name, "count": n} for n, name in out]


def facets(index: Index, scope: Scope, sq: SearchQuery, fields: Iterable[str] = FACETS, *,
           limit: int = 20, date_by: str = "month") -> dict[str, Any]:
    """``{"facets": {field: {"values": [{value, count}], "more", "exact"}}, "exact",
    "scanned"}`` for the matches of ``sq`` that ``scope`` may read."""
    wanted = [f for f in dict.fromkeys(fields) if f]
    bad = [f for f in wanted if f not in FACETS]
    if bad:
        raise BadQuery(f"unknown facet {bad[0]!r}; one of {', '.join(FACETS)}")
    if date_by not in DATE_BY:
        raise BadQuery(f"date_by is one of {', '.join(DATE_BY)}")
    limit = max(1, min(limit, MAX_LIMIT))
    own = {f for f in wanted if f in FILTER_FIELDS and values_of(getattr(sq, f))}
    out: dict[str, Any] = {}
    exact_all, scanned_max = True, 0
    groups: list[tuple[list[str], str | None]] = []
    shared = [f for f in wanted if f not in own]
    if shared:
        groups.append((shared, None))
    groups += [([f], f) for f in wanted if f in own]
    for group, skip in groups:
        scanned, exact = _count_group(index, scope, sq, group, skip, limit, date_by, out)
        exact_all = exact_all and exact
        scanned_max = max(scanned_max, scanned)
    return {"facets": {f: out[f] for f in wanted}, "exact": exact_all, "scanned": scanned_max}
