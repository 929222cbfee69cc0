"""The WebUI side of Atelier: the service's configuration, its life, the tabs, the proxy
route and the checkpoint adapter.

It runs inside the WebUI process (A1111: gradio 3.41, fastapi 0.94, pydantic 1; Forge:
gradio 4.40, fastapi 0.104, pydantic 2.8) and never imports the service, which lives in
its own virtual environment (see install.py). Importing this package loads the standard
library only; ``atelier_ext.proxy`` (starlette and httpx, which both WebUIs ship) is
imported when the proxy is mounted.

    config.py         service.json, as install.py wrote it
    state.py          gateway secret, admin notice, pins (local files, mode 0600)
    procs.py          this installation's service processes, from /proc
    supervisor.py     start / adopt / replace the service; pipe + PR_SET_PDEATHSIG
    webui_settings.py the Settings > Atelier options and the service environment
    webui_auth.py     the caller by the WebUI's own credentials
    proxy.py          /atelier/... streamed to the service
    memory.py         measured RAM (cgroup-aware), VRAM, checkpoint sizes
    residency.py      sd_checkpoints_limit / keep_in_cpu from memory; load/unload/pin
    link.py           reports to the service, commands from it
    runtime.py        all of the above, once per WebUI process
    pages.py          the tabs' HTML
"""

from .config import CONFIG_ENV, ConfigError, ServiceConfig, find_config, load_config
from .pages import TABS, Tab, notice_html, page_url, tab_html
from .runtime import Runtime, forget_all, runtime
from .supervisor import ServiceError, Supervisor, is_answering

__all__ = [
    "CONFIG_ENV",
    "ConfigError",
    "Runtime",
    "ServiceConfig",
    "ServiceError",
    "Supervisor",
    "TABS",
    "Tab",
    "find_config",
    "forget_all",
    "is_answering",
    "load_config",
    "notice_html",
    "page_url",
    "runtime",
    "tab_html",
]
