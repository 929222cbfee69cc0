"""The extension's local state, beside the service's database: small files, mode 0600.

- the gateway secret: random, made once, passed to the service it starts
  (``ATELIER_GATEWAY_SECRET``); the proxy sends it so the service believes the user it
  names. Anyone who can read it can act as any user, hence 0600 and never the NAS.
- the admin notice: the service makes an ``admin`` account on its first start. The
  extension chooses that password itself (so it knows it), prints it in the WebUI console
  and shows it in the FileBrowser tab until the admin changes it or dismisses the notice.
- pinned checkpoints: names the Models on GPU tab pinned in the WebUI.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PENDING, CONFIRMED, DISMISSED, GONE = "pending", "confirmed", "dismissed", "gone"


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a 0600 file holding ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp makes it 0600 already
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_secret(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return text if len(text) >= 32 else None


def gateway_secret(path: Path) -> str:
    """The secret in ``path``, made on first use; the file is kept at mode 0600."""
    secret = _read_secret(path)
    if secret is not None:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:  # no-clobber: two WebUI processes starting at once agree on the first
            os.link(tmp, path)
        except FileExistsError:
            if _read_secret(path) is None:  # an unusable file: replace it
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    secret = _read_secret(path)
    assert secret is not None
    return secret


@dataclass
class AdminNotice:
    path: Path
    status: str
    password: str | None = None

    @property
    def shown(self) -> bool:
        return self.status in (PENDING, CONFIRMED) and bool(self.password)

    def save(self) -> None:
        data = {"status": self.status, "password": self.password if self.shown else None}
        write_private(self.path, (json.dumps(data) + "\n").encode())

    def set(self, status: str) -> None:
        self.status = status
        if status in (DISMISSED, GONE):
            self.password = None
        self.save()


def load_notice(path: Path) -> AdminNotice | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("status") not in (PENDING, CONFIRMED, DISMISSED,
                                                                 GONE):
        return None
    pw = data.get("password")
    return AdminNotice(path, data["status"], pw if isinstance(pw, str) else None)


def prepare_notice(path: Path, database: Path | None,
                   environ: Mapping[str, str] | None = None) -> AdminNotice | None:
    """The notice to show, made before the service's first start.

    A password is chosen only when the service will create ``admin`` with it: no
    database yet (``database`` is None when it lives elsewhere, e.g. PostgreSQL) and no
    ``ATELIER_ADMIN_PASSWORD`` chosen by the operator."""
    env = os.environ if environ is None else environ
    notice = load_notice(path)
    if notice is not None:
        return notice
    if env.get("ATELIER_ADMIN_PASSWORD") or env.get("ATELIER_DB_URL") or database is None:
        return None
    if database.exists():
        notice = AdminNotice(path, GONE)  # the admin was made before: we do not know it
    else:
        notice = AdminNotice(path, PENDING, secrets.token_urlsafe(12))
    notice.save()
    return notice


def load_pins(path: Path) -> set[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {p for p in data if isinstance(p, str)} if isinstance(data, list) else set()


def save_pins(path: Path, pins: set[str]) -> None:
    write_private(path, (json.dumps(sorted(pins)) + "\n").encode())
