"""Image routes: ``/api/fs/info``, ``/api/fs/thumb``, ``/api/search``.

Handlers are plain ``def``: metadata reads, renders (waiting on the bounded thumbnail
pool) and queries run in FastAPI's thread pool, never on the event loop.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from ..access.auth import AdminUser, CurrentUser
from ..access.jail import parent_of
from ..db import BIGINT_MAX
from ..deps import FB
from ..errors import InvalidInput, Unavailable
from ..files import fs
from .facets import FACETS
from .facets import facets as count_facets
from .index import SearchQuery, parse_time, search
from .query import MAX_VALUES, BadQuery, Value, parse_value
from .responses import image_info, thumb_response, thumb_url
from .service import ImagesDep
from .thumbs import SIZES, version_of

router = APIRouter(tags=["images"])



@router.get("/api/fs/info")
def info(p: CurrentUser, fb: FB, path: str = Query(..., max_length=8192)) -> dict:
    """A file's details; for images the dimensions and generation parameters of any
    generator (README "Image metadata"), read from metadata chunks, not the pixels
    (unless stealth info is enabled)."""
    with fb.jail.open(p.scope, path) as h:
        if not h.is_file:
            raise InvalidInput("this is a folder" if h.is_dir else "not a regular file")
        assert h.stat is not None
        entry = fs.entry_of(h).to_json(parent_of(h.vpath)) | {"path": h.vpath}
        out = image_info(h, entry, stealth=fb.settings.images_stealth_pnginfo)
        if entry["kind"] == "image":
            out["thumb"] = thumb_url(h.vpath, version_of(h.stat))
        return out


@router.get("/api/fs/thumb", response_class=Response,
            responses={200: {"content": {"image/webp": {}}}})
def thumb(request: Request, p: CurrentUser, fb: FB, images: ImagesDep,
          path: str = Query(..., max_length=8192),
          size: Literal["256", "1024"] = Query("256", description=f"one of {SIZES}"),
          v: str | None = Query(None, max_length=64,
                                description="the file's version; makes the URL cacheable"),
          ) -> Response:
    """A WebP thumbnail (256 px grid or 1024 px preview), or a placeholder if the image
    cannot be read."""
    with fb.jail.open(p.scope, path) as h:
        return thumb_response(request, images.thumbs, h, int(size), v, fb.root)


def _filter(name: str, what: str) -> Any:
    return Query(None, max_length=1000, description=f"{what}; repeat for OR, -value or "
                 f"not_{name}= to exclude, \"quoted\" for the exact value")


def _not(name: str) -> Any:
    return Query(None, max_length=1000, alias=f"not_{name}",
                 description=f"exclude these {name} values")


_WHAT = {"model": "model name part or hash start", "lora": "LoRA name part",
         "embedding": "embedding name part", "sampler": "sampler name part",
         "size": "image size WxH, e.g. 512x768",
         "source": "the generator: a1111, forge, comfyui, novelai, invokeai, swarmui, "
                   "fooocus, unknown, none",
         "date": "a day, month or year: 2024-05-01, 2024-05", "folder": "below this folder"}
_F = {name: _filter(name, what) for name, what in _WHAT.items()}
_N = {name: _not(name) for name in _WHAT}


def search_query(
    p: CurrentUser, fb: FB,
    q: str | None = Query(None, max_length=1000,
                          description='words anywhere: prompt, negative, parameters (seed, '
                          'model, hash, LoRA, sampler, size...), file name and folder; '
                          '"a phrase", -exclude, prefix*'),
    prompt: str | None = Query(None, max_length=1000, description="words in the prompt"),
    negative: str | None = Query(None, max_length=1000,
                                 description="words in the negative prompt"),
    model: list[str] | None = _F["model"],
    lora: list[str] | None = _F["lora"],
    embedding: list[str] | None = _F["embedding"],
    sampler: list[str] | None = _F["sampler"],
    size: list[str] | None = _F["size"],
    source: list[str] | None = _F["source"],
    date: list[str] | None = _F["date"],
    folder: list[str] | None = _F["folder"],
    not_model: list[str] | None = _N["model"],
    not_lora: list[str] | None = _N["lora"],
    not_embedding: list[str] | None = _N["embedding"],
    not_sampler: list[str] | None = _N["sampler"],
    not_size: list[str] | None = _N["size"],
    not_source: list[str] | None = _N["source"],
    not_date: list[str] | None = _N["date"],
    not_folder: list[str] | None = _N["folder"],
    name: str | None = Query(None, max_length=300, description="file name glob, e.g. 0001*"),
    kind: Literal["image", "model"] | None = None,
    after: str | None = Query(None, max_length=40, description="mtime >=, epoch or ISO"),
    before: str | None = Query(None, max_length=40, description="mtime <, epoch or ISO"),
    min_size: int | None = Query(None, ge=0, le=BIGINT_MAX),
    max_size: int | None = Query(None, ge=0, le=BIGINT_MAX),
    tz: int = Query(0, ge=-16 * 60, le=16 * 60,
                    description="your time zone, minutes east of UTC (dates, date facet)"),
    sort: Literal["mtime", "date", "relevance", "name", "size", "random"] = "mtime",
    order: Literal["asc", "desc"] = "desc",
    seed: int | None = Query(None, ge=0, le=2**31 - 1,
                             description="sort=random: the order's seed (answered back)"),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=1000),
    exact_total: bool = Query(False, description="count every match (slower past "
                                                 "ATELIER_INDEX_COUNT_LIMIT)"),
) -> SearchQuery:
    """The search and filter parameters, shared by ``/api/search`` and its facets;
    folders are checked against the caller's scope here."""
    filters: dict[str, Any] = {}
    for field, pos, neg in (("model", model, not_model), ("lora", lora, not_lora),
                            ("embedding", embedding, not_embedding),
                            ("sampler", sampler, not_sampler), ("size", size, not_size),
                            ("source", source, not_source), ("date", date, not_date),
                            ("folder", folder, not_folder)):
        values = list(pos or []) + [f"-{v}" for v in neg or []]
        if len(values) > MAX_VALUES:
            raise InvalidInput(f"at most {MAX_VALUES} values per filter")
        if any(len(v) > 1000 for v in values):  # Query's max_length skips list items
            raise InvalidInput(f"a {field} value is longer than 1000 characters")
        filters[field] = values
    folders = []
    for raw in filters.pop("folder"):
        v = parse_value(raw)
        if not v.text:
            continue
        vpath, _ = fb.jail.resolve(p.scope, v.text)  # outside the scope: 404
        folders.append(str(Value(vpath, v.neg, v.exact)))
    try:
        return SearchQuery(q=q, prompt=prompt, negative=negative, folder=folders, name=name,
                           kind=kind, after=parse_time(after), before=parse_time(before),
                           min_size=min_size, max_size=max_size, tz=tz, sort=sort,
                           order=order, seed=seed, limit=limit, cursor=cursor,
                           exact_total=exact_total, **filters)
    except BadQuery as exc:
        raise InvalidInput(str(exc)) from None


SearchParams = Annotated[SearchQuery, Depends(search_query)]


def _facet_fields(value: str) -> list[str]:
    return [f.strip() for f in value.split(",") if f.strip()]


@router.get("/api/search")
def search_images(
    p: CurrentUser, images: ImagesDep, sq: SearchParams,
    facets: str | None = Query(None, max_length=200,
                               description="also count these facets (comma-separated: "
                               f"{', '.join(FACETS)}), as /api/search/facets does"),
    facet_limit: int = Query(20, ge=1, le=500),
    date_by: Literal["day", "month", "year"] = "month",
) -> dict:
    """Indexed images and models you may read; follow ``next`` for more. ``total`` is
    exact up to ATELIER_INDEX_COUNT_LIMIT matches; past it ``total_exact`` is false."""
    if images.index is None or images.service is None:
        raise Unavailable()
    try:
        out = search(images.index, p.scope, sq)
        if facets:
            out |= count_facets(images.index, p.scope, sq, _facet_fields(facets),
                                limit=facet_limit, date_by=date_by)
    except BadQuery as exc:
        raise InvalidInput(str(exc)) from None
    for r in out["results"]:
        if r["kind"] == "image":
            r["thumb"] = thumb_url(r["path"], r["version"])
    out["indexing"] = images.index.status.scanning
    return out


@router.get("/api/search/facets")
def search_facets(
    p: CurrentUser, images: ImagesDep, sq: SearchParams,
    fields: str = Query(",".join(FACETS), max_length=200,
                        description=f"comma-separated: {', '.join(FACETS)}"),
    facet_limit: int = Query(20, ge=1, le=500, description="values per facet"),
    date_by: Literal["day", "month", "year"] = "month",
) -> dict:
    """How many of the matches have each model, LoRA, sampler, size, generator, folder
    and date. A field's counts ignore that field's own filter (so its other values show
    what choosing them too would add); at most ATELIER_INDEX_FACET_LIMIT matches are
    looked at, the newest first (past it ``exact`` is false)."""
    if images.index is None or images.service is None:
        raise Unavailable()
    try:
        out = count_facets(images.index, p.scope, sq, _facet_fields(fields),
                           limit=facet_limit, date_by=date_by)
    except BadQuery as exc:
        raise InvalidInput(str(exc)) from None
    out["indexing"] = images.index.status.scanning
    return out


@router.get("/api/search/status")
def index_status(p: CurrentUser, images: ImagesDep) -> dict:
    if images.index is None or images.service is None:
        return {"enabled": False}
    # the flags first, then the counts: a client polling until "scanning" is false then
    # sees at least the numbers of the finished scan
    status = dict(images.service.iter_status())
    return {"enabled": True, "counts": images.index.counts(), **status}


@router.post("/api/search/reindex", status_code=202)
def reindex(p: AdminUser, images: ImagesDep,
            reset: bool = Query(False, description="drop the index and rebuild it")) -> dict:
    """Rescan every file now (``reset``: rebuild from nothing); runs in the background."""
    if images.service is None:
        raise Unavailable()
    images.service.request("reset" if reset else "deep")
    return {"accepted": True}
