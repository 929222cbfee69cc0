"""A WebUI process made of the stand-ins, with the installed Atelier extension loaded.

    python fake_webui.py --webui DIR --ready FILE [--flavor a1111] [--port 0]
                         [--grace S] [--gradio-auth u:p] [--api-auth u:p]

Like ``webui.py``: it installs A1111's SIGINT handler (``os._exit(0)``), builds the UI
(settings, tabs), launches the app in a server thread (gradio's ``prevent_thread_lock``,
so uvicorn installs no signal handler of its own), wraps it in A1111's middleware (GZip
minimum 1000 bytes, CORS), calls ``app_started`` and then waits in the main thread.
``POST /_test/restart`` is the settings page's "Restart": ``restart_program()``, which
leaves with ``os._exit(0)``. When ready it writes FILE: its pid, port, and what the
extension did.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import webui_standins  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--webui", required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--flavor", default="a1111")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--grace", type=float, default=2.0)
    p.add_argument("--gradio-auth")
    p.add_argument("--api-auth")
    args = p.parse_args()

    webui = Path(args.webui)
    os.environ["WEBUI_ROOT"] = str(webui)
    models = webui / "models" / "Stable-diffusion"
    w = webui_standins.make_webui(
        args.flavor, models_dir=models if models.is_dir() else None,
        config_file=webui / "config.json", api_auth=args.api_auth,
        gradio_auth=args.gradio_auth, opts_overrides={"atelier_service_grace": args.grace})
    w.install()
    w.modules["modules.initialize_util"].configure_sigint_handler()  # type: ignore[attr-defined]

    ext = webui / "extensions" / "atelier"
    saved = sys.path
    sys.path = [str(ext), *sys.path]
    try:  # modules/scripts.py: load_scripts
        import importlib.util

        path = ext / "scripts" / "atelier_tabs.py"
        spec = importlib.util.spec_from_file_location(path.name, path)
        assert spec is not None and spec.loader is not None
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
    finally:
        sys.path = saved

    w.run("ui_settings")
    w.run("ui_tabs")

    import uvicorn
    from starlette.middleware.cors import CORSMiddleware
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

    app = w.gradio.routes.App()  # type: ignore[attr-defined]
    if args.gradio_auth:
        app.auth = dict(pair.split(":", 1) for pair in args.gradio_auth.split(","))

    async def restart(request: Request) -> PlainTextResponse:
        w.modules["modules.restart"].restart_program()  # type: ignore[attr-defined]
        return PlainTextResponse("unreachable")

    app.add_route("/_test/restart", restart, methods=["POST"])
    app.add_route("/", lambda request: PlainTextResponse("the WebUI"), methods=["GET"])
    # modules/initialize_util.py: setup_middleware
    app.middleware_stack = None
    app.add_middleware(GZipMiddleware, minimum_size=1000)
    app.add_middleware(CORSMiddleware, allow_methods=["*"], allow_headers=["*"],
                       allow_credentials=True)
    app.middleware_stack = app.build_middleware_stack()

    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, name="gradio-server", daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]

    [started] = w.run("app_started", None, app)
    if started is not None:
        started.join(120)
    rt = next(iter(sys.modules["atelier_ext.runtime"]._RUNTIMES.values()))  # type: ignore[attr-defined]
    sup = rt.supervisor
    Path(args.ready).write_text(json.dumps({
        "pid": os.getpid(), "port": port, "outcome": sup.outcome, "service_pid": sup.pid,
        "verified": sup.verified, "error": rt.error}))
    while True:  # webui.py: the main thread waits for server commands
        time.sleep(1)


if __name__ == "__main__":
    main()
