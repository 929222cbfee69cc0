"""The WebUI tabs: which service page each one shows, and the HTML that shows it.

The tabs only frame the service's own pages; the pages themselves (and all the logic
behind them) live in the service.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from .config import ServiceConfig


@dataclass(frozen=True)
class Tab:
    title: str
    elem_id: str
    path: str


TABS: tuple[Tab, ...] = (
    Tab("FileBrowser", "atelier_files", "/ui/files"),
    Tab("ModelZoo", "atelier_models", "/ui/models"),
    Tab("Models on GPU", "atelier_gpu", "/ui/gpu"),
)


def tab_html(tab: Tab, config: ServiceConfig | None, problem: str | None = None) -> str:
    """An iframe on the tab's page, with a link to open it alone and one to the API docs."""
    if config is None:
        return (f'<div class="atelier-tab" id="{tab.elem_id}_missing"><p>Atelier is not set up: '
                f"{html.escape(problem or 'no configuration')}</p></div>")
    url = html.escape(config.page_url(tab.path), quote=True)
    docs = html.escape(config.page_url("/docs"), quote=True)
    title = html.escape(tab.title)
    return (
        f'<div class="atelier-tab">'
        f'<p><a href="{url}" target="_blank" rel="noopener">Open {title} in a new window</a>'
        f' · <a href="{docs}" target="_blank" rel="noopener">API</a></p>'
        f'<iframe src="{url}" title="{title}" loading="lazy" '
        f'style="width:100%;height:80vh;border:0"></iframe></div>'
    )
