"""WebUI glue: the Atelier tabs, and the standalone service started beside the WebUI.

A1111 and Forge import this file with the extension folder on ``sys.path`` for the
duration of the import only, so ``atelier_ext`` is imported here, at module level.
Everything with logic lives in ``atelier_ext`` (standard library only); this file only
talks to the WebUI (``modules.script_callbacks``) and to gradio (3.41 on A1111, 4.40 on
Forge: only ``gr.Blocks`` and ``gr.HTML``, which both have).
"""

from __future__ import annotations

import atexit
import logging
import threading
from pathlib import Path

import atelier_ext
import gradio as gr
from modules import script_callbacks

log = logging.getLogger("atelier")

EXTENSION_DIR = Path(__file__).resolve().parent.parent


def _config() -> tuple[atelier_ext.ServiceConfig | None, str | None]:
    try:
        return atelier_ext.load_config(atelier_ext.find_config(EXTENSION_DIR)), None
    except atelier_ext.ConfigError as exc:
        return None, str(exc)


def on_ui_tabs() -> list[tuple[object, str, str]]:
    config, problem = _config()
    tabs = []
    for tab in atelier_ext.TABS:
        with gr.Blocks(analytics_enabled=False) as block:
            gr.HTML(atelier_ext.tab_html(tab, config, problem))
        tabs.append((block, tab.title, tab.elem_id))
    return tabs


supervisor: atelier_ext.Supervisor | None = None


def _start(sup: atelier_ext.Supervisor) -> None:
    try:
        if sup.ensure_running():
            log.info("Atelier service started on %s", sup.config.base_url)
        else:
            log.info("Atelier service already answering on %s", sup.config.base_url)
    except atelier_ext.ServiceError as exc:
        log.error("%s", exc)


def on_app_started(demo: object, app: object) -> threading.Thread | None:
    """Start the service in the background (the WebUI need not wait for it)."""
    global supervisor
    config, problem = _config()
    if config is None:
        log.warning("Atelier: %s", problem)
        return None
    if supervisor is None:
        supervisor = atelier_ext.Supervisor(config)
        atexit.register(supervisor.stop)  # only stops a service this process started
    thread = threading.Thread(target=_start, args=(supervisor,), name="atelier-start",
                              daemon=True)
    thread.start()
    return thread


script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_app_started(on_app_started)
