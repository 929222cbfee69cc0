"""javascript/atelier.js in a real browser (Debian's chromium, driven by Playwright).

The page stands in for the WebUI's: A1111's ``gradioApp``, ``updateInput`` and
``switch_to_txt2img`` (javascript/ui.js), the txt2img prompt, and a paste button that, as
the WebUI's own does, reads the prompt when clicked. The tab's HTML is the extension's
own (``tab_html``); the framed FileBrowser page posts "send-to-txt2img" as the service's
page does. A page of another origin posting the same message is ignored.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import EXT_SOURCE

CHROMIUM = "/usr/bin/chromium"
INFOTEXT = ("a cat in a hat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, "
            "CFG scale: 7, Seed: 42, Size: 512x768, Model: cat-v1")

WEBUI_PAGE = """<!doctype html><html><head><script>
function gradioApp() { return document.getElementsByTagName('gradio-app')[0]; }
function updateInput(target) {
  let e = new Event("input", {bubbles: true});
  Object.defineProperty(e, "target", {value: target});
  target.dispatchEvent(e);
}
window.switched = 0; window.pasted = []; window.inputs = 0;
function switch_to_txt2img() { window.switched += 1; return Array.from(arguments); }
</script><script src="/javascript/atelier.js"></script></head><body><gradio-app>
<div id="tabs"><button>txt2img</button></div>
<div id="txt2img_prompt"><textarea></textarea></div>
<div id="txt2img_tools"><button id="paste">paste</button></div>
<div id="img2img_tools"><button id="paste">paste</button></div>
TAB_HTML
<iframe id="foreign" src="FOREIGN/sender"></iframe>
</gradio-app><script>
gradioApp().querySelector('#txt2img_prompt textarea')
  .addEventListener('input', () => { window.inputs += 1; });
gradioApp().querySelector('#txt2img_tools #paste').addEventListener('click', () => {
  window.pasted.push(gradioApp().querySelector('#txt2img_prompt textarea').value);
});
gradioApp().querySelector('#img2img_tools #paste').addEventListener('click', () => {
  window.pasted.push('WRONG TAB');
});
</script></body></html>"""

SENDER = """<!doctype html><html><body><button id="send">send</button><script>
document.getElementById('send').onclick = () => window.parent.postMessage(
  {source: "atelier", type: "send-to-txt2img", parameters: PARAMS}, "*");
</script></body></html>"""


def _serve(routes: dict[str, tuple[str, bytes]]) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            kind, body = routes.get(self.path, ("text/plain", b""))
            self.send_response(200 if self.path in routes else 404)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (bash .ci/run installs it from Debian)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def test_send_to_txt2img_fills_the_prompt_and_pastes(ext: ModuleType, browser: object,
                                                     tmp_path: Path) -> None:
    cfg = ext.ServiceConfig(argv=("py",), host="127.0.0.1", port=7862, state_dir=tmp_path,
                            log_file=tmp_path / "log")
    tab = ext.tab_html(ext.TABS[0], cfg)
    sender = SENDER.replace("PARAMS", json.dumps(INFOTEXT)).encode()
    foreign = _serve({"/sender": ("text/html", SENDER.replace(
        "PARAMS", json.dumps("from another site")).encode())})
    foreign_url = f"http://127.0.0.1:{foreign.server_address[1]}"
    js = (EXT_SOURCE / "javascript" / "atelier.js").read_bytes()
    page_html = WEBUI_PAGE.replace("TAB_HTML", tab).replace("FOREIGN", foreign_url).encode()
    webui = _serve({"/": ("text/html", page_html),
                    "/javascript/atelier.js": ("text/javascript", js),
                    "/atelier/ui/files": ("text/html", sender)})
    try:
        page = browser.new_page()  # type: ignore[attr-defined]
        messages: list[str] = []
        page.on("console", lambda m: messages.append(m.text))
        page.goto(f"http://127.0.0.1:{webui.server_address[1]}/")
        ours = page.frame_locator("iframe[data-atelier]")
        ours.locator("#send").click()
        page.wait_for_function("window.pasted.length >= 1")
        assert page.evaluate("window.pasted") == [INFOTEXT]
        assert page.evaluate("window.switched") == 1
        assert page.evaluate("window.inputs") == 1, "gradio is told of the new prompt"
        page.frame_locator("#foreign").locator("#send").click()
        page.wait_for_timeout(500)
        assert page.evaluate("window.pasted") == [INFOTEXT], "another origin is ignored"
        assert any("ignored a message from " + foreign_url in m for m in messages)
    finally:
        webui.shutdown()
        foreign.shutdown()
