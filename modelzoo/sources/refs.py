"""What users paste, parsed into a typed reference, or refused at once.

Accepted forms (``ACCEPTED`` below, which every refusal quotes):

    civitai    https://civitai.com/models/4201[/slug][?modelVersionId=130072]
               https://civitai.com/api/download/models/130072[?fileId=..]
               civitai:4201   civitai:4201@130072   civitai:@130072
               urn:air:sdxl:lora:civitai:827184@2514310
    huggingface  https://huggingface.co/<org>/<repo>/blob|resolve/<rev>/<path>
               https://huggingface.co/<org>/<repo>[/tree/<rev>]   (the whole repo)
               hf:<org>/<repo>/<path>[@rev]     hf:<org>/<repo>[@rev] (the whole repo)
    modelscope modelscope:<org>/<repo>/<path>[@rev]
               https://modelscope.cn/models/<org>/<repo>/resolve/<rev>/<path>
    url        any other http(s) URL

A Civitai or Hugging Face web address is recognised by its path shape on the known hosts
and on the configured ones (a proxy, hf-mirror.com), so the configured host then serves
the API calls. Anything else fails here, before any network traffic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from ..errors import BadReference

ACCEPTED = (
    "civitai:<modelId>[@<versionId>], a civitai.com model or version page "
    "(https://civitai.com/models/4201?modelVersionId=130072), a download link "
    "(https://civitai.com/api/download/models/130072) or an AIR "
    "(urn:air:sdxl:lora:civitai:827184@2514310); "
    "hf:<org>/<repo>/<path>[@rev], hf:<org>/<repo>[@rev] (a whole repo) or "
    "https://huggingface.co/<org>/<repo>/blob|resolve/<rev>/<path>; "
    "modelscope:<org>/<repo>/<path>[@rev]; or any other http(s) URL")

CIVITAI_HOSTS = ("civitai.com", "civitai.red", "civitai.green")
HF_HOSTS = ("huggingface.co", "hf.co", "hf-mirror.com")
MODELSCOPE_HOSTS = ("modelscope.cn", "modelscope.ai")

_ID = re.compile(r"^[0-9]{1,12}$")
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_AIR = re.compile(
    r"^urn:air:(?P<eco>[a-z0-9_.-]+):(?P<type>[a-z0-9_.-]+):(?P<source>[a-z0-9_.-]+):"
    r"(?P<id>[^@.]+)(?:@(?P<version>[^.]+))?(?:\.(?P<format>[a-z0-9]+))?$", re.I)


@dataclass(frozen=True)
class CivitaiRef:
    model_id: str | None
    version_id: str | None
    file_id: str | None = None

    @property
    def canonical(self) -> str:
        if self.model_id is None:
            return f"civitai:@{self.version_id}"
        return f"civitai:{self.model_id}" + (f"@{self.version_id}" if self.version_id else "")


@dataclass(frozen=True)
class HfRef:
    repo: str                 # org/name
    path: str | None          # None: the whole repo
    revision: str | None

    @property
    def canonical(self) -> str:
        tail = f"/{self.path}" if self.path else ""
        return f"hf:{self.repo}{tail}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class ModelScopeRef:
    repo: str
    path: str | None
    revision: str | None

    @property
    def canonical(self) -> str:
        tail = f"/{self.path}" if self.path else ""
        return f"modelscope:{self.repo}{tail}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class UrlRef:
    url: str

    @property
    def canonical(self) -> str:
        return self.url


Reference = CivitaiRef | HfRef | ModelScopeRef | UrlRef


def bad(text: str, why: str) -> BadReference:
    shown = text if len(text) <= 200 else text[:200] + "..."
    return BadReference(f"{why}: {shown!r}. Accepted: {ACCEPTED}")


def _matches(parts: SplitResult, known: Iterable[str], configured: Iterable[str | None]
             ) -> bool:
    """A well-known host (or a sub-domain of one), or exactly a configured host:port."""
    host = (parts.hostname or "").lower()
    if any(host == k or host.endswith("." + k) for k in known):
        return True
    return any(u and urlsplit(u).netloc.lower() == parts.netloc.lower() for u in configured)


def parse(text: str, *, civitai_urls: Iterable[str | None] = (),
          hf_urls: Iterable[str | None] = (),
          modelscope_urls: Iterable[str | None] = ()) -> Reference:
    """Parse one reference. ``*_urls`` are configured hosts (a proxy, a mirror) whose web
    addresses count as that source's, beside the well-known ones."""
    raw = text.strip()
    if not raw:
        raise bad(text, "empty reference")
    if any(ord(c) < 32 for c in raw):
        raise bad(text, "control characters in the reference")
    lower = raw.lower()
    if lower.startswith("urn:air:"):
        return _air(raw)
    if lower.startswith("civitai:"):
        return _civitai_short(raw, raw[8:])
    if lower.startswith("hf:") or lower.startswith("huggingface:"):
        return _hub_short(raw, raw.split(":", 1)[1], HfRef)
    if lower.startswith("modelscope:") or lower.startswith("ms:"):
        return _hub_short(raw, raw.split(":", 1)[1], ModelScopeRef)
    if lower.startswith(("http://", "https://")):
        parts = urlsplit(raw)
        if not parts.hostname:
            raise bad(text, "a URL without a host")
        if _matches(parts, CIVITAI_HOSTS, civitai_urls):
            ref = _civitai_url(raw, parts.path, parts.query)
            if ref is not None:
                return ref
        if _matches(parts, HF_HOSTS, hf_urls):
            hf = _hub_url(raw, parts.path, HfRef)
            if hf is not None:
                return hf
        if _matches(parts, MODELSCOPE_HOSTS, modelscope_urls):
            path = parts.path
            if path.startswith("/models/"):
                ms = _hub_url(raw, path[len("/models"):], ModelScopeRef)
                if ms is not None:
                    return ms
        return UrlRef(raw)
    scheme = raw.split(":", 1)[0] if ":" in raw else ""
    why = f"unknown scheme {scheme!r}" if scheme and "/" not in scheme else "not a reference"
    raise bad(text, why)


def _air(raw: str) -> CivitaiRef:
    m = _AIR.match(raw)
    if not m:
        raise bad(raw, "malformed AIR")
    if m["source"].lower() != "civitai":
        raise bad(raw, f"AIR source {m['source']!r} is not supported (only civitai)")
    model, version = m["id"], m["version"]
    if not _ID.match(model) or (version is not None and not _ID.match(version)):
        raise bad(raw, "AIR ids must be numbers")
    return CivitaiRef(model, version)


def _civitai_short(raw: str, rest: str) -> CivitaiRef:
    model, sep, version = rest.strip().partition("@")
    model = model.strip()
    version = version.strip()
    if sep and not version:
        raise bad(raw, "a version id must follow '@'")
    if model and not _ID.match(model):
        raise bad(raw, "civitai model ids are numbers")
    if version and not _ID.match(version):
        raise bad(raw, "civitai version ids are numbers")
    if not model and not version:
        raise bad(raw, "civitai: needs a model id")
    return CivitaiRef(model or None, version or None)


def _civitai_url(raw: str, path: str, query: str) -> CivitaiRef | None:
    q = parse_qs(query)
    segs = [s for s in path.split("/") if s]
    version = q["modelVersionId"][0] if q.get("modelVersionId") else None
    file_id = q["fileId"][0] if q.get("fileId") else None
    if version is not None and not _ID.match(version):
        raise bad(raw, "modelVersionId must be a number")
    if file_id is not None and not _ID.match(file_id):
        raise bad(raw, "fileId must be a number")
    if len(segs) >= 2 and segs[0] == "models":
        if not _ID.match(segs[1]):
            raise bad(raw, "civitai model ids are numbers")
        return CivitaiRef(segs[1], version)
    if len(segs) >= 4 and segs[:3] == ["api", "download", "models"]:
        if not _ID.match(segs[3]):
            raise bad(raw, "civitai version ids are numbers")
        return CivitaiRef(None, segs[3], file_id)
    if len(segs) >= 4 and segs[:3] == ["api", "v1", "model-versions"] and _ID.match(segs[3]):
        return CivitaiRef(None, segs[3])
    if len(segs) >= 4 and segs[:3] == ["api", "v1", "models"] and _ID.match(segs[3]):
        return CivitaiRef(segs[3], None)
    return None


def _repo(raw: str, org: str, name: str) -> str:
    for part in (org, name):
        if not _REPO_PART.match(part) or ".." in part:
            raise bad(raw, f"{part!r} is not a valid repo name part")
    return f"{org}/{name}"


def _clean_path(raw: str, path: str) -> str:
    segs = path.split("/")
    if any(s in ("", ".", "..") for s in segs) or "\\" in path:
        raise bad(raw, "the file path in the repo is not clean")
    return path


def _hub_short(raw: str, rest: str, cls: type[HfRef] | type[ModelScopeRef]
               ) -> HfRef | ModelScopeRef:
    body, sep, rev = rest.strip().rpartition("@") if "@" in rest else (rest.strip(), "", "")
    if sep and not rev:
        raise bad(raw, "a revision must follow '@'")
    segs = body.strip("/").split("/")
    if len(segs) < 2:
        raise bad(raw, "a repo is <org>/<name>")
    repo = _repo(raw, segs[0], segs[1])
    path = _clean_path(raw, "/".join(segs[2:])) if len(segs) > 2 else None
    return cls(repo, path, rev or None)


def _hub_url(raw: str, path: str, cls: type[HfRef] | type[ModelScopeRef]
             ) -> HfRef | ModelScopeRef | None:
    segs = [unquote(s) for s in path.split("/") if s]
    if len(segs) < 2 or segs[0] in ("api", "datasets", "spaces", "docs", "login"):
        return None
    repo = _repo(raw, segs[0], segs[1])
    if len(segs) == 2:
        return cls(repo, None, None)
    kind = segs[2]
    if kind == "tree" and len(segs) >= 4:
        return cls(repo, None, segs[3])
    if kind in ("blob", "resolve", "raw") and len(segs) >= 5:
        return cls(repo, _clean_path(raw, "/".join(segs[4:])), segs[3])
    return None
