"""The ``atelier`` command: ``serve``, ``users``, and the subcommands of each package."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from filebrowser import cli as filebrowser_cli
from filebrowser.settings import Settings
from modelzoo import cli as modelzoo_cli

from . import __version__


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .service import create_app

    settings = filebrowser_cli.settings_from(args, host=args.host, port=args.port)
    app = create_app(settings)
    print(f"atelier: serving {settings.root.resolve()} on http://{settings.host}:{settings.port}",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level,
                http="httptools", loop="uvloop", timeout_keep_alive=30)
    return 0


def _settings_help() -> str:
    lines = ["settings (environment variables):"]
    for name, field in Settings.model_fields.items():
        lines.append(f"  ATELIER_{name.upper():24} {field.description}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Atelier: files, models and "
                                     "GPUs for Stable Diffusion WebUI.")
    parser.add_argument("--version", action="version", version=f"atelier {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the standalone service",
                           epilog=_settings_help(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    filebrowser_cli.add_server_options(serve)
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 7862)")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=_serve)
    filebrowser_cli.register(sub)
    modelzoo_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
