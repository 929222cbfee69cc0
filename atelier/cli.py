"""The ``atelier`` command: ``serve``, ``users``, and the subcommands of each package."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

import filebrowser
import modelzoo

from . import __version__


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .protocol import JsonErrorsHttpTools
    from .service import create_app

    settings = filebrowser.settings_from(args, host=args.host, port=args.port)
    app = create_app(settings)
    if args.parent_fd is not None:
        from .lifeline import Lifeline

        app.state.lifeline = Lifeline(grace=args.orphan_grace)
        app.state.lifeline.tie_to_parent(args.parent_fd)
    print(f"atelier: serving {settings.root.resolve()} on http://{settings.host}:{settings.port}",
          file=sys.stderr, flush=True)

    class Server(uvicorn.Server):
        """Tells the app a stop began: event streams (GET /api/models/events) never end
        on their own, and uvicorn waits for open connections before it stops."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            for hook in getattr(app.state, "on_exit", []):
                hook()
            super().handle_exit(sig, frame)

    # proxy_headers=False: uvicorn would believe X-Forwarded-For from 127.0.0.1 and
    # rewrite the client address, letting any local process pose as a trusted gateway;
    # the app decides which forwarded headers to believe (filebrowser/access/peers.py).
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=args.log_level, http=JsonErrorsHttpTools, loop="uvloop",
                            timeout_keep_alive=30, timeout_graceful_shutdown=10,
                            proxy_headers=False)
    Server(config).run()
    return 0


def _serve_cluster(args: argparse.Namespace) -> int:
    """The API edition on Ray Serve (``pip install 'atelier[cluster]'``)."""
    try:
        import ray
    except ImportError:
        print("atelier: serve-cluster needs Ray Serve: pip install 'atelier[cluster]'",
              file=sys.stderr)
        return 2
    from .cluster.app import run
    from .cluster.settings import ClusterSettings

    settings = filebrowser.settings_from(args)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port),
                                   ("router", args.router), ("devices", args.devices))
                 if v is not None}
    cluster = ClusterSettings(**overrides)
    ray.init(address=args.address, include_dashboard=False)
    try:
        run(cluster, settings)
    except KeyboardInterrupt:  # Ctrl-C, whenever it comes (also mid-deployment)
        print("atelier: stopping", file=sys.stderr, flush=True)
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    return 0


def _settings_help() -> str:
    from filebrowser import Settings

    lines = ["settings (environment variables):"]
    for name, field in Settings.model_fields.items():
        lines.append(f"  ATELIER_{name.upper():24} {field.description}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """An epilog built only when help is shown: the settings list needs the settings
    class (pydantic), a tenth of a second that `atelier pull` should not pay."""

    def __init__(self, *args: Any, epilog_factory: Callable[[], str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epilog_factory = epilog_factory

    def format_help(self) -> str:
        if self._epilog_factory is not None:
            self.epilog = self._epilog_factory()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="atelier", description="Atelier: files, models and "
                                     "GPUs for Stable Diffusion WebUI.")
    parser.add_argument("--version", action="version", version=f"atelier {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the standalone service",
                           epilog_factory=_settings_help,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    filebrowser.add_server_options(serve)
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 7862)")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--parent-fd", type=int, default=None, metavar="FD",
                       help="(set by the WebUI extension) read end of a pipe from the WebUI "
                       "that started the service: when the WebUI ends, the service stops")
    serve.add_argument("--orphan-grace", type=float, default=10.0, metavar="SECONDS",
                       help="with --parent-fd: how long to wait for a restarted WebUI to "
                       "take the service over before stopping (default 10)")
    serve.set_defaults(func=_serve)
    cluster = sub.add_parser("serve-cluster", help="run the API edition on Ray Serve: one "
                             "replica per GPU, requests routed by model residency")
    filebrowser.add_server_options(cluster)
    cluster.add_argument("--host", default=None, help="HTTP address (ATELIER_CLUSTER_HOST)")
    cluster.add_argument("--port", type=int, default=None, help="HTTP port "
                         "(ATELIER_CLUSTER_PORT, default 7863)")
    cluster.add_argument("--devices", default=None, help="ATELIER_CLUSTER_DEVICES: 'auto' "
                         "or 'sim:8GiB,sim:8GiB' (one replica each)")
    cluster.add_argument("--router", choices=["memory", "ray", "round-robin"], default=None,
                         help="ATELIER_CLUSTER_ROUTER (default memory)")
    cluster.add_argument("--address", default=None, help="a running Ray cluster's address "
                         "(default: start a local one)")
    cluster.set_defaults(func=_serve_cluster)
    filebrowser.register(sub)
    modelzoo.register(sub)
    return parser


def _bad_settings(exc: ValueError) -> str | None:
    """A settings class's validation error (pydantic's subclasses ValueError) as lines a
    user can act on; None for any other ValueError, which stays a bug with a traceback.
    Matched by shape so that the CLI does not import pydantic to start."""
    errors = getattr(exc, "errors", None)
    title = getattr(exc, "title", None)
    if not callable(errors) or not isinstance(title, str) or not title.endswith("Settings"):
        return None
    lines = [f"atelier: invalid setting ({title}; see `atelier serve --help`):"]
    for e in errors():
        name = ".".join(str(part) for part in e.get("loc", ()))
        lines.append(f"  {name}: {e.get('msg')} (got {e.get('input')!r})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; ``argv`` None: this process's own command line (``atelier``), which
    a command marked ``quick_exit`` (a finished fetch) then ends at once."""
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:
        message = _bad_settings(exc)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2
    if argv is None and getattr(args, "quick_exit", False):
        from atelier_io import quick_exit

        quick_exit(code)
    return code
