"""Hugging Face: metadata through huggingface_hub, bytes through our engine and mirrors.

    model_info(repo, revision)                    GET /api/models/{repo}[/revision/{rev}]
        the commit (``sha``), card data (base_model, instance_prompt), tags, gated;
        with ``files_metadata=True`` every file's size and LFS sha256 (whole repos)
    get_hf_file_metadata(resolve URL)             HEAD /{repo}/resolve/{commit}/{path}
        X-Repo-Commit, X-Linked-Etag (the sha256 of an LFS/Xet file), X-Linked-Size,
        Location (the CDN); only relative redirects are followed, never the CDN

The file is then fetched from ``{endpoint}/{repo}/resolve/{commit}/{path}`` on the
endpoint (``HF_ENDPOINT``) and on each of ``ATELIER_HF_MIRRORS``, which the engine ranks
and stripes across; pinning the commit keeps every mirror on the same bytes, and the
sha256 from X-Linked-Etag verifies them without anyone asking. The token (``HF_TOKEN``)
goes to the endpoint and the configured mirrors (hf-mirror forwards it for gated repos),
never to the CDN they redirect to.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import requests

from .. import naming
from ..errors import (
    BadReference,
    FetchError,
    RateLimited,
    RemoteAuthRequired,
    RemoteError,
    RemoteNotFound,
)
from ..placement import is_model_name
from ..sniff import LORA, OTHER, sniff_bytes
from . import remote
from .model import RemoteFile, Resolution
from .refs import HfRef

TOKEN_SETTING = "HF_TOKEN (or ATELIER_HF_TOKEN, or the Models settings page)"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# base_model ids and diffusers pipeline tags -> Civitai's base model names
_BASES = (
    ("stable-diffusion-xl-refiner", "SDXL Refiner"), ("stable-diffusion-xl", "SDXL 1.0"),
    ("sdxl", "SDXL 1.0"), ("flux.1-schnell", "Flux.1 S"), ("flux.1-dev", "Flux.1 D"),
    ("flux", "Flux.1 D"), ("stable-diffusion-3", "SD 3"), ("stable-diffusion-2", "SD 2.1"),
    ("stable-diffusion-v1", "SD 1.5"), ("stable-diffusion-1", "SD 1.5"),
    ("stablediffusionxlpipeline", "SDXL 1.0"), ("fluxpipeline", "Flux.1 D"),
    ("stablediffusion3pipeline", "SD 3"), ("stablediffusionpipeline", "SD 1.5"),
)


def base_model_of(card: Any, tags: Sequence[str] | None) -> str | None:
    texts: list[str] = []
    base = getattr(card, "base_model", None) if card is not None else None
    if isinstance(base, str):
        texts.append(base)
    elif isinstance(base, list):
        texts.extend(str(b) for b in base)
    texts.extend(t.split(":", 1)[-1] for t in tags or [] if t.startswith(("base_model:",
                                                                         "diffusers:")))
    for text in texts:
        low = text.lower()
        for marker, name in _BASES:
            if marker in low:
                return name
    return None


class HuggingFace:
    def __init__(self, endpoint: str, token: str | None = None,
                 mirrors: Sequence[str] = (), sess: requests.Session | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.mirrors = [m.rstrip("/") for m in mirrors if m.rstrip("/") != self.endpoint]
        self.token = token or None
        self.sess = sess or remote.session()

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint, *self.mirrors]

    def origin_headers(self) -> dict[str, dict[str, str]]:
        if not self.token:
            return {}
        auth = {"Authorization": f"Bearer {self.token}"}
        return {remote.origin(e): auth for e in self.endpoints}

    def _api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token or False)

    def file_url(self, endpoint: str, repo: str, revision: str, path: str) -> str:
        return (f"{endpoint}/{repo}/resolve/{quote(revision, safe='')}/"
                f"{quote(path, safe='/')}")

    # -- resolve ------------------------------------------------------------------------

    def resolve(self, ref: HfRef, *, include: Sequence[str] | None = None,
                exclude: Sequence[str] | None = None, probe: bool = True) -> Resolution:
        if ref.path is None:
            return self._repo(ref, include, exclude)
        return self._file(ref, probe)

    def _file(self, ref: HfRef, probe: bool) -> Resolution:
        from huggingface_hub import get_hf_file_metadata

        assert ref.path is not None
        info = _call(lambda: self._api().model_info(ref.repo, revision=ref.revision),
                     ref, self.token)
        commit = info.sha or ref.revision or "main"
        url = self.file_url(self.endpoint, ref.repo, commit, ref.path)
        meta = _call(lambda: get_hf_file_metadata(url, token=self.token or False,
                                                  endpoint=self.endpoint), ref, self.token)
        commit = meta.commit_hash or commit
        etag = (meta.etag or "").lower()
        sha = etag if _SHA256.match(etag) else None
        urls = [self.file_url(e, ref.repo, commit, ref.path) for e in self.endpoints]
        base = base_model_of(info.card_data, info.tags)
        name = naming.sanitize(posixpath.basename(ref.path)) or "model.safetensors"
        mtype, why, size = (LORA if "lora" in (info.tags or []) else OTHER), None, meta.size
        sniff_after = False
        if probe and is_model_name(ref.path):
            found = remote.probe(self.sess, urls[0], what=f"{ref.repo}/{ref.path}",
                                 origin_headers=self.origin_headers())
            name = naming.choose(found.disposition, name, None) or name
            size = size or found.total
            sniffed = sniff_bytes(found.head)
            if sniffed is not None:
                mtype, why = sniffed.type, sniffed.why
                base = sniffed.base_model or base
            else:
                sniff_after = name.lower().endswith((".safetensors", ".sft"))
        trigger = getattr(info.card_data, "instance_prompt", None) if info.card_data else None
        return Resolution(
            ref=HfRef(ref.repo, ref.path, ref.revision).canonical, source="huggingface",
            name=name, version=ref.revision or commit[:12], model_id=ref.repo,
            version_id=commit, type=mtype, base_model=base,
            files=[RemoteFile(name=name, path=name, urls=urls, size=size, sha256=sha,
                              primary=True, auth="hf", model=is_model_name(name))],
            trigger_words=[str(trigger)] if trigger else [],
            page=f"{self.endpoint}/{ref.repo}", sniffed=why, sniff_after=sniff_after)

    def _repo(self, ref: HfRef, include: Sequence[str] | None,
              exclude: Sequence[str] | None) -> Resolution:
        from huggingface_hub.utils import filter_repo_objects

        info = _call(lambda: self._api().model_info(ref.repo, revision=ref.revision,
                                                    files_metadata=True), ref, self.token)
        commit = info.sha or ref.revision or "main"
        siblings = list(info.siblings or [])
        names = {s.rfilename for s in siblings}
        chosen = list(filter_repo_objects(siblings, allow_patterns=list(include or []) or None,
                                          ignore_patterns=list(exclude or []) or None,
                                          key=lambda s: s.rfilename))
        chosen = [s for s in chosen if not _hidden(s.rfilename)]
        if not chosen:
            raise BadReference(f"hf:{ref.repo}: no file left after include/exclude "
                               f"({len(siblings)} in the repo)")
        files = []
        for s in chosen:
            lfs = s.lfs
            sha = (lfs.sha256 if lfs is not None else None)
            size = lfs.size if lfs is not None else s.size
            files.append(RemoteFile(
                name=posixpath.basename(s.rfilename), path=s.rfilename,
                urls=[self.file_url(e, ref.repo, commit, s.rfilename) for e in self.endpoints],
                size=size, sha256=sha.lower() if sha and _SHA256.match(sha.lower()) else None,
                primary=s.rfilename == "model_index.json", auth="hf",
                model=is_model_name(s.rfilename)))
        if not any(f.primary for f in files):
            files[0].primary = True
        diffusers = "model_index.json" in names
        return Resolution(
            ref=HfRef(ref.repo, None, ref.revision).canonical, source="huggingface",
            name=ref.repo, version=ref.revision or commit[:12], model_id=ref.repo,
            version_id=commit, type="Diffusers" if diffusers else OTHER,
            base_model=base_model_of(info.card_data, info.tags), files=files,
            page=f"{self.endpoint}/{ref.repo}", folder=ref.repo)


def _hidden(path: str) -> bool:
    return any(part.startswith(".") for part in path.split("/"))


def _call(fn: Any, ref: HfRef, token: str | None) -> Any:
    """Run a huggingface_hub call; its errors become ours, with what to do about them."""
    from huggingface_hub import errors as hf

    what = f"hf:{ref.repo}" + (f"/{ref.path}" if ref.path else "")
    try:
        return fn()
    except hf.GatedRepoError:
        if token:
            raise RemoteAuthRequired(
                f"{what}: the repo is gated and the token in {TOKEN_SETTING} has no access; "
                f"accept its terms on the repo page with that account") from None
        raise RemoteAuthRequired(
            f"{what}: the repo is gated: accept its terms on huggingface.co, then set a "
            f"token in {TOKEN_SETTING}") from None
    except hf.RepositoryNotFoundError:
        hint = "" if token else f" (if it is private, set a token in {TOKEN_SETTING})"
        raise RemoteNotFound(f"{what}: no such repo{hint}") from None
    except hf.RevisionNotFoundError:
        raise RemoteNotFound(f"{what}: no revision {ref.revision!r}") from None
    except hf.RemoteEntryNotFoundError:
        raise RemoteNotFound(f"{what}: no such file in the repo") from None
    except hf.OfflineModeIsEnabled:
        raise RemoteError(f"{what}: HF_HUB_OFFLINE is set, so Hugging Face is not "
                          f"contacted") from None
    except hf.HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status == 429:
            raise RateLimited(f"{what}: Hugging Face is rate limiting; try again later "
                              f"(a token raises the limit)") from None
        if status in (401, 403):
            raise RemoteAuthRequired(f"{what}: access refused (HTTP {status}); check "
                                     f"{TOKEN_SETTING}") from None
        raise RemoteError(f"{what}: Hugging Face answered HTTP {status}") from None
    except FetchError:
        raise
    except Exception as e:  # connection errors of its HTTP client, bad JSON
        raise RemoteError(f"{what}: cannot reach Hugging Face ({type(e).__name__}: {e})"
                          ) from None
