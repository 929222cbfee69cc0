"""The page routes without a browser: shell, relative base and redirect, CSP, assets,
the session probe, the dictionaries, and the pages inside a built wheel."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests

from ..conftest import ADMIN_PASSWORD, Server

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
STATIC = ROOT / "atelier" / "ui" / "static"


def _base(html: str) -> str:
    m = re.search(r'<base href="([^"]*)">', html)
    assert m, "no <base> in the shell"
    return m.group(1)


@pytest.mark.parametrize("path, base", [
    ("/ui/", "./"), ("/ui/files", "./"), ("/ui/login", "./"), ("/ui/images", "./"),
    ("/ui/models", "./"), ("/ui/gpu", "./"), ("/ui/admin", "./"), ("/ui/files/", "../"),
    ("/ui/files/users/ann/x", "../../../"), ("/ui/share/abc", "../"),
])
def test_every_page_serves_the_shell_with_a_relative_base(server: Server, path: str,
                                                          base: str) -> None:
    r = requests.get(server.url + path, timeout=10, allow_redirects=False)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert _base(r.text) == base
    # every asset reference in the shell is relative
    refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert refs and all(not ref.startswith(("/", "http")) for ref in refs), refs
    csp = r.headers["content-security-policy"]
    for directive in ("script-src 'self'", "style-src 'self'", "frame-ancestors 'self'",
                      "connect-src 'self'", "img-src 'self' data: blob:", "base-uri 'self'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "<script>" not in r.text and " style=" not in r.text  # nothing inline


def test_root_and_ui_redirect_relatively(server: Server) -> None:
    for path in ("/", "/ui"):
        r = requests.get(server.url + path, timeout=10, allow_redirects=False)
        assert r.status_code in (302, 307)
        assert r.headers["location"] == "ui/"  # keeps a proxy's prefix
    r = requests.get(server.url + "/", timeout=10)
    assert r.url == server.url + "/ui/" and r.status_code == 200


def test_assets_are_hashed_cached_and_confined(server: Server) -> None:
    html = requests.get(server.url + "/ui/", timeout=10).text
    js = re.search(r'src="\./(assets/index-[\w-]+\.js)"', html)
    assert js
    r = requests.get(f"{server.url}/ui/{js.group(1)}", timeout=10)
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert "immutable" in r.headers["cache-control"] and "max-age=31536000" in r.headers[
        "cache-control"]
    for bad in ("../pages.py", "..%2Fpages.py", "nope.js", "%2e%2e%2f__init__.py"):
        r = requests.get(f"{server.url}/ui/assets/{bad}", timeout=10)
        assert r.status_code == 404 and "import" not in r.text
    assert requests.get(f"{server.url}/ui/nosuchpage", timeout=10).status_code == 404


def test_session_probe_answers_200_and_only_your_identity(server: Server) -> None:
    r = requests.get(server.url + "/ui/session", timeout=10)
    assert r.status_code == 200 and r.json() == {"signed_in": False}
    s = requests.Session()
    login = s.post(f"{server.url}/api/login", json={"username": "admin",
                                                     "password": ADMIN_PASSWORD}, timeout=10)
    assert login.status_code == 200
    body = s.get(server.url + "/ui/session", timeout=10).json()
    assert body["signed_in"] is True and body["me"]["name"] == "admin"
    assert body["me"]["role"] == "admin" and "csrf" not in json.dumps(body)
    assert set(body["features"]) >= {"models", "gpu", "gpu_webui", "sessions"}
    # each flag says whether the optional API is in this service's OpenAPI document
    assert body["features"]["sessions"] is True and body["features"]["models"] is True
    bad = requests.get(server.url + "/ui/session", timeout=10,
                       headers={"Authorization": "Bearer atl_wrong"})
    assert bad.status_code == 200 and bad.json() == {"signed_in": False}


def test_pages_carry_no_data_without_credentials(server: Server) -> None:
    """The only public routes outside the OpenAPI document are the static pages, the
    session probe (which says "not signed in") and the API docs."""
    allowed = re.compile(r"^(/|/ui|/ui/|/ui/session|/ui/assets/\{name\}|/ui/\{rest:path\}|"
                         r"/docs|/docs/oauth2-redirect|/redoc|/openapi\.json|/dav)$")
    spec = set(requests.get(f"{server.url}/openapi.json", timeout=10).json()["paths"])
    for route in server.app.router.routes:
        path = getattr(route, "path", None)
        if path is None or path in spec:  # included routers: their routes are in the spec
            continue  # walked by tests/filebrowser/test_security.py
        assert allowed.match(path), f"{path} is outside the OpenAPI and not a known page"


def _t_keys(src: Path) -> set[str]:
    keys: set[str] = set()
    for f in list(src.rglob("*.js")) + list(src.rglob("*.jsx")):
        # t("a.b") literally; t("a.b_" + x) is a prefix checked below
        keys |= set(re.findall(r'\btn?\(\s*"([a-z]+\.[a-z0-9_]*[a-z0-9])"\s*[,)]', f.read_text()))
    return keys


def test_dictionaries_have_the_same_keys_and_every_used_key() -> None:
    en = json.loads((WEB / "src" / "i18n" / "en.json").read_text())
    zh = json.loads((WEB / "src" / "i18n" / "zh.json").read_text())
    assert set(en) == set(zh)
    assert all(v.strip() for v in [*en.values(), *zh.values()])
    for key in en:  # the same {placeholders} in both languages
        assert set(re.findall(r"\{\w+\}", en[key])) == set(re.findall(r"\{\w+\}", zh[key])), key
    missing = _t_keys(WEB / "src") - set(en)
    assert not missing, f"t() keys missing from the dictionaries: {sorted(missing)}"
    for prefix, names in {"gpu.tier_": ("gpu", "ram", "disk"), "gpu.from_": ("gpu", "ram", "disk"),
                          "job.": ("queued", "running", "paused", "done", "failed", "cancelled"),
                          "role.": ("admin", "user", "viewer")}.items():
        assert all(prefix + n in en for n in names), prefix
    assert any("\u4e00" <= ch <= "\u9fff" for ch in zh["nav.files"])


def test_built_pages_match_the_committed_build_inputs() -> None:
    """The build is committed: the shell names assets that exist, nothing extra."""
    html = (STATIC / "index.html").read_text()
    named = set(re.findall(r'"\./(assets/[^"]+)"', html))
    assert named and all((STATIC / n).is_file() for n in named)
    lock = json.loads((WEB / "package-lock.json").read_text())
    pkg = json.loads((WEB / "package.json").read_text())
    for section in ("dependencies", "devDependencies"):
        for name, version in pkg.get(section, {}).items():
            assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} is not pinned exactly"
            assert lock["packages"][f"node_modules/{name}"]["version"] == version


@pytest.mark.slow
def test_wheel_contains_the_pages(tmp_path: Path) -> None:
    out = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, cwd=tmp_path,
                   capture_output=True, timeout=600)
    wheel = next(out.glob("atelier-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "atelier/ui/static/index.html" in names
    assets = [n for n in names if n.startswith("atelier/ui/static/assets/")]
    assert any(n.endswith(".js") for n in assets) and any(n.endswith(".css") for n in assets)
    assert "atelier/ui/pages.py" in names
