"""Accounts: names, roles, argon2 password hashes, quotas, and their home folders.

Roles: ``admin`` (writes everywhere), ``user`` (writes in ``users/<name>/``, reads the
shared ``models/``), ``viewer`` (reads what a user would). A user's home is created
with ``outputs/`` and ``models/`` when the account is.
"""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Engine

from .. import db
from ..errors import Conflict, InvalidInput, NotFound

ROLES = ("admin", "user", "viewer")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verifying against this when the user does not exist keeps the timing the same."""
    return _hasher.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    quota_bytes: int | None
    has_password: bool


def _row_user(row: sa.Row) -> User:
    return User(row.id, row.name, row.role, row.quota_bytes, row.password_hash is not None)


def check_password_strength(password: str) -> None:
    if len(password) < 8:
        raise InvalidInput("password must be at least 8 characters")


class UserStore:
    def __init__(self, engine: Engine, root: Path) -> None:
        self.engine = engine
        self.root = root

    def home(self, name: str) -> Path:
        return self.root / "users" / name

    def create(self, name: str, password: str | None, role: str = "user",
               quota_bytes: int | None = None) -> User:
        if not _NAME.match(name):
            raise InvalidInput("user names are 1-64 letters, digits, '_' or '-'")
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
        if password is not None:
            check_password_strength(password)
        hashed = _hasher.hash(password) if password is not None else None
        try:
            with self.engine.begin() as conn:
                conn.execute(db.users.insert().values(
                    name=name, password_hash=hashed, role=role, quota_bytes=quota_bytes,
                    created=db.now()))
        except sa.exc.IntegrityError:
            raise Conflict(f"user {name!r} exists") from None
        for sub in ("outputs", "models"):
            (self.home(name) / sub).mkdir(parents=True, exist_ok=True)
        return self.get(name)

    def get(self, name: str) -> User:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(db.users).where(db.users.c.name == name)).first()
        if row is None:
            raise NotFound(f"no user {name!r}")
        return _row_user(row)

    def get_by_id(self, user_id: int) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(db.users).where(db.users.c.id == user_id)).first()
        return _row_user(row) if row else None

    def list(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(db.users).order_by(db.users.c.name)).all()
        return [_row_user(r) for r in rows]

    def update(self, name: str, *, password: str | None = None, role: str | None = None,
               quota_bytes: int | None | str = "keep") -> User:
        user = self.get(name)
        values: dict[str, object] = {}
        if password is not None:
            check_password_strength(password)
            values["password_hash"] = _hasher.hash(password)
        if role is not None:
            if role not in ROLES:
                raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
            values["role"] = role
        if quota_bytes != "keep":
            values["quota_bytes"] = quota_bytes
        if values:
            with self.engine.begin() as conn:
                conn.execute(db.users.update().where(db.users.c.id == user.id).values(**values))
                if "password_hash" in values or "role" in values:
                    # A changed password or role ends every session and token at once.
                    conn.execute(db.sessions.delete().where(db.sessions.c.user_id == user.id))
                if "password_hash" in values:
                    conn.execute(db.tokens.delete().where(db.tokens.c.user_id == user.id))
        return self.get(name)

    def remove(self, name: str) -> None:
        """Delete the account, its sessions and tokens. Its home folder is kept."""
        user = self.get(name)
        with self.engine.begin() as conn:
            conn.execute(db.sessions.delete().where(db.sessions.c.user_id == user.id))
            conn.execute(db.tokens.delete().where(db.tokens.c.user_id == user.id))
            conn.execute(db.users.delete().where(db.users.c.id == user.id))

    def verify(self, name: str, password: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(db.users).where(db.users.c.name == name)).first()
        stored = row.password_hash if row is not None and row.password_hash else _dummy_hash()
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row.password_hash is None:
            return None
        if _hasher.check_needs_rehash(stored):
            with self.engine.begin() as conn:
                conn.execute(db.users.update().where(db.users.c.id == row.id)
                             .values(password_hash=_hasher.hash(password)))
        return _row_user(row)
