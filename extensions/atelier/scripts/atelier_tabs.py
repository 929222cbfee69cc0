"""WebUI glue: the Atelier tabs, settings, proxy route, service and checkpoint adapter.

A1111 and Forge import this file with the extension folder on ``sys.path`` for the
duration of the import only, so ``atelier_ext`` is imported here, at module level.
Everything with logic lives in ``atelier_ext``; this file only talks to the WebUI
(``modules.script_callbacks``, ``modules.shared``) and to gradio (3.41 on A1111, 4.40 on
Forge: ``gr.Blocks``, ``gr.HTML``, ``gr.Textbox``, ``gr.Number``, ``gr.Checkbox``, which
both have). The callbacks run again on every "Reload UI"; the runtime (service, adapter)
is made once per process.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import atelier_ext
import gradio as gr
from atelier_ext import webui_settings
from modules import script_callbacks, shared

log = logging.getLogger("atelier")

EXTENSION_DIR = Path(__file__).resolve().parent.parent


def _config() -> tuple[atelier_ext.ServiceConfig | None, str | None]:
    try:
        return atelier_ext.load_config(atelier_ext.find_config(EXTENSION_DIR)), None
    except atelier_ext.ConfigError as exc:
        return None, str(exc)


def _opts_data() -> Mapping[str, object]:
    return getattr(shared.opts, "data", None) or {}


def _cmd(name: str) -> Any:
    return getattr(shared.cmd_opts, name, None)


def _runtime() -> tuple[atelier_ext.Runtime | None, str | None]:
    config, problem = _config()
    if config is None:
        return None, problem
    try:
        return atelier_ext.runtime(config, _opts_data), None
    except OSError as exc:  # e.g. a read-only state folder: the WebUI must start anyway
        return None, f"cannot use {config.state_dir}: {exc}"


def on_ui_settings() -> None:
    textbox = getattr(gr, "Textbox", None)  # None: the WebUI picks by the default's type
    components = {"text": (textbox, None), "password": (textbox, {"type": "password"}),
                  "number": (getattr(gr, "Number", None), None),
                  "bool": (getattr(gr, "Checkbox", None), None)}
    for s in webui_settings.SETTINGS:
        component, args = components[s.kind]
        info = shared.OptionInfo(s.default, s.label, component, args,
                                 onchange=_settings_changed, section=webui_settings.SECTION)
        if s.info and hasattr(info, "info"):
            info = info.info(s.info)
        shared.opts.add_option(s.key, info)


def _settings_changed() -> None:
    rt, _ = _runtime()
    if rt is not None:
        rt.settings_changed()


def on_ui_tabs() -> list[tuple[object, str, str]]:
    rt, problem = _runtime()
    config = rt.config if rt else None
    open_webui = not (_cmd("gradio_auth") or _cmd("gradio_auth_path"))
    tabs = []
    for tab in atelier_ext.TABS:
        notice = ""
        if rt is not None and tab.elem_id == "atelier_files":
            notice = atelier_ext.notice_html(rt.notice, show_password=open_webui)
        with gr.Blocks(analytics_enabled=False) as block:
            gr.HTML(atelier_ext.tab_html(tab, config, problem, notice))
        tabs.append((block, tab.title, tab.elem_id))
    return tabs


def on_app_started(demo: object, app: object) -> threading.Thread | None:
    """Mount the proxy route on this app (demo is None under --nowebui) and start the
    service in the background (the WebUI need not wait for it)."""
    rt, problem = _runtime()
    if rt is None:
        log.warning("Atelier: %s", problem)
        print(f"Atelier: {problem}")
        return None
    rt.mount(app, api_auth=_cmd("api_auth"), cors_origins=_cmd("cors_allow_origins"))
    thread = threading.Thread(target=rt.start, name="atelier-start", daemon=True)
    thread.start()
    return thread


def on_model_loaded(sd_model: object) -> None:
    rt, _ = _runtime()
    if rt is not None:
        rt.adapter.on_model_loaded(sd_model)  # never raises: a model load must not fail


if not getattr(atelier_ext, "_exit_hook", False):
    # Runs on a normal interpreter exit only; A1111's Ctrl-C and restart use os._exit,
    # which the service notices by itself (its pipe from this process closes).
    atexit.register(atelier_ext.forget_all)
    atelier_ext._exit_hook = True  # type: ignore[attr-defined]

script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_app_started(on_app_started)
script_callbacks.on_model_loaded(on_model_loaded)
