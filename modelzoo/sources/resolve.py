"""One entry point for every source: parse the reference, ask its catalogue.

``Sources.resolve(text)`` is what the API's ``POST /api/models/resolve``, the job queue
and ``atelier fetch`` all call: nothing is downloaded beyond a probe of the first bytes.
``Sources.origin_headers(auth)`` gives the token headers for a file when it is fetched,
from the settings of that moment (an admin may have changed the token since).

The catalogues talk through a requests session, made (and requests imported, 30 ms) when
one is first asked for; a plain URL is probed without it (``firstbytes.py``), so that
``atelier fetch URL`` starts sooner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BadReference
from . import refs
from . import url as url_source
from .model import Auth, Resolution

if TYPE_CHECKING:
    import requests

    from ..fetch.sessions import Session
    from ..fetch.settings import FetchSettings
    from ..settings import ZooSettings
    from .civitai import Civitai
    from .huggingface import HuggingFace
    from .modelscope import ModelScope


@dataclass
class Sources:
    settings: ZooSettings
    given_sess: requests.Session | None = None
    # the fetch settings a plain URL is probed by (proxy, blocked networks); None: the
    # environment's
    fetch_settings: FetchSettings | None = None

    @classmethod
    def from_settings(cls, settings: ZooSettings, sess: requests.Session | None = None,
                      fetch_settings: FetchSettings | None = None) -> Sources:
        return cls(settings, sess, fetch_settings)

    @property
    def sess(self) -> requests.Session:
        """The catalogues' session, made on first use."""
        if self.given_sess is None:
            from . import remote

            blocked = (self.fetch_settings.blocked_networks
                       if self.fetch_settings is not None else None)
            self.given_sess = remote.session(blocked)
        return self.given_sess

    @property
    def civitai(self) -> Civitai:
        from .civitai import Civitai

        s = self.settings
        return Civitai(s.civitai_url, s.civitai_token, self.sess, s.models_preview_nsfw_level)

    @property
    def hf(self) -> HuggingFace:
        from .huggingface import HuggingFace

        s = self.settings
        return HuggingFace(s.hf_endpoint, hf_token(s), s.hf_mirrors, self.sess)

    @property
    def modelscope(self) -> ModelScope:
        from .modelscope import ModelScope

        s = self.settings
        return ModelScope(s.modelscope_url, s.modelscope_token, self.sess)

    def parse(self, text: str) -> refs.Reference:
        s = self.settings
        return refs.parse(text, civitai_urls=[s.civitai_url],
                          hf_urls=[s.hf_endpoint, *s.hf_mirrors],
                          modelscope_urls=[s.modelscope_url])

    def resolve(self, text: str, *, file: str | None = None,
                include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                headers: Mapping[str, str] | None = None, mirrors: Sequence[str] = (),
                sha256: str | None = None, probe: bool = True,
                keep: Callable[[Session], None] | None = None) -> Resolution:
        """``keep``: receives a plain URL probe's session, its connection open, for the
        download to go on with (see ``firstbytes.probe``)."""
        ref = self.parse(text)
        if (include or exclude) and not (isinstance(ref, refs.HfRef | refs.ModelScopeRef)
                                         and ref.path is None):
            raise BadReference("include/exclude patterns apply to a whole repo "
                               "(hf:<org>/<repo> or modelscope:<org>/<repo>)")
        if isinstance(ref, refs.CivitaiRef):
            return self.civitai.resolve(ref, file, probe=probe)
        if file:
            raise BadReference("a file name applies to a Civitai version with several files")
        if isinstance(ref, refs.HfRef):
            return self.hf.resolve(ref, include=include, exclude=exclude, probe=probe)
        if isinstance(ref, refs.ModelScopeRef):
            return self.modelscope.resolve(ref, include=include, exclude=exclude, probe=probe)
        return url_source.resolve(ref, settings=self.fetch_settings, headers=headers,
                                  mirrors=mirrors, sha256=sha256, probe=probe, keep=keep)

    def origin_headers(self, auth: Auth) -> dict[str, dict[str, str]]:
        if auth == "civitai":
            return self.civitai.origin_headers()
        if auth == "hf":
            return self.hf.origin_headers()
        if auth == "modelscope":
            return self.modelscope.origin_headers()
        return {}


def hf_token(settings: ZooSettings) -> str | None:
    """The configured token, else huggingface_hub's own (HF_TOKEN or a stored login)."""
    if settings.hf_token:
        return settings.hf_token
    try:
        from huggingface_hub import get_token
    except ImportError:
        return None
    return get_token() or None
