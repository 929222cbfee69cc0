"""The FileBrowser service object: settings, database, stores and jail, built once.

``FileBrowser(settings)`` prepares the NAS layout and the first admin; routers reach it
through ``request.app.state.fb``. Other packages' routers (the ModelZoo API, at the
service edge) use :func:`filebrowser.auth.current_user` for the caller.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from . import db, statedir
from .access.auth import Authenticator, Principal
from .access.jail import Jail
from .access.users import UserStore
from .errors import Conflict, QuotaExceeded
from .files.trash import Trash
from .settings import Settings
from .shares.store import ShareStore
from .usage.ledger import Usage

MODEL_FOLDERS = ("Stable-diffusion", "Lora", "VAE", "embeddings", "ControlNet", "ESRGAN",
                 "hypernetworks")


def make_layout(root: Path) -> None:
    for sub in MODEL_FOLDERS:
        (root / "models" / sub).mkdir(parents=True, exist_ok=True)
    (root / "outputs").mkdir(exist_ok=True)
    (root / "users").mkdir(exist_ok=True)
    (root / ".atelier").mkdir(exist_ok=True)


class FileBrowser:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.root.mkdir(parents=True, exist_ok=True)
        make_layout(settings.root)
        statedir.claim(settings.state_dir, settings.root)  # one state folder, one root
        self.jail = Jail(settings.root)
        self.root = self.jail.root
        self.engine = db.connect(settings.database_url)
        self.users = UserStore(self.engine, self.root)
        self.auth = Authenticator(self.engine, self.users, settings)
        self.trash = Trash(self.engine, self.root)
        self.usage = Usage(self.engine, self.root, self.trash)
        self.shares = ShareStore(self.engine, self.jail, self.users, settings)

    def ensure_admin(self) -> str | None:
        """Create 'admin' when no administrator exists; return the password if generated."""
        if any(u.role == "admin" for u in self.users.list()):
            return None
        password = self.settings.admin_password
        generated = password is None
        if password is None:
            password = secrets.token_urlsafe(12)
        self.users.create("admin", password, "admin")
        if generated:
            print(f"atelier: created user 'admin' with password {password} (shown once; "
                  "change it with `atelier users passwd admin`)", file=sys.stderr, flush=True)
            return password
        return None

    def open_outputs(self, p: Principal) -> int:
        """A directory descriptor of the caller's ``users/<name>/outputs`` (made if
        missing), where their generated images go; opened beneath the root within what
        they may write, so a symlink put in its place leads nowhere. The caller closes it."""
        vpath = f"users/{p.name}/outputs"
        self.jail.makedirs(p.scope, vpath)
        with self.jail.open(p.scope, vpath, write=True) as h:
            if not h.is_dir:
                raise Conflict(f"{vpath!r} is not a folder")
            return os.open(h.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def check_quota(self, p: Principal, adding: int) -> None:
        quota = p.user.quota_bytes
        if quota is None or adding <= 0:
            return
        used = self.usage.stored_bytes(p.name)
        if used + adding > quota:
            raise QuotaExceeded(
                f"this would exceed your quota: {used} of {quota} bytes used, {adding} more asked",
                used=used, quota=quota, needed=adding)
