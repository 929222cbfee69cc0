"""The WebUI side of Atelier: reads the service's configuration and keeps it running.

It runs inside the WebUI process (A1111: gradio 3.41, fastapi 0.94, pydantic 1; Forge:
gradio 4.40, fastapi 0.104, pydantic 2.8), so it uses the standard library only and never
imports the service, which lives in its own virtual environment (see install.py).
"""

from .config import CONFIG_ENV, ConfigError, ServiceConfig, find_config, load_config
from .pages import TABS, Tab, tab_html
from .supervisor import ServiceError, Supervisor, is_answering

__all__ = [
    "CONFIG_ENV",
    "ConfigError",
    "ServiceConfig",
    "ServiceError",
    "Supervisor",
    "TABS",
    "Tab",
    "find_config",
    "is_answering",
    "load_config",
    "tab_html",
]
