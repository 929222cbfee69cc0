"""Who may fetch models, and into which folders.

    admin            anywhere below the NAS root (the shared models/ by default)
    allowed user     the shared models/ (an admin lists them: ``allow_shared_write``)
                     or their home, users/<name>/
    user             their home only: models go to users/<name>/models/<Type>/
    viewer           nothing: viewers read, they do not fetch (403); they may still
                     resolve a reference and browse the library

The caller object comes from the service (FileBrowser's principal: ``.name``, ``.role``);
ModelZoo never imports FileBrowser, it only reads those two attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import NotAllowed
from .placement import clean, within

SHARED = "models"


@dataclass(frozen=True)
class Caller:
    name: str
    role: str
    home: str              # virtual path of the home folder, e.g. users/ann
    shared_write: bool     # may write the shared models/

    @classmethod
    def of(cls, user: Any, home: str, shared_writers: list[str]) -> Caller:
        name, role = str(getattr(user, "name", "")), str(getattr(user, "role", "viewer"))
        return cls(name, role, home.strip("/"), role == "admin" or (
            role == "user" and name in shared_writers))

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    @property
    def models_root(self) -> str:
        """Where models go when no destination is given."""
        return SHARED if self.shared_write else f"{self.home}/models"

    def readable(self) -> list[str]:
        """Virtual folders whose models count as already there for this caller."""
        if self.admin:
            return [SHARED, "users"]
        return [SHARED, self.home]

    def may_see(self, vpath: str) -> bool:
        return self.admin or any(within(vpath, p) for p in (SHARED, self.home))

    def check_fetch(self) -> None:
        if self.role not in ("admin", "user"):
            raise NotAllowed(f"role {self.role!r} may not fetch models (viewers read only)")

    def destination(self, to: str) -> tuple[str, str]:
        """A requested destination folder, checked: (virtual folder, allowed prefix)."""
        self.check_fetch()
        folder = clean(to)
        if self.admin:
            if not folder:
                raise NotAllowed("give a folder below the NAS root, e.g. models/Lora")
            return folder, folder.split("/", 1)[0]
        if within(folder, self.home):
            return folder, self.home
        if self.shared_write and within(folder, SHARED):
            return folder, SHARED
        where = f"{SHARED}/ or {self.home}/" if self.shared_write else f"{self.home}/"
        raise NotAllowed(f"you may fetch into {where} only, not {folder or '/'}")
