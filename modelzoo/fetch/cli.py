"""``atelier fetch REF...``: resolve, place, download; the job queue's code path.

    atelier fetch civitai:4201 --root /mnt/nas          -> /mnt/nas/models/Lora/x.safetensors
    atelier fetch hf:org/repo/x.safetensors --to ./dl   -> ./dl/x.safetensors
    atelier fetch hf:org/sdxl-repo --exclude '*.fp16.*' --root /mnt/nas --dry-run

Without ``--to``, files go by type under the NAS root (``--root`` or ``ATELIER_ROOT``).
Exit codes: 0 all fetched, 1 a fetch failed (the message says why), 2 bad usage or a
reference in no accepted form, 3 credentials refused (the message names the setting),
130 interrupted (partial files stay; the same command resumes them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from atelier_io.progress import parse_size

from ..errors import BadReference, ModelZooError, RemoteAuthRequired

if TYPE_CHECKING:
    from ..download import Plan


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fetch", help="download models by Civitai/HF/ModelScope reference or URL",
        description="Resolve each reference, place it by type (or into --to DIR), and "
                    "download it over several connections, resumably, verified (size, "
                    "sha256, safetensors header), with the WebUI's sidecars (preview, "
                    "trigger words). References: civitai:<id>[@<version>], civitai.com "
                    "model/version/download links, AIRs (urn:air:...:civitai:<id>@<v>), "
                    "hf:<org>/<repo>/<path>[@rev], hf:<org>/<repo>[@rev] (a whole repo), "
                    "huggingface.co links, modelscope:<org>/<repo>/<path>[@rev], or any "
                    "http(s) URL. Defaults come from ATELIER_* environment variables.")
    p.add_argument("refs", nargs="+", metavar="REF", help="what to download")
    p.add_argument("--to", type=Path, metavar="DIR",
                   help="target folder (created if missing); default: by type under the "
                        "NAS root")
    p.add_argument("--root", type=Path, metavar="DIR",
                   help="the NAS root (default ATELIER_ROOT): models go to "
                        "DIR/models/<type folder>/")
    p.add_argument("--file", metavar="NAME", help="which file of a Civitai version "
                                                   "(name or id; default the primary)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="whole repos: only files matching (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="whole repos: skip files matching (repeatable)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what each reference resolves to and where it would go")
    p.add_argument("--json", action="store_true", help="--dry-run output as JSON")
    p.add_argument("--conflict", choices=("rename", "overwrite", "fail"), default="rename",
                   help="another file under the same name: x-2.safetensors (default), "
                        "replace it, or stop")
    p.add_argument("--base-subfolder", action="store_true", default=None,
                   help="a sub-folder per base model (models/Lora/SDXL 1.0/)")
    p.add_argument("--name", help="file name (one REF only); default: from the server, the "
                                  "catalogue or the URL")
    p.add_argument("-x", "--connections", type=int, metavar="N",
                   help="parallel connections per file, fixed (default: automatic, from 4, "
                        "doubling while each step adds speed, up to "
                        "ATELIER_FETCH_MAX_CONNECTIONS)")
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
    p.add_argument("--hash", action="store_true", help="print the sha256 (always computed)")
    p.add_argument("--no-fsync", dest="fsync", action="store_false", default=None,
                   help="skip fsync (faster on slow disks; a machine crash may then leave "
                        "a bad file)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    # a finished fetch ends its process at once (atelier_io/quickexit.py): 30-40 ms
    p.set_defaults(func=run, quick_exit=True)


def _mirrors_for(url: str, mirrors: list[str], single: bool) -> list[str]:
    """``--mirror`` values as URLs for ``url``: a bare origin takes the URL's path."""
    out = []
    for m in mirrors:
        parts = urlsplit(m)
        if parts.path in ("", "/") and not parts.query:
            u = urlsplit(url)
            out.append(urlunsplit((parts.scheme, parts.netloc, u.path, u.query, "")))
        elif single:
            out.append(m)
    return out


class _Usage(Exception):
    pass


def _headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for h in values:
        key, sep, value = h.partition(":")
        if not sep or not key.strip():
            raise _Usage(f"--header wants 'Name: value', got {h!r}")
        headers[key.strip()] = value.strip()
    return headers


def run(args: argparse.Namespace) -> int:
    from atelier_io.progress import screen

    err = screen(quiet=True)  # messages only, until the bars start
    try:
        return _run(args, screen)
    except _Usage as e:
        err.print(f"error: {e}")
        return 2


def _run(args: argparse.Namespace, screen: Any) -> int:
    # the engine and pydantic settings load only now: `atelier --help` and `atelier pull`
    # start without them (and requests loads only for a catalogue: sources/resolve.py)
    from .. import download, placement
    from ..settings import ZooSettings
    from ..sources.resolve import Sources
    from .settings import FetchSettings

    single = len(args.refs) == 1
    full_mirror = [m for m in args.mirror if urlsplit(m).path not in ("", "/")]
    if not single and (args.name or args.sha256 or args.size or full_mirror):
        raise _Usage("--name, --sha256, --size and a --mirror with a path need one URL "
                     "(one REF)")
    headers = _headers(args.header)
    try:
        zoo = ZooSettings()
        if args.root is not None:
            zoo = zoo.model_copy(update={"root": args.root})
        fs = FetchSettings()
        update = {k: v for k, v in {
            "connections": args.connections, "piece_size": args.piece_size,
            "bandwidth_limit": args.limit_rate, "proxy": args.proxy,
            "fsync": args.fsync}.items() if v is not None}
        fs = FetchSettings.model_validate({**fs.model_dump(), **update})
    except ValueError as e:
        raise _Usage(str(e)) from None
    root = Path(zoo.root).resolve() if zoo.root is not None else None
    if args.to is None and root is None:
        raise _Usage("give --to DIR, or the NAS root (--root DIR or ATELIER_ROOT) to place "
                     "models by type")
    index = _index(zoo, root) if root is not None else None
    sources = Sources.from_settings(zoo, fetch_settings=fs)
    display = screen("{task.fields[conns]} conn", quiet=args.quiet or args.dry_run)
    failed = 0
    auth_failed = False
    with display:
        for text in args.refs:
            warm: list[Any] = []  # a URL probe's session, its connection open: the engine's
            try:
                res = sources.resolve(text, file=args.file, include=args.include or None,
                                      exclude=args.exclude or None, headers=headers or None,
                                      mirrors=_mirrors_for(text, args.mirror, single)
                                      if text.lower().startswith(("http://", "https://"))
                                      else (), sha256=args.sha256, keep=warm.append)
                for f in res.files:
                    if res.source != "url":
                        f.urls += [m for m in _mirrors_for(f.urls[0], args.mirror, False)
                                   if m not in f.urls]
                    if args.size is not None:
                        f.size, f.size_exact = args.size, True
                if args.to is not None:
                    folder = args.to.resolve()
                    relocate = None
                else:
                    assert root is not None
                    base_sub = (zoo.models_base_subfolder if args.base_subfolder is None
                                else args.base_subfolder)
                    vfolder = placement.folder_for(res.type, res.base_model, "models",
                                                   base_sub)
                    folder = root / vfolder
                    relocate = {"models_root": "models", "base_subfolder": base_sub}
                plan = download.plan(res, folder, root=root, index=index,
                                     readable=["models", "users"] if root else [],
                                     conflict=args.conflict, name=args.name,
                                     relocate=relocate)
                if args.dry_run:
                    _print_plan(plan, args.json)
                    continue
                folder.mkdir(parents=True, exist_ok=True)
                _execute(plan, sources, fs, index, root, headers, display, args, warm)
            except KeyboardInterrupt:
                display.stop()
                display.print("interrupted: the partial download is kept; run the same "
                              "command to resume")
                return 130
            except BadReference as e:
                display.print(f"error: {e}")
                return 2
            except (ModelZooError, OSError) as e:
                failed += 1
                auth_failed = auth_failed or isinstance(e, RemoteAuthRequired)
                display.print(f"error: {text}: {getattr(e, 'message', None) or e}")
            finally:
                for session in warm:  # not taken (a dry run, the file already there)
                    session.close()
    if failed:
        return 3 if auth_failed and failed == 1 else 1
    return 0


def _index(zoo: Any, root: Path) -> Any:
    from atelier_io.db import make_engine

    from .. import db
    from ..library.index import Index

    try:
        engine = make_engine(zoo.database_url, db.metadata)
    except Exception:  # no writable state folder: work without the hash cache
        return None
    return Index(engine, root)


def _execute(plan: Plan, sources: Any, fs: Any, index: Any, root: Path | None,
             headers: dict[str, str], display: Any, args: argparse.Namespace,
             warm: list[Any]) -> None:
    from .. import download
    from ..sources import remote
    from .sessions import make_session_factory

    fresh = make_session_factory(fs)

    def session() -> Any:
        """The resolver's warm session first: the engine's probe needs no new connection."""
        return warm.pop() if warm else fresh()

    extra = {}
    if headers and plan.resolution.source == "url":
        for u in plan.primary.file.urls:
            extra[remote.origin(u)] = headers
    task = display.add_task(Path(plan.destination).name[:40], total=plan.size, conns=0)

    def progress(p: download.Progress) -> None:
        display.update(task, description=p.file[:40], total=p.total, completed=p.done,
                       conns=p.connections)

    def preview(url: str) -> bytes | None:
        from ..previews import fetch_image, to_png  # requests: catalogue models only

        try:
            st = sources.settings
            return to_png(fetch_image(sources.sess, url, st.models_preview_max_bytes,
                                      [st.civitai_url, st.hf_endpoint, st.modelscope_url]),
                          st.models_preview_max_side)
        except Exception:  # a model without its card is still a model
            return None

    out = download.execute(plan, origin_headers=sources.origin_headers, fetch_settings=fs,
                           progress=progress, index=index, root=root, preview_png=preview,
                           extra_headers=extra, session_factory=session)
    display.update(task, conns=0)
    for t in plan.targets:
        path = t.path
        if t.reuse is not None and not t.same_name:  # the same bytes elsewhere on the NAS
            path = str(root / t.reuse) if root is not None else t.reuse
        there = t.reuse is not None or t.path in out.found
        line = path + (" (already there)" if there else "")
        digest = out.sha256.get(t.path) or t.file.sha256
        if digest:
            line += f"  sha256 {digest}"
        print(line, file=sys.stdout, flush=True)


def _print_plan(plan: Plan, as_json: bool) -> None:
    res = plan.resolution
    if as_json:
        doc = {"ref": res.ref, "source": res.source, "name": res.name, "version": res.version,
               "type": res.type, "base_model": res.base_model, "size": res.size,
               "trigger_words": res.trigger_words, "destination": plan.destination,
               "existing": plan.existing, "update_available": res.update,
               "files": [{"path": t.shown, "size": t.file.size, "sha256": t.file.sha256,
                          "urls": t.file.urls, "reuse": t.reuse} for t in plan.targets]}
        print(json.dumps(doc, indent=2), flush=True)
        return
    lines = [f"{res.ref}  ({res.source})",
             f"  name         {res.name}" + (f"  [{res.version}]" if res.version else ""),
             f"  type         {res.type}" + (f"  ({res.base_model})" if res.base_model else ""),
             f"  destination  {plan.destination}"]
    if res.trigger_words:
        lines.append(f"  triggers     {', '.join(res.trigger_words)}")
    if res.update:
        lines.append(f"  newer        {res.update.get('name')} ({res.update.get('version_id')})")
    for t in plan.targets:
        size = f"{t.file.size} B" if t.file.size is not None else "size unknown"
        note = f"  already there: {t.reuse}" if t.reuse else ""
        lines.append(f"  file         {t.shown}  {size}  sha256 {t.file.sha256 or '-'}{note}")
    print("\n".join(lines), flush=True)
