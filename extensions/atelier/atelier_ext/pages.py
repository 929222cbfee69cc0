"""The WebUI tabs: which service page each one shows, and the HTML that shows it.

The tabs only frame the service's own pages, through the proxy route on the WebUI's own
origin (``./atelier/ui/...``: relative, like the WebUI's own ``./internal/progress``, so
it also works under a gateway's path prefix), or at ``public_url`` when install.py was
told the service is published elsewhere. The iframe is not sandboxed: resumable uploads
keep their state in the page's localStorage.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from .config import ServiceConfig
from .state import AdminNotice

PROXY_BASE = "./atelier"


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


def page_url(config: ServiceConfig, path: str) -> str:
    """Where the browser reaches one of the service's pages."""
    if config.public_url:
        return config.public_url.rstrip("/") + path
    return PROXY_BASE + path


def notice_html(notice: AdminNotice | None, *, show_password: bool) -> str:
    """The one-time notice of the generated admin password (FileBrowser tab).

    With WebUI auth on, every WebUI user sees this tab: the password then stays in the
    console only."""
    if notice is None or not notice.shown:
        return ""
    if show_password:
        what = (f"Atelier created the administrator <b>admin</b> with the password "
                f"<code>{html.escape(notice.password or '')}</code>. Change it in the "
                "FileBrowser (or with <code>atelier users passwd admin</code>).")
    else:
        what = ("Atelier created the administrator <b>admin</b>; its password is printed in "
                "the WebUI console.")
    return (f'<div class="atelier-notice" id="atelier_admin_notice" '
            f'style="padding:.5em 1em;margin-bottom:.5em;border:1px solid #d97706;'
            f'border-radius:6px">{what} '
            f'<button type="button" onclick="atelierDismissNotice(this)">Dismiss</button></div>')


def tab_html(tab: Tab, config: ServiceConfig | None, problem: str | None = None,
             notice: str = "") -> str:
    """An iframe on the tab's page, with a link to open it alone and one to the API docs."""
    if config is None:
        return (f'<div class="atelier-tab" id="{tab.elem_id}_missing"><p>Atelier is not set up: '
                f"{html.escape(problem or 'no configuration')}</p></div>")
    url = html.escape(page_url(config, tab.path), quote=True)
    docs = html.escape(page_url(config, "/docs"), quote=True)
    title = html.escape(tab.title)
    return (
        f'<div class="atelier-tab">{notice}'
        f'<p><a href="{url}" target="_blank" rel="noopener">Open {title} in a new window</a>'
        f' · <a href="{docs}" target="_blank" rel="noopener">API</a></p>'
        f'<iframe src="{url}" title="{title}" data-atelier="{tab.elem_id}" '
        f'allow="clipboard-write; fullscreen" loading="lazy" '
        f'style="width:100%;height:80vh;border:0"></iframe></div>'
    )
