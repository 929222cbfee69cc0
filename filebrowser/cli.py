"""FileBrowser's subcommands: ``atelier users add|passwd|rm|list``."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import TYPE_CHECKING

from .client.cli import register as register_transfers  # issue 3

if TYPE_CHECKING:
    from .settings import Settings


def add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="the NAS folder (env ATELIER_ROOT)")
    p.add_argument("--db", dest="db_url", help="SQLAlchemy URL (env ATELIER_DB_URL)")
    p.add_argument("--state-dir", help="local state folder (env ATELIER_STATE_DIR)")


def settings_from(args: argparse.Namespace, **extra: object) -> Settings:
    from .settings import Settings

    values = {k: v for k, v in {
        "root": getattr(args, "root", None), "db_url": getattr(args, "db_url", None),
        "state_dir": getattr(args, "state_dir", None), **extra}.items() if v is not None}
    return Settings(**values)  # type: ignore[arg-type]


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    env = os.environ.get("ATELIER_NEW_PASSWORD")
    if env:
        return env
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise SystemExit("atelier: the passwords differ")
    return first


def _users(args: argparse.Namespace) -> int:
    from .core import FileBrowser  # not at import: `atelier pull` should start fast
    from .errors import AtelierError

    fb = FileBrowser(settings_from(args))
    try:
        if args.action == "list":
            for u in fb.users.list():
                quota = "-" if u.quota_bytes is None else str(u.quota_bytes)
                print(f"{u.name}\t{u.role}\tquota={quota}")
        elif args.action == "add":
            fb.users.create(args.name, _password(args), args.role, args.quota)
            print(f"created {args.name} ({args.role})")
        elif args.action == "passwd":
            fb.users.update(args.name, password=_password(args))
            print(f"password of {args.name} changed; their sessions and tokens are revoked")
        elif args.action == "rm":
            fb.users.remove(args.name)
            print(f"removed {args.name} (their home folder is kept)")
    except AtelierError as exc:
        print(f"atelier: {exc.message}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help="manage accounts (add, passwd, rm, list)")
    acts = users.add_subparsers(dest="action", required=True)
    for name, help_ in (("add", "create an account"), ("passwd", "set a password"),
                        ("rm", "remove an account"), ("list", "list accounts")):
        a = acts.add_parser(name, help=help_)
        add_server_options(a)
        if name != "list":
            a.add_argument("name")
        if name in ("add", "passwd"):
            a.add_argument("--password-stdin", action="store_true",
                           help="read the password from standard input "
                           "(or set ATELIER_NEW_PASSWORD)")
        if name == "add":
            a.add_argument("--role", choices=("admin", "user", "viewer"), default="user")
            a.add_argument("--quota", type=int, help="storage quota in bytes")
    users.set_defaults(func=_users)
    register_transfers(sub)  # issue 3: login, push, pull, usage
