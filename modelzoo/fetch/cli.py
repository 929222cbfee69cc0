"""``atelier fetch URL... --to DIR``: download files with progress bars.

Exit codes: 0 all files fetched, 1 a download failed (the message says why), 2 bad
arguments, 130 interrupted (the partial file stays; the same command resumes it).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from ..errors import ModelZooError

if TYPE_CHECKING:
    from rich.progress import TaskID

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """``1M``, ``512k``, ``4MiB``, ``1048576`` -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1M, 512K)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fetch", help="download model files: multi-connection, resumable, sha256-verified",
        description="Download each URL into DIR over several connections, following "
                    "redirects to signed URLs, verifying size, sha256 and the safetensors "
                    "header. Interrupted downloads resume when the same command runs again. "
                    "Defaults come from ATELIER_FETCH_* environment variables.")
    p.add_argument("urls", nargs="+", metavar="URL", help="file to download")
    p.add_argument("--to", required=True, type=Path, metavar="DIR",
                   help="target folder (created if missing)")
    p.add_argument("--name", help="file name (one URL only); default: from the server or URL")
    p.add_argument("-x", "--connections", type=int, metavar="N",
                   help="parallel connections per file (default 8)")
    p.add_argument("--sha256", metavar="HEX", help="expected sha256 (one URL only)")
    p.add_argument("--size", type=int, metavar="BYTES", help="expected size (one URL only)")
    p.add_argument("--mirror", action="append", default=[], metavar="URL",
                   help="another endpoint serving the same bytes; a bare origin such as "
                        "https://hf-mirror.com replaces the host of every URL. Repeatable")
    p.add_argument("--piece-size", type=parse_size, metavar="SIZE",
                   help="smallest range split between connections (default 1M)")
    p.add_argument("--limit-rate", type=parse_size, metavar="RATE",
                   help="total bandwidth limit per file in bytes/s, e.g. 10M")
    p.add_argument("--proxy", metavar="URL", help="http://, https:// or socks5h:// proxy")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="header for the hosts of the given URLs and mirrors only (never sent "
                        "to redirect targets), e.g. 'Authorization: Bearer TOKEN'. Repeatable")
    p.add_argument("--hash", action="store_true", help="compute and print the sha256")
    p.add_argument("--no-fsync", dest="fsync", action="store_false", default=None,
                   help="skip fsync (faster on slow disks; a machine crash may then leave "
                        "a bad file)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _mirrors_for(url: str, mirrors: list[str], single: bool) -> list[str]:
    out = []
    for m in mirrors:
        parts = urlsplit(m)
        if parts.path in ("", "/") and not parts.query:
            u = urlsplit(url)
            out.append(urlunsplit((parts.scheme, parts.netloc, u.path, u.query, "")))
        elif single:
            out.append(m)
    return out


def run(args: argparse.Namespace) -> int:
    # the engine and its settings (pydantic) load only when fetching: `atelier pull`
    # and `atelier --help` start faster without them
    # rich is imported here: a quiet run (scripts, the benchmark) starts faster without it
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from .engine import FetchProgress, fetch
    from .settings import FetchSettings

    err = Console(stderr=True, highlight=False)
    single = len(args.urls) == 1
    full_mirror = [m for m in args.mirror if urlsplit(m).path not in ("", "/")]
    if not single and (args.name or args.sha256 or args.size or full_mirror):
        err.print("error: --name, --sha256, --size and a --mirror with a path need one URL")
        return 2
    headers: dict[str, str] = {}
    for h in args.header:
        key, sep, value = h.partition(":")
        if not sep or not key.strip():
            err.print(f"error: --header wants 'Name: value', got {h!r}")
            return 2
        headers[key.strip()] = value.strip()
    try:
        settings = FetchSettings()
        update = {k: v for k, v in {
            "connections": args.connections, "piece_size": args.piece_size,
            "bandwidth_limit": args.limit_rate, "proxy": args.proxy,
            "fsync": args.fsync}.items() if v is not None}
        settings = FetchSettings.model_validate({**settings.model_dump(), **update})
    except ValueError as e:
        err.print(f"error: {e}")
        return 2

    failed = 0
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
        TransferSpeedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[conns]} conn"),
        console=err, disable=args.quiet, transient=False)
    with progress:
        for url in args.urls:
            candidates = [url, *_mirrors_for(url, args.mirror, single)]
            host_headers = ({(urlsplit(c).hostname or "").lower(): headers
                             for c in candidates} if headers else None)
            task: TaskID = progress.add_task(url.rsplit("/", 1)[-1][:40], total=None,
                                             conns=0)

            def on_progress(p: FetchProgress, task: TaskID = task) -> None:
                progress.update(task, description=p.name[:40], total=p.total,
                                completed=p.done, conns=p.connections)

            dest = args.to / args.name if args.name else args.to
            args.to.mkdir(parents=True, exist_ok=True)
            try:
                result = fetch(candidates, dest, size=args.size, sha256=args.sha256,
                               headers=host_headers, progress=on_progress, settings=settings,
                               compute_sha256=args.hash)
            except KeyboardInterrupt:
                progress.stop()
                err.print("interrupted: the partial download is kept; run the same command "
                          "to resume")
                return 130
            except (ModelZooError, ValueError, OSError) as e:
                failed += 1
                progress.remove_task(task)
                err.print(f"[red]error:[/] {e}", markup=True, highlight=False)
                continue
            progress.update(task, conns=0)
            note = " (already there)" if result.reused else ""
            line = f"{result.path}{note}"
            if result.sha256:
                line += f"  sha256 {result.sha256}"
            print(line, file=sys.stdout, flush=True)
    return 1 if failed else 0
