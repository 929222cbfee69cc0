"""Civitai: models, versions, files and hashes through the public REST API v1.

    GET  /api/v1/models/{id}                 the model and its versions (newest first)
    GET  /api/v1/models?ids=1,2&limit=100    several models at once (update checks)
    GET  /api/v1/model-versions/{id}         one version: files[], images[], trainedWords
    GET  /api/v1/model-versions/by-hash/{h}  the version a file belongs to
    POST /api/v1/model-versions/by-hash      [sha256, ...] (at most 100) -> [version, ...]
    GET  /api/download/models/{versionId}?fileId={id}
         -> 307 to a signed storage URL (which expires: the engine re-asks this URL)

Always ``fileId``: the ``type/format/fp`` form printed in ``downloadUrl`` 404s for some
multi-file versions. The token goes as a Bearer header to the Civitai origin only.
Errors (non-browser User-Agent): 401 JSON when a login is needed, 403 ``Early Access``,
410 archived, 429 with or without Retry-After; ``files[]`` is missing when archived.
Sizes are ``sizeKB`` (a rounded float): shown, never enforced; the SHA256 is enforced.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn
from urllib.parse import urlencode

import requests

from .. import naming
from ..errors import (
    Archived,
    EarlyAccess,
    NotAModel,
    RateLimited,
    RemoteAuthRequired,
    RemoteError,
    RemoteNotFound,
)
from ..placement import is_model_name
from ..sniff import sniff_bytes
from . import remote
from .model import RemoteFile, Resolution
from .refs import CivitaiRef

TOKEN_SETTING = "ATELIER_CIVITAI_TOKEN (or CIVITAI_TOKEN, or the Models settings page)"
BATCH = 100


def plain_text(markup: str | None, limit: int = 4000) -> str:
    """Civitai descriptions are HTML: keep the words, drop the tags."""
    if not markup:
        return ""
    text = re.sub(r"<(script|style)\b.*?</\1\s*>", "", markup, flags=re.I | re.S)
    text = re.sub(r"<(br|/p|/div|/li|/h\d)[^>]*>", "\n", text, flags=re.I)
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    out = "\n".join(line for line in lines if line)
    return out[:limit]


class Civitai:
    def __init__(self, base_url: str, token: str | None = None,
                 sess: requests.Session | None = None, nsfw_level: int = 1) -> None:
        self.base = base_url.rstrip("/")
        self.api = f"{self.base}/api/v1"
        self.token = token or None
        self.sess = sess or remote.session()
        self.nsfw_level = nsfw_level

    # -- HTTP ---------------------------------------------------------------------------

    def origin_headers(self) -> dict[str, dict[str, str]]:
        if not self.token:
            return {}
        return {remote.origin(self.base): {"Authorization": f"Bearer {self.token}"}}

    def errors(self, resp: requests.Response, what: str) -> NoReturn:
        """Civitai's answers as our errors; the messages say what to do."""
        code = resp.status_code
        msg = remote.message_of(resp)
        said = f" (Civitai: {msg})" if msg else ""
        if code == 401:
            if self.token:
                raise RemoteAuthRequired(
                    f"{what}: Civitai refused the API key set in {TOKEN_SETTING}{said}",
                    url=resp.url)
            raise RemoteAuthRequired(
                f"{what}: Civitai needs a login for this download{said}; create an API key "
                f"on civitai.com (Account settings) and set it in {TOKEN_SETTING}", url=resp.url)
        if code == 403:
            if "early access" in msg.lower():
                deadline = _json_field(resp, "deadline")
                until = f" until {deadline}" if deadline else ""
                raise EarlyAccess(f"{what}: this version is in early access{until}; it can be "
                                  f"downloaded once bought on Civitai (with its API key in "
                                  f"{TOKEN_SETTING}) or after that date", url=resp.url)
            raise RemoteAuthRequired(f"{what}: Civitai refused the download{said}",
                                     url=resp.url)
        if code == 410:
            raise Archived(f"{what}: Civitai archived this version; its files are gone{said}",
                           url=resp.url)
        if code == 404:
            raise RemoteNotFound(f"{what}: not found on Civitai{said}", url=resp.url)
        if code == 429:
            after = remote.retry_after(resp)
            hint = f" (retry after {after:.0f} s)" if after is not None else ""
            raise RateLimited(f"{what}: Civitai is rate limiting{hint}; try again later",
                              url=resp.url)
        raise RemoteError(f"{what}: Civitai answered HTTP {code}{said}", url=resp.url)

    def _get(self, path: str, what: str, params: dict[str, str] | None = None) -> Any:
        return remote.get_json(self.sess, f"{self.api}{path}", what=what, params=params,
                               origin_headers=self.origin_headers(), on_error=self.errors)

    # -- API ----------------------------------------------------------------------------

    def model(self, model_id: str) -> dict[str, Any]:
        return dict(self._get(f"/models/{model_id}", f"Civitai model {model_id}"))

    def version(self, version_id: str) -> dict[str, Any]:
        return dict(self._get(f"/model-versions/{version_id}",
                              f"Civitai model version {version_id}"))

    def by_hash(self, digest: str) -> dict[str, Any] | None:
        try:
            return dict(self._get(f"/model-versions/by-hash/{digest.upper()}",
                                  f"Civitai hash {digest[:12]}"))
        except RemoteNotFound:
            return None

    def by_hashes(self, digests: Sequence[str]) -> list[dict[str, Any]]:
        """Versions for many sha256 at once (POST, batches of 100)."""
        out: list[dict[str, Any]] = []
        for i in range(0, len(digests), BATCH):
            batch = [d.upper() for d in digests[i:i + BATCH]]
            resp = remote.request(self.sess, "POST", f"{self.api}/model-versions/by-hash",
                                  what=f"Civitai by-hash ({len(batch)} hashes)",
                                  json_body=batch, origin_headers=self.origin_headers(),
                                  on_error=self.errors)
            data = resp.json()
            if isinstance(data, list):
                out.extend(v for v in data if isinstance(v, dict))
        return out

    def models(self, model_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Several models by id (for update checks), 100 per call."""
        ids = sorted({str(i) for i in model_ids})
        out: list[dict[str, Any]] = []
        for i in range(0, len(ids), BATCH):
            data = self._get("/models", "Civitai models",
                             params={"ids": ",".join(ids[i:i + BATCH]), "limit": str(BATCH)})
            items = data.get("items") if isinstance(data, dict) else None
            out.extend(m for m in items or [] if isinstance(m, dict))
        return out

    def download_url(self, version_id: str | int, file_id: str | int | None) -> str:
        q = f"?{urlencode({'fileId': file_id})}" if file_id is not None else ""
        return f"{self.base}/api/download/models/{version_id}{q}"

    def page_url(self, model_id: str | int | None, version_id: str | int | None) -> str:
        if model_id is None:
            return f"{self.base}/model-versions/{version_id}"
        q = f"?modelVersionId={version_id}" if version_id else ""
        return f"{self.base}/models/{model_id}{q}"

    # -- resolve ------------------------------------------------------------------------

    def resolve(self, ref: CivitaiRef, file: str | None = None, probe: bool = True
                ) -> Resolution:
        model: dict[str, Any] | None = None
        if ref.version_id is None:
            assert ref.model_id is not None
            model = self.model(ref.model_id)
            versions = [v for v in model.get("modelVersions") or [] if isinstance(v, dict)]
            if not versions:
                raise RemoteNotFound(f"Civitai model {ref.model_id} has no published version")
            version_id = str(versions[0]["id"])
        else:
            version_id = ref.version_id
        version = self.version(version_id)
        model_id = str(version.get("modelId") or ref.model_id or "") or None
        if model is None and model_id:
            try:
                model = self.model(model_id)
            except RemoteNotFound:
                model = None
        return self.resolution(version, model, file=file or ref.file_id, probe=probe)

    def resolution(self, version: dict[str, Any], model: dict[str, Any] | None, *,
                   file: str | None = None, probe: bool = True) -> Resolution:
        vid = str(version.get("id"))
        mid = str(version.get("modelId") or (model or {}).get("id") or "") or None
        vmodel: dict[str, Any] = (version["model"] if isinstance(version.get("model"), dict)
                                  else {})
        mtype = (model or {}).get("type") or vmodel.get("type") or "Other"
        mname = (model or {}).get("name") or vmodel.get("name") or f"Civitai {vid}"
        files = [f for f in version.get("files") or [] if isinstance(f, dict)]
        if not files:
            if (version.get("availability") or "").lower() == "archived" or "files" not in version:
                raise Archived(f"Civitai version {vid} is archived: its files are gone")
            raise RemoteNotFound(f"Civitai version {vid} has no downloadable file")
        chosen = _pick_file(files, file)
        sha = str((chosen.get("hashes") or {}).get("SHA256") or "").lower() or None
        if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", sha):
            sha = None
        size_kb = chosen.get("sizeKB")
        approx = int(round(float(size_kb) * 1024)) if isinstance(size_kb, int | float) else None
        url = self.download_url(vid, chosen.get("id"))
        name = naming.sanitize(str(chosen.get("name") or "")) or f"{vid}.safetensors"
        size, exact = approx, False
        if probe:
            found = remote.probe(self.sess, url, what=f"Civitai download of version {vid}",
                                 origin_headers=self.origin_headers(), on_error=self.errors)
            self._refuse_pages(found, vid)
            name = naming.choose(found.disposition, name, None) or name
            size, exact = (found.total, True) if found.total else (approx, False)
            sniffed = sniff_bytes(found.head)
            if sniffed is None and name.lower().endswith(".safetensors") and found.head:
                raise NotAModel(f"Civitai version {vid}: {name} does not start like a "
                                f"safetensors file", url=url)
        latest = _latest(model)
        update = (None if latest is None or str(latest.get("id")) == vid else
                  {"version_id": str(latest.get("id")), "name": latest.get("name")})
        res = Resolution(
            ref=f"civitai:{mid}@{vid}" if mid else f"civitai:@{vid}",
            source="civitai", name=str(mname), version=version.get("name"),
            model_id=mid, version_id=vid, type=str(mtype),
            base_model=version.get("baseModel"),
            files=[RemoteFile(name=name, path=name, urls=[url], size=size, size_exact=exact,
                              sha256=sha, primary=True, auth="civitai",
                              model=is_model_name(name))],
            preview_url=self.preview_url(version),
            trigger_words=[str(w).strip() for w in version.get("trainedWords") or []
                           if str(w).strip()],
            description=plain_text((model or {}).get("description")
                                   or version.get("description")),
            info=version, page=self.page_url(mid, vid), update=update)
        return res

    def preview_url(self, version: dict[str, Any]) -> str | None:
        """The first image (not a video) at or below the allowed nsfw level."""
        for img in version.get("images") or []:
            if not isinstance(img, dict) or not img.get("url"):
                continue
            if str(img.get("type") or "image").lower() != "image":
                continue
            if _nsfw_level(img) > self.nsfw_level:
                continue
            return str(img["url"])
        return None

    def _refuse_pages(self, found: remote.Probe, vid: str) -> None:
        """A 200 HTML page at the download URL is a login page (browser-looking clients,
        some proxies): the download needs a login, not a file named ``1002``."""
        start = found.head[:512].lstrip().lower()
        if found.content_type in ("text/html", "application/xhtml+xml") or start.startswith(
                (b"<!doctype html", b"<html")):
            title = re.search(rb"<title>(.*?)</title>", found.head[:4096], re.I | re.S)
            said = f" ({title.group(1).decode('utf-8', 'replace').strip()})" if title else ""
            refused = "refused the API key in" if self.token else "needs a login; set an API key in"
            raise RemoteAuthRequired(
                f"Civitai answered the download of version {vid} with an HTML page{said} "
                f"instead of the file: Civitai {refused} {TOKEN_SETTING}", url=found.url)


def _json_field(resp: requests.Response, key: str) -> str | None:
    try:
        data = resp.json()
    except ValueError:
        return None
    value = data.get(key) if isinstance(data, dict) else None
    return str(value) if value else None


def _pick_file(files: list[dict[str, Any]], wanted: str | None) -> dict[str, Any]:
    if wanted:
        for f in files:
            if str(f.get("id")) == str(wanted) or f.get("name") == wanted:
                return f
        names = ", ".join(str(f.get("name")) for f in files)
        raise RemoteNotFound(f"no file {wanted!r} in this version (it has: {names})")
    for f in files:
        if f.get("primary"):
            return f
    return next((f for f in files if f.get("type") == "Model"), files[0])


def _latest(model: dict[str, Any] | None) -> dict[str, Any] | None:
    versions = [v for v in (model or {}).get("modelVersions") or [] if isinstance(v, dict)]
    return versions[0] if versions else None


def _nsfw_level(img: dict[str, Any]) -> int:
    level = img.get("nsfwLevel")
    if isinstance(level, int):
        return level
    old = img.get("nsfw")  # the older API: "None" | "Soft" | "Mature" | "X", or a bool
    if old in (None, False, "None"):
        return 1
    return {"Soft": 2, "Mature": 4, "X": 8}.get(str(old), 16)
