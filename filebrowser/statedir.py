"""Where a service keeps its local state when ``ATELIER_STATE_DIR`` is not set: one folder
per NAS root, so a second ``atelier serve --root other`` never opens the first one's
database (its users, sessions, uploads, index)::

    ~/.local/state/atelier/
        <name>-<hash>/          one root: <name> is the root folder's name, <hash> the
            nas-root            first 10 hex digits of the sha256 of its real path;
            atelier.db          nas-root holds that path (the folder's owner)
            thumbs/ dav-*.shelve
        atelier.db, nas-root    the shared folder of earlier versions: still used by the
                                root it belongs to (see below)

An existing install keeps its state: the old shared folder is used when its
``nas-root`` names this root or, written by a version that kept no ``nas-root``, when its
database's users all have their home under this root (it was made for this root); the
service then writes ``nas-root`` there, and every other root gets a folder of its own.
An explicit ``ATELIER_STATE_DIR`` is used as given.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
from pathlib import Path

MARKER = "nas-root"


def state_home() -> Path:
    return Path.home() / ".local" / "state" / "atelier"


def _real(root: Path) -> str:
    return os.path.realpath(os.path.expanduser(root))


def owner(state_dir: Path) -> str | None:
    """The root a state folder belongs to, if it says."""
    try:
        return (state_dir / MARKER).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _made_for(db: Path, real_root: str) -> bool:
    """An unmarked old database: were its users' homes made under this root?"""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM users")]
    except sqlite3.Error:
        return False
    return bool(names) and all(os.path.isdir(os.path.join(real_root, "users", n))
                               for n in names)


def default_state_dir(root: Path) -> Path:
    """The state folder for ``root`` when none is configured (see the module docstring)."""
    real = _real(root)
    legacy = state_home()
    if (legacy / "atelier.db").is_file():
        claimed = owner(legacy)
        if claimed == real or (claimed is None and _made_for(legacy / "atelier.db", real)):
            return legacy
    name = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(real) or "root")[:40]
    return legacy / f"{name}-{hashlib.sha256(real.encode()).hexdigest()[:10]}"


def claim(state_dir: Path, root: Path) -> None:
    """Write which root ``state_dir`` belongs to, if it does not say yet."""
    if owner(state_dir) is None:
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / MARKER).write_text(_real(root) + "\n", encoding="utf-8")
