"""Desktop commands: ``atelier login URL``, ``push LOCAL... REMOTE``, ``pull REMOTE... LOCAL``,
``usage``.

The token lives in ``$XDG_CONFIG_HOME/atelier/credentials.json`` (default
``~/.config/atelier``), mode 0600; ``ATELIER_URL`` and ``ATELIER_TOKEN`` override it.
What lets an interrupted push or pull resume is in ``transfers.json`` beside it.

Exit codes: 0 everything transferred; 1 some files failed (the summary says which and
why; rerun to resume); 2 bad arguments or not logged in; 3 the server refused the
credentials; 130 interrupted (rerun to resume).

Start-up is most of a small pull, so this module imports little: the transfers
(:mod:`.push`, :mod:`.pull`) load when their command runs, one file needs no thread
pool, and one remote file needs no stat before its GET.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atelier_io.http import Client, ConnectionFailed
from atelier_io.progress import human, parse_size, screen

from .transfers import AuthError, ResumeStore, Retry, TransferError

if TYPE_CHECKING:
    from .pull import PullResult
    from .push import PushResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "atelier"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def save_credentials(url: str, token: str, user: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(".credentials.json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url.rstrip("/"), "token": token, "user": user}, f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


class NotLoggedIn(Exception):
    pass


def connect(url: str | None = None) -> Client:
    creds: dict[str, str] = {}
    try:
        creds = json.loads(credentials_path().read_text())
    except (OSError, ValueError):
        pass
    url = url or os.environ.get("ATELIER_URL") or creds.get("url")
    token = os.environ.get("ATELIER_TOKEN") or creds.get("token")
    if not url or not token:
        raise NotLoggedIn("not logged in: run `atelier login URL` first")
    # no proxy from the environment ever sees the token: http.client uses none
    try:
        return Client(url, headers={"Authorization": f"Bearer {token}"})
    except ValueError as exc:
        raise NotLoggedIn(str(exc)) from None


# -- login -------------------------------------------------------------------------------


def cmd_login(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/")
    try:
        client = Client(url, timeout=30)
    except ValueError as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.token:
        token = args.token
        r = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        if r.status != 200:
            print(f"atelier: the server refused this token (HTTP {r.status})",
                  file=sys.stderr)
            return EXIT_AUTH
        user = str(r.json().get("name", ""))
    else:
        user = args.user or input("user: ")
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin \
            else getpass.getpass("password: ")
        name = f"atelier-cli@{socket.gethostname()}"
        r = client.with_basic_auth(user, password).post("/api/tokens",
                                                         json_body={"name": name})
        if r.status != 201 and r.status != 200:
            print(f"atelier: login failed (HTTP {r.status})", file=sys.stderr)
            return EXIT_AUTH
        token = r.json()["token"]
    path = save_credentials(url, token, user)
    print(f"logged in to {url} as {user}; token saved in {path}")
    return EXIT_OK


# -- push ----------------------------------------------------------------------------------


def plan_push(locals_: list[str], remote: str) -> list[tuple[Path, str, str]]:
    """(local file, remote folder, name) for every file; folders keep their tree."""
    remote = remote.strip("/")
    out: list[tuple[Path, str, str]] = []
    for raw in locals_:
        path = Path(raw)
        if path.is_dir():
            top = path.resolve().name
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                rel = Path(dirpath).relative_to(path).as_posix()
                folder = "/".join(p for p in (remote, top, "" if rel == "." else rel) if p)
                for name in sorted(filenames):
                    out.append((Path(dirpath) / name, folder, name))
        elif path.is_file():
            out.append((path, remote, path.name))
        else:
            raise FileNotFoundError(f"{raw}: no such file or folder")
    return out


def _run(jobs: int, items: list[Any], work: Callable[[Any], Any],
         on_error: Callable[[Any, Exception], None]) -> list[Any]:
    results = []
    if len(items) == 1 or jobs <= 1:  # no pool to start (nor concurrent.futures to import)
        for item in items:
            try:
                results.append(work(item))
            except (TransferError, OSError) as exc:
                on_error(item, exc)
        return results
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = {pool.submit(work, item): item for item in items}
        try:
            for fut in as_completed(futures):
                try:
                    results.append(fut.result())
                except (TransferError, OSError) as exc:
                    on_error(futures[fut], exc)
        except KeyboardInterrupt:
            for fut in futures:
                fut.cancel()
            raise
    return results


def cmd_push(args: argparse.Namespace) -> int:
    console = screen()
    remote = connect(args.url)
    try:
        plan = plan_push(args.local, args.remote)
    except FileNotFoundError as exc:
        console.print(f"atelier: {exc}")
        return EXIT_USAGE
    from .push import Pusher

    store = ResumeStore(config_dir() / "transfers.json")
    pusher = Pusher(remote, store, chunk_size=args.chunk_mib * 1024 * 1024,
                    retry=Retry(attempts=args.retries), conflict=args.conflict,
                    rate=args.limit_rate)
    total = sum(p.stat().st_size for p, _, _ in plan)
    failures: list[tuple[str, str]] = []
    auth_failed = False
    t0 = time.monotonic()
    with console as progress:
        overall = progress.add_task(f"{len(plan)} files", total=total)

        def work(item: tuple[Path, str, str]) -> PushResult:
            local, folder, name = item
            task = progress.add_task(name[:40], total=local.stat().st_size)

            def advance(n: int) -> None:
                progress.advance(task, n)
                progress.advance(overall, n)

            try:
                return pusher.push(local, folder, name, advance)
            finally:
                progress.remove_task(task)

        def failed(item: tuple[Path, str, str], exc: Exception) -> None:
            nonlocal auth_failed
            auth_failed = auth_failed or isinstance(exc, AuthError)
            failures.append((str(item[0]), str(exc)))

        try:
            results: list[PushResult] = _run(args.jobs, plan, work, failed)
        except KeyboardInterrupt:
            console.print("interrupted; run the same command again to resume")
            return EXIT_INTERRUPTED
    elapsed = time.monotonic() - t0
    sent = sum(r.sent for r in results)
    resumed = sum(1 for r in results if r.resumed_from)
    console.print(f"pushed {len(results)}/{len(plan)} files, {human(sent)} sent in "
                  f"{elapsed:.1f} s ({human(sent / elapsed if elapsed else 0)}/s)"
                  + (f", {resumed} resumed" if resumed else ""))
    for r in sorted(results, key=lambda r: r.remote):
        if args.verbose:
            console.print(f"  {r.local} -> {r.remote}")
    for name, why in failures:
        console.print(f"FAILED {name}: {why}")
    if auth_failed:
        return EXIT_AUTH
    return EXIT_FAILED if failures else EXIT_OK


# -- pull ----------------------------------------------------------------------------------


def _plan_pull(puller: Any, remotes: list[str], dest: Path, into_dir: bool,
               ) -> list[tuple[str, int | None, Path, float | None]]:
    """(remote path, size, local path, mtime) per file; folders listed recursively."""
    plan: list[tuple[str, int | None, Path, float | None]] = []
    for raw in remotes:
        info = puller.stat(raw.strip("/"))
        if info["type"] == "dir":
            base = dest / (info["name"] or "root")
            for e in puller.walk(info["path"]):
                rel = e["path"][len(info["path"]):].lstrip("/") if info["path"] \
                    else e["path"]
                plan.append((e["path"], e["size"], base / rel, e["mtime"]))
        else:
            target = dest / info["name"] if into_dir else dest
            plan.append((info["path"], info["size"], target, info["mtime"]))
    return plan


def cmd_pull(args: argparse.Namespace) -> int:
    from .pull import IsFolder, Puller

    console = screen()
    remote = connect(args.url)
    store = ResumeStore(config_dir() / "transfers.json")
    puller = Puller(remote, store, retry=Retry(attempts=args.retries),
                    rate=args.limit_rate)
    dest = Path(args.local)
    into_dir = len(args.remote) > 1 or dest.is_dir() or args.local.endswith(("/", os.sep))
    plan: list[tuple[str, int | None, Path, float | None]] = []
    only = args.remote[0].strip("/") if len(args.remote) == 1 else ""
    target = dest / only.rpartition("/")[2] if into_dir else dest
    if only and not target.exists():
        # one file, nothing there to compare with: its GET says the rest (a folder
        # answers 400 and is listed below)
        plan = [(only, None, target, None)]
    else:
        try:
            plan = _plan_pull(puller, args.remote, dest, into_dir)
        except AuthError as exc:
            console.print(f"atelier: {exc}")
            return EXIT_AUTH
        except TransferError as exc:
            console.print(f"atelier: {exc}")
            return EXIT_FAILED
    failures: list[tuple[str, str]] = []
    auth_failed = folder = False
    t0 = time.monotonic()
    with console as progress:
        overall = progress.add_task(f"{len(plan)} files",
                                    total=sum(p[1] or 0 for p in plan))

        def work(item: tuple[str, int | None, Path, float | None]) -> PullResult:
            path, size, target, mtime = item
            task = progress.add_task(Path(path).name[:40], total=size)

            def advance(n: int) -> None:
                progress.advance(task, n)
                progress.advance(overall, n)

            def sized(total: int) -> None:
                if size is None:
                    progress.update(task, total=total)
                    progress.update(overall, total=total)

            try:
                return puller.pull(path, size, target, mtime, advance, sized)
            finally:
                progress.remove_task(task)

        def failed(item: tuple[str, int | None, Path, float | None], exc: Exception) -> None:
            nonlocal auth_failed, folder
            if isinstance(exc, IsFolder) and item[1] is None:
                folder = True  # the one remote path, pulled unseen, is a folder
                return
            auth_failed = auth_failed or isinstance(exc, AuthError)
            failures.append((item[0], str(exc)))

        try:
            results: list[PullResult] = _run(args.jobs, plan, work, failed)
            if folder:  # list it, then pull what it holds
                try:
                    plan = _plan_pull(puller, args.remote, dest, into_dir)
                except TransferError as exc:
                    failed(plan[0], exc)
                    plan = []
                progress.update(overall, description=f"{len(plan)} files",
                                total=sum(p[1] or 0 for p in plan))
                results = _run(args.jobs, plan, work, failed)
        except KeyboardInterrupt:
            console.print("interrupted; run the same command again to resume")
            return EXIT_INTERRUPTED
    elapsed = time.monotonic() - t0
    got = sum(r.received for r in results)
    skipped = sum(1 for r in results if r.skipped)
    resumed = sum(1 for r in results if r.resumed_from and not r.skipped)
    console.print(f"pulled {len(results)}/{len(plan)} files, {human(got)} received in "
                  f"{elapsed:.1f} s ({human(got / elapsed if elapsed else 0)}/s)"
                  + (f", {resumed} resumed" if resumed else "")
                  + (f", {skipped} already up to date" if skipped else ""))
    for name, why in failures:
        console.print(f"FAILED {name}: {why}")
    if auth_failed:
        return EXIT_AUTH
    return EXIT_FAILED if failures else EXIT_OK


# -- usage ---------------------------------------------------------------------------------


def cmd_usage(args: argparse.Namespace) -> int:
    remote = connect(args.url)
    params = {k: v for k, v in (("user", args.user), ("since", args.since)) if v}
    r = remote.get("/api/usage", params=params)
    if r.status == 401:
        print("atelier: the server refused the token; run `atelier login` again",
              file=sys.stderr)
        return EXIT_AUTH
    if r.status != 200:
        print(f"atelier: {r.message()} (HTTP {r.status})", file=sys.stderr)
        return EXIT_FAILED
    rows = r.json()
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table("user", "stored", "uploaded", "downloaded", title="usage")
    for u in rows:
        table.add_row(u["user"], human(u["stored_bytes"]), human(u["uploaded_bytes"]),
                      human(u["downloaded_bytes"]))
    console.print(table)
    if args.days:
        days = Table("user", "day", "uploaded", "downloaded", "operations", title="by day")
        for u in rows:
            for d in u["by_day"]:
                days.add_row(u["user"], d["day"], human(d["uploaded"]),
                             human(d["downloaded"]), str(d["operations"]))
        console.print(days)
    return EXIT_OK


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except NotLoggedIn as exc:
            print(f"atelier: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except ConnectionFailed as exc:
            print(f"atelier: cannot reach the server: {exc}", file=sys.stderr)
            return EXIT_FAILED
    return run


def register(sub: argparse._SubParsersAction) -> None:
    login = sub.add_parser("login", help="log in to an Atelier server and store a token")
    login.add_argument("url", help="the server, e.g. http://host:7862")
    login.add_argument("--user", help="user name (asked if missing)")
    login.add_argument("--password-stdin", action="store_true",
                       help="read the password from standard input")
    login.add_argument("--token", help="store this existing API token instead")
    login.set_defaults(func=_guard(cmd_login))

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="server (default: the one from `atelier login`)")
    common.add_argument("-j", "--jobs", type=int, default=3, help="files in parallel (3)")
    common.add_argument("--retries", type=int, default=12,
                        help="retries through an outage (doubling waits up to 15 s)")
    common.add_argument("--limit-rate", type=parse_size, default=None, metavar="RATE",
                        help="at most RATE bytes/s per file, e.g. 500K, 20M")
    common.add_argument("-v", "--verbose", action="store_true")

    push = sub.add_parser("push", parents=[common], help="upload files and folders (tus, "
                          "resumable)", epilog="exit codes: 0 ok, 1 some failed, 2 usage, "
                          "3 credentials refused, 130 interrupted (rerun to resume)")
    push.add_argument("local", nargs="+", help="files or folders")
    push.add_argument("remote", help="target folder on the server, e.g. models/Lora")
    push.add_argument("--conflict", choices=("fail", "rename", "overwrite"), default="fail",
                      help="when the name exists (fail)")
    push.add_argument("--chunk-mib", type=int, default=0,
                      help="the most MiB one request carries, for proxies that limit "
                           "bodies (default: the whole file in one streaming request)")
    push.set_defaults(func=_guard(cmd_push))

    pull = sub.add_parser("pull", parents=[common], help="download files and folders "
                          "(Range-resumable)", epilog="exit codes as for push")
    pull.add_argument("remote", nargs="+", help="files or folders on the server")
    pull.add_argument("local", help="local folder (or file name for a single file)")
    pull.set_defaults(func=_guard(cmd_pull))

    usage = sub.add_parser("usage", help="stored, uploaded and downloaded bytes")
    usage.add_argument("--url", help="server (default: the one from `atelier login`)")
    usage.add_argument("--user", help="one user (admins)")
    usage.add_argument("--since", help="from this day (YYYY-MM-DD)")
    usage.add_argument("--days", action="store_true", help="also show each day")
    usage.add_argument("--json", action="store_true", help="print JSON")
    usage.set_defaults(func=_guard(cmd_usage))
