"""The fetch engine: one call downloads one file, fast, resumably and verified.

    fetch(urls, dest, size=, sha256=, connections=, headers=, progress=, validator=)
      -> lock .NAME.lock (another replica downloading it? wait, then reuse its file)
      -> probe every URL (mirrors.py), rank; the validator sees each one's Content-Type
         and first bytes, so a login page fails before a file exists. With one URL the
         probe's bytes and warm connection go to the first worker
      -> one attempt (download.py): segmented over several connections, or one stream
      -> the remote file changed under us: start over, once
"""

from __future__ import annotations

import os
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FetchError, RateLimited, RemoteChanged, RemoteError
from . import placement
from .control import Validators
from .download import Changed, Download, hash_file
from .lock import FileLock
from .mirrors import Endpoint, Handoff, probe_all, rank
from .results import FetchProgress, FetchResult, MirrorReport, ProgressCallback
from .sessions import Session, as_session_factory, make_session_factory
from .settings import FetchSettings
from .transport import HostHeaders, Retryable, bind_headers
from .validate import Validator, validator_for

__all__ = ["FetchProgress", "FetchResult", "MirrorReport", "fetch"]

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def fetch(urls: str | Sequence[str], dest: str | os.PathLike[str], *,
          size: int | None = None, sha256: str | None = None,
          connections: int | None = None, headers: HostHeaders | None = None,
          progress: ProgressCallback | None = None, settings: FetchSettings | None = None,
          session_factory: Callable[[], Any] | None = None,
          validator: Validator | str | bool | None = True, compute_sha256: bool = False,
          cancel: threading.Event | None = None,
          max_connections: int | None = None) -> FetchResult:
    """Download one file from one or more URLs serving the same bytes.

    ``dest`` is the file to create, or an existing folder (the name then comes from
    Content-Disposition or the URL). ``headers`` maps an origin (``https://host[:port]``)
    to headers sent only to it (tokens); a bare host name means the origins of ``urls`` on
    that host. Redirect targets on other origins get none of them.

    ``validator`` says what is expected: True for the default by file name (safetensors
    header check; no HTML/JSON/XML page where a binary is expected, even without an
    extension; JSON for ``.json``), a kind (``"model"``, ``"safetensors"``, ``"json"``,
    ``"text"``, ``"any"``), a :class:`Validator`, or None/False for no check.

    ``connections`` fixes the number of connections; without it (and without
    ``ATELIER_FETCH_CONNECTIONS``) the engine starts with a few and adds more while they
    add speed, up to ``max_connections``. ``cancel`` stops the download like Ctrl-C.
    """
    settings = settings or FetchSettings()
    update: dict[str, Any] = {}
    if connections is not None:
        update["connections"] = connections
    if max_connections is not None:
        update["max_connections"] = max_connections
    if update:
        settings = settings.model_copy(update=update)
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise ValueError("at least one URL is required")
    if sha256 is not None and not _SHA256.match(sha256):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    if isinstance(validator, str):
        validator_for("x", validator)  # an unknown kind fails now, not after the probe
    factory = (as_session_factory(session_factory, settings) if session_factory
               else make_session_factory(settings))
    job = Job(url_list, Path(dest), size, sha256.lower() if sha256 else None,
               bind_headers(headers, url_list), progress, settings, factory, validator,
               compute_sha256 or sha256 is not None, cancel or threading.Event())
    return job.run()


@dataclass
class Job:
    urls: list[str]
    dest: Path
    size: int | None
    sha256: str | None
    bound: dict[str, dict[str, str]]
    progress: ProgressCallback | None
    settings: FetchSettings
    factory: Callable[[], Session]
    validator_arg: Validator | str | bool | None
    want_hash: bool
    cancel: threading.Event
    endpoints: list[Endpoint] = field(default_factory=list)
    probed: list[Endpoint] = field(default_factory=list)
    _idle: deque[Session] = field(default_factory=deque)

    # ---- orchestration -----------------------------------------------------------------

    def run(self) -> FetchResult:
        path = self.dest
        try:
            if path.is_dir():
                self.endpoints = self._probe()
                name = self._name_from(self.endpoints)
                path = path / name
            return self._run_locked(path)
        finally:
            self.drop_handoffs()
            while self._idle:
                self._idle.pop().close()

    def _run_locked(self, path: Path) -> FetchResult:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = (FileLock(placement.lock_path(path), heartbeat=self.settings.lock_heartbeat,
                         stale_after=self.settings.lock_stale_after)
                if self.settings.lock else None)
        waited = False
        if lock is not None and not lock.try_acquire():
            self.drop_handoffs()  # another process has it: this may take a while
            lock.acquire(self.settings.lock_wait, self.cancel)
            waited = True
        try:
            if path.exists():
                self.drop_handoffs()
                reused = self._reuse(path, waited)
                if reused is not None:
                    return reused
            before: list[Validators | None] = []
            for attempt in range(2):
                if not self.endpoints or attempt:
                    self.endpoints = self._probe()
                now = [e.validators for e in self.endpoints]
                if attempt and now == before:
                    # Nothing changed after all: the server answers a mid-file range
                    # with the whole file without telling its validators.
                    raise RemoteError(
                        f"{self.urls[0]} answered a mid-file range with the whole file "
                        f"(HTTP 200) and the same file again on a new try; it does not "
                        f"serve ranges past the start", url=self.urls[0])
                before = now
                try:
                    return Download(self, path, lock).run()
                except Changed:
                    placement.control_path(path).unlink(missing_ok=True)
                    placement.part_path(path).unlink(missing_ok=True)
            raise RemoteChanged(f"{self.urls[0]} changed twice during the download",
                                url=self.urls[0])
        finally:
            if lock is not None:
                lock.release()

    def session(self) -> Session:
        """A warm session left by a probe, else a new one."""
        try:
            return self._idle.popleft()
        except IndexError:
            return self.factory()

    def take_handoff(self) -> Handoff | None:
        """The probe's kept answer, once (see mirrors.probe)."""
        for ep in self.probed:
            if ep.handoff is not None:
                handoff, ep.handoff = ep.handoff, None
                return handoff
        return None

    def drop_handoffs(self) -> None:
        """Before anything that may wait: the server would go on filling the socket."""
        while (handoff := self.take_handoff()) is not None:
            handoff.close()

    def _probe(self) -> list[Endpoint]:
        self.drop_handoffs()
        while self._idle:
            self._idle.pop().close()
        # One URL: the probe's bytes and connection go to the first worker. With mirrors,
        # or a partial to resume (whose start is most likely there), they would not.
        resuming = not self.dest.is_dir() and placement.control_path(self.dest).exists()
        eps = probe_all(self.urls, self.factory, self.settings, self.bound,
                        keep=self._idle.append, handoff=len(self.urls) == 1 and not resuming)
        self.probed = eps
        usable = rank(eps, self.sha256 is not None)
        if not usable:
            err = next((e.error for e in eps if e.error is not None), None)
            if isinstance(err, FetchError):
                raise err
            if isinstance(err, Retryable) and "429" in str(err):
                raise RateLimited(f"{self.urls[0]}: {err}", url=self.urls[0])
            raise RemoteError(f"{self.urls[0]}: {err}", url=self.urls[0]) from err
        return usable

    def _name_from(self, eps: list[Endpoint]) -> str:
        ep = eps[0]
        name = (placement.safe_name(ep.filename) or placement.name_from_url(ep.url())
                or placement.name_from_url(ep.origin))
        if not name:
            raise FetchError(f"cannot tell a file name for {ep.origin}; give a file path")
        return name

    def validator(self, name: str) -> Validator | None:
        arg = self.validator_arg
        if arg is True:
            return validator_for(name)
        if arg is False or arg is None:
            return None
        if isinstance(arg, str):
            return validator_for(name, arg)
        return arg

    def _reuse(self, path: Path, waited: bool) -> FetchResult | None:
        """The final file exists: reuse it when it is the one asked for."""
        have = path.stat().st_size
        if self.size is not None and have != self.size:
            return None
        digest = None
        if self.sha256 is not None:
            digest = hash_file(path)
            if digest != self.sha256:
                return None
        elif self.size is None and not waited:
            if not self.endpoints:
                self.endpoints = self._probe()
            v = self.endpoints[0].validators
            if v is None or v.size != have:
                return None
        return FetchResult(path, have, digest, 0, have, reused=True)


def hosts_headers(pairs: Mapping[str, str], hosts: Sequence[str]) -> dict[str, dict[str, str]]:
    """The same headers for each of ``hosts`` (the CLI's ``--header``)."""
    return {h: dict(pairs) for h in hosts}
